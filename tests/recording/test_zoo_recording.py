"""The recording zoo: on real architectures, `LayerProbe(record_freq=1)` records every floating output of
every layer and every operation that is not a layer (residual `add`s, `keras.ops.multiply`), with every
statistic tfprobe documents for it (the pooling statistics for pooling layers), finite for finite inputs,
and training computes bitwise what it computes without the probe (losses and every weight after two steps).

The series that must be there are read off the Keras graph (`zoo.graph_series`), not from what tfprobe
wrote, so a series tfprobe misses fails. The small models (masked sequences, attention with its scores,
`TimeDistributed`, a Conv1D audio model, a custom `train_step`) and MobileNetV3Small run in the default suite;
the twelve `keras.applications` families are marked `slow`:

    python -m pytest -m slow tests/recording/test_zoo_recording.py
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers.zoo import APPLICATIONS, application, fit_with_and_without_probe, graph_series, grappler_off

import tfprobe

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
L = keras.layers


def masked_sequences():
    """Embedding(mask_zero=True) + Bidirectional(LSTM) + GRU, the mask reaching a masked average pool."""
    inp = keras.Input((12,), dtype="int32")
    x = L.Embedding(50, 16, mask_zero=True, name="embedding")(inp)
    x = L.Bidirectional(L.LSTM(8, return_sequences=True), name="bilstm")(x)
    x = L.GRU(8, return_sequences=True, name="gru")(x)
    x = L.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inp, L.Dense(10, activation="softmax", name="predictions")(x)), (12,), 50


def attention_with_scores():
    """MultiHeadAttention returning its attention scores (a second output), residual `+`, a gate by `keras.ops`."""
    inp = keras.Input((8, 16))
    att, scores = L.MultiHeadAttention(num_heads=2, key_dim=8, name="attention")(inp, inp, return_attention_scores=True)
    x = L.LayerNormalization(name="norm")(inp + att)  # `inp + att`: an operation, not a layer
    x = keras.ops.multiply(x, keras.ops.sigmoid(L.Dense(16, name="gate")(x)))
    pooled = L.GlobalMaxPooling1D(name="pool")(x)
    summary = L.Flatten(name="scores")(scores)
    x = L.Concatenate(name="concat")([pooled, summary])
    return keras.Model(inp, L.Dense(10, activation="softmax", name="predictions")(x)), (8, 16), None


def time_distributed():
    """A clip of 4 frames: per-frame Conv2D, max pooling and global average pooling, then an LSTM."""
    inp = keras.Input((4, 12, 12, 3))
    x = L.TimeDistributed(L.Conv2D(8, 3, activation="relu"), name="conv")(inp)
    x = L.TimeDistributed(L.MaxPooling2D(), name="maxpool")(x)
    x = L.TimeDistributed(L.GlobalAveragePooling2D(), name="gap")(x)
    x = L.TimeDistributed(L.Dense(8, activation="tanh"), name="frame_dense")(x)
    x = L.LSTM(8, name="lstm")(x)
    return keras.Model(inp, L.Dense(10, activation="softmax", name="predictions")(x)), (4, 12, 12, 3), None


def conv1d_audio():
    """Raw audio: Conv1D, max and average pooling, global average pooling; a nested Sequential block."""
    inp = keras.Input((128, 1))
    x = L.MaxPooling1D(4, name="maxpool")(L.Conv1D(8, 9, activation="relu", name="conv1")(inp))
    block = keras.Sequential([L.Conv1D(16, 5, name="conv2"), L.ReLU(name="relu")], name="block")
    x = L.AveragePooling1D(2, name="avgpool")(block(x))
    x = L.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(inp, L.Dense(10, activation="softmax", name="predictions")(x)), (128, 1), None


class CustomStep(keras.Model):
    """A functional model with its own `train_step` (tape, loss, clipped gradients, its own loss tracker)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred)
        gradients = tape.gradient(loss, self.trainable_variables)
        gradients = [tf.clip_by_norm(g, 1.0) for g in gradients]
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}


def custom_train_step():
    inp = keras.Input((16,))
    h = L.Dense(32, activation="relu", name="d1")(inp)
    h = L.Dropout(0.2, name="dropout")(h)
    h = h + L.Dense(32, name="d2")(h)  # residual, an operation
    model = CustomStep(inp, L.Dense(10, activation="softmax", name="predictions")(h))
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    return model, (16,), None


# A real application in the default suite, small enough for it: MobileNetV3Small without its squeeze-excite
# gates and hard-swish (the full one, with its `x + 3.0` and `* (1 / 6)` operations, is in the slow target).
mobilenet_v3_small_minimalistic = application("MobileNetV3Small", 32, minimalistic=True)
mobilenet_v3_small_minimalistic.__name__ = "MobileNetV3Small_minimalistic"
FAST = [
    masked_sequences,
    attention_with_scores,
    time_distributed,
    conv1d_audio,
    custom_train_step,
    mobilenet_v3_small_minimalistic,
]


