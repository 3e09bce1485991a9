"""The dashboard's Looks view and its routes, against a real `tensorboard` and Debian's chromium.

Run `train` holds synthetic statistics and real `LooksAnalysis` images of a small CNN at steps
10, 20, 30 (its weights changed between steps, so the images differ); run `plain` only statistics.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse

import keras
import numpy as np
import pytest
from helpers import chromium, synthetic
from helpers.chromium import console_errors, open_dashboard, shot, switch
from helpers.tensorboard import http_get, tensorboard_server

from tfprobe import metadata
from tfprobe.looks import LooksAnalysis
from tfprobe.reference import ReferenceData

STEPS = [10, 20, 30]


def write_looks(path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv1"),
            keras.layers.Conv2D(6, 3, activation="relu", name="conv2"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    rng = np.random.default_rng(0)
    reference = ReferenceData((rng.random((3, 12, 12, 1), dtype=np.float32), np.array([0, 1, 2])))
    looks = LooksAnalysis(path, examples=3)
    for step in STEPS:
        model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
        looks.run(model, reference, step)
    looks.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("looks_logs")
    layers = [
        ("conv1", "Conv2D", "activation", [None, 10, 10, 4], None),
        ("conv2", "Conv2D", "activation", [None, 8, 8, 6], None),
    ]
    synthetic.write_run(root / "train", layers, STEPS)
    synthetic.write_run(root / "plain", layers, STEPS)
    write_looks(root / "train")
    with tensorboard_server(root) as tb:
        tb.wait_until(lambda b: {r["name"] for r in b["runs"]} >= {"train", "plain"})
        tb.wait_until(lambda b: b.get("steps") == STEPS, route="/data/plugin/tfprobe/looks?run=train")
        yield tb


def get(server, route, **params):
    try:
        return http_get(f"{server.base}/data/plugin/tfprobe/{route}?{urllib.parse.urlencode(params)}")
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_looks_routes_list_the_images_and_serve_png(server):
    status, body = get(server, "looks", run="train")
    looks = json.loads(body)
    assert status == 200 and looks["examples"] == [0, 1, 2] and looks["steps"] == STEPS
    assert looks["gradcam_layers"] == ["conv2"] and looks["feature_layers"] == ["conv1", "conv2"]
    assert looks["predictions"]["1"]["true_class"] == [[s, 1.0] for s in STEPS]
    status, body = get(server, "looks", run="plain")  # statistics, no looks: empty, not an error
    assert status == 200 and json.loads(body)["images"] == [] and json.loads(body)["steps"] == []
    tag = metadata.looks_tag(1, "gradcam", "conv2")
    pngs = [get(server, "looks_image", run="train", tag=tag, step=s) for s in (10, 25, 30)]
    assert all(status == 200 and png.startswith(b"\x89PNG") for status, png in pngs)
    assert (
        pngs[0][1] != pngs[2][1] and pngs[1][1] == get(server, "looks_image", run="train", tag=tag, step=20)[1]
    )  # the newest at or before step 25
    status, _ = get(server, "looks_image", run="train", tag=metadata.looks_tag(0, "input"), step=30)
    assert status == 200  # the input is written once, at the first step
    for params, code, message in [
        ({"run": "nope"}, 404, "has no tfprobe data and no looks images"),
        ({"run": "train", "tag": "tfprobe/conv1/mean", "step": 10}, 400, "`tag` must be a looks image tag"),
        ({"run": "train", "tag": tag, "step": "x"}, 400, "`step` must be an integer"),
        ({"run": "train", "tag": tag, "step": 5}, 404, "no value at or before step 5"),
        ({"run": "nope", "tag": tag}, 404, "has no image"),
    ]:
        route = "looks" if "tag" not in params else "looks_image"
        status, body = get(server, route, **params)
        assert status == code and message in body.decode(), (params, status, body)


@pytest.mark.browser
@chromium.needs_chromium
def test_looks_view_images_load_and_the_slider_changes_them(server, page):
    console = console_errors(page)
    frame = open_dashboard(page, server.base)
    switch(frame, "looks")
    run = frame.locator('.looks-run[data-run="train"]')

    def wait_loaded():
        for cls in ("looks-input", "looks-gradcam", "looks-gradcam-true", "looks-cam", "looks-features"):
            image = run.locator(f"img.{cls}")
            assert image.evaluate("async (img) => { await img.decode(); return img.naturalWidth > 0; }"), cls

    wait_loaded()
    gradcam = run.locator("img.looks-gradcam")
    assert "step=30" in gradcam.get_attribute("src")
    assert run.locator(".looks-caption").text_content().startswith("step 30: predicted class")
    run.locator("input.looks-step").evaluate("(s) => { s.value = '0'; s.dispatchEvent(new Event('input')); }")
    assert "step=10" in gradcam.get_attribute("src")
    wait_loaded()
    assert run.locator(".looks-caption").text_content().startswith("step 10: predicted class")
    run.locator("select.looks-example").select_option("2")
    run.locator("select.looks-layer").select_option("conv1")
    wait_loaded()
    features = run.locator("img.looks-features").get_attribute("src")
    assert "example_02%2Ffeatures%2Fconv1" in features and "step=10" in features
    assert frame.locator("#looks .hint").filter(has_text="No looks images in this run").count() == 1  # plain
    shot(page, "looks")
    assert page.errors == [] and console == []
