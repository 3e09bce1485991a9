"""The backward pass recorded in the step, against a GradientTape oracle on the same batches."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import oracle as oracle_module
from helpers.data import normal as data

import tfprobe
from tfprobe import metadata
from tfprobe.kernels import native
from tfprobe.recording.capture import Capture
from tfprobe.recording.selection import select

GRAD_STATS = ("grad_rms", "grad_mean_abs", "grad_max_abs", "grad_zero_fraction")


def oracle_gradients(model, x, y, scale=None):
    """`{series: dL/da}` of one batch, with the loss `fit` differentiates (reductions and regularisers).

    With a `scale`, as a loss-scale optimizer's step computes it: of the loss times `scale`, cast to float32,
    divided by `scale`.
    """
    found = {}
    with Capture(select(model, None)) as capture, tf.GradientTape(persistent=True) as tape:

        def on_tap(tap):
            tape.watch(tap.tensor)
            found[tap.series] = tap.tensor

        with capture.collecting(on_tap):
            y_pred = model(x, training=True)
        loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
        if scale is not None:
            loss = loss * scale
    grads = {name: tape.gradient(loss, tensor) for name, tensor in found.items()}
    if scale is None:
        return grads
    return {name: None if g is None else tf.cast(g, tf.float32) / scale for name, g in grads.items()}


def oracle_stats(grads):
    g = np.concatenate([np.asarray(a, np.float64).ravel() for a in grads])
    return {
        "grad_rms": np.sqrt(np.mean(g**2)),
        "grad_mean_abs": np.mean(np.abs(g)),
        "grad_max_abs": np.max(np.abs(g)),
        "grad_zero_fraction": np.mean(g == 0),
    }


def check_against_oracle(model, x, y, tmp_path, batch_size=8, **probe_kwargs):
    steps = len(x) // batch_size
    probe = tfprobe.LayerProbe(tmp_path, record_freq=1, log_freq=steps, gradients=True, **probe_kwargs)
    model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0, callbacks=[probe])
    wide = tfprobe.read_logdir(tmp_path, pivot=True).set_index("layer")
    batches = [slice(i * batch_size, (i + 1) * batch_size) for i in range(steps)]
    per_batch = [oracle_gradients(model, x[b], tf.nest.map_structure(lambda t, b=b: t[b], y)) for b in batches]
    checked = 0
    for name in per_batch[0]:
        grads = [batch[name] for batch in per_batch]
        if any(g is None for g in grads):
            assert name not in wide.index or np.isnan(wide.loc[name].get("grad_rms", np.nan)), name
            continue
        want = oracle_stats(grads)
        for stat in GRAD_STATS:
            np.testing.assert_allclose(
                wide.loc[name, stat], want[stat], rtol=1e-4, atol=1e-12, err_msg=f"{name} {stat}"
            )
        checked += 1
    return wide, checked


def test_sequential_cnn_with_batchnorm_and_pooling(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(3, activation="softmax", name="head"),
        ]
    )
    model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    x, y = data(32, (8, 8, 2)), np.arange(32) % 3
    wide, checked = check_against_oracle(model, x, y, tmp_path)
    # The loss reads the softmax's logits (as Keras does), so the head's output itself has no gradient.
    assert checked == 4 and np.isnan(wide.loc["head"].get("grad_rms", np.nan))
    assert wide.loc["bn", "weight_norm"] > 0 and wide.loc["head", "weight_grad_norm"] > 0
    assert np.isnan(wide.loc["pool"].get("weight_norm", np.nan))  # no trainable weights


def test_nested_frozen_backbone_subclassed_and_shared_layers(tmp_path):
    backbone = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(5, activation="tanh", name="b1")], name="backbone"
    )
    backbone.trainable = False

    class Head(keras.Model):
        def __init__(self):
            super().__init__(name="head")
            self.shared = keras.layers.Dense(5, activation="relu", name="shared")
            self.out = keras.layers.Dense(2, name="out")

        def call(self, x):
            return self.out(self.shared(self.shared(x)))

    inp = keras.Input((6,))
    model = keras.Model(inp, Head()(backbone(inp)))
    model.compile(keras.optimizers.SGD(0.0), "mse")
    x, y = data(24, (6,)), data(24, (2,), seed=1)
    wide, checked = check_against_oracle(model, x, y, tmp_path)
    assert checked == 4  # backbone/b1, shared, shared#1, out
    assert np.isnan(wide.loc["backbone/b1"].get("weight_norm", np.nan))  # frozen: no weight figures
    assert wide.loc["head/shared", "weight_norm"] > 0


def test_multi_output_model_with_loss_weights(tmp_path):
    inp = keras.Input((4,))
    h = keras.layers.Dense(6, activation="relu", name="h")(inp)
    a = keras.layers.Dense(2, name="a")(h)
    b = keras.layers.Dense(1, name="b")(h)
    model = keras.Model(inp, [a, b])
    model.compile(keras.optimizers.SGD(0.0), ["mse", "mse"], loss_weights=[1.0, 0.25])
    x = data(16, (4,))
    y = [data(16, (2,), seed=1), data(16, (1,), seed=2)]
    _, checked = check_against_oracle(model, x, y, tmp_path)
    assert checked == 3


def test_update_ratio_is_the_applied_update(tmp_path):
    lr = 0.05
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    model.compile(keras.optimizers.SGD(lr), "mse")
    x, y = data(8, (4,)), data(8, (3,), seed=1)
    w_before = [w.copy() for w in model.get_weights()]
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True), training=True)
    grads = tape.gradient(loss, model.trainable_weights)
    model.fit(
        x,
        y,
        batch_size=8,
        verbose=0,
        callbacks=[tfprobe.LayerProbe(tmp_path, record_freq=1, log_freq=1, gradients=True)],
    )
    row = tfprobe.read_logdir(tmp_path, pivot=True).set_index("layer").loc["d"]
    w_norm = np.sqrt(sum(np.sum(w.astype(np.float64) ** 2) for w in w_before))
    g_norm = np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in grads))
    delta = np.sqrt(sum(np.sum((a - b).astype(np.float64) ** 2) for a, b in zip(model.get_weights(), w_before)))
    np.testing.assert_allclose(row["weight_norm"], w_norm, rtol=1e-6)
    np.testing.assert_allclose(row["weight_grad_norm"], g_norm, rtol=1e-5)
    np.testing.assert_allclose(row["update_ratio"], lr * g_norm / w_norm, rtol=1e-5)
    np.testing.assert_allclose(row["update_ratio"], delta / w_norm, rtol=1e-5)


def test_adam_update_ratio_matches_the_weights_it_changed(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    model.compile(keras.optimizers.Adam(0.01), "mse")
    x, y = data(8, (4,)), data(8, (3,), seed=1)
    w_before = [w.copy() for w in model.get_weights()]
    model.fit(
        x,
        y,
        batch_size=8,
        verbose=0,
        callbacks=[tfprobe.LayerProbe(tmp_path, record_freq=1, log_freq=1, gradients=True)],
    )
    row = tfprobe.read_logdir(tmp_path, pivot=True).set_index("layer").loc["d"]
    w_norm = np.sqrt(sum(np.sum(w.astype(np.float64) ** 2) for w in w_before))
    delta = np.sqrt(sum(np.sum((a - b).astype(np.float64) ** 2) for a, b in zip(model.get_weights(), w_before)))
    np.testing.assert_allclose(row["update_ratio"], delta / w_norm, rtol=1e-5)


def test_outputs_without_a_gradient_record_none(tmp_path):
    inp = keras.Input((4,))
    h = keras.layers.Dense(4, name="h")(inp)
    side = keras.layers.Dense(4, name="side")(h)  # not used by the loss
    stopped = keras.layers.Lambda(lambda t: tf.stop_gradient(t), name="stop")(h)
    out = keras.layers.Dense(2, name="out")(keras.layers.Concatenate(name="cat")([h, stopped]))
    model = keras.Model(inp, [out, side])
    model.compile(keras.optimizers.SGD(0.0), ["mse", None])
    x = data(8, (4,))
    model.fit(
        x,
        [data(8, (2,)), data(8, (4,))],
        verbose=0,
        callbacks=[tfprobe.LayerProbe(tmp_path, record_freq=1, log_freq=1, gradients=True)],
    )
    wide = tfprobe.read_logdir(tmp_path, pivot=True).set_index("layer")
    assert np.isfinite(wide.loc["h", "grad_rms"]) and np.isfinite(wide.loc["out", "grad_rms"])
    for name in ("side", "stop"):
        assert np.isnan(wide.loc[name].get("grad_rms", np.nan)), name


def test_layers_without_weights_alone_record_their_gradients(tmp_path):
    """No chosen layer has weights: no weight figures, and the activation gradients are recorded all the same."""
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3, name="d"),
            keras.layers.ReLU(name="r"),
            keras.layers.Dense(1, name="o"),
        ]
    )
    model.compile("sgd", "mse")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "not recording"
        model.fit(
            data(8, (4,)),
            data(8, (1,)),
            batch_size=4,
            verbose=0,
            callbacks=[tfprobe.LayerProbe(tmp_path, layers="r", gradients=True, record_freq=1, log_freq=1)],
        )
    wide = tfprobe.read_logdir(tmp_path, pivot=True).set_index("layer")
    assert set(wide.index) == {"r"} and np.isfinite(wide["grad_rms"]).all() and "weight_norm" not in wide


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_gradients_argument_is_a_bool(tmp_path, bad):
    with pytest.raises(ValueError, match=f"`gradients` must be True or False. Received: gradients={bad!r}"):
        tfprobe.LayerProbe(tmp_path, gradients=bad)


def test_mixed_float16_gradients_are_unscaled(tmp_path):
    def build():
        keras.utils.set_random_seed(3)
        return keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(8, activation="relu", name="h"),
                keras.layers.Dense(2, name="out", dtype="float32"),
            ]
        )

    x, y = data(32, (6,)), data(32, (2,), seed=1)
    reference = build()
    reference.compile(keras.optimizers.SGD(0.0), "mse")
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build()
        model.compile(keras.optimizers.SGD(0.0), "mse")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    model.set_weights(reference.get_weights())
    model.fit(
        x,
        y,
        batch_size=8,
        verbose=0,
        shuffle=False,
        callbacks=[tfprobe.LayerProbe(tmp_path, record_freq=1, log_freq=4, gradients=True)],
    )
    wide = tfprobe.read_logdir(tmp_path, pivot=True).set_index("layer")
    per_batch = [oracle_gradients(reference, x[i * 8 : (i + 1) * 8], y[i * 8 : (i + 1) * 8]) for i in range(4)]
    for name in ("h", "out"):
        want = oracle_stats([b[name] for b in per_batch])
        for stat in ("grad_rms", "grad_mean_abs", "grad_max_abs"):
            np.testing.assert_allclose(wide.loc[name, stat], want[stat], rtol=1e-2, err_msg=f"{name} {stat}")
    norms = []
    for i in range(4):
        xb, yb = x[i * 8 : (i + 1) * 8], y[i * 8 : (i + 1) * 8]
        with tf.GradientTape() as tape:
            loss = reference.compute_loss(x=xb, y=yb, y_pred=reference(xb, training=True), training=True)
        g = tape.gradient(loss, reference.get_layer("h").trainable_weights)
        norms.append(np.sqrt(sum(np.sum(np.asarray(t, np.float64) ** 2) for t in g)))
    assert wide.loc["h", "weight_grad_norm"] == pytest.approx(np.mean(norms), rel=1e-2)  # unscaled, averaged


NATIVE = pytest.param("native", marks=pytest.mark.skipif(native._compiler() is None, reason="no C++ compiler"))


def scaled_oracle_gradients(model, x, y, scale=None):
    """`oracle_gradients` scaled by `scale` (default: the optimizer's loss scale)."""
    scale = float(model.optimizer.scale_loss(tf.constant(1.0))) if scale is None else scale
    return oracle_gradients(model, x, y, scale)


def mixed_model(build):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        return build()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def histogram_counts(frame, layer):
    """`{bucket: count}` of one layer's histogram, checking each bucket's range against the metadata."""
    rows = frame[frame["layer"] == layer]
    edges = metadata.histogram_buckets()
    assert all((r.left, r.right) == edges[r.bucket] for r in rows.itertuples()), layer
    counts = np.zeros(metadata.NUM_BUCKETS, np.int64)
    np.add.at(counts, rows["bucket"].to_numpy(), rows["count"].to_numpy())
    return counts


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
@pytest.mark.parametrize("kernel", ["graph", NATIVE])
def test_gradient_histograms_match_the_oracle(tmp_path, kernel, policy):
    def build():
        keras.utils.set_random_seed(5)
        return keras.Sequential(
            [
                keras.Input((6, 6, 2)),
                keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
                keras.layers.MaxPooling2D(name="pool"),
                keras.layers.Flatten(name="flat"),
                keras.layers.Dense(3, activation="softmax", name="head", dtype="float32"),
            ]
        )

    model = mixed_model(build) if policy == "mixed_float16" else build()
    model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    x, y = data(32, (6, 6, 2)), np.arange(32) % 3
    # 4 steps: statistics on steps 1 (the first) and 4, histograms on steps 1, 2 and 4 (step 2: histograms only)
    probe = tfprobe.LayerProbe(tmp_path, record_freq=4, histogram_freq=2, log_freq=4, gradients=True, kernel=kernel)
    model.fit(x, y, batch_size=8, shuffle=False, verbose=0, callbacks=[probe])
    oracle = scaled_oracle_gradients if policy == "mixed_float16" else oracle_gradients
    per_batch = [oracle(model, x[i * 8 : (i + 1) * 8], y[i * 8 : (i + 1) * 8]) for i in range(4)]
    grads, acts = (tfprobe.read_histograms(tmp_path, quantity=q) for q in ("gradient", "activation"))
    assert set(grads["quantity"]) == {"gradient"} and set(acts["quantity"]) == {"activation"}
    assert set(grads["layer"]) == {"conv", "pool", "flat"}  # the softmax's loss reads its logits: no gradient
    wide = tfprobe.read_logdir(tmp_path, pivot=True).set_index("layer")
    for name in ("conv", "pool", "flat"):
        got = histogram_counts(grads, name)
        want = oracle_module.histogram(np.concatenate([np.ravel(per_batch[i][name]) for i in (0, 1, 3)]))
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert got.sum() == histogram_counts(acts, name).sum()  # the activation histograms' steps
        stats = oracle_stats([per_batch[i][name] for i in (0, 3)])  # the recorded steps only
        np.testing.assert_allclose(wide.loc[name, "grad_rms"], stats["grad_rms"], rtol=1e-4, err_msg=name)
    assert "skipped_steps" not in wide or policy == "mixed_float16"


def test_gradient_histograms_are_off_with_histograms_off(tmp_path):
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, activation="relu", name="h"), keras.layers.Dense(1, name="out")]
    )
    model.compile(keras.optimizers.SGD(0.0), "mse")
    model.fit(
        data(16, (4,)),
        data(16, (1,), seed=1),
        batch_size=8,
        verbose=0,
        callbacks=[tfprobe.LayerProbe(tmp_path, record_freq=1, histogram_freq=0, gradients=True)],
    )
    assert tfprobe.read_histograms(tmp_path, quantity="all").empty
    assert "grad_rms" in tfprobe.read_logdir(tmp_path, pivot=True)


