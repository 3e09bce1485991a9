"""LayerProbe with real `model.fit` on every kind of model a user has.

Every test trains a tiny model for a few steps and reads the event files back
with `tfprobe.read_logdir` / `tfprobe.read_layers`. Logged steps are checked
against `expected_steps`, which restates the documented windowing rule:

* the global step of a training step is `optimizer.iterations` after it;
* statistics are computed on steps with `step % record_freq == 0` and on the
  first step of every `fit`;
* a window closes at the first step (as seen by callbacks, i.e. after each
  `steps_per_execution` block) reaching a multiple of `log_freq`, and is
  written at that step if it recorded anything;
* a partial last window is written at the final step.
"""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import models
from helpers.checks import assert_not_instrumented, steps_of
from helpers.data import regression as data

import tfprobe
import tfprobe.kernels.graph
import tfprobe.kernels.native
import tfprobe.recording.recorder
from tfprobe.callback import LayerProbe
from tfprobe.recording.recorder import RecordingError

# Statistics that must be finite for any finite activation; the others are
# optional (hoyer_sparsity, saturation_fraction, pooling stats) or counts.
VALUE_STATS = ("mean", "std", "min", "max", "rms", "mean_abs", "zero_fraction", "near_zero_fraction")


# -- helpers ------------------------------------------------------------------------