# The probe's observer effect (README, "Failures"): reading an intermediate result gives it a second consumer,
# and Grappler rewrites that need a single consumer no longer happen, so float32 results differ in the last
# bits (with Grappler off, `disable_meta_optimizer`, the runs are bitwise equal). Both runs of these models,
# with and without the probe, turn those rewrites off:
OBSERVER_EFFECT = {
    # the residual `h + d2(h)` after a linear Dense: the MatMul + BiasAdd + Add fusion (remapper)
    "custom_train_step": ("remapping",),
    # MobileNetV3Small (measured): BatchNormalization's arithmetic and the constant folding of the scalar
    # chains (`Rescaling`, `ReLU(6)(x + 3) * (1 / 6)`); the remapper's fusions for the other applications
    **{build.__name__: ("arithmetic_optimization", "constant_folding", "remapping") for build in APPLICATIONS},
    "MobileNetV3Small_minimalistic": ("arithmetic_optimization", "constant_folding", "remapping"),
    # InceptionV3 (measured): with the three off the losses are equal but the weights differ in the last bits,
    # until the dependency optimizer is off too (with Grappler off, or these four off, both runs are bitwise equal)
    "InceptionV3": ("arithmetic_optimization", "constant_folding", "remapping", "dependency_optimization"),
}


def assert_bitwise_equal(runs):
    """Losses (per step and in History) and every weight of the plain and the probed run are bitwise equal."""
    (losses_a, history_a, weights_a), (losses_b, history_b, weights_b) = runs
    assert len(losses_a) == 2 and all(math.isfinite(v) for v in losses_a), losses_a
    assert losses_a == losses_b, f"per-step losses differ: {losses_a} without the probe, {losses_b} with it"
    # the probe adds its incident counts to Keras' logs (`LayerProbe(alerts=True)`), and nothing else
    assert {k for k in history_b if k not in history_a} == {"tfprobe_warnings", "tfprobe_errors"}
    assert history_a == {k: v for k, v in history_b.items() if k in history_a}
    assert len(weights_a) == len(weights_b)
    differ = [i for i, (a, b) in enumerate(zip(weights_a, weights_b)) if not np.array_equal(a, b)]
    assert not differ, f"{len(differ)} of {len(weights_a)} weights differ after training with the probe"


def assert_everything_recorded(model, log_dir):
    """Every floating output of the graph is a series of each window, with every statistic, all finite."""
    expected = graph_series(model)
    df = tfprobe.read_logdir(log_dir)
    assert sorted(df.step.unique()) == [1, 2]
    missing, extra = set(expected) - set(df.layer), set(df.layer) - set(expected)
    assert not missing and not extra, f"series missing: {sorted(missing)}; not in the graph: {sorted(extra)}"
    for (series, step), group in df.groupby(["layer", "step"]):
        values = dict(zip(group.stat, group.value))
        assert set(values) == expected[series]["stats"], (series, step, sorted(set(values) ^ expected[series]["stats"]))
        assert values["nan_count"] == values["inf_count"] == 0, (series, step)
        infinite = {k: v for k, v in values.items() if not math.isfinite(v)}
        assert not infinite, f"{series} at step {step}: {infinite}"
    kinds = tfprobe.read_layers(log_dir).set_index("layer")["kind"]
    pooling = {s for s, e in expected.items() if e["pooling"]}
    assert {s for s, kind in kinds.items() if kind == "pooling"} == pooling
    return expected


def check_zoo_model(build, tmp_path):
    with grappler_off(*OBSERVER_EFFECT.get(build.__name__, ())):
        model, runs = fit_with_and_without_probe(build, tmp_path / "run")
    assert_everything_recorded(model, tmp_path / "run")
    assert_bitwise_equal(runs)


@pytest.mark.parametrize("build", FAST, ids=lambda b: b.__name__)
def test_zoo_model_is_recorded_whole_without_changing_training(tmp_path, build):
    check_zoo_model(build, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("build", APPLICATIONS, ids=lambda b: b.__name__)
def test_application_is_recorded_whole_without_changing_training(tmp_path, build):
    check_zoo_model(build, tmp_path)


def test_a_series_missing_from_the_logs_fails(tmp_path):
    """The expected series come from the Keras graph: a probe leaving out the operations (here the residual `+`)
    fails the check, naming what is missing."""
    with grappler_off(*OBSERVER_EFFECT["custom_train_step"]):
        model, _ = fit_with_and_without_probe(
            custom_train_step, tmp_path / "run", layers=lambda layer: isinstance(layer, keras.layers.Layer)
        )
    with pytest.raises(AssertionError, match=r"series missing: \['add"):
        assert_everything_recorded(model, tmp_path / "run")