class StepLog(keras.callbacks.Callback):
    """Per batch: whether the optimizer applied its update, and the loss scale it was computed with."""

    def on_train_begin(self, logs=None):
        self.applied, self.scales = [], [self.scale()]
        self._iterations = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        iterations = int(self.model.optimizer.iterations.numpy())
        self.applied.append(iterations != self._iterations)
        self._iterations = iterations
        self.scales.append(self.scale())

    def scale(self):
        return float(self.model.optimizer.scale_loss(tf.constant(1.0)))


def overflowing_model():
    """A mixed-precision model compiled with a loss-scale optimizer (SGD, learning rate 0) whose scaled
    gradients overflow float16 until it has halved its scale a few times: with 12 batches of 8 from `data`,
    the 1st, 2nd and 5th steps are skipped (not only leading ones)."""

    def build():
        keras.utils.set_random_seed(3)
        return keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(8, activation="relu", name="h"),
                keras.layers.Dense(2, name="out", dtype="float32"),
            ]
        )

    model = mixed_model(build)
    model.compile(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.0), initial_scale=2.0**19), "mse")
    return model


@pytest.mark.parametrize("kernel", ["graph", NATIVE])
def test_skipped_steps_are_counted_and_left_out(tmp_path, kernel):
    model = overflowing_model()
    steps, batch = 12, 8
    x, y = data(steps * batch, (6,)), data(steps * batch, (2,), seed=1)
    probe = tfprobe.LayerProbe(tmp_path, record_freq=1, histogram_freq=1, log_freq=steps, gradients=True, kernel=kernel)
    log = StepLog()
    model.fit(x, y, batch_size=batch, shuffle=False, verbose=0, callbacks=[probe, log])
    applied = [i for i in range(steps) if log.applied[i]]
    assert 4 <= len(applied) <= steps - 1
    wide = tfprobe.read_logdir(tmp_path, pivot=True).set_index("layer")
    hists = tfprobe.read_histograms(tmp_path, quantity="gradient")
    batches = [(x[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch], log.scales[i]) for i in applied]
    per_batch = [scaled_oracle_gradients(model, *b) for b in batches]
    for name in ("h", "out"):
        assert wide.loc[name, "skipped_steps"] == steps - len(applied)
        want = oracle_stats([b[name] for b in per_batch])
        for stat in GRAD_STATS:
            np.testing.assert_allclose(wide.loc[name, stat], want[stat], rtol=1e-4, err_msg=f"{name} {stat}")
        assert wide.loc[name, "grad_nan_count"] == 0 and wide.loc[name, "grad_inf_count"] == 0
        np.testing.assert_array_equal(
            histogram_counts(hists, name),
            oracle_module.histogram(np.concatenate([np.ravel(b[name]) for b in per_batch])),
        )
    norms = []
    for xb, yb, scale in batches:
        with tf.GradientTape() as tape:
            loss = model.compute_loss(x=xb, y=yb, y_pred=model(xb, training=True), training=True) * scale
        g = tape.gradient(loss, model.get_layer("h").trainable_weights)
        norms.append(np.sqrt(sum(np.sum((np.asarray(t, np.float64) / scale) ** 2) for t in g)))
    assert wide.loc["h", "weight_grad_norm"] == pytest.approx(np.mean(norms), rel=1e-3)


