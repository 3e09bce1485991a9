"""End to end: a real `tensorboard` (with --path_prefix) serving recorder logs, opened in
Debian's chromium through playwright. Skipped only when /usr/bin/chromium is absent.

Logs: run `keras` is written by the real recorder (`tfprobe.LayerProbe` on a tiny CNN with
pooling, random data); if recording fails the tests fail (there is no synthetic fallback, so
they cannot pass on fake data). Run `xss` holds one series named `<img src=x onerror=alert(1)>`
(not a legal TF layer name, so it is written with `WindowWriter`). Screenshots go to
$TFPROBE_ARTIFACTS or artifacts/.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
from helpers import chromium, synthetic
from helpers.chromium import IFRAME, TIMEOUT, open_dashboard, plugin_requests, shot, switch
from helpers.tensorboard import tensorboard_server

from tensorboard_plugin_tfprobe import layout
from tfprobe import metadata

PREFIX = "/tb"

pytestmark = chromium.MARKS

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
        proc = subprocess.run(
            [sys.executable, "-c", _RECORDER_SCRIPT, str(path)], timeout=300, capture_output=True, text=True
        )
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
def logs(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser_logs")
    layers = _write_recorder_run(root / "keras")
    synthetic.write_run(root / "xss", [(synthetic.XSS_LAYER, "Dense", "activation", [None, 4], None)], [1, 2, 3])
    return root, layers


@pytest.fixture(scope="module")
def servers(logs, tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty_logs")
    with tensorboard_server(logs[0], path_prefix=PREFIX) as tb, tensorboard_server(empty) as tb_empty:
        tb.wait_until(lambda b: {r["name"] for r in b["runs"]} >= {"keras", "xss"})
        tb_empty.wait_until(lambda b: b["runs"] == [])
        yield tb, tb_empty


def test_tab_appears_and_overview_lists_layers(page, servers, logs):
    tb, _ = servers
    page.goto(tb.base + "/")
    page.get_by_text(metadata.PLUGIN_NAME, exact=False).first.wait_for(timeout=TIMEOUT)
    frame = open_dashboard(page, tb.base)
    labels = frame.locator("#overview .heatmap-label")
    texts = labels.all_text_contents()
    assert texts[: len(logs[1])] == logs[1]  # keras run first (sorted), model order
    assert synthetic.XSS_LAYER in texts
    assert frame.locator(".legend").count() >= 2  # a colour legend per run
    shot(page, "overview")
    assert not page.errors


def test_clicking_a_heatmap_row_opens_that_layer(page, servers, logs):
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
    shot(page, "layer")
    assert not page.errors


def test_layer_detail_controls(page, servers, logs):
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


def test_layer_filter_applies_everywhere_and_survives_reload(page, servers, logs):
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
    shot(page, "filter")
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


def test_pooling_and_health_views(page, servers, logs):
    tb, _ = servers
    frame = open_dashboard(page, tb.base)
    switch(frame, "pooling")
    funnel_names = frame.locator("table.funnel button.layer-name").all_text_contents()
    assert funnel_names[: len(logs[1])] == logs[1]
    assert frame.locator(".pool-card").count() >= 1
    shot(page, "pooling")
    switch(frame, "health")
    assert frame.locator("#findings-groups, #no-findings").count() == 1
    shot(page, "health")
    assert not page.errors


def test_run_picker_and_reload_button(page, servers):
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


def test_xss_layer_name_is_text(page, servers):
    tb, _ = servers
    frame = open_dashboard(page, tb.base)
    label = frame.locator("#overview .heatmap-label", has_text=synthetic.XSS_LAYER)
    assert label.inner_text() == synthetic.XSS_LAYER
    label.click()
    frame.locator("body[data-view=layer][data-status=ready]").wait_for(timeout=TIMEOUT)
    assert frame.locator("#layer-title").inner_text() == synthetic.XSS_LAYER
    switch(frame, "pooling")
    assert frame.locator("img").count() == 0
    assert page.evaluate(f"document.querySelector('{IFRAME}').contentDocument.querySelectorAll('img').length") == 0
    assert page.dialogs == []
    assert not page.errors


def test_empty_state(page, servers):
    _, tb_empty = servers
    page.goto(tb_empty.base + "/#" + metadata.PLUGIN_NAME)
    frame = page.frame_locator(IFRAME)
    frame.locator("#empty-state").wait_for(timeout=TIMEOUT)
    assert "LayerProbe" in frame.locator("#empty-state").inner_text()
    shot(page, "empty")


# ---------------------------------------------------------------- a deep network (400+ layers)

DEEP_RUN = "densenet"
DEEP_FAULTS = {"conv3_block2_1_relu": "dead_relu", "conv4_block5_2_conv": "nan_layer", "predictions": "dense"}
DEAD_UNITS = ("conv2_block3_1_relu", "conv2_block4_1_relu", "conv5_block7_0_relu", "conv5_block9_1_relu")


def deep_layers():
    """DenseNet121's layer names, classes and graph (stem, 58 dense blocks, transitions, head): 428 layers.

    [(name, class, kind, bounds, inputs)] in model order; the planted faults use conftest's
    `dead_relu` / `nan_layer` / saturating `dense` statistics (DEEP_FAULTS).
    """
    layers = []

    def add(name, cls, inputs, kind="activation", bounds=None):
        layers.append((name, cls, kind, bounds, inputs))
        return name

    x = add("zero_padding2d", "ZeroPadding2D", [])
    for part, cls in (("conv", "Conv2D"), ("bn", "BatchNormalization"), ("relu", "Activation")):
        x = add(f"conv1_{part}", cls, [x])
    x = add("pool1", "MaxPooling2D", [add("zero_padding2d_1", "ZeroPadding2D", [x])], kind="pooling")
    for stage, blocks in ((2, 6), (3, 12), (4, 24), (5, 16)):
        for b in range(1, blocks + 1):
            p = f"conv{stage}_block{b}_"
            y = x
            for part, cls in (
                ("0_bn", "BatchNormalization"),
                ("0_relu", "Activation"),
                ("1_conv", "Conv2D"),
                ("1_bn", "BatchNormalization"),
                ("1_relu", "Activation"),
                ("2_conv", "Conv2D"),
            ):
                y = add(p + part, cls, [y])
            x = add(p + "concat", "Concatenate", [x, y])
        if stage < 5:
            for part, cls in (("bn", "BatchNormalization"), ("relu", "Activation"), ("conv", "Conv2D")):
                x = add(f"pool{stage}_{part}", cls, [x])
            x = add(f"pool{stage}_pool", "AveragePooling2D", [x], kind="pooling")
    x = add("relu", "Activation", [add("bn", "BatchNormalization", [x])])
    x = add("avg_pool", "GlobalAveragePooling2D", [x], kind="pooling")
    add("predictions", "Dense", [x], bounds=[0.0, 1.0])
    return layers


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    """A 428-layer synthetic run (30 windows) and a ResNet block, served by a real tensorboard;
    yields (server, layers of the deep run, diagnose's findings over both runs)."""
    import tfprobe

    root = tmp_path_factory.mktemp("deep_logs")
    layers = deep_layers()
    infos = {
        name: dict(synthetic.info_for(i, name, cls, kind, [None, 8, 8, 4], bounds), inputs=inputs)
        for i, (name, cls, kind, bounds, inputs) in enumerate(layers)
    }
    steps = list(range(10, 301, 10))

    def window(step):
        stats = {name: synthetic.stats_for(DEEP_FAULTS.get(name, name), kind, step) for name, _, kind, _, _ in layers}
        for name in DEAD_UNITS:
            stats[name]["dead_unit_fraction"] = 0.7
        return stats

    synthetic.write_windows(root / DEEP_RUN, infos, ((s, window(s), {}) for s in steps))
    # a ResNet block, whose projection shortcut comes after the main branch in model order
    resnet = {
        name: dict(synthetic.info_for(i, name, cls), inputs=inputs)
        for i, (name, cls, inputs) in enumerate(RESNET_BLOCK)
    }
    synthetic.write_windows(
        root / "resnet",
        resnet,
        ((s, {name: synthetic.stats_for(name, "activation", s) for name in resnet}, {}) for s in steps),
    )
    findings = tfprobe.diagnose(tfprobe.read_logdir(root), tfprobe.read_layers(root))
    with tensorboard_server(root) as tb:
        tb.wait_until(
            lambda b: [(r["name"], r["max_step"]) for r in b["runs"]] == [(DEEP_RUN, steps[-1]), ("resnet", steps[-1])]
        )
        yield tb, layers, findings


RESNET_BLOCK = [  # name, class, inputs: depth pool1 0, 1_conv 1, 1_relu 2, 2_conv 3, 0_conv 1, add 4, out 5
    ("pool1", "MaxPooling2D", []),
    ("conv2_block1_1_conv", "Conv2D", ["pool1"]),
    ("conv2_block1_1_relu", "Activation", ["conv2_block1_1_conv"]),
    ("conv2_block1_2_conv", "Conv2D", ["conv2_block1_1_relu"]),
    ("conv2_block1_0_conv", "Conv2D", ["pool1"]),
    ("conv2_block1_add", "Add", ["conv2_block1_2_conv", "conv2_block1_0_conv"]),
    ("conv2_block1_out", "Activation", ["conv2_block1_add"]),
]


def labels(frame, layers_only=True, run=DEEP_RUN):
    sel = f"#overview section[data-run={run}] .heatmap-label" + (":not(.block-row)" if layers_only else "")
    return frame.locator(sel).evaluate_all("(els) => els.map((e) => e.dataset.name)")


def label_metrics(frame):
    """Per layer label: its font size and whether its text is cut (ellipsis)."""
    return frame.locator(f"#overview section[data-run={DEEP_RUN}] .heatmap-label").evaluate_all(
        """(els) => els.map((e) => {
             const cs = getComputedStyle(e);
             const ctx = document.createElement('canvas').getContext('2d');
             ctx.font = `${cs.fontWeight} ${cs.fontSize} ${cs.fontFamily}`;  // the text's full width, unclipped
             const room = e.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
             return {size: parseFloat(cs.fontSize), cut: ctx.measureText(e.textContent).width > room + 0.5,
                     hidden: e.parentElement.classList.contains('hidden-labels')};
           })"""
    )


def test_deep_filter_leaves_only_matching_rows_with_readable_labels(page, deep):
    tb, layers, _ = deep
    frame = open_dashboard(page, tb.base)
    assert len(labels(frame)) == len(layers)  # 428 rows, in blocks, readable by default (the map scrolls)
    assert all(m["size"] >= 9 and not m["hidden"] for m in label_metrics(frame))
    frame.locator("body[data-findings=ready]").wait_for(timeout=TIMEOUT)
    frame.locator("#layer-filter").fill("conv4_block[4-6]_")
    frame.locator(".filter-note").first.wait_for(timeout=TIMEOUT)
    expected = [n for n, *_ in layers if re.search("conv4_block[4-6]_", n, re.I)]
    assert labels(frame) == expected and len(expected) == 21
    assert frame.locator(f"#overview section[data-run={DEEP_RUN}] .heatmap-label.block-row").all_text_contents() == [
        f"▾ conv4_block{b} (7)" for b in (4, 5, 6)
    ]
    assert (
        frame.locator("#overview .heatmap-label[data-name=conv4_block5_2_conv]").get_attribute("data-severity")
        == "error"
    )
    metrics = label_metrics(frame)
    assert all(m["size"] >= 11 and not m["cut"] and not m["hidden"] for m in metrics), metrics
    shot(page, "deep_filter")
    assert not page.errors


def test_deep_hiding_normalisation_and_collapsing_blocks(page, deep):
    tb, layers, _ = deep
    frame = open_dashboard(page, tb.base)
    toggle = frame.locator(".category-toggle[data-category=normalization]")
    bn = [n for n, cls, *_ in layers if cls == "BatchNormalization"]
    assert toggle.locator(".count").inner_text() == str(len(bn)) == "121"
    requests = plugin_requests(page)
    toggle.click()
    frame.locator(".category-toggle[data-category=normalization][aria-pressed=false]").wait_for(timeout=TIMEOUT)
    shown = labels(frame)
    assert set(shown) == {n for n, *_ in layers} - set(bn) and len(shown) == len(layers) - 121
    assert requests == []  # hiding redraws from the fetched data
    frame.locator("#collapse-all").click()
    frame.locator("#overview .heatmap-label.block-row").first.wait_for(timeout=TIMEOUT)
    blocks = list(dict.fromkeys(layout.assign_blocks([n for n, *_ in layers])))
    all_labels = labels(frame, layers_only=False)
    assert all_labels == blocks and len(blocks) == 65  # one row per block
    assert frame.locator("#overview .heatmap-label:not(.block-row)").count() == 0  # both runs
    assert labels(frame, layers_only=False, run="resnet") == ["pool1", "conv2_block1"]
    assert "max of zero_fraction over the block's shown layers" in frame.locator(".block-legend").first.inner_text()
    # a block row expands on click; a layer row still opens Layer detail
    frame.locator("#overview .heatmap-label.block-row", has_text="conv3_block2 ").click()
    frame.locator("body[data-findings=ready]").wait_for(timeout=TIMEOUT)
    assert (
        frame.locator("#overview .heatmap-label.block-row[data-name=conv3_block2]").get_attribute("data-severity")
        == "error"
    )
    shot(page, "deep_blocks")
    frame.locator("#overview .heatmap-label[data-name=conv3_block2_1_relu]").click()
    frame.locator("body[data-view=layer][data-status=ready]").wait_for(timeout=TIMEOUT)
    assert frame.locator("#layer-title").inner_text() == "conv3_block2_1_relu"
    assert not page.errors


def test_deep_marked_rows_equal_diagnose_findings(page, deep):
    tb, layers, findings = deep
    frame = open_dashboard(page, tb.base)
    frame.locator("body[data-findings=ready][data-status=ready]").wait_for(timeout=TIMEOUT)
    rank = {"error": 0, "warning": 1, "info": 2}
    expected = {}
    for f in findings.query("run == @DEEP_RUN").to_dict("records"):
        if f["layer"] not in expected or rank[f["severity"]] < rank[expected[f["layer"]]]:
            expected[f["layer"]] = f["severity"]
    assert set(DEEP_FAULTS) | set(DEAD_UNITS) <= set(expected)  # the planted faults are found
    marked = frame.locator(
        f"#overview section[data-run={DEEP_RUN}] .heatmap-label[data-severity]:not(.block-row)"
    ).evaluate_all("(els) => Object.fromEntries(els.map((e) => [e.dataset.name, e.dataset.severity]))")
    assert marked == expected
    frame.locator("#findings-only").check()
    frame.locator(".filter-note").first.wait_for(timeout=TIMEOUT)
    assert set(labels(frame)) == set(expected)
    switch(frame, "health")
    groups = frame.locator("details.finding-group")
    kinds = groups.evaluate_all("(els) => els.map((e) => e.dataset.kind)")
    assert sorted(kinds) == sorted(set(findings["kind"]))
    assert frame.locator("table.findings tr.finding").count() == len(findings)
    for block in frame.locator("details.finding-block").all():  # rows sorted by first step
        firsts = [int(t) for t in block.locator("tr.finding td:nth-child(5)").all_text_contents()]
        assert firsts == sorted(firsts)
    shot(page, "deep_health")
    frame.locator("#severity-filter input[value=error]").uncheck()
    assert frame.locator("tr.finding[data-severity=error]").count() == 0
    assert frame.locator("tr.finding").count() == int((findings["severity"] != "error").sum())
    assert not page.errors


def test_deep_state_survives_a_reload(page, deep):
    tb, layers, _ = deep
    frame = open_dashboard(page, tb.base)
    frame.locator("#layer-filter").fill("conv5")
    frame.locator(".category-toggle[data-category=activation]").click()
    frame.locator("#sort-select").select_option("depth")
    frame.locator("#overview .heatmap-label.block-row", has_text="conv5_block3 ").click()
    before = labels(frame, layers_only=False)
    assert "conv5_block3" in before and "conv5_block3_1_conv" not in before
    assert [n for n in before if n.startswith("conv5_block1_")] == [
        "conv5_block1_0_bn",
        "conv5_block1_1_conv",
        "conv5_block1_1_bn",
        "conv5_block1_2_conv",
        "conv5_block1_concat",
    ]
    page.reload()
    frame = page.frame_locator(IFRAME)
    frame.locator("body[data-status=ready]").wait_for(timeout=TIMEOUT)
    assert frame.locator("#layer-filter").input_value() == "conv5"
    assert frame.locator(".category-toggle[data-category=activation]").get_attribute("aria-pressed") == "false"
    assert frame.locator("#sort-select").input_value() == "depth"
    assert labels(frame, layers_only=False) == before
    assert not page.errors


def test_deep_sort_by_depth_and_by_statistic(page, deep):
    tb, layers, _ = deep
    frame = open_dashboard(page, tb.base)
    model_order = [n for n, *_ in RESNET_BLOCK]
    assert labels(frame, run="resnet") == model_order
    frame.locator("#sort-select").select_option("depth")  # the longest path from the input, through `inputs`
    assert labels(frame, run="resnet") == [
        "pool1",
        "conv2_block1_1_conv",
        "conv2_block1_0_conv",
        "conv2_block1_1_relu",
        "conv2_block1_2_conv",
        "conv2_block1_add",
        "conv2_block1_out",
    ]
    frame.locator("#layer-filter").fill("^conv2_block1_")
    frame.locator("#sort-select").select_option("stat")  # zero_fraction, highest first
    names = labels(frame)
    assert set(names) == {n for n, *_ in layers if n.startswith("conv2_block1_")}
    frame.locator("#layer-filter").fill("^conv3_block2_")
    assert labels(frame)[0] == "conv3_block2_1_relu"  # the dead layer: zero_fraction 1
    frame.locator("#sort-select").select_option("model")
    assert labels(frame)[0] == "conv3_block2_0_bn"
    # zoom: every row fits, labels are hidden under 9 px but a row still shows its full name on hover
    frame.locator("#layer-filter").fill("")
    frame.locator("#fit-rows").click()
    canvas = frame.locator("#overview .heatmap-canvas").first
    box = canvas.bounding_box()
    assert box["height"] <= 600
    canvas.hover(position={"x": box["width"] / 2, "y": 1})
    assert "layer: " in frame.locator(".tooltip").inner_text() or "block: " in frame.locator(".tooltip").inner_text()
    assert not page.errors
