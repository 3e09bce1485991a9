"""The healthy zoo: real architectures, freshly built (the first window is the first step) and after
3 steps of SGD on synthetic data, must get **no warning and no error** from `tfprobe.diagnose`.

The small models and MobileNetV2 (alpha 0.35, 32x32) run in the default suite; the twelve
`keras.applications` models are marked `slow`:

    python -m pytest -m slow tests/findings/test_zoo_healthy.py

The slow target also trains `benchmarks/overhead.py`'s reference CNN on learnable data (sklearn's digits) for
320 steps and requires the live alerts silent (on that benchmark's noise with random labels they are true:
docs/guide/incidents.md).

Depth findings need the graph: where the recorder does not write `inputs` yet, `zoo.with_graph` fills
it in from the Keras graph (what the recorder is to write).
"""

from __future__ import annotations

import pytest
from helpers.zoo import (
    APPLICATIONS,
    application,
    conv1d_audio,
    not_info,
    recurrent_text,
    run_healthy,
    small_cnn,
    transformer_block,
)

keras = pytest.importorskip("keras")
L = keras.layers


def assert_healthy(build, tmp_path):
    findings, _ = run_healthy(build, tmp_path / "run")
    bad = not_info(findings)
    assert bad.empty, bad[["layer", "kind", "severity", "message"]].to_string()
    live = findings.attrs["live_incidents"]  # the probe's alerts while training stay silent too
    assert live.empty, live[["root_layer", "root_kind", "summary"]].to_string()


FAST = [small_cnn, transformer_block, recurrent_text, conv1d_audio, application("MobileNetV2", 32, alpha=0.35)]
SLOW = APPLICATIONS


@pytest.mark.parametrize("build", FAST, ids=lambda b: b.__name__)
def test_healthy_model_has_no_warning(tmp_path, build):
    assert_healthy(build, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("build", SLOW, ids=lambda b: b.__name__)
def test_healthy_application_has_no_warning(tmp_path, build):
    assert_healthy(build, tmp_path)


@pytest.mark.slow
def test_the_overhead_benchmarks_cnn_learning_digits_is_silent(tmp_path):
    """`benchmarks/overhead.py`'s reference CNN, with its fit schedule (8 fits of 40 steps, batch 128, Adam),
    on sklearn's digits (8x8 upscaled to 32x32x3): it learns (loss below 0.5) and no alert is raised, no
    warning or error found. Its `dense` layer keeps 36-44% dead units (below the 50% threshold): the global
    average of ReLU maps is nearly the same vector for every image, so each unit is on or off for all."""
    import logging

    import numpy as np
    from sklearn.datasets import load_digits

    import tfprobe

    keras.utils.set_random_seed(0)
    digits = load_digits()
    images = (digits.images / 16.0).astype("float32").repeat(4, 1).repeat(4, 2)[..., None].repeat(3, -1)
    idx = np.random.default_rng(2).integers(0, len(images), 128 * 40)
    x, y = images[idx], digits.target[idx]
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            L.Conv2D(32, 3, activation="relu"),
            L.MaxPooling2D(),
            L.Conv2D(64, 3, activation="relu"),
            L.MaxPooling2D(),
            L.Conv2D(128, 3, activation="relu"),
            L.GlobalAveragePooling2D(),
            L.Dense(128, activation="relu"),
            L.Dense(10),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    probe = tfprobe.LayerProbe(tmp_path)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("tfprobe").addHandler(handler)
    try:
        for _ in range(8):
            history = model.fit(
                x, y, batch_size=128, epochs=1, steps_per_epoch=40, verbose=0, shuffle=False, callbacks=[probe]
            )
    finally:
        logging.getLogger("tfprobe").removeHandler(handler)
    assert history.history["loss"][-1] < 0.5
    assert not records and probe.incidents.empty, [r.getMessage() for r in records]
    bad = not_info(tfprobe.diagnose(str(tmp_path)))
    assert bad.empty, bad[["layer", "kind", "severity", "message"]].to_string()