def test_no_skipped_steps_without_loss_scaling(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
    model.compile(keras.optimizers.SGD(0.0), "mse")
    model.fit(
        data(16, (4,)),
        data(16, (2,), seed=1),
        batch_size=8,
        verbose=0,
        callbacks=[tfprobe.LayerProbe(tmp_path, record_freq=1, gradients=True)],
    )
    wide = tfprobe.read_logdir(tmp_path, pivot=True)
    assert "grad_rms" in wide and "skipped_steps" not in wide


def test_windows_of_skipped_steps_only_go_on_until_a_step_is_applied(tmp_path):
    model = overflowing_model()
    steps, batch = 12, 8
    log = StepLog()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "written again at the same step" warning on reading either
        model.fit(
            data(steps * batch, (6,)),
            data(steps * batch, (2,), seed=1),
            batch_size=batch,
            shuffle=False,
            verbose=0,
            callbacks=[tfprobe.LayerProbe(tmp_path, record_freq=1, log_freq=1, gradients=True), log],
        )
        wide = tfprobe.read_logdir(tmp_path, pivot=True).set_index("layer").loc["h"]
    applied = int(model.optimizer.iterations.numpy())
    assert 4 <= applied < steps and not log.applied[0]
    # One window per applied step (a window per batch would repeat steps: the step counts applied updates);
    # the skipped steps before each are counted in it, and every batch's activations are in some window.
    assert wide["step"].tolist() == list(range(1, applied + 1))
    runs = np.split(np.array(log.applied), np.flatnonzero(log.applied) + 1)[:-1]  # skipped..., applied
    assert wide["skipped_steps"].tolist() == [len(r) - 1 for r in runs]
    assert wide["grad_rms"].notna().all()


def test_a_fit_whose_every_step_is_skipped_says_so(tmp_path):
    model = mixed_model(
        lambda: keras.Sequential(
            [keras.Input((6,)), keras.layers.Dense(8, name="h"), keras.layers.Dense(2, name="out", dtype="float32")]
        )
    )
    model.compile(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.0), initial_scale=2.0**60), "mse")
    with pytest.warns(RuntimeWarning, match="wrote nothing .*[(]the loss-scale optimizer skipped every step"):
        model.fit(
            data(16, (6,)),
            data(16, (2,), seed=1),
            batch_size=8,
            verbose=0,
            callbacks=[tfprobe.LayerProbe(tmp_path, record_freq=1, log_freq=1, gradients=True)],
        )
    assert int(model.optimizer.iterations.numpy()) == 0


