"""End to end: a real `tensorboard` (with --path_prefix) serving recorder logs, opened in
Debian's chromium through playwright. Skipped only when /usr/bin/chromium is absent.

Logs: run `keras` is written by the real recorder (`tfprobe.LayerProbe` on a tiny CNN with
pooling, random data); if recording fails the tests fail (there is no synthetic fallback, so
they cannot pass on fake data). Run `xss` holds one series named `<img src=x onerror=alert(1)>`
(not a legal TF layer name, so it is written with `WindowWriter`). Screenshots go to
$TFPROBE_ARTIFACTS or artifacts/.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tfprobe import metadata

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PREFIX = "/tb"
IFRAME = f'iframe[src="data/plugin_entry.html?name={metadata.PLUGIN_NAME}"]'
TIMEOUT = 60_000

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no chromium at {CHROMIUM}")

_RECORDER_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np, keras, tfprobe
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((12, 12, 1)),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv2d"),
        keras.layers.MaxPooling2D(2, name="max_pooling2d"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(8, activation="relu", name="dense"),
        keras.layers.Dense(3, activation="softmax", name="head"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.rand(64, 12, 12, 1).astype("float32")
    y = np.random.randint(0, 3, 64)
    probe = tfprobe.LayerProbe(sys.argv[1], record_freq=1, log_freq=2, histogram_freq=2)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[probe])
    """
)


RECORDED_LAYERS = ["conv2d", "max_pooling2d", "flatten", "dense", "head"]  # the model above, in order


def _write_recorder_run(path):
    """Real LayerProbe logs of the model above; fails the tests (never falls back) if recording fails."""
    try:
        proc = subprocess.run([sys.executable, "-c", _RECORDER_SCRIPT, str(path)], timeout=300,
                              capture_output=True, text=True)
    except (subprocess.SubprocessError, OSError) as e:
        pytest.fail(f"the real recorder could not run: {e!r}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"the real recorder failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}", pytrace=False)
    from tfprobe import read_layers

    layers = read_layers(path.parent).query("run == @path.name")
    # the recorder's own metadata, not a synthetic writer's: every Keras layer, its class
    assert layers["layer"].tolist() == RECORDED_LAYERS, layers
    assert layers["class"].tolist() == ["Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense"], layers
    return layers["layer"].tolist()


def test_a_failing_recorder_fails_the_tests(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "_RECORDER_SCRIPT", "raise SystemExit('recorder broke')")
    with pytest.raises(pytest.fail.Exception, match="recorder broke"):
        _write_recorder_run(tmp_path / "keras")


@pytest.fixture(scope="module")
def logs(tmp_path_factory, helpers):
    root = tmp_path_factory.mktemp("browser_logs")
    layers = _write_recorder_run(root / "keras")
    helpers.write_run(root / "xss", [(helpers.XSS_LAYER, "Dense", "activation", [None, 4], None)], [1, 2, 3])
    return root, layers


