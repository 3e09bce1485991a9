"""Bad arguments fail early with a message that names the argument and echoes the value."""

import os
import re

import keras
import numpy as np
import pytest

import tfprobe


def _model():
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, activation="relu", name="hidden"), keras.layers.Dense(1, name="out")]
    )
    model.compile("sgd", "mse")
    return model


@pytest.mark.parametrize("name", ["record_freq", "log_freq"])
@pytest.mark.parametrize("value", [0, -1, 1.5, "2", True, None])
def test_bad_frequencies(tmp_path, name, value):
    with pytest.raises(ValueError, match=rf"`{name}`.*Received: {name}={re.escape(repr(value))}"):
        tfprobe.LayerProbe(tmp_path, **{name: value})


@pytest.mark.parametrize("value", [-1, 2.0, "10"])
def test_bad_histogram_freq(tmp_path, value):
    with pytest.raises(ValueError, match=rf"histogram_freq={re.escape(repr(value))}"):
        tfprobe.LayerProbe(tmp_path, histogram_freq=value)


def test_histogram_freq_zero_turns_histograms_off(tmp_path):
    assert tfprobe.LayerProbe(tmp_path, histogram_freq=0).histogram_freq == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"near_zero": -1.0},
        {"near_zero": "x"},
        {"saturation_margin": 0.7},
        {"sample_size": 0},
        {"sample_size": 2.5},
        {"sample_size": True},
    ],
)
def test_bad_thresholds(tmp_path, kwargs):
    ((name, value),) = kwargs.items()
    with pytest.raises(ValueError, match=rf"`{name}`.*{name}={re.escape(repr(value))}"):
        tfprobe.LayerProbe(tmp_path, **kwargs)


@pytest.mark.parametrize("value", ["spectogram", "Image", None, 2])
def test_bad_looks_input_kind(tmp_path, value):
    reference = (np.zeros((4, 4)), np.zeros(4, "int32"))
    with pytest.raises(
        ValueError,
        match=r"`looks_input_kind` must be one of 'auto', 'image', 'spectrogram', "
        rf"'waveform'. Received: looks_input_kind={re.escape(repr(value))}$",
    ):
        tfprobe.LayerProbe(tmp_path, reference_data=reference, looks_examples=2, looks_input_kind=value)


def test_looks_input_kind_needs_looks_examples(tmp_path):
    assert tfprobe.LayerProbe(tmp_path).looks_input_kind == "auto"
    with pytest.raises(
        ValueError,
        match=r"`looks_input_kind` needs `looks_examples`.*"
        r"looks_input_kind='spectrogram' and looks_examples=0",
    ):
        tfprobe.LayerProbe(tmp_path, looks_input_kind="spectrogram")


def test_unwritable_log_dir_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match=re.escape(str(blocker / "run"))):
        tfprobe.LayerProbe(blocker / "run")
    if os.geteuid() != 0:  # root can write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ValueError, match="log_dir"):
            tfprobe.LayerProbe(locked / "run")


def test_log_dir_type(tmp_path):
    with pytest.raises(TypeError, match="log_dir=123"):
        tfprobe.LayerProbe(123)


def test_unknown_layer_names_are_listed_with_the_available_ones(tmp_path):
    model = _model()
    probe = tfprobe.LayerProbe(tmp_path, layers=["hidden", "nope", "also_missing"])
    with pytest.raises(ValueError) as info:
        model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0, callbacks=[probe])
    message = str(info.value)
    assert "'nope'" in message and "'also_missing'" in message and "Available layers: hidden, out" in message
    assert "call" not in model.get_layer("hidden").__dict__  # nothing left patched


@pytest.mark.parametrize(
    "value, error",
    [([3.5], TypeError), (3, TypeError), ([""], TypeError), ([], ValueError), (("hidden", None), TypeError)],
)
def test_bad_layer_spec_type_is_named_at_construction(tmp_path, value, error):
    with pytest.raises(error, match=rf"`layers`.*Received: layers={re.escape(repr(value))}"):
        tfprobe.LayerProbe(tmp_path, layers=value)


def test_layer_selection_by_class_regex_and_predicate(tmp_path):
    for spec, expected in [
        (keras.layers.Dense, ["hidden", "out"]),
        (re.compile("hid.*"), ["hidden"]),
        (lambda layer: layer.name == "out", ["out"]),
        ("out", ["out"]),
    ]:
        model = _model()
        probe = tfprobe.LayerProbe(tmp_path / str(len(expected)), layers=spec, log_freq=1, record_freq=1)
        model.fit(np.ones((8, 4)), np.ones((8, 1)), batch_size=4, verbose=0, callbacks=[probe])
        assert probe.series == expected


def test_model_with_nothing_to_record(tmp_path):
    class Doubler(keras.Model):
        def call(self, x):
            return x * 2.0

    model = Doubler()
    model.compile("sgd", "mse")
    probe = tfprobe.LayerProbe(tmp_path)
    with pytest.raises(ValueError, match="nothing to record"):
        model.fit(np.ones((8, 4)), np.ones((8, 4)), verbose=0, callbacks=[probe])