def test_gradient_step_builds_no_extra_pass(tmp_path, monkeypatch):
    """With gradients on, a pooling layer still reuses its producer's partials (the model goes on with an
    identity, not the producer's own tensor), and without loss scaling no gradient is divided (copied)."""
    from tfprobe.kernels import graph, native

    calls = {"input_sums": 0, "grad_rows": []}
    for cls in (graph.GraphKernel, native.NativeKernel):
        monkeypatch.setattr(
            cls,
            "input_sums",
            lambda self, *a, _f=cls.input_sums, **k: (
                calls.__setitem__("input_sums", calls["input_sums"] + 1),
                _f(self, *a, **k),
            )[1],
        )
        monkeypatch.setattr(
            cls,
            "gradient_partials",
            lambda self, x2d, *a, _f=cls.gradient_partials, **k: (
                calls["grad_rows"].append(x2d.op.type),
                _f(self, x2d, *a, **k),
            )[1],
        )
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(3, 3, name="conv"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    model.compile(keras.optimizers.SGD(0.01), "mse")
    model.fit(
        data(8, (6, 6, 2)),
        data(8, (2,)),
        verbose=0,
        callbacks=[tfprobe.LayerProbe(tmp_path, record_freq=1, log_freq=1, gradients=True)],
    )
    assert calls["input_sums"] == 0
    assert calls["grad_rows"] and "RealDiv" not in calls["grad_rows"], calls["grad_rows"]


def test_a_gradient_shared_by_series_is_read_once(tmp_path, monkeypatch):
    """An `Add`'s gradient reaches both inputs as the same tensor: its partials are computed once, for both."""
    from tfprobe.kernels import graph, native

    scopes = []
    for cls in (graph.GraphKernel, native.NativeKernel):
        monkeypatch.setattr(
            cls,
            "gradient_partials",
            lambda self, x2d, *a, _f=cls.gradient_partials, **k: (
                scopes.append(tf.get_current_name_scope()),
                _f(self, x2d, *a, **k),
            )[1],
        )
    inp = keras.Input((4,))
    h = keras.layers.Dense(4, name="h")(inp)
    out = keras.layers.Add(name="add")([keras.layers.Dense(4, name="branch")(h), h])
    model = keras.Model(inp, keras.layers.Dense(2, name="out")(out))
    model.compile(keras.optimizers.SGD(0.0), "mse")
    x, y = data(16, (4,)), data(16, (2,), seed=1)
    wide, checked = check_against_oracle(model, x, y, tmp_path)
    assert checked == 4
    assert wide.loc["branch", "grad_rms"] == wide.loc["add", "grad_rms"]
    assert sum("tfprobe_grad" in s for s in scopes) == 3  # out, add (= branch), h
