"""The reshaped core as a user meets it: strategies, failures while logging, short fits, many probes,
selection errors, the model graph recorded with each series, and capture outside training."""

from __future__ import annotations

import errno
import logging
import re
import warnings

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from helpers import data as _data
from helpers import models

import tfprobe
import tfprobe.kernels.native
from tfprobe.logs import events
from tfprobe.recording.capture import layer_outputs


def mlp():
    return models.mlp(names=("hidden", "squash", "out"))


def data(n=48, seed=0):
    return _data.regression(n, seed=seed)


def wide(logdir):
    return tfprobe.read_logdir(logdir, pivot=True).drop(columns=["wall_time", "run"]).reset_index(drop=True)


def test_one_device_strategy_records_what_the_default_strategy_records(tmp_path):
    x, y = data()
    keras.utils.set_random_seed(1)
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        pinned = mlp()
        pinned.compile(keras.optimizers.SGD(0.0), "mse")
    plain = mlp()
    plain.compile(keras.optimizers.SGD(0.0), "mse")
    plain.set_weights(pinned.get_weights())
    for name, model in (("pinned", pinned), ("plain", plain)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "not recording" warning
            model.fit(
                x,
                y,
                batch_size=8,
                verbose=0,
                shuffle=False,
                callbacks=[tfprobe.LayerProbe(tmp_path / name, record_freq=1, log_freq=2)],
            )
    a, b = wide(tmp_path / "pinned"), wide(tmp_path / "plain")
    assert len(a) == 3 * 3  # 3 layers x windows at steps 2, 4, 6
    pd.testing.assert_frame_equal(a, b, rtol=1e-6)


def test_disk_full_while_logging_never_ends_a_non_strict_fit(tmp_path, monkeypatch):
    x, y = data()
    model = mlp()
    model.compile("sgd", "mse")
    real_write = events.EventFileWriter.write
    calls = {"n": 0}

    def write(self, event):
        calls["n"] += 1
        if calls["n"] > 2:  # the file header and the first window reach the disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, event)

    monkeypatch.setattr(events.EventFileWriter, "write", write)
    monkeypatch.setattr(
        events.EventFileWriter,
        "close",
        lambda self: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")),
    )
    with pytest.warns(RuntimeWarning, match="No space left") as caught:
        history = model.fit(
            x,
            y,
            batch_size=8,
            epochs=2,
            verbose=0,
            callbacks=[tfprobe.LayerProbe(tmp_path / "run", record_freq=1, log_freq=2)],
        )
    assert len(history.history["loss"]) == 2
    assert sum("could not write" in str(w.message) for w in caught) == 1  # warned once, not per window
    monkeypatch.undo()
    assert sorted(set(tfprobe.read_logdir(tmp_path).step)) == [2]  # what reached the disk stays readable


def test_disk_full_in_strict_mode_raises(tmp_path, monkeypatch):
    x, y = data()
    model = mlp()
    model.compile("sgd", "mse")
    real_write = events.EventFileWriter.write

    def write(self, event):
        if event.HasField("summary"):  # the file header is written, the first window is not
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, event)

    monkeypatch.setattr(events.EventFileWriter, "write", write)
    with pytest.raises(OSError, match="No space left"):
        model.fit(x, y, batch_size=8, verbose=0, callbacks=[tfprobe.LayerProbe(tmp_path, strict=True, log_freq=2)])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"record_freq": 2**64}, r"`record_freq`.*record_freq=18446744073709551616"),
        ({"log_freq": 2**62}, r"`log_freq`.*below 2\*\*62"),
        ({"strict": "false"}, r"`strict` must be True or False. Received: strict='false'"),
        ({"strict": 1}, r"strict=1"),
        ({"saturation_margin": False}, r"saturation_margin=False"),
        ({"saturation_margin": True}, r"saturation_margin=True"),
        ({"near_zero": True}, r"near_zero=True"),
        ({"kernel": "gpu"}, r"`kernel` must be one of 'auto', 'native', 'graph'. Received: kernel='gpu'"),
    ],
)
def test_bad_arguments_name_the_argument_and_value(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tfprobe.LayerProbe(tmp_path, **kwargs)


def test_every_fit_that_runs_a_step_leaves_a_window(tmp_path):
    x, y = data(n=24)
    model = mlp()
    model.compile("sgd", "mse")
    probe = tfprobe.LayerProbe(tmp_path)  # defaults: record_freq=10, log_freq=100
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(x, y, batch_size=8, verbose=0, callbacks=[probe])  # steps 1-3
        model.fit(x, y, batch_size=8, verbose=0, callbacks=[probe])  # steps 4-6
    df = tfprobe.read_logdir(tmp_path)
    assert sorted(set(df.step)) == [3, 6]
    hist = tfprobe.read_histograms(tmp_path)
    assert sorted(set(hist.step)) == [3, 6]  # the first step of a fit has its histogram too


def test_a_fit_that_writes_nothing_says_so(tmp_path):
    x, y = data(n=8)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Lambda(lambda t: tf.cast(t > 0, tf.int32), name="sign"),
            keras.layers.Lambda(lambda t: tf.cast(t, tf.float32), name="back"),
        ]
    )
    model.compile("sgd", "mse")
    probe = tfprobe.LayerProbe(tmp_path, layers="sign")
    with pytest.warns(RuntimeWarning, match=r"wrote nothing to .* in this `fit` \(sign: output is not a floating"):
        model.fit(x, y[:, :1], verbose=0, callbacks=[probe])


