"""Host-side dispatch: a call of the train function whose steps record nothing runs Keras' own train function.

Each test runs the same `fit` twice, with dispatch and with every call probed (`Instrumentation._dispatches`
forced off, the behaviour before dispatch), and requires the same windows (every statistic, every step), the
same training and the step counter right after the unprobed steps; and it counts which train function ran.
"""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from helpers import models
from helpers.checks import assert_not_instrumented, steps_of
from helpers.custom_loops import gan, images
from helpers.data import regression as data

import tfprobe
from tfprobe.recording.capture import Instrumentation


def _fit(tmp_path, make, x, y, dispatch, monkeypatch, epochs=2, batch_size=8, **probe_kwargs):
    """`(probe, model, windows, histograms)` of one `fit` of a fresh `make()` model, with or without dispatch."""
    with monkeypatch.context() as patch:
        if not dispatch:
            patch.setattr(Instrumentation, "_dispatches", lambda self, steps, iterator: False)
        keras.backend.clear_session()  # the same automatic layer names in both runs
        model = make()
        log_dir = tmp_path / ("dispatch" if dispatch else "probed")
        probe = tfprobe.LayerProbe(log_dir, alerts=False, **probe_kwargs)
        model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=False, callbacks=[probe])
    hist = tfprobe.read_histograms(log_dir) if probe_kwargs.get("histogram_freq") else None
    return probe, model, tfprobe.read_logdir(log_dir), hist


def _same(a, b):
    """The same rows, the same values, bit for bit."""
    drop = lambda df: df.drop(columns=["wall_time", "run"], errors="ignore").reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(drop(a), drop(b))


