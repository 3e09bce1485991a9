"""The dashboard's Representations view: its route over real event files, and the view in chromium."""

from __future__ import annotations

import json
import urllib.parse

import keras
import numpy as np
import pytest
from helpers import chromium
from helpers.chromium import TIMEOUT, open_dashboard, shot, switch
from helpers.tensorboard import tensorboard_server
from sklearn.datasets import load_digits
from tensorboard.backend import application
from tensorboard.backend.event_processing import data_provider as mdp
from tensorboard.backend.event_processing import plugin_event_multiplexer as pem
from tensorboard.plugins import base_plugin
from werkzeug.test import Client

import tfprobe
from tensorboard_plugin_tfprobe import loader as loader_module
from tfprobe import metadata

PREFIX = f"/data/plugin/{metadata.PLUGIN_NAME}"
LAYERS = ["h1", "h2", "logits"]
DEPTH_STATS = ["effective_rank", "probe_accuracy", "label_information", "stable_rank"]
EPOCHS = 3


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("repr_logs")
    d = load_digits()
    x, y = (d.data / 16.0).astype("float32"), d.target
    reference = {"reference_data": (x[:300], y[:300]), "reference_freq": 1}
    for run, extra in (("ref", reference), ("plain", {}), ("ref_b", {**reference, "reference_freq": 3})):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Dense(32, activation="relu", name="h1"),
                keras.layers.Dense(16, activation="relu", name="h2"),
                keras.layers.Dense(10, name="logits"),
            ]
        )
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(
            x[300:900],
            y[300:900],
            batch_size=100,
            epochs=EPOCHS,
            verbose=0,
            callbacks=[tfprobe.LayerProbe(root / run, log_freq=3, **extra)],
        )
    return root


@pytest.fixture(scope="module")
def client(logdir):
    guidance = {name: 0 for name in loader_module.default_samples()}
    mux = pem.EventMultiplexer(tensor_size_guidance=guidance)
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    provider = mdp.MultiplexerDataProvider(mux, str(logdir))
    plugin = loader_module.TfprobeLoader().load(base_plugin.TBContext(data_provider=provider, sampling_hints={}))
    return Client(application.TensorBoardWSGI([plugin], data_provider=provider))


def get(client, **params):
    r = client.get(f"{PREFIX}/representations?{urllib.parse.urlencode(params, doseq=True)}")
    return r.status_code, r.get_data(as_text=True)


def test_route_returns_measures_and_matrices_per_run(client):
    status, body = get(client, run=["ref", "plain"])
    assert status == 200
    data = json.loads(body)
    ref, plain = data["runs"]
    assert ref["layers"] == LAYERS and ref["steps"] == [6, 12, 18]
    assert ref["elements"] == {"h1": 32, "h2": 16, "logits": 10}
    assert set(ref["measures"]) == set(metadata.REPRESENTATION_STATS)
    assert [p[0] for p in ref["measures"]["probe_accuracy"]["h2"]] == [6, 12, 18]
    assert [p[0] for p in ref["measures"]["cka_drift"]["h2"]] == [12, 18]
    assert ref["cka"]["layers"] == LAYERS and ref["cka"]["steps"] == [6, 12, 18]
    matrix = np.array(ref["cka"]["matrices"][-1])
    assert matrix.shape == (3, 3) and np.allclose(np.diag(matrix), 1.0, atol=1e-3)
    assert plain["steps"] == [] and plain["cka"]["steps"] == []


@pytest.mark.parametrize(
    "params, code, message",
    [
        ({}, 400, "`run` is required"),
        ({"run": "ghost"}, 404, "'ghost'"),
    ],
)
def test_route_errors_name_the_argument(client, params, code, message):
    status, body = get(client, **params)
    assert status == code and message in body


@pytest.mark.browser
@pytest.mark.slow
@chromium.needs_chromium
def test_representations_view_in_chromium(logdir, page):
    with tensorboard_server(logdir) as tb:
        tb.wait_until(lambda b: {r["name"] for r in b["runs"]} == {"ref", "plain", "ref_b"})
        page.set_viewport_size({"width": 1280, "height": 1400})
        frame = open_dashboard(page, tb.base)
        switch(frame, "representations")
        view = frame.locator("#representations")
        assert view.locator(".cka-block[data-run=ref] .heatmap-label").all_text_contents() == LAYERS
        assert view.locator(".cka-block[data-run=ref] .cka-step-label").inner_text() == "step 18"
        stats = view.locator(".depth-card").evaluate_all("(cards) => cards.map((c) => c.dataset.stat)")
        assert stats == DEPTH_STATS * 2  # ref, then ref_b
        assert view.locator(".depth-axis").first.inner_text() == (
            "0: h1 (32 values/example) · 1: h2 (16 values/example) · 2: logits (10 values/example)"
        )
        assert view.locator(".drift-card canvas").count() == 1  # ref_b has a single reference step: no drift
        assert view.locator(".no-reference").count() == 1  # the run without reference data says so
        overlay = view.locator(".runs-overlay .overlay-card")  # ref and ref_b, each at its latest step
        assert overlay.evaluate_all("(cards) => cards.map((c) => c.dataset.stat)") == DEPTH_STATS[:3]
        assert overlay.first.locator(".legend-item").all_text_contents() == ["ref (step 18)", "ref_b (step 18)"]
        view.locator(".cka-block[data-run=ref] .cka-step").evaluate(
            "(e) => { e.value = '0'; e.dispatchEvent(new Event('input', {bubbles: true})); }"
        )
        assert view.locator(".cka-block[data-run=ref] .cka-step-label").inner_text() == "step 6"
        assert view.locator(".cka-block[data-run=ref] .heatmap-canvas").count() == 1  # redrawn in place
        frame.locator("#layer-filter").fill("h")  # the filter applies: logits is hidden
        frame.locator(".cka-block .heatmap-label").first.wait_for(timeout=TIMEOUT)
        assert view.locator(".cka-block[data-run=ref] .heatmap-label").all_text_contents() == ["h1", "h2"]
        shot(page, "representations", full_page=True)
        assert not page.errors