def expected_steps(steps_per_epoch, epochs, record_freq, log_freq, spe=1, start=0):
    """Steps at which windows are written, per the documented rule (see module docstring)."""
    out, host, pending, recorded = [], start, False, False
    next_log = (start // log_freq + 1) * log_freq
    for _ in range(epochs):
        base = host
        for begin in range(0, steps_per_epoch, spe):
            new = base + min(begin + spe, steps_per_epoch)
            recorded |= any(s % record_freq == 0 or s == start + 1 for s in range(host + 1, new + 1))
            host, pending = new, True
            if host >= next_log:
                if recorded:
                    out.append(host)
                recorded = pending = False
                next_log = (host // log_freq + 1) * log_freq
    if pending and recorded:
        out.append(host)
    return out


def mlp(name="mlp"):
    return models.mlp(name=name)


def fit(model, x, y, probe=None, batch_size=8, epochs=2, **kwargs):
    callbacks = [probe] if probe is not None else []
    return model.fit(
        x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=False, callbacks=callbacks, **kwargs
    )


def stat(df, layer, name):
    """`{step: value}` of one statistic of one series."""
    sel = df[(df.layer == layer) & (df.stat == name)]
    return dict(zip(sel.step.astype(int), sel.value.astype(float)))


def assert_finite_stats(df, layers, stats=VALUE_STATS):
    for layer in layers:
        for name in stats:
            values = stat(df, layer, name)
            assert values, f"no {name!r} for {layer!r}"
            assert all(math.isfinite(v) for v in values.values()), (layer, name, values)
        for name in ("nan_count", "inf_count"):
            assert set(stat(df, layer, name).values()) == {0.0}, (layer, name)


@pytest.fixture
def policy():
    """Sets a global dtype policy for the test; always restores 'float32'."""

    def set_policy(name):
        keras.mixed_precision.set_global_policy(name)

    try:
        yield set_policy
    finally:
        keras.mixed_precision.set_global_policy("float32")


# -- custom layers --------------------------------------------------------------------


class Split(keras.layers.Layer):
    """Two floating outputs: the positive and the negative part of its input."""

    def call(self, x):
        return tf.nn.relu(x), -tf.nn.relu(-x)


class Join(keras.layers.Layer):
    def call(self, inputs):
        a, b = inputs
        return a + 2.0 * b


class WithCount(keras.layers.Layer):
    """Returns `(x, number of positive values per example as int32)`."""

    def call(self, x):
        return x, tf.reduce_sum(tf.cast(x > 0, tf.int32), axis=-1, keepdims=True)


class Sign(keras.layers.Layer):
    """An integer-valued output."""

    def call(self, x):
        return tf.cast(tf.sign(x), tf.int32)


class AddInt(keras.layers.Layer):
    """Adds integer side inputs (times 0) to a float tensor."""

    def call(self, inputs):
        x, *ints = inputs
        for i in ints:
            x = x + 0.0 * tf.reduce_sum(tf.cast(i, x.dtype), axis=-1, keepdims=True)
        return x


class Poison(keras.layers.Layer):
    """In training, column 0 becomes NaN and column 1 +Inf (`cols` columns each)."""

    def __init__(self, cols=1, **kwargs):
        super().__init__(**kwargs)
        self.cols = cols

    def call(self, x, training=None):
        if not training:
            return x
        col = tf.range(tf.shape(x)[-1])
        nan = tf.fill(tf.shape(x), tf.constant(np.nan, x.dtype))
        inf = tf.fill(tf.shape(x), tf.constant(np.inf, x.dtype))
        x = tf.where(col < self.cols, nan, x)
        return tf.where((col >= self.cols) & (col < 2 * self.cols), inf, x)


class Clean(keras.layers.Layer):
    """Replaces non-finite values by 0 (no NaN reaches the loss or the gradients)."""

    def call(self, x):
        return tf.where(tf.math.is_finite(x), x, tf.zeros_like(x))


class MaskNaN(keras.layers.Layer):
    """Sets the positions where `mask` is True to NaN (fixed mask, same in every step)."""

    def __init__(self, mask, **kwargs):
        super().__init__(**kwargs)
        self.mask = np.asarray(mask)

    def call(self, x):
        return tf.where(tf.constant(self.mask), tf.constant(np.nan, x.dtype), x)


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="subclassed")
        self.d1 = keras.layers.Dense(16, activation="relu", name="d1")
        self.d2 = keras.layers.Dense(4, name="out")

    def call(self, x):
        return self.d2(self.d1(x))


# -- model kinds -------------------------------------------------------------------


@pytest.mark.parametrize("record_freq, log_freq", [(1, 4), (3, 4), (5, 4), (2, 100)])
def test_sequential(tmp_path, record_freq, log_freq):
    x, y = data()
    model = mlp()
    model.compile("sgd", "mse")
    probe = LayerProbe(tmp_path / "run", record_freq=record_freq, log_freq=log_freq)
    fit(model, x, y, probe)  # 5 steps per epoch, 2 epochs
    assert int(model.optimizer.iterations) == 10

    df = tfprobe.read_logdir(tmp_path)
    assert set(df.layer) == {"d1", "d2", "out"}
    assert set(df.run) == {"run"}
    want = expected_steps(5, 2, record_freq, log_freq)
    assert steps_of(df) == want
    for layer in ("d1", "d2", "out"):
        assert steps_of(df, layer) == want
    assert_finite_stats(df, ["d1", "d2", "out"])
    assert min(stat(df, "d1", "min").values()) >= 0.0  # relu
    assert all(-1.0 <= v <= 1.0 for v in stat(df, "d2", "max").values())  # tanh
    assert stat(df, "d2", "saturation_fraction")  # bounded activation
    assert "saturation_fraction" not in set(df[df.layer == "d1"].stat)

    layers = tfprobe.read_layers(tmp_path)
    assert layers.layer.tolist() == ["d1", "d2", "out"]
    assert layers["class"].tolist() == ["Dense"] * 3
    assert layers.order.tolist() == [0, 1, 2]
    assert probe.series == ["d1", "d2", "out"]
    assert_not_instrumented(model)


def test_functional_with_two_output_layer(tmp_path):
    inp = keras.Input((8,))
    h = keras.layers.Dense(8, name="d1")(inp)
    pos, neg = Split(name="split")(h)
    out = keras.layers.Dense(4, name="out")(Join(name="join")([pos, neg]))
    model = keras.Model(inp, out, name="functional")
    model.compile("adam", "mse")
    x, y = data()
    fit(model, x, y, LayerProbe(tmp_path, record_freq=1, log_freq=3))

    df = tfprobe.read_logdir(tmp_path)
    assert set(df.layer) == {"d1", "split:0", "split:1", "join", "out"}
    assert steps_of(df) == expected_steps(5, 2, 1, 3) == [3, 6, 9, 10]
    assert_finite_stats(df, ["d1", "split:0", "split:1", "join", "out"])
    assert min(stat(df, "split:0", "min").values()) >= 0.0
    assert max(stat(df, "split:1", "max").values()) <= 0.0
    # relu(x) and -relu(-x) partition the values: their zero fractions add up to >= 1.
    z0, z1 = stat(df, "split:0", "zero_fraction"), stat(df, "split:1", "zero_fraction")
    assert all(z0[s] + z1[s] >= 1.0 - 1e-6 for s in z0)

    layers = tfprobe.read_layers(tmp_path).set_index("layer")
    assert layers.loc["split:0", "layer_path"] == layers.loc["split:1", "layer_path"] == "split"
    assert (layers.loc["split:0", "output"], layers.loc["split:1", "output"]) == (0, 1)
    assert layers.loc["split:1", "class"] == "Split"
    assert_not_instrumented(model)


def test_subclassed_model(tmp_path):
    model = Subclassed()
    model.compile("sgd", "mse")
    x, y = data()
    fit(model, x, y, LayerProbe(tmp_path, record_freq=2, log_freq=4))

    df = tfprobe.read_logdir(tmp_path)
    assert set(df.layer) == {"d1", "out"}
    assert steps_of(df) == expected_steps(5, 2, 2, 4) == [4, 8, 10]
    assert_finite_stats(df, ["d1", "out"])
    assert tfprobe.read_layers(tmp_path).layer.tolist() == ["d1", "out"]
    assert_not_instrumented(model)


def test_nested_frozen_backbone(tmp_path):
    b_in = keras.Input((6, 6, 2))
    b = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(b_in)
    b = keras.layers.Conv2D(4, 3, activation="relu", name="conv2")(b)
    backbone = keras.Model(b_in, b, name="backbone")
    backbone.trainable = False
    frozen = [w.copy() for w in backbone.get_weights()]

    inp = keras.Input((6, 6, 2))
    h = backbone(inp, training=False)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(3, name="head")(h)
    model = keras.Model(inp, out, name="classifier")
    model.compile("adam", "mse")
    x, y = data(in_shape=(6, 6, 2), out_dim=3)
    fit(model, x, y, LayerProbe(tmp_path, record_freq=1, log_freq=5))

    df = tfprobe.read_logdir(tmp_path)
    names = ["backbone/conv1", "backbone/conv2", "gap", "head"]
    assert set(df.layer) == set(names)
    assert steps_of(df) == [5, 10]
    assert_finite_stats(df, names)
    layers = tfprobe.read_layers(tmp_path)
    assert layers.layer.tolist() == names
    kinds = dict(zip(layers.layer, layers.kind))
    assert kinds["gap"] == "pooling" and kinds["backbone/conv1"] == "activation"
    assert layers.set_index("layer").loc["backbone/conv2", "class"] == "Conv2D"
    # Pooling statistics of a global average pool over 4x4 positions.
    assert all(v == pytest.approx(1 / 16) for v in stat(df, "gap", "size_ratio").values())

    for before, after in zip(frozen, backbone.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert_not_instrumented(model)


def test_shared_layer_called_twice(tmp_path):
    inp = keras.Input((8,))
    shared = keras.layers.Dense(8, activation="tanh", name="dense")
    h = shared(shared(inp))
    out = keras.layers.Dense(4, name="out")(h)
    model = keras.Model(inp, out)
    model.compile("sgd", "mse")
    x, y = data()
    fit(model, x, y, LayerProbe(tmp_path, record_freq=1, log_freq=5))

    df = tfprobe.read_logdir(tmp_path)
    assert set(df.layer) == {"dense", "dense#1", "out"}
    assert steps_of(df) == [5, 10]
    assert_finite_stats(df, ["dense", "dense#1", "out"])
    layers = tfprobe.read_layers(tmp_path).set_index("layer")
    assert layers.loc["dense", "call"] == 0 and layers.loc["dense#1", "call"] == 1
    assert layers.loc["dense#1", "layer_path"] == "dense"
    assert layers.loc["dense", "order"] < layers.loc["dense#1", "order"] < layers.loc["out", "order"]
    # Different calls, different statistics.
    assert stat(df, "dense", "mean") != stat(df, "dense#1", "mean")
    assert_not_instrumented(model)


@pytest.mark.parametrize("name", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(tmp_path, policy, name):
    policy(name)
    model = mlp()
    policy("float32")
    model.compile("adam", "mse")
    assert model.get_layer("d1").compute_dtype != "float32"
    x, y = data()
    y *= 0.1  # keep the float16 loss scale from overflowing
    probe = LayerProbe(tmp_path, record_freq=1, log_freq=4)
    fit(model, x, y, probe)

    df = tfprobe.read_logdir(tmp_path)
    assert set(df.layer) == {"d1", "d2", "out"}
    assert steps_of(df) == expected_steps(5, 2, 1, 4) == [4, 8, 10]
    assert steps_of(df)[-1] == int(model.optimizer.iterations)
    assert_finite_stats(df, ["d1", "d2", "out"])
    assert_not_instrumented(model)


def test_mixed_float16_skipped_steps_follow_optimizer_iterations(tmp_path, policy):
    """With a float16 loss scale that overflows, Keras skips optimizer steps
    (`optimizer.iterations` does not advance). The documented step of a window
    is `optimizer.iterations` after it, and a reused probe must keep steps
    increasing."""
    policy("mixed_float16")
    model = mlp()
    policy("float32")
    model.compile("sgd", "mse")
    x, _ = data()
    y = np.full((len(x), 4), 1000.0, "float32")  # the scaled gradients overflow float16 at first
    probe = LayerProbe(tmp_path, record_freq=1, log_freq=5)
    fit(model, x, y, probe, epochs=1)
    first = steps_of(tfprobe.read_logdir(tmp_path))
    iterations = int(model.optimizer.iterations)
    assert iterations < 5, "test premise: some steps were skipped"
    assert first[-1] == iterations

    fit(model, x, y, probe, epochs=1)
    df = tfprobe.read_logdir(tmp_path)
    for (layer, name), group in df.groupby(["layer", "stat"]):
        steps = group.step.tolist()
        assert steps == sorted(set(steps)), (layer, name, steps)
    assert steps_of(df)[-1] == int(model.optimizer.iterations)


@pytest.mark.parametrize("jit_compile", [True, False])
def test_jit_compile(tmp_path, jit_compile):
    model = mlp()
    model.compile("adam", "mse", jit_compile=jit_compile)
    assert model.jit_compile is jit_compile
    x, y = data()
    fit(model, x, y, LayerProbe(tmp_path, record_freq=2, log_freq=3, histogram_freq=2))

    df = tfprobe.read_logdir(tmp_path)
    assert set(df.layer) == {"d1", "d2", "out"}
    assert steps_of(df) == expected_steps(5, 2, 2, 3) == [3, 6, 9, 10]
    assert_finite_stats(df, ["d1", "d2", "out"])
    hist = tfprobe.read_histograms(tmp_path)
    assert set(hist.layer) == {"d1", "d2", "out"}
    # A window's histogram holds every value of its histogram steps (the fit's first step 1 and 2, 4+6, 8, 10):
    # 8 examples x 16 units each.
    d1 = hist[hist.layer == "d1"].groupby("step")["count"].sum().to_dict()
    assert d1 == {3: 256, 6: 256, 9: 128, 10: 128}
    assert_not_instrumented(model)


@pytest.mark.parametrize("steps_per_epoch, epochs", [(15, 2), (16, 1)])
def test_steps_per_execution(tmp_path, steps_per_epoch, epochs):
    model = mlp()
    model.compile("sgd", "mse", steps_per_execution=3)
    x, y = data(n=4 * steps_per_epoch)
    fit(model, x, y, LayerProbe(tmp_path, record_freq=1, log_freq=6), batch_size=4, epochs=epochs)
    total = steps_per_epoch * epochs
    assert int(model.optimizer.iterations) == total

    df = tfprobe.read_logdir(tmp_path)
    assert set(df.layer) == {"d1", "d2", "out"}
    want = expected_steps(steps_per_epoch, epochs, 1, 6, spe=3)
    assert steps_of(df) == want
    # Full windows close at exact multiples of log_freq; only the last may be partial.
    assert all(s % 6 == 0 for s in want[:-1]) and want[-1] == total
    assert_finite_stats(df, ["d1", "d2", "out"])
    assert_not_instrumented(model)


def test_run_eagerly(tmp_path):
    model = mlp()
    model.compile("sgd", "mse", run_eagerly=True)
    x, y = data()
    fit(model, x, y, LayerProbe(tmp_path, record_freq=3, log_freq=4))

    df = tfprobe.read_logdir(tmp_path)
    assert set(df.layer) == {"d1", "d2", "out"}
    assert steps_of(df) == expected_steps(5, 2, 3, 4) == [4, 8, 10]
    assert_finite_stats(df, ["d1", "d2", "out"])
    assert_not_instrumented(model)


# -- leaves the model as it found it -------------------------------------------------------


def test_model_unchanged(tmp_path):
    keras.utils.set_random_seed(0)
    probed = mlp("probed")
    twin = mlp("twin")
    twin.set_weights(probed.get_weights())
    for m in (probed, twin):
        m.compile("adam", "mse", metrics=["mae"])
    layers_before = [id(layer) for layer in probed.layers]
    n_variables = len(probed.variables)
    config = probed.get_config()

    x, y = data()
    xv, yv = data(n=16, seed=1)
    h1 = fit(probed, x, y, LayerProbe(tmp_path / "logs", record_freq=1, log_freq=3), validation_data=(xv, yv))
    h2 = fit(twin, x, y, validation_data=(xv, yv))

    # the probe adds its incident counts to Keras' logs (`LayerProbe(alerts=True)`), and nothing else
    assert set(h1.history) - set(h2.history) == {"tfprobe_warnings", "tfprobe_errors"}
    assert set(h2.history) <= set(h1.history)
    for key in h2.history:  # includes val_loss: validation is untouched
        assert h1.history[key] == pytest.approx(h2.history[key], rel=1e-6), key
    assert [id(layer) for layer in probed.layers] == layers_before
    assert len(probed.variables) == n_variables
    assert probed.get_config() == config
    assert_not_instrumented(probed)
    for a, b in zip(probed.get_weights(), twin.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(probed.predict(xv, verbose=0), twin.predict(xv, verbose=0), rtol=1e-6, atol=1e-7)
    ev1 = probed.evaluate(xv, yv, verbose=0, return_dict=True)
    ev2 = twin.evaluate(xv, yv, verbose=0, return_dict=True)
    assert ev1 == pytest.approx(ev2, rel=1e-6)
    # Validation steps are not recorded: only the 10 training steps.
    assert steps_of(tfprobe.read_logdir(tmp_path / "logs")) == [3, 6, 9, 10]

    path = tmp_path / "m.keras"
    probed.save(path)
    reloaded = keras.models.load_model(path)
    assert [layer.name for layer in reloaded.layers] == ["d1", "d2", "out"]
    np.testing.assert_array_equal(reloaded.predict(xv, verbose=0), probed.predict(xv, verbose=0))
    assert_not_instrumented(reloaded)
    # The model trains on normally without the probe.
    fit(probed, x, y, epochs=1)
    assert int(probed.optimizer.iterations) == 15


def test_one_probe_reused_across_fits(tmp_path):
    model = mlp()
    model.compile("sgd", "mse")
    x, y = data()
    probe = LayerProbe(tmp_path, record_freq=1, log_freq=4)
    fit(model, x, y, probe, epochs=1)
    assert_not_instrumented(model)
    first = steps_of(tfprobe.read_logdir(tmp_path))
    assert first == [4, 5]
    fit(model, x, y, probe, epochs=2)
    assert_not_instrumented(model)
    assert int(model.optimizer.iterations) == 15

    df = tfprobe.read_logdir(tmp_path)
    assert steps_of(df) == [4, 5] + expected_steps(5, 2, 1, 4, start=5) == [4, 5, 8, 12, 15]
    for (layer, name), group in df.groupby(["layer", "stat"]):
        steps = group.step.tolist()
        assert steps == sorted(set(steps)), (layer, name, steps)
    assert set(df.layer) == {"d1", "d2", "out"}
    assert_finite_stats(df, ["d1", "d2", "out"])


def test_fits_reuse_traced_steps_until_keras_rebuilds(tmp_path, monkeypatch):
    """Probe, plain and probe `fit` again: each step is traced once; `compile` makes both trace again."""
    traces = []
    begin_step = tfprobe.recording.recorder.Recorder.begin_step
    monkeypatch.setattr(
        tfprobe.recording.recorder.Recorder, "begin_step", lambda self, *a: traces.append(1) or begin_step(self, *a)
    )
    model = mlp()
    model.compile("sgd", "mse")
    x, y = data()
    probe = LayerProbe(tmp_path, record_freq=1, log_freq=5)
    fit(model, x, y, probe, epochs=1)
    plain, traced = model.train_function, len(traces)  # twice: the first trace creates variables
    assert traced >= 1 and plain is not None
    fit(model, x, y, epochs=1)  # Keras' own step: tfprobe records nothing
    assert model.train_function is plain
    assert steps_of(tfprobe.read_logdir(tmp_path)) == [5]
    fit(model, x, y, probe, epochs=1)
    assert len(traces) == traced  # the instrumented step of the first `fit`, reused
    assert steps_of(tfprobe.read_logdir(tmp_path)) == [5, 15]
    model.compile("sgd", "mse")  # invalidates Keras' train function, and with it tfprobe's
    fit(model, x, y, probe, epochs=1)
    assert len(traces) > traced
    assert int(model.optimizer.iterations) == 5
    # a new optimizer starts again at step 0: a second window at step 5, which wins over the
    # windows at steps >= 5 already on disk (the readers' restart rule, as in TensorBoard)
    with pytest.warns(RuntimeWarning, match="newest write wins"):
        df = tfprobe.read_logdir(tmp_path)
    assert steps_of(df) == [5]
    assert len(df[(df.layer == "d1") & (df.stat == "mean")]) == 1
    assert_finite_stats(df, ["d1", "d2", "out"])
    assert_not_instrumented(model)


def test_two_probes_in_one_fit_second_refused(tmp_path):
    model = mlp()
    model.compile("sgd", "mse")
    x, y = data()
    first = LayerProbe(tmp_path / "a", record_freq=1, log_freq=4)
    second = LayerProbe(tmp_path / "b", record_freq=1, log_freq=4)
    with pytest.raises(ValueError, match=r"already has a tfprobe\.LayerProbe attached.*single LayerProbe"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[first, second])
    # The refused fit must not leave the model instrumented...
    assert_not_instrumented(model)
    # ...and a fit with one probe (even the first one again) works.
    fit(model, x, y, first, epochs=1)
    assert set(tfprobe.read_logdir(tmp_path / "a").layer) == {"d1", "d2", "out"}


# -- skipped outputs, NaN/Inf, failures --------------------------------------------------


def test_non_float_outputs_skipped_and_warned_once(tmp_path):
    inp = keras.Input((8,))
    h = keras.layers.Dense(8, name="d1")(inp)
    h, count = WithCount(name="pair")(h)
    sign = Sign(name="sign")(h)
    h = AddInt(name="merge")([h, count, sign])
    out = keras.layers.Dense(4, name="out")(h)
    model = keras.Model(inp, out)
    model.compile("sgd", "mse")
    x, y = data(n=36)  # 5 steps, the last one smaller: the step is traced twice
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(model, x, y, LayerProbe(tmp_path, record_freq=1, log_freq=4))
    assert len(history.history["loss"]) == 2

    df = tfprobe.read_logdir(tmp_path)
    assert set(df.layer) == {"d1", "pair:0", "merge", "out"}
    assert steps_of(df) == [4, 8, 10]
    assert_finite_stats(df, ["d1", "pair:0", "merge", "out"])

    messages = [str(w.message) for w in caught if "tfprobe" in str(w.message)]
    for skipped in ("pair:1", "sign"):
        naming = [m for m in messages if f"recording {skipped} " in m]
        assert len(naming) == 1, messages
        assert "int32" in naming[0]
    assert not any("d1" in m or "merge" in m for m in messages)
    assert_not_instrumented(model)


def test_nan_and_inf_are_counted(tmp_path):
    inp = keras.Input((8,))
    h = keras.layers.Dense(6, name="d1")(inp)
    h = Poison(name="poison")(h)
    h = Clean(name="clean")(h)
    out = keras.layers.Dense(4, name="out")(h)
    model = keras.Model(inp, out)
    model.compile("sgd", "mse")
    x, y = data()
    history = fit(model, x, y, LayerProbe(tmp_path, record_freq=1, log_freq=4, histogram_freq=1))
    assert all(math.isfinite(v) for v in history.history["loss"])

    df = tfprobe.read_logdir(tmp_path)
    assert set(df.layer) == {"d1", "poison", "clean", "out"}
    assert steps_of(df) == [4, 8, 10]
    # Windows of 4, 4 and 2 recorded steps of 8 examples, one NaN and one Inf column.
    assert stat(df, "poison", "nan_count") == {4: 32.0, 8: 32.0, 10: 16.0}
    assert stat(df, "poison", "inf_count") == {4: 32.0, 8: 32.0, 10: 16.0}
    # Every other statistic describes the finite values only.
    assert_finite_stats(df, ["d1", "clean", "out"])
    for name in VALUE_STATS + ("hoyer_sparsity", "dead_unit_fraction"):
        assert all(math.isfinite(v) for v in stat(df, "poison", name).values()), name
    # Min/max over the finite values are those of d1's columns 2..5, hence within d1's range.
    d1_max, p_max = stat(df, "d1", "max"), stat(df, "poison", "max")
    assert all(p_max[s] <= d1_max[s] for s in p_max)
    # Histograms: Inf lands in the overflow bucket, NaN is not counted.
    hist = tfprobe.read_histograms(tmp_path)
    poison = hist[(hist.layer == "poison") & (hist.step == 4)]
    assert poison["count"].sum() == 4 * 8 * 5
    assert poison[np.isinf(poison.right)]["count"].sum() >= 32
    assert_not_instrumented(model)


def _failing_partials(monkeypatch, units):
    """Makes building the statistics ops raise for tensors whose last axis is `units` (with either kernel)."""
    for cls in (tfprobe.kernels.graph.GraphKernel, tfprobe.kernels.native.NativeKernel):

        def rows(self, x, original=cls.rows):
            if x.shape.rank and x.shape[-1] == units:
                raise ZeroDivisionError("injected failure")
            return original(self, x)

        monkeypatch.setattr(cls, "rows", rows)


def _model_with_odd_layer():
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu", name="d1"),
            keras.layers.Dense(5, name="odd"),  # the only tensor with 5 units
            keras.layers.Dense(4, name="out"),
        ]
    )
    model.compile("sgd", "mse")
    return model


@pytest.mark.parametrize("run_eagerly", [False, True])
def test_strict_false_failure_warns_once_and_drops_layer(tmp_path, monkeypatch, run_eagerly):
    _failing_partials(monkeypatch, units=5)
    model = _model_with_odd_layer()
    model.compile("sgd", "mse", run_eagerly=run_eagerly)
    x, y = data(n=36)  # the last, smaller batch retraces the step
    probe = LayerProbe(tmp_path, record_freq=1, log_freq=4, strict=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(model, x, y, probe)
    assert len(history.history["loss"]) == 2
    about_odd = [w for w in caught if issubclass(w.category, RuntimeWarning) and "odd" in str(w.message)]
    assert len(about_odd) == 1, [str(w.message) for w in caught]
    assert "injected failure" in str(about_odd[0].message)

    df = tfprobe.read_logdir(tmp_path)
    assert set(df.layer) == {"d1", "out"}
    assert steps_of(df) == [4, 8, 10]
    assert_finite_stats(df, ["d1", "out"])
    assert "odd" not in probe.series
    assert_not_instrumented(model)


def test_strict_true_failure_raises(tmp_path, monkeypatch):
    _failing_partials(monkeypatch, units=5)
    model = _model_with_odd_layer()
    x, y = data()
    with pytest.raises(RecordingError, match="odd"):
        fit(model, x, y, LayerProbe(tmp_path, record_freq=1, log_freq=4, strict=True))


def test_model_restored_after_fit_raises(tmp_path, monkeypatch):
    """An exception out of `fit` (here strict recording) must not leave the model patched."""
    _failing_partials(monkeypatch, units=5)
    model = _model_with_odd_layer()
    x, y = data()
    probe = LayerProbe(tmp_path / "strict", record_freq=1, log_freq=4, strict=True)
    with pytest.raises(RecordingError):
        fit(model, x, y, probe)
    monkeypatch.undo()
    assert_not_instrumented(model)
    # A new probe on the same model works and records each layer once.
    fit(model, x, y, LayerProbe(tmp_path / "again", record_freq=1, log_freq=4), epochs=1)
    assert set(tfprobe.read_logdir(tmp_path / "again").layer) == {"d1", "odd", "out"}


# -- counts beyond 2**24 ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["float32", "mixed_bfloat16"])
def test_counts_beyond_2_pow_24_are_exact(tmp_path, policy, name):
    """One window of 200 steps x 131,099 values (> 2**24 values, > 2**24 NaNs), odd counts per step."""
    rows, cols, steps = 31, 4229, 200  # 131,099 values per step, odd
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, cols)).astype("float32")
    x[rng.random((rows, cols)) < 0.1] = 0.0
    nan_mask = rng.random((rows, cols)) < 0.65
    nan_mask.flat[0] = not nan_mask.flat[0] if nan_mask.sum() % 2 == 0 else nan_mask.flat[0]
    n_nan = int(nan_mask.sum())
    assert n_nan % 2 == 1 and steps * n_nan > 2**24
    finite = ~nan_mask
    zeros = int(np.count_nonzero(x[finite] == 0.0))

    policy(name)
    model = keras.Sequential(
        [
            keras.Input((cols,)),
            MaskNaN(nan_mask, name="masked"),
            Clean(name="clean"),
            keras.layers.Dense(1, name="out"),
        ]
    )
    policy("float32")
    model.compile("sgd", "mse")
    ds = tf.data.Dataset.from_tensors((x, np.zeros((rows, 1), "float32"))).repeat(steps)
    model.fit(
        ds,
        epochs=1,
        verbose=0,
        shuffle=False,
        callbacks=[LayerProbe(tmp_path, record_freq=1, log_freq=steps, histogram_freq=0)],
    )

    df = tfprobe.read_logdir(tmp_path)
    assert steps_of(df) == [steps]
    total_nan = steps * n_nan  # > 2**24 and odd; stored as a float32 scalar on disk
    assert stat(df, "masked", "nan_count") == {steps: float(np.float32(total_nan))}
    assert stat(df, "masked", "zero_fraction") == {
        steps: float(np.float32(np.float64(steps * zeros) / np.float64(steps * int(finite.sum()))))
    }
    assert stat(df, "clean", "zero_fraction") == {
        steps: float(np.float32(np.float64(steps * (zeros + n_nan)) / np.float64(steps * rows * cols)))
    }