def _mlp(jit_compile=False, steps_per_execution=1, optimizer="sgd"):
    def make():
        keras.utils.set_random_seed(0)
        model = models.mlp(name="mlp")
        model.compile(optimizer, "mse", jit_compile=jit_compile, steps_per_execution=steps_per_execution)
        return model

    return make


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_unrecorded_steps_run_keras_own_train_function(tmp_path, monkeypatch, jit_compile):
    x, y = data(n=80)  # 10 steps per epoch, 2 epochs
    kwargs = dict(record_freq=5, log_freq=7, histogram_freq=0)
    probe, model, df, _ = _fit(tmp_path, _mlp(jit_compile), x, y, True, monkeypatch, **kwargs)
    # Steps 1 (the fit's first), 5, 10, 15, 20 record: the other 15 of 20 run Keras' own function.
    assert probe._instrumentation.calls == {"probed": 5, "plain": 15}
    assert int(model.optimizer.iterations) == 20 and probe._recorder.step() == 20
    assert steps_of(df) == [7, 14, 20]
    assert_not_instrumented(model)
    assert "guarded" not in model.train_function.__name__  # Keras' own, restored
    ref_probe, ref_model, ref, _ = _fit(tmp_path, _mlp(jit_compile), x, y, False, monkeypatch, **kwargs)
    assert ref_probe._instrumentation.calls == {"probed": 20, "plain": 0}
    _same(df, ref)
    for a, b in zip(model.get_weights(), ref_model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_histogram_steps_are_probed_too(tmp_path, monkeypatch):
    x, y = data(n=96)  # 12 steps
    kwargs = dict(record_freq=4, histogram_freq=3, log_freq=6)
    probe, _, df, hist = _fit(tmp_path, _mlp(), x, y, True, monkeypatch, epochs=1, **kwargs)
    # Probed: 1 (first), 3, 4, 6, 8, 9, 12.
    assert probe._instrumentation.calls == {"probed": 7, "plain": 5}
    _, _, ref, ref_hist = _fit(tmp_path, _mlp(), x, y, False, monkeypatch, epochs=1, **kwargs)
    _same(df, ref)
    _same(hist, ref_hist)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_steps_per_execution_with_a_short_last_call(tmp_path, monkeypatch, jit_compile):
    """10 steps per epoch in calls of 3 (the last call of each epoch runs 1 step): the host's count re-reads the
    device step at each new epoch, so that no recorded step is run unprobed."""
    x, y = data(n=80)
    kwargs = dict(record_freq=5, log_freq=7, histogram_freq=0)
    make = _mlp(jit_compile, steps_per_execution=3)
    probe, model, df, _ = _fit(tmp_path, make, x, y, True, monkeypatch, epochs=3, **kwargs)
    calls = probe._instrumentation.calls
    assert calls["probed"] + calls["plain"] == 12 and calls["plain"] >= 4, calls
    assert int(model.optimizer.iterations) == 30 and probe._recorder.step() == 30
    _, _, ref, _ = _fit(tmp_path, make, x, y, False, monkeypatch, epochs=3, **kwargs)
    _same(df, ref)


@pytest.mark.parametrize("jit_compile", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["graph", "xla"])
def test_a_custom_loop_counts_its_unprobed_batches(tmp_path, monkeypatch, jit_compile):
    """A GAN's step applies optimizers of its own (`model.optimizer` unused): the counter counts batches."""

    def make():
        model = gan()
        model.jit_compile = jit_compile
        return model

    kwargs = dict(record_freq=3, log_freq=4, histogram_freq=0, gradients=True)
    probe, model, df, _ = _fit(tmp_path, make, images(96), None, True, monkeypatch, batch_size=16, **kwargs)
    assert not probe._recorder.driven and int(model.optimizer.iterations) == 0
    # 12 steps: 1, 3, 6, 9, 12 probed.
    assert probe._instrumentation.calls == {"probed": 5, "plain": 7}
    assert probe._recorder.step() == 12
    assert steps_of(df) == [4, 8, 12]
    assert {"update_ratio", "grad_rms"} <= set(df.stat)
    # The update figures of the recorded steps are exact (SGD(lr): ||dw|| / ||w|| = lr * ||g|| / ||w||).
    wide = df.pivot_table(index=["step", "layer"], columns="stat", values="value").reset_index()
    lrs = {"discriminator": 0.01, "generator": 0.03}
    rows = wide[wide["weight_norm"].notna()]
    assert len(rows) == 15  # 5 layers with weights x 3 windows
    for row in rows.itertuples():
        np.testing.assert_allclose(
            row.update_ratio,
            lrs[row.layer.split("/")[0]] * row.weight_grad_norm / row.weight_norm,
            rtol=2e-3,
            err_msg=f"{row.layer} at step {row.step}",
        )
    _, _, ref, _ = _fit(tmp_path, make, images(96), None, False, monkeypatch, batch_size=16, **kwargs)
    # The same windows, series and statistics; not the same values bit for bit: where a probed step taps a
    # convolution's output the CPU may fuse its bias-add differently from Keras' own step (Grappler's remapper),
    # so training after a probed step may differ in the last bits (with dispatch, fewer steps are probed).
    key = ["step", "layer", "stat"]
    pd.testing.assert_frame_equal(df[key].reset_index(drop=True), ref[key].reset_index(drop=True))


def test_a_second_fit_reuses_both_functions_and_goes_on_from_the_global_step(tmp_path, monkeypatch):
    x, y = data(n=48)  # 6 steps
    model = _mlp()()
    probe = tfprobe.LayerProbe(tmp_path, record_freq=4, log_freq=4, histogram_freq=0, alerts=False)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[probe])
    plain = model.train_function
    assert probe._instrumentation.calls == {"probed": 2, "plain": 4}  # 1, 4
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[probe])
    assert model.train_function is plain
    assert probe._instrumentation.calls == {"probed": 3, "plain": 3}  # 7 (the fit's first), 8, 12
    assert steps_of(tfprobe.read_logdir(tmp_path)) == [4, 8, 12]  # steps 5 and 6 record nothing
    assert probe._recorder.step() == 12


def test_a_loss_scale_optimizer_is_always_probed(tmp_path):
    """Skipped steps do not advance the global step, so the host cannot tell which steps record."""
    x, y = data(n=48)
    model = _mlp(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD()))()
    probe = tfprobe.LayerProbe(tmp_path, record_freq=4, log_freq=4, histogram_freq=0, alerts=False)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[probe])
    assert probe._instrumentation.calls == {"probed": 6, "plain": 0}


def test_a_step_with_stateful_random_ops_is_always_probed(tmp_path):
    """`tf.random.normal` without a generator (keras-io's WGAN-GP draws its latent vectors so) keeps its stream in
    its kernel, one per train function: alternating Keras' function and the probed one would draw other numbers
    than the user's run. Such a step is always probed, and trains as without the probe."""

    class Noisy(keras.Model):
        def train_step(self, data):
            x, y = data
            x = x + tf.random.normal(tf.shape(x))  # unseeded, as the example's
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(self(x, training=True) - y))
            self.optimizer.apply_gradients(zip(tape.gradient(loss, self.trainable_variables), self.trainable_variables))
            return {"loss": loss}

    def make():
        keras.utils.set_random_seed(0)
        inp = keras.Input((x.shape[1],))
        model = Noisy(inp, keras.layers.Dense(1, name="out")(inp))
        model.compile("sgd")
        return model

    x, y = data(n=48)
    losses = []
    for callbacks in ([], [tfprobe.LayerProbe(tmp_path, record_freq=4, log_freq=4, histogram_freq=0, alerts=False)]):
        losses.append([])
        logged = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda _, logs, seen=losses[-1]: seen.append(float(logs["loss"]))
        )
        make().fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[logged, *callbacks])
    assert callbacks[0]._instrumentation.calls == {"probed": 6, "plain": 0}
    assert losses[0] == losses[1]
    assert steps_of(tfprobe.read_logdir(tmp_path)) == [4]