@pytest.mark.parametrize("kernel", ["graph", "auto"])
def test_one_failure_for_every_series_is_one_warning_naming_how_many(tmp_path, monkeypatch, kernel):
    """A kernel that fails for every layer gives one warning per cause, not one per series; training goes on."""
    make = tfprobe.kernels.make

    def failing_make(*args, **kwargs):
        made = make(*args, **kwargs)

        def partials(*a, **k):
            raise RuntimeError("no partials today")

        object.__setattr__(made, "partials", partials)
        return made

    monkeypatch.setattr(tfprobe.kernels, "make", failing_make)
    x, y = data(n=16)
    model = mlp()
    model.compile("sgd", "mse")
    probe = tfprobe.LayerProbe(tmp_path, record_freq=1, log_freq=1, kernel=kernel)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[probe])
    mine = [str(w.message) for w in caught if str(w.message).startswith("tfprobe: not recording")]
    assert mine == ["tfprobe: not recording 3 series ('hidden', 'squash', 'out') from now on: no partials today"]
    assert len(history.history["loss"]) == 2
    assert probe.series == [] and sorted(probe._recorder.dropped) == ["hidden", "out", "squash"]


def test_many_probes_in_a_loop_print_no_retracing_warning(tmp_path, caplog):
    x, y = data(n=16)
    model = mlp()
    model.compile("sgd", "mse")
    # TensorFlow warns when 5 of the last 10 calls of a function's code traced it, counting every model of the
    # process: a plain fit of 12 steps first, so that only this loop's calls are in that window.
    model.fit(np.tile(x, (6, 1)), np.tile(y, (6, 1)), batch_size=8, verbose=0)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        for i in range(8):
            model.fit(x, y, batch_size=8, verbose=0, callbacks=[tfprobe.LayerProbe(tmp_path / str(i), log_freq=1)])
    retracing = [r.getMessage() for r in caplog.records if "retracing" in r.getMessage()]
    assert not retracing, retracing
    assert len(set(tfprobe.read_logdir(tmp_path).run)) == 8


def test_a_selection_that_matches_nothing_lists_the_layers(tmp_path):
    x, y = data(n=8)
    model = mlp()
    model.compile("sgd", "mse")
    for spec in (re.compile("hid"), keras.layers.Conv2D, lambda layer: False):
        probe = tfprobe.LayerProbe(tmp_path, layers=spec)
        with pytest.raises(ValueError, match=r"`layers` matched no layer .*Available layers: hidden, squash, out"):
            model.fit(x, y, verbose=0, callbacks=[probe])
        assert "call" not in model.get_layer("hidden").__dict__


