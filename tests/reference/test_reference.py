"""The reference set as a user passes it: arrays, tuples or a finite dataset; bad ones named clearly."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfprobe.reference import ReferenceData, features, reduce_features


def test_arrays_and_datasets_give_the_same_batches_and_labels():
    x = np.arange(30, dtype="float32").reshape(10, 3)
    y = np.arange(10) % 3
    from_arrays = ReferenceData((x, y), batch_size=4)
    from_dataset = ReferenceData(tf.data.Dataset.from_tensor_slices((x, y)).batch(4))
    for ref in (from_arrays, from_dataset):
        assert len(ref) == 10
        np.testing.assert_array_equal(ref.labels(), y)
        np.testing.assert_array_equal(np.concatenate([b for b, _ in ref.batches()]), x)
        head_x, head_y = ref.head(6)
        np.testing.assert_array_equal(head_x, x[:6])
        np.testing.assert_array_equal(head_y, y[:6])
    assert ReferenceData(x).labels() is None and ReferenceData((x,)).head(2)[1] is None


@pytest.mark.parametrize(
    "data, error, message",
    [
        ((np.zeros((3, 2)), np.zeros(4)), ValueError, "3 inputs and 4 labels"),
        ((np.zeros((0, 2)),), ValueError, "at least one example"),
        ((1, 2, 3), ValueError, r"x, \(x,\) or \(x, y\)"),
        (5.0, TypeError, "example axis"),
    ],
)
def test_bad_reference_data_is_named(data, error, message):
    with pytest.raises(error, match=message) as info:
        ReferenceData(data)
    assert "reference_data" in str(info.value)


def test_features_are_reduced_per_batch_and_match_the_layers():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(3, name="head"),
        ]
    )
    x = np.random.default_rng(0).normal(size=(10, 6, 6, 2)).astype("float32")
    got = features(model, ReferenceData(x, batch_size=3), max_dim=8)
    conv = np.asarray(model.get_layer("conv")(x))
    np.testing.assert_allclose(got["conv"], conv.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    assert got["flat"].shape == (10, 8)  # 64 values projected on 8 fixed directions
    np.testing.assert_allclose(got["flat"], reduce_features(conv.reshape(10, -1), max_dim=8), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["head"], np.asarray(model(x)), rtol=1e-5, atol=1e-6)


class NeedsEager(keras.Model):
    """`call` needs concrete values: it cannot be traced into a graph."""

    def __init__(self):
        super().__init__(name="needs_eager")
        self.d = keras.layers.Dense(2, name="d")

    def call(self, x):
        return self.d(x) * float(np.asarray(x).max())


def test_a_model_that_cannot_be_traced_runs_eagerly_with_one_warning():
    from tfprobe.reference import LayerOutputs, collect

    x = np.random.default_rng(0).normal(size=(10, 3)).astype("float32")
    model = NeedsEager()
    model(x[:2])
    outputs = LayerOutputs(model)
    with pytest.warns(RuntimeWarning) as caught:
        got = collect(model, ReferenceData(x, batch_size=4), outputs=outputs)
        collect(model, ReferenceData(x, batch_size=4), outputs=outputs)
    mine = [str(w.message) for w in caught if "tfprobe" in str(w.message)]
    assert len(mine) == 1 and "'needs_eager' cannot be traced" in mine[0] and "run eagerly" in mine[0], mine
    assert outputs._function is False  # fell back
    want = np.concatenate([np.asarray(model.d(x[i : i + 4])) for i in range(0, 10, 4)])
    np.testing.assert_allclose(got.features["d"], want, rtol=1e-5, atol=1e-6)
    assert got.infos["d"] == {"series": "d", "layer": "d", "order": 0, "class": "Dense", "shape": [None, 2]}


def test_strict_raises_the_tracing_error_of_the_reference_pass():
    from tfprobe.reference import LayerOutputs, collect

    x = np.random.default_rng(0).normal(size=(10, 3)).astype("float32")
    model = NeedsEager()
    model(x[:2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(Exception, match="(?i)numpy|tensor") as raised:
            collect(model, ReferenceData(x, batch_size=4), outputs=LayerOutputs(model, strict=True))
    assert not isinstance(raised.value, RuntimeWarning)


def test_the_traced_capture_is_reused_across_passes():
    from tfprobe.reference import LayerOutputs, collect

    model = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Conv2D(3, 3, name="conv")])
    x = np.random.default_rng(0).normal(size=(9, 4, 4, 2)).astype("float32")
    outputs = LayerOutputs(model)
    first = collect(model, ReferenceData(x, batch_size=4), outputs=outputs)
    function = outputs._function
    again = collect(model, ReferenceData(x, batch_size=4), outputs=outputs)
    assert outputs._function is function and function.experimental_get_tracing_count() == 1
    np.testing.assert_array_equal(first.features["conv"], again.features["conv"])
    assert first.infos["conv"]["shape"] == [None, 2, 2, 3]


def test_cka_drift_is_defined_for_constant_layers():
    from tfprobe.reference.measures import cka_drift, layer_measures, linear_cka

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    constant = np.full((30, 4), 0.25) + 1e-9 * rng.normal(size=(30, 4))  # constant up to float rounding
    assert np.isnan(linear_cka(np.zeros((30, 4)), x))  # CKA itself is 0/0 there
    assert layer_measures(constant, previous=np.zeros((30, 4)))["cka_drift"] == 1.0
    assert layer_measures(x, previous=constant)["cka_drift"] == 0.0
    assert layer_measures(constant, previous=x)["cka_drift"] == 0.0
    assert cka_drift(x, 3 * x + 1) == pytest.approx(1.0)
    assert np.isnan(cka_drift(x, np.full((30, 4), np.nan)))


def test_a_layer_normalising_over_one_value_has_a_cka_drift_of_one(tmp_path):
    """The time-series Transformer's case: `LayerNormalization` over an axis of size 1 outputs a constant."""
    import tfprobe

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, name="dense"),
            keras.layers.Reshape((8, 1)),
            keras.layers.LayerNormalization(epsilon=1e-6, name="norm"),
            keras.layers.Flatten(),
            keras.layers.Dense(1, name="out"),
        ]
    )
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    probe = tfprobe.LayerProbe(tmp_path, reference_data=x[:16], reference_freq=1, layers=["dense", "norm"])
    model.fit(x, x[:, :1], batch_size=16, epochs=3, verbose=0, callbacks=[probe])
    df = tfprobe.read_logdir(tmp_path)
    drift = df[df["stat"] == "cka_drift"].set_index(["layer", "step"])["value"]
    assert drift.loc["norm"].tolist() == [1.0, 1.0]  # steps 4 and 6: constant at every reference step
    assert not drift.isna().any()


def test_targets_of_several_outputs_are_no_class_labels():
    x = np.zeros((6, 2), "float32")
    targets = {"a": np.arange(6), "b": np.ones((6, 3))}
    assert ReferenceData((x, targets)).labels() is None
    dataset = tf.data.Dataset.from_tensor_slices((x, targets)).batch(4)
    reference = ReferenceData(dataset)
    assert len(reference) == 6 and reference.labels() is None
    assert [y for _, y in reference.batches()] == [None, None]
