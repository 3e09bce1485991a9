"""The Gradient flow view (and the gradient statistics in Overview and Layer detail) against a real
`tensorboard` and Debian's chromium, on real `LayerProbe(gradients=True)` logs.

Run `grads` is written by the real recorder (a small CNN, every step recorded and logged); run
`plain` holds synthetic statistics without gradients.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from helpers import chromium, synthetic
from helpers.chromium import TIMEOUT, open_dashboard, plugin_requests, shot, switch
from helpers.tensorboard import tensorboard_server

pytestmark = chromium.MARKS

_RECORDER = textwrap.dedent(
    """
    import sys, numpy as np, keras, tfprobe
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="sigmoid", name="conv"),
        keras.layers.MaxPooling2D(2, name="pool"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(8, activation="sigmoid", name="dense1"),
        keras.layers.Dense(8, activation="sigmoid", name="dense2"),
        keras.layers.Dense(3, name="logits"),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.rand(48, 8, 8, 1).astype("float32")
    y = np.random.randint(0, 3, 48)
    probe = tfprobe.LayerProbe(sys.argv[1], record_freq=1, log_freq=1, gradients=True)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[probe])
    """
)
STEPS = list(range(1, 13))  # 6 steps per epoch, 2 epochs, a window per step
WEIGHTED = ["conv", "dense1", "dense2", "logits"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("gradient_logs")
    proc = subprocess.run(
        [sys.executable, "-c", _RECORDER, str(root / "grads")], timeout=300, capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.fail(f"the real recorder failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}", pytrace=False)
    synthetic.write_run(root / "plain", [("dense", "Dense", "activation", [None, 4], None)], [1, 2, 3])
    with tensorboard_server(root) as tb:
        tb.wait_until(lambda b: {r["name"] for r in b["runs"]} >= {"grads", "plain"})
        tb.wait_until(
            lambda b: b["steps"][-1:] == STEPS[-1:], route="/data/plugin/tfprobe/overview?run=grads&stat=update_ratio"
        )
        yield tb


def drawn(frame, stat):
    return json.loads(frame.locator(f"#grad-charts canvas[data-stat={stat}]").get_attribute("data-points"))


def set_slider(frame, index):
    frame.locator("#grad-step").evaluate(
        f"(e) => {{ e.value = '{index}'; e.dispatchEvent(new Event('input', {{bubbles: true}})); }}"
    )


def test_gradient_flow_slider_and_play_redraw_without_requests(page, server):
    console = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    requests = plugin_requests(page)
    frame = open_dashboard(page, server.base)
    switch(frame, "gradients")
    assert any("stat=grad_rms" in u for u in requests) and any("stat=update_ratio" in u for u in requests)
    # both charts, the newest step first; the run without gradients says so
    label = frame.locator("#grad-step-label")
    assert label.text_content() == f"step {STEPS[-1]}"
    assert frame.locator("#grad-charts canvas").count() == 2
    rms, ratio = drawn(frame, "grad_rms"), drawn(frame, "update_ratio")
    assert len(rms) == 1 and len(rms[0]) == 6  # one run with gradients; every recorded layer
    assert len(ratio[0]) == len(WEIGHTED)  # only the layers with weights
    assert "gradients=True" in frame.locator(".no-gradients").text_content()
    before = len(requests)
    set_slider(frame, 0)
    assert label.text_content() == f"step {STEPS[0]}"
    assert frame.locator("#grad-charts").get_attribute("data-step") == str(STEPS[0])
    assert drawn(frame, "grad_rms") != rms and drawn(frame, "update_ratio") != ratio
    frame.locator("#grad-play").click()
    frame.locator(f"#grad-charts[data-step='{STEPS[-1]}']").wait_for(timeout=TIMEOUT)
    assert drawn(frame, "grad_rms") == rms
    assert frame.locator("#grad-play").text_content() == "▶ play"  # stopped at the newest step
    # the layer filter applies without a request
    frame.locator("#layer-filter").fill("dense")
    frame.locator("#grad-charts canvas").first.wait_for(timeout=TIMEOUT)
    assert [len(s) for s in drawn(frame, "grad_rms")] == [2]
    page.wait_for_timeout(300)
    assert requests[before:] == []
    assert not page.errors and not console


def test_runs_of_different_depth_share_one_layer_axis(page, server):
    frame = open_dashboard(page, server.base)
    merge = frame.locator("body").evaluate(
        "async () => (await import('./static/views/gradients.js')).mergeOrders("
        "[['conv1', 'dense1', 'logits'], ['conv1', 'dense1', 'dense2', 'dense3', 'logits'], ['stem', 'logits']])"
    )
    assert merge == ["stem", "conv1", "dense1", "dense2", "dense3", "logits"]


def test_gradient_statistics_in_overview_and_layer_detail(page, server):
    frame = open_dashboard(page, server.base)
    options = frame.locator("#stat-select option").all_text_contents()
    assert {"grad_rms", "grad_zero_fraction", "weight_norm", "update_ratio"} <= set(options)
    frame.locator("#stat-select").select_option("grad_rms")
    frame.locator("body[data-view=overview][data-status=ready]").wait_for(timeout=TIMEOUT)
    block = frame.locator("section.run-block[data-run=grads]")
    assert block.locator(".heatmap-label").count() == 6
    frame.locator("#overview-log").check()
    assert "(log)" in block.locator(".legend").text_content()
    block.locator(".heatmap-label", has_text="dense1").first.click()
    frame.locator("body[data-view=layer][data-status=ready]").wait_for(timeout=TIMEOUT)
    charts = frame.locator("#layer-charts .chart-card")
    assert {"grad_rms", "update_ratio"} <= {charts.nth(i).get_attribute("data-stat") for i in range(charts.count())}
    # the first step of the fit has histograms: the activation's, and its gradient's next to it
    panels = frame.locator(".hist-block .hist-panel")
    assert [panels.nth(i).get_attribute("data-quantity") for i in range(panels.count())] == ["activation", "gradient"]
    assert panels.locator(".heatmap-canvas").count() == 2
    assert "dL/da" in panels.nth(1).locator("h4").text_content()
    panels.nth(1).scroll_into_view_if_needed()
    shot(page, "layer_gradient_histogram")
    assert not page.errors