def test_a_fit_that_raises_in_an_unprobed_step_restores_the_model(tmp_path):
    x, y = data(n=48)

    def batches():
        for i in range(0, 48, 8):
            if i == 32:  # the batch of step 5, which records nothing (1 and 4 do)
                raise RuntimeError("injected: the data failed")
            yield x[i : i + 8], y[i : i + 8]

    model = _mlp()()
    probe = tfprobe.LayerProbe(tmp_path, record_freq=4, log_freq=100, histogram_freq=0, alerts=False)
    dataset = tf.data.Dataset.from_generator(
        batches, output_signature=(tf.TensorSpec((None, 8), tf.float32), tf.TensorSpec((None, 4), tf.float32))
    )
    with pytest.raises(Exception, match="injected"):
        model.fit(dataset, epochs=1, verbose=0, callbacks=[probe])
    assert probe._instrumentation.calls == {"probed": 2, "plain": 3}  # 1, 4 probed; 2, 3, then 5 raised
    assert_not_instrumented(model)
    keras_function = model.train_function
    assert keras_function is not None and "guarded" not in keras_function.__name__
    assert probe._instrumentation._saved is None


def test_data_of_unknown_length_running_out_ends_the_epoch_not_the_recording(tmp_path, monkeypatch):
    """Keras' train function raises `OutOfRangeError` when such data runs out, and Keras ends the epoch: the probe
    stays attached (it used to detach there, and record nothing after the first epoch)."""
    x, y = data(n=48)  # 6 batches per epoch

    def batches():
        for i in range(0, 48, 8):
            yield x[i : i + 8], y[i : i + 8]

    def dataset():
        return tf.data.Dataset.from_generator(
            batches, output_signature=(tf.TensorSpec((None, 8), tf.float32), tf.TensorSpec((None, 4), tf.float32))
        )

    kwargs = dict(record_freq=4, log_freq=4, histogram_freq=0)
    windows = {}
    for dispatch in (True, False):
        with monkeypatch.context() as patch:
            if not dispatch:
                patch.setattr(Instrumentation, "_dispatches", lambda self, steps, iterator: False)
            keras.backend.clear_session()
            model = _mlp()()
            probe = tfprobe.LayerProbe(tmp_path / str(dispatch), alerts=False, **kwargs)
            model.fit(dataset(), epochs=3, verbose=0, callbacks=[probe])
        # (Keras' optimizer counts the call in which the data ran out as a step: 7 per epoch.)
        steps = int(model.optimizer.iterations)
        assert steps >= 18 and probe._recorder.step() == steps
        windows[dispatch] = tfprobe.read_logdir(tmp_path / str(dispatch))
        if dispatch:
            assert probe._instrumentation.calls["plain"] >= 10, probe._instrumentation.calls
    assert steps_of(windows[True])[-1] == steps and len(steps_of(windows[True])) >= 4
    _same(windows[True], windows[False])


def test_a_step_traced_while_keras_own_function_runs_is_the_models_own(tmp_path):
    """A Keras that looks `train_step` up when it traces (not this one) would trace the wrapped step for its own
    train function: the wrapper steps aside while that function runs (`Instrumentation.bypass`)."""
    x, y = data(n=16)
    seen = {}

    class Trace(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch != 1:  # after the first step (which builds the optimizer)
                return
            instrumentation = self.model._tfprobe_instrumentation
            for bypass in (False, True):
                instrumentation.bypass = bypass
                try:
                    graph = tf.function(self.model.train_step).get_concrete_function((x[:8], y[:8])).graph
                finally:
                    instrumentation.bypass = False
                seen[bypass] = any(op.type in ("If", "StatelessIf") for op in graph.get_operations())  # the conds

    model = _mlp()()
    probe = tfprobe.LayerProbe(tmp_path, record_freq=1, histogram_freq=0, alerts=False)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[probe, Trace()])
    assert seen == {False: True, True: False}