def test_unknown_names_suggest_close_ones_and_cut_long_lists(tmp_path):
    model = keras.Sequential([keras.Input((4,))] + [keras.layers.Dense(4, name=f"dense_{i}") for i in range(60)])
    model.compile("sgd", "mse")
    probe = tfprobe.LayerProbe(tmp_path, layers="dense_7O")
    with pytest.raises(ValueError) as info:
        model.fit(np.ones((8, 4)), np.ones((8, 4)), verbose=0, callbacks=[probe])
    listed = str(info.value).split("Available layers: ")[1]
    assert listed.startswith("dense_7") and listed.endswith("and 20 more")


def residual_model():
    """A nested backbone, a residual addition, a branch left unrecorded and a layer called twice."""
    inp = keras.Input((6,), name="x")
    backbone = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(6, name="conv1"), keras.layers.Dense(6, name="conv2")], name="backbone"
    )
    h = backbone(inp)
    a = keras.layers.Dense(6, activation="relu", name="a")(h)
    skipped = keras.layers.Dense(6, name="skipped")(h)
    b = keras.layers.Dense(6, name="b")(skipped)
    merged = keras.layers.Add(name="merge")([a, b])
    shared = keras.layers.Dense(6, name="shared")
    out = shared(shared(merged))
    model = keras.Model(inp, out)
    model.compile("sgd", "mse")
    return model


def test_each_series_records_the_series_that_feed_it(tmp_path):
    model = residual_model()
    probe = tfprobe.LayerProbe(tmp_path, layers=lambda layer: layer.name != "skipped", log_freq=1)
    model.fit(np.ones((8, 6)), np.ones((8, 6)), verbose=0, callbacks=[probe])
    inputs = {name: s.info["inputs"] for name, s in probe._recorder.series.items()}
    assert inputs == {
        "backbone/conv1": [],
        "backbone/conv2": ["backbone/conv1"],
        "a": ["backbone/conv2"],
        "b": ["backbone/conv2"],  # through the unrecorded `skipped`
        "merge": ["a", "b"],
        "shared": ["merge"],
        "shared#1": ["shared"],
    }


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(3, 3, activation="relu", name="conv")
        self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self.head = keras.layers.Dense(2, name="head")

    def call(self, x):
        return self.head(self.pool(self.conv(x)))


@pytest.mark.parametrize("kind", ["sequential", "nested", "subclassed"])
def test_layer_outputs_outside_training_match_the_layers(kind):
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype("float32")
    if kind == "subclassed":
        model = Subclassed()
        model(x)
        conv, pool, head = model.conv, model.pool, model.head
        names = ("conv", "pool", "head")
    else:
        inner = keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(3, 3, activation="relu", name="conv"),
                keras.layers.GlobalAveragePooling2D(name="pool"),
            ],
            name="body",
        )
        model = keras.Sequential([keras.Input((8, 8, 1)), inner, keras.layers.Dense(2, name="head")])
        if kind == "sequential":
            model = keras.Sequential([keras.Input((8, 8, 1))] + inner.layers + [model.layers[-1]])
            names = ("conv", "pool", "head")
        else:
            names = ("body/conv", "body/pool", "head")
        conv, pool, head = (model.get_layer(n) if kind == "sequential" else None for n in ("conv", "pool", "head"))
        if kind == "nested":
            conv, pool, head = inner.get_layer("conv"), inner.get_layer("pool"), model.get_layer("head")
    got = layer_outputs(model, x)
    want_conv = np.asarray(conv(x))
    want_pool = np.asarray(pool(want_conv))
    assert sorted(got) == sorted(names)
    np.testing.assert_allclose(got[names[0]], want_conv, rtol=1e-6)
    np.testing.assert_allclose(got[names[1]], want_pool, rtol=1e-6)
    np.testing.assert_allclose(got[names[2]], np.asarray(head(want_pool)), rtol=1e-6)
    assert all("call" not in layer.__dict__ for layer in (conv, pool, head))


