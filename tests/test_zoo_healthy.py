"""The healthy zoo: real architectures, freshly built (the first window is the first step) and after
3 steps of SGD on synthetic data, must get **no warning and no error** from `tfprobe.diagnose`.

The small models and MobileNetV2 (alpha 0.35, 32x32) run in the default suite; the twelve
`keras.applications` models are marked `slow`:

    python -m pytest -m slow tests/test_zoo_healthy.py

Depth findings need the graph: where the recorder does not write `inputs` yet, `zoo.with_graph` fills
it in from the Keras graph (what the recorder is to write).
"""

from __future__ import annotations

import pytest
from zoo import APPLICATIONS, application, not_info, run_healthy

keras = pytest.importorskip("keras")
L = keras.layers


def small_cnn():
    inp = keras.Input((32, 32, 3))
    x = inp
    for filters in (16, 32):
        x = L.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU()(x)
        x = L.MaxPooling2D()(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(10, activation="softmax", name="predictions")(x)), (32, 32, 3), None


def transformer_block():
    inp = keras.Input((16, 32))
    att = L.MultiHeadAttention(num_heads=4, key_dim=8, name="attention")(inp, inp)
    x = L.LayerNormalization(name="norm1")(L.Add(name="add1")([inp, att]))
    ff = L.Dense(32, name="ff2")(L.Dense(64, activation="relu", name="ff1")(x))
    x = L.LayerNormalization(name="norm2")(L.Add(name="add2")([x, ff]))
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, L.Dense(10, activation="softmax", name="predictions")(x)), (16, 32), None


def recurrent_text():
    inp = keras.Input((20,), dtype="int32")
    x = L.Embedding(1000, 32, name="embedding")(inp)
    x = L.LSTM(32, return_sequences=True, name="lstm")(x)
    x = L.GRU(32, name="gru")(x)
    return keras.Model(inp, L.Dense(10, activation="softmax", name="predictions")(x)), (20,), 1000


def conv1d_audio():
    inp = keras.Input((256, 1))
    x = L.MaxPooling1D(4)(L.Conv1D(16, 9, activation="relu", name="conv1")(inp))
    x = L.GlobalAveragePooling1D()(L.Conv1D(32, 9, activation="relu", name="conv2")(x))
    return keras.Model(inp, L.Dense(10, activation="softmax", name="predictions")(x)), (256, 1), None


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