def test_detach_after_an_interrupted_fit(tmp_path):
    class Boom(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise KeyboardInterrupt

    model = _model()
    probe = tfprobe.LayerProbe(tmp_path, reference_data=np.zeros((4, 4), "float32"))
    with pytest.raises(KeyboardInterrupt):
        model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0, callbacks=[probe, Boom()])
    assert "call" in model.get_layer("hidden").__dict__
    probe.detach()
    assert not list(tmp_path.glob("*.tfprobe-reference"))
    assert "call" not in model.get_layer("hidden").__dict__ and "train_step" not in model.__dict__
    model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)


@pytest.mark.parametrize("value", [1000, 101, 2**62 - 1, -1, 2.0, True, "8"])
def test_looks_examples_is_bounded_at_construction(tmp_path, value):
    reference = (np.zeros((4, 4)), np.zeros(4, "int32"))
    with pytest.raises(
        ValueError,
        match=rf"^`looks_examples` must be an integer in \[0, 100\] \(0 turns Looks off\). "
        rf"Received: looks_examples={re.escape(repr(value))}$",
    ):
        tfprobe.LayerProbe(tmp_path, reference_data=reference, looks_examples=value)
    assert not list(tmp_path.iterdir())  # no event file (open or empty) left behind
    assert tfprobe.LayerProbe(tmp_path, reference_data=reference, looks_examples=100).looks_examples == 100


def test_arguments_after_log_dir_are_keyword_only(tmp_path):
    with pytest.raises(TypeError, match="positional"):
        tfprobe.LayerProbe(tmp_path, None, 1)
    with pytest.raises(TypeError, match="positional"):
        tfprobe.reference.ReferenceData(np.zeros((4, 2)), 2)


class CountSteps(keras.callbacks.Callback):
    steps = 0

    def on_train_batch_begin(self, batch, logs=None):
        CountSteps.steps += 1


@pytest.mark.parametrize(
    "x, message",
    [
        (
            np.zeros((6, 5), "float32"),
            r"`reference_data` must fit the input .* shape \(None, 4\) of float32\. "
            r"Received: x of shape \(N, 5\) holding floats",
        ),
        (np.zeros((6, 4, 2), "float32"), r"Received: x of shape \(N, 4, 2\)"),
        (np.array([["a"] * 4] * 6), r"Received: x of shape \(N, 4\) holding strings"),
        (
            {"other": np.zeros((6, 4))},
            r"must hold every input of model .* missing: keras_tensor.*Received: x with "
            r"keys other",
        ),
    ],
)
@pytest.mark.parametrize("as_dataset", [False, True], ids=["arrays", "dataset"])
def test_reference_data_that_does_not_fit_the_model_fails_before_the_first_step(tmp_path, x, message, as_dataset):
    import tensorflow as tf

    model = _model()
    data = (x, np.zeros(6))
    reference = tf.data.Dataset.from_tensor_slices(data).batch(3) if as_dataset else data
    probe = tfprobe.LayerProbe(tmp_path, reference_data=reference, reference_freq=1)
    CountSteps.steps = 0
    with pytest.raises(ValueError, match=message) as info:
        model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0, callbacks=[probe, CountSteps()])
    assert str(info.value).startswith("`reference_data`")
    assert CountSteps.steps == 0
    assert not list(tmp_path.glob("*.tfprobe*"))
    assert "call" not in model.get_layer("hidden").__dict__ and "train_step" not in model.__dict__


def test_an_unwritable_log_dir_detaches_everything_and_fit_goes_on(tmp_path, monkeypatch):
    """Not only the layers: the optimizers' `apply` wrapper and the reference analysis are undone too."""
    from tfprobe import callback
    from tfprobe.reference.analysis import AnalysisWriter

    def unwritable(log_dir):
        raise OSError("disk full")

    monkeypatch.setattr(callback, "WindowWriter", unwritable)
    closed = []
    discard = AnalysisWriter.discard  # how an analysis closes a reference file no step wrote to
    monkeypatch.setattr(AnalysisWriter, "discard", lambda self: closed.append(self) or discard(self))
    original_apply = keras.optimizers.Optimizer.apply
    probe = tfprobe.LayerProbe(tmp_path, reference_data=(np.zeros((6, 4), "float32"),), gradients=True)
    model = _model()
    with pytest.warns(RuntimeWarning, match="`log_dir` cannot be written: disk full"):
        history = model.fit(np.ones((8, 4)), np.ones((8, 1)), epochs=2, batch_size=4, verbose=0, callbacks=[probe])
    assert len(history.history["loss"]) == 2
    assert "call" not in model.get_layer("hidden").__dict__ and "train_step" not in model.__dict__
    assert keras.optimizers.Optimizer.apply is original_apply  # the optimizer watch is detached
    assert len(closed) == 1 and probe._analyses == [] and probe._writer is None  # the reference file is closed
    assert not list(tmp_path.glob("*.tfprobe-reference"))


def test_a_refusal_after_the_reference_file_was_opened_removes_it(tmp_path, monkeypatch):
    from tfprobe import callback

    def unwritable(log_dir):
        raise OSError("disk full")

    monkeypatch.setattr(callback, "WindowWriter", unwritable)
    probe = tfprobe.LayerProbe(tmp_path, reference_data=(np.zeros((6, 4), "float32"),), strict=True)
    with pytest.raises(ValueError, match="`log_dir` cannot be written: disk full"):
        _model().fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0, callbacks=[probe])
    assert not list(tmp_path.glob("*.tfprobe-reference"))