def reference_cnn():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("kernel", ["native", "graph"])
@pytest.mark.parametrize("with_nan, gradients", [(False, False), (True, False), (False, True)])
def test_the_probe_does_not_change_what_training_computes(tmp_path, kernel, with_nan, gradients):
    """Weights and losses after training are bitwise those of a run without the probe (same seeds; the CPU
    kernels of this model are deterministic), also with a NaN in the inputs, which a fused Conv+ReLU maps to 0
    on some CPUs and propagates on others: the run without the probe, on the same machine, is the oracle, and
    NaN equals NaN."""
    if kernel == "native" and not tfprobe.kernels.native.available():
        pytest.skip("no C++ compiler for the native kernel")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 4, 64)
    if with_nan:
        x[3, 2, 2, 0] = np.nan
    runs = []
    probed = tfprobe.LayerProbe(
        tmp_path, record_freq=1, log_freq=2, histogram_freq=1, kernel=kernel, gradients=gradients
    )
    for probe in (None, probed):
        model = reference_cnn()
        history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[probe] if probe else [])
        runs.append((history.history["loss"], model.get_weights()))
    (loss_a, weights_a), (loss_b, weights_b) = runs
    np.testing.assert_array_equal(np.array(loss_b), np.array(loss_a))  # NaN-aware, and exact
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(weights_a, weights_b))
    assert len(tfprobe.read_logdir(tmp_path)) > 0


def test_operations_that_are_not_layers_are_recorded(tmp_path):
    """A residual addition and gate arithmetic written with operators and `keras.ops` (graph nodes without a
    Layer in Keras 3) are series named as `model.summary()` names them, in graph order, selectable."""
    inp = keras.Input((6,))
    h = keras.layers.Dense(6, activation="relu", name="h")(inp)
    residual = inp + h
    gate = keras.ops.multiply(residual, 1 / 6)
    out = keras.layers.Dense(2, name="out")(gate)
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.SGD(0.0), "mse")
    x = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
    probe = tfprobe.LayerProbe(tmp_path / "all", record_freq=1, log_freq=1)
    model.fit(x, np.zeros((8, 2)), batch_size=8, verbose=0, callbacks=[probe])
    layers = tfprobe.read_layers(tmp_path / "all")
    add, multiply = [op.name for op in model.operations[2:4]]  # `add`, `multiply` (`add_1`, ... after other tests)
    assert layers.layer.tolist() == ["h", add, multiply, "out"] and add.startswith("add")
    assert layers["class"].tolist() == ["Dense", "Add", "Multiply", "Dense"]
    assert probe._recorder.series[add].info["inputs"] == ["h"]
    wide = tfprobe.read_logdir(tmp_path / "all", pivot=True).set_index("layer")
    hidden = np.maximum(x @ model.get_layer("h").get_weights()[0] + model.get_layer("h").get_weights()[1], 0)
    np.testing.assert_allclose(wide.loc[add, "mean"], (x + hidden).mean(), rtol=1e-5)
    np.testing.assert_allclose(wide.loc[multiply, "max"], (x + hidden).max() / 6, rtol=1e-5)
    chosen = tfprobe.LayerProbe(tmp_path / "ops", layers=[add], record_freq=1, log_freq=1)
    model.fit(x, np.zeros((8, 2)), batch_size=8, verbose=0, callbacks=[chosen])
    assert chosen.series == [add]