@pytest.fixture(scope="module")
def servers(logs, helpers, tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty_logs")
    with helpers.tensorboard_server(logs[0], path_prefix=PREFIX) as tb, helpers.tensorboard_server(empty) as tb_empty:
        tb.wait_until(lambda b: {r["name"] for r in b["runs"]} >= {"keras", "xss"})
        tb_empty.wait_until(lambda b: b["runs"] == [])
        yield tb, tb_empty


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.dialogs = []
    page.errors = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    yield page
    context.close()


def shot(page, helpers, name):
    page.screenshot(path=os.path.join(helpers.artifacts_dir(), f"browser_{name}.png"))


def open_dashboard(page, base):
    page.goto(base + "/#" + metadata.PLUGIN_NAME)
    frame = page.frame_locator(IFRAME)
    frame.locator("body[data-status=ready]").wait_for(timeout=TIMEOUT)
    return frame


def switch(frame, view):
    frame.locator(f"nav.tabs button[data-view={view}]").click()
    frame.locator(f"body[data-view={view}][data-status=ready]").wait_for(timeout=TIMEOUT)


def test_tab_appears_and_overview_lists_layers(page, servers, logs, helpers):
    tb, _ = servers
    page.goto(tb.base + "/")
    page.get_by_text(metadata.PLUGIN_NAME, exact=False).first.wait_for(timeout=TIMEOUT)
    frame = open_dashboard(page, tb.base)
    labels = frame.locator("#overview .heatmap-label")
    texts = labels.all_text_contents()
    assert texts[: len(logs[1])] == logs[1]  # keras run first (sorted), model order
    assert helpers.XSS_LAYER in texts
    assert frame.locator(".legend").count() >= 2  # a colour legend per run
    shot(page, helpers, "overview")
    assert not page.errors


def test_clicking_a_heatmap_row_opens_that_layer(page, servers, logs, helpers):
    tb, _ = servers
    frame = open_dashboard(page, tb.base)
    target = logs[1][1]
    canvas = frame.locator("#overview .heatmap-canvas").first
    box = canvas.bounding_box()
    row_h = box["height"] / len(logs[1])
    canvas.click(position={"x": box["width"] / 2, "y": row_h * 1.5})
    frame.locator("body[data-view=layer][data-status=ready]").wait_for(timeout=TIMEOUT)
    assert frame.locator("#layer-title").inner_text() == target
    assert frame.locator(".chart-card canvas").count() >= 3
    shot(page, helpers, "layer")
    assert not page.errors


def test_layer_detail_controls(page, servers, logs, helpers):
    tb, _ = servers
    frame = open_dashboard(page, tb.base)
    frame.locator("#overview .heatmap-label", has_text=logs[1][0]).first.click()
    frame.locator("body[data-view=layer][data-status=ready]").wait_for(timeout=TIMEOUT)
    assert frame.locator("#layer-title").inner_text() == logs[1][0]
    frame.locator("#log-scale").check()
    frame.locator("body[data-view=layer][data-status=ready]").wait_for(timeout=TIMEOUT)
    frame.locator("#stat-picker input[value=max]").check()
    frame.locator(".chart-card[data-stat=max]").wait_for(timeout=TIMEOUT)
    assert frame.locator(".hist-block .heatmap-canvas").count() >= 1  # histogram over time
    assert not page.errors


def plugin_requests(page):
    """A live list of the URLs of every request to the plugin's routes made by `page`."""
    seen = []
    page.on("request", lambda r: seen.append(r.url) if f"/data/plugin/{metadata.PLUGIN_NAME}/" in r.url else None)
    return seen


def test_smoothing_and_log_scale_are_client_side(page, servers, logs):
    tb, _ = servers
    requests = plugin_requests(page)
    frame = open_dashboard(page, tb.base)
    frame.locator("#overview .heatmap-label", has_text=logs[1][0]).first.click()
    frame.locator("body[data-view=layer][data-status=ready]").wait_for(timeout=TIMEOUT)
    charts = frame.locator("#layer-charts")
    before = len(requests)
    assert any("/scalars?" in u for u in requests)  # the counter sees the view's own fetches
    frame.locator("#log-scale").check()
    frame.locator("#smoothing").evaluate(
        "(e) => { e.value = '0.6'; e.dispatchEvent(new Event('input', {bubbles: true}));"
        " e.dispatchEvent(new Event('change', {bubbles: true})); }"
    )
    frame.locator("#layer-charts[data-log-scale=true][data-smoothing='0.60']").wait_for(timeout=TIMEOUT)
    assert charts.locator(".chart-card canvas").count() >= 3
    page.wait_for_timeout(700)
    assert requests[before:] == []
    frame.locator("#log-scale").uncheck()
    frame.locator("#layer-charts[data-log-scale=false]").wait_for(timeout=TIMEOUT)
    page.wait_for_timeout(300)
    assert requests[before:] == []
    assert not page.errors


def overview_labels(frame):
    return frame.locator("#overview .heatmap-label").all_text_contents()


def test_layer_filter_applies_everywhere_and_survives_reload(page, servers, logs, helpers):
    tb, _ = servers
    wanted = ["conv2d", "dense"]
    frame = open_dashboard(page, tb.base)
    assert len(overview_labels(frame)) == len(logs[1]) + 1  # keras layers + the xss layer
    requests = plugin_requests(page)
    frame.locator("#layer-filter").fill("^(CONV2D|dense)$")  # case-insensitive, like TensorBoard
    frame.locator(".filter-note").first.wait_for(timeout=TIMEOUT)
    assert overview_labels(frame) == wanted
    assert frame.locator("#overview .no-match").count() == 1  # the xss run has no matching layer
    assert requests == []  # filtering redraws from the fetched data
    assert "p.tfprobe.filter=" in page.url

    page.reload()
    frame = page.frame_locator(IFRAME)
    frame.locator("body[data-status=ready]").wait_for(timeout=TIMEOUT)
    assert frame.locator("#layer-filter").input_value() == "^(CONV2D|dense)$"
    assert overview_labels(frame) == wanted
    shot(page, helpers, "filter")
    switch(frame, "pooling")
    assert frame.locator("table.funnel button.layer-name").all_text_contents() == wanted
    assert frame.locator(".pool-card").count() == 0  # max_pooling2d does not match
    switch(frame, "health")
    layers = frame.locator("table.findings button.layer-name").all_text_contents()
    assert set(layers) <= set(wanted)

    switch(frame, "overview")
    frame.locator("#layer-filter").fill("conv2d(")  # invalid: error state, filters nothing
    frame.locator("#layer-filter.invalid").wait_for(timeout=TIMEOUT)
    assert "invalid regex" in frame.locator("#layer-filter-error").inner_text()
    assert frame.locator("#layer-filter").get_attribute("aria-invalid") == "true"
    assert len(overview_labels(frame)) == len(logs[1]) + 1
    frame.locator("#layer-filter").fill("")
    assert frame.locator("#layer-filter.invalid").count() == 0
    assert "p.tfprobe.filter=" not in page.url
    assert not page.errors


def test_pooling_and_health_views(page, servers, logs, helpers):
    tb, _ = servers
    frame = open_dashboard(page, tb.base)
    switch(frame, "pooling")
    funnel_names = frame.locator("table.funnel button.layer-name").all_text_contents()
    assert funnel_names[: len(logs[1])] == logs[1]
    assert frame.locator(".pool-card").count() >= 1
    shot(page, helpers, "pooling")
    switch(frame, "health")
    assert frame.locator("table.findings, #no-findings").count() == 1
    shot(page, helpers, "health")
    assert not page.errors


def test_run_picker_and_reload_button(page, servers, helpers):
    tb, _ = servers
    frame = open_dashboard(page, tb.base)
    assert frame.locator("#overview h2").count() == 2
    frame.locator("#run-list input[value=xss]").uncheck()
    frame.locator("body[data-status=ready]").wait_for(timeout=TIMEOUT)
    assert frame.locator("#overview h2").all_text_contents() == [" keras"]
    before = int(frame.locator("body").get_attribute("data-refreshes"))
    page.locator("button.reload-button").click()
    page.wait_for_function(
        """([sel, b]) => { const f = document.querySelector(sel);
           return f && Number(f.contentDocument.body.dataset.refreshes) > b
                  && f.contentDocument.body.dataset.status === 'ready'; }""",
        arg=[IFRAME, before],
        timeout=TIMEOUT,
    )
    assert frame.locator("#run-list input[value=xss]").is_checked() is False  # selection kept
    assert not page.errors


def test_xss_layer_name_is_text(page, servers, helpers):
    tb, _ = servers
    frame = open_dashboard(page, tb.base)
    label = frame.locator("#overview .heatmap-label", has_text=helpers.XSS_LAYER)
    assert label.inner_text() == helpers.XSS_LAYER
    label.click()
    frame.locator("body[data-view=layer][data-status=ready]").wait_for(timeout=TIMEOUT)
    assert frame.locator("#layer-title").inner_text() == helpers.XSS_LAYER
    switch(frame, "pooling")
    assert frame.locator("img").count() == 0
    assert page.evaluate(f"document.querySelector('{IFRAME}').contentDocument.querySelectorAll('img').length") == 0
    assert page.dialogs == []
    assert not page.errors


def test_empty_state(page, servers, helpers):
    _, tb_empty = servers
    page.goto(tb_empty.base + "/#" + metadata.PLUGIN_NAME)
    frame = page.frame_locator(IFRAME)
    frame.locator("#empty-state").wait_for(timeout=TIMEOUT)
    assert "LayerProbe" in frame.locator("#empty-state").inner_text()
    shot(page, helpers, "empty")
