"""The dashboard's incidents, end to end: real `fit` logs (the find-the-bug MLP: a dying-ReLU run and a
healthy one), a real `tensorboard`, Debian's chromium through playwright. The Health view opens with the
incidents, each expandable into its findings; the Overview marks the root layer; `/incidents` answers what
`tfprobe.incidents` says."""

from __future__ import annotations

import json
import os
import urllib.error

import pytest
from helpers import chromium
from helpers.chromium import IFRAME, TIMEOUT
from helpers.examples import load_example
from helpers.tensorboard import artifacts_dir, http_get, tensorboard_server

from tfprobe import metadata

pytestmark = chromium.MARKS


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    import keras

    import tfprobe

    bug = load_example("find_the_bug")
    root = tmp_path_factory.mktemp("incident_logs")
    (x, y), _ = bug.load_data(0)
    for run, deviation in (("dying_relu", bug.RUNS["dying_relu"]), ("healthy", {})):
        keras.utils.set_random_seed(0)
        probe = tfprobe.LayerProbe(
            root / run, record_freq=1, log_freq=5, histogram_freq=0, gradients=True, alerts=False
        )
        bug.build_model(**deviation).fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[probe])
    expected = tfprobe.incidents(root)
    with tensorboard_server(root) as tb:
        tb.wait_until(lambda b: {r["name"] for r in b["runs"]} == {"dying_relu", "healthy"})
        yield tb, expected


def test_incidents_route_is_tfprobe_incidents(served):
    tb, expected = served
    status, body = http_get(tb.base + "/data/plugin/tfprobe/incidents?run=dying_relu&run=healthy")
    got = json.loads(body)
    assert status == 200 and len(expected) == 1
    assert [(i["run"], i["root_layer"], i["root_kind"], i["first_step"], i["findings"]) for i in got["incidents"]] == [
        (r.run, r.root_layer, r.root_kind, r.first_step, r.findings) for r in expected.itertuples()
    ]
    assert sum(f["incident"] == 1 for f in got["findings"]) == expected.findings[0]
    with pytest.raises(urllib.error.HTTPError) as e:
        http_get(tb.base + "/data/plugin/tfprobe/incidents")
    assert e.value.code == 400
    with pytest.raises(urllib.error.HTTPError) as e:
        http_get(tb.base + "/data/plugin/tfprobe/incidents?run=ghost")
    assert e.value.code == 404


def test_health_opens_with_incidents_and_overview_marks_the_root(page, served):
    tb, expected = served
    page.goto(tb.base + "/#" + metadata.PLUGIN_NAME)
    frame = page.frame_locator(IFRAME)
    frame.locator("body[data-status=ready]").wait_for(timeout=TIMEOUT)
    # the Overview: the root layer of the dying-ReLU run is marked, nothing in the healthy run
    frame.locator("#overview .heatmap-label.root-cause").first.wait_for(timeout=TIMEOUT)
    roots = frame.locator("#overview .heatmap-label.root-cause").evaluate_all(
        "(els) => els.map((e) => [e.closest('section').dataset.run, e.dataset.name, e.dataset.root])"
    )
    assert roots == [["dying_relu", "hidden2", "error"]]
    page.screenshot(path=os.path.join(artifacts_dir(), "browser_incidents_overview.png"))

    frame.locator("nav.tabs button[data-view=health]").click()
    frame.locator("body[data-view=health][data-status=ready]").wait_for(timeout=TIMEOUT)
    incidents = frame.locator("#incidents .incident")
    assert incidents.count() == 1
    first = frame.locator("#health > *").first
    assert first.get_attribute("id") == "incidents"  # the view opens with them, before the findings
    inc = incidents.first
    assert inc.get_attribute("data-root") == "hidden2" and inc.get_attribute("data-kind") == "dead_layer"
    assert "Fix: hidden2 outputs zeros" in inc.inner_text()
    assert not inc.locator("tr.incident-finding").first.is_visible()  # collapsed until asked
    inc.locator("details.incident-members > summary").click()
    rows = inc.locator("tr.incident-finding")
    rows.first.wait_for(state="visible", timeout=TIMEOUT)
    assert rows.count() == int(expected.findings[0])
    kinds = sorted(set(rows.evaluate_all("(els) => els.map((e) => e.dataset.kind)")))
    assert kinds == sorted(expected.kinds[0])
    page.screenshot(path=os.path.join(artifacts_dir(), "browser_incidents_health.png"))
    # clicking the root layer opens it
    inc.locator("button.root-layer").click()
    frame.locator("body[data-view=layer][data-status=ready]").wait_for(timeout=TIMEOUT)
    assert frame.locator("#layer-title").inner_text() == "hidden2"
    assert not page.errors