@pytest.mark.parametrize("include_masked", [False, True])
def test_masked_positions_are_left_out_of_the_statistics(tmp_path, include_masked):
    ids = _data.padded_ids()
    model = keras.Sequential(
        [
            keras.Input((10,), dtype="int32"),
            keras.layers.Embedding(20, 6, mask_zero=True, name="emb"),
            keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True), name="bi"),
            keras.layers.TimeDistributed(keras.layers.Dense(3, activation="sigmoid"), name="td"),
            keras.layers.GlobalAveragePooling1D(name="pool"),
        ]
    )
    model.compile(keras.optimizers.SGD(0.0), "mse")
    probe = tfprobe.LayerProbe(tmp_path, record_freq=1, log_freq=1, include_masked=include_masked)
    model.fit(ids, np.zeros((8, 3)), batch_size=8, verbose=0, callbacks=[probe])
    wide = tfprobe.read_logdir(tmp_path, pivot=True).set_index("layer")
    outputs = layer_outputs(model, ids)
    keep = ids != 0
    for name in ("emb", "bi", "td"):
        values = outputs[name] if include_masked else outputs[name][keep]
        np.testing.assert_allclose(wide.loc[name, "mean"], values.mean(), rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(wide.loc[name, "std"], values.std(), rtol=1e-4, err_msg=name)
        np.testing.assert_allclose(wide.loc[name, "zero_fraction"], (values == 0).mean(), err_msg=name)
    assert "saturation_fraction" in wide.columns and np.isfinite(wide.loc["td", "saturation_fraction"])
    layers = tfprobe.read_layers(tmp_path).set_index("layer")
    assert layers.loc["pool", "kind"] == "pooling"


def test_time_distributed_pooling_has_its_retention(tmp_path):
    model = keras.Sequential(
        [keras.Input((3, 4, 4, 2)), keras.layers.TimeDistributed(keras.layers.MaxPooling2D(), name="tdpool")]
    )
    model.compile(keras.optimizers.SGD(0.0), "mse")
    x = np.abs(np.random.default_rng(0).normal(size=(4, 3, 4, 4, 2))).astype("float32")
    model.fit(
        x, np.zeros((4, 3, 2, 2, 2)), verbose=0, callbacks=[tfprobe.LayerProbe(tmp_path, record_freq=1, log_freq=1)]
    )
    row = tfprobe.read_logdir(tmp_path, pivot=True).set_index("layer").loc["tdpool"]
    pooled = x.reshape(4, 3, 2, 2, 2, 2, 2).max(axis=(3, 5))
    assert row["size_ratio"] == 0.25
    np.testing.assert_allclose(row["mass_retention"], pooled.sum() / x.sum(), rtol=1e-5)


def test_remote_log_dir_through_gfile():
    """`gs://`-style log dirs go through tf.io.gfile (here TensorFlow's in-memory `ram://` filesystem)."""
    x, y = data(n=16)
    model = mlp()
    model.compile("sgd", "mse")
    model.fit(
        x,
        y,
        batch_size=8,
        verbose=0,
        callbacks=[tfprobe.LayerProbe("ram://tfprobe-core/run", record_freq=1, log_freq=1)],
    )
    assert not tf.io.gfile.exists("ram:") and tf.io.gfile.glob("ram://tfprobe-core/run/events.out.tfevents.*")
    assert sorted(set(tfprobe.read_logdir("ram://tfprobe-core").step)) == [1, 2]


class CountingTraces(keras.Sequential):
    """Counts how often its train step is traced (Python calls of `train_step`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.traces = 0

    def train_step(self, data):
        self.traces += 1
        return super().train_step(data)


@pytest.mark.parametrize("histogram_freq", [0, 1])
def test_probe_traces_the_step_as_often_as_keras(tmp_path, histogram_freq):
    # Accumulators created while the step is traced once made `tf.function` trace the whole step twice.
    def traces(callbacks):
        model = CountingTraces([keras.Input((4,)), keras.layers.Dense(3, activation="relu"), keras.layers.Dense(2)])
        model.compile("sgd", "mse")
        x, y = np.ones((8, 4), "float32"), np.zeros((8, 2), "float32")
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=callbacks)
        return model.traces

    probe = tfprobe.LayerProbe(str(tmp_path), histogram_freq=histogram_freq, record_freq=1, log_freq=2)
    assert traces([probe]) == traces([]) == 1
    assert probe.series
