"""Reference sets of real models: dict and multi-input data, unbounded datasets, models that cannot be called."""

import threading
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprobe
from tfprobe.reference import MAX_UNBOUNDED_EXAMPLES, ReferenceData, check_inputs, collect

NUMERIC = ["age", "trestbps", "chol", "thalach", "oldpeak"]
CATEGORICAL = ["sex", "cp", "fbs", "restecg", "exang", "slope", "ca"]


def heart_model():
    """The shape of keras-io's "Structured data classification from scratch" (Keras 3): 13 named inputs,

    numerical ones as floats, integer categories one-hot encoded, one string category through a
    `StringLookup`, concatenated, `Dense(32, relu)`, `Dropout`, `Dense(1, sigmoid)` (widths shrunk).
    """
    keras.utils.set_random_seed(0)
    inputs, encoded = {}, []
    for name in NUMERIC:
        inputs[name] = keras.Input((1,), name=name)
        encoded.append(inputs[name])
    for name in CATEGORICAL:
        inputs[name] = keras.Input((1,), name=name, dtype="int64")
        encoded.append(keras.layers.CategoryEncoding(5, output_mode="one_hot", name=f"{name}_onehot")(inputs[name]))
    inputs["thal"] = keras.Input((1,), name="thal", dtype="string")
    encoded.append(
        keras.layers.StringLookup(
            vocabulary=["fixed", "normal", "reversible"], output_mode="one_hot", name="thal_lookup"
        )(inputs["thal"])
    )
    x = keras.layers.concatenate(encoded, name="features")
    x = keras.layers.Dense(8, activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(0.5)(x)
    output = keras.layers.Dense(1, activation="sigmoid", name="out")(x)
    model = keras.Model(list(inputs.values()), output)
    model.compile("adam", "binary_crossentropy")
    return model


def heart_data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = {name: rng.normal(size=(n, 1)).astype("float32") for name in NUMERIC}
    x.update({name: rng.integers(0, 4, (n, 1)) for name in CATEGORICAL})
    x["thal"] = rng.choice(["fixed", "normal", "reversible"], (n, 1))
    y = (x["age"][:, 0] + (x["cp"][:, 0] > 1) > 0.5).astype("int64")  # a learnable signal
    return x, y


def train(model, x, y, probe, epochs=1):
    """`fit` on a dataset, as the example trains (Keras' array adapter takes no NumPy strings)."""
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    return model.fit(data, epochs=epochs, verbose=0, callbacks=[probe])


def measured_layers(log_dir):
    df = tfprobe.read_logdir(log_dir)
    return set(df.loc[df["stat"] == "effective_rank", "layer"])


@pytest.mark.parametrize("as_dataset", [False, True], ids=["arrays", "dataset"])
def test_a_13_input_structured_model_takes_dict_reference_data(tmp_path, as_dataset):
    model = heart_model()
    x, y = heart_data()
    reference = (
        tf.data.Dataset.from_tensor_slices(({k: v[:20] for k, v in x.items()}, y[:20])).batch(8)
        if as_dataset
        else ({k: v[:20] for k, v in x.items()}, y[:20])
    )
    probe = tfprobe.LayerProbe(tmp_path, reference_data=reference, reference_freq=1, log_freq=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(model, x, y, probe, epochs=2)
    mine = [str(w.message) for w in caught if "tfprobe" in str(w.message)]
    assert mine == []  # the StringLookup's one-hot (int64, declared float) is recorded as the model uses it
    assert len(probe.reference_data) == 20
    assert {"features", "hidden", "out", "sex_onehot", "thal_lookup"} <= measured_layers(tmp_path)
    cka = tfprobe.read_cka(tmp_path)
    assert set(cka["step"]) == {3, 6}
    # The measured features are the layers' outputs on those 20 examples (the last reference step's weights).
    got = collect(model, ReferenceData(reference))
    hidden = keras.Model(model.inputs, model.get_layer("hidden").output)({k: v[:20] for k, v in x.items()})
    np.testing.assert_allclose(got.features["hidden"], np.asarray(hidden), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got.labels, y[:20])


def test_multi_input_list_inside_the_tuple():
    a = keras.Input((3,), name="a")
    b = keras.Input((2, 2), name="b")
    out = keras.layers.Dense(2, name="d")(keras.layers.concatenate([a, keras.layers.Flatten()(b)]))
    model = keras.Model([a, b], out)
    rng = np.random.default_rng(0)
    xa, xb = rng.normal(size=(10, 3)).astype("float32"), rng.normal(size=(10, 2, 2)).astype("float32")
    reference = ReferenceData(([xa, xb], np.arange(10) % 2), batch_size=4)
    check_inputs(model, reference)
    head, labels = reference.head(5)
    assert [h.shape for h in head] == [(5, 3), (5, 2, 2)] and labels.tolist() == [0, 1, 0, 1, 0]
    np.testing.assert_allclose(
        collect(model, reference).features["d"], np.asarray(model([xa, xb])), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(
        ValueError,
        match=r"`reference_data` must hold the 2 inputs of model .* Received: x as one "
        r"array of shape \(N, 3\)",
    ):
        check_inputs(model, ReferenceData(xa))
    with pytest.raises(ValueError, match=r"`reference_data` inputs must have as many examples each"):
        ReferenceData(([xa, xb[:4]],))


@pytest.mark.parametrize("as_dataset", [False, True], ids=["arrays", "dataset"])
def test_dict_reference_data_is_checked_against_the_named_inputs(as_dataset):
    model = heart_model()
    x, y = heart_data(8)

    def ref(data):
        return ReferenceData(tf.data.Dataset.from_tensor_slices(data).batch(4) if as_dataset else data)

    check_inputs(model, ref((x, y)))
    missing = {k: v for k, v in x.items() if k != "thal"}
    with pytest.raises(ValueError, match=r"`reference_data` must hold every input .* missing: thal\. Received"):
        check_inputs(model, ref((missing, y)))
    wrong = {**x, "age": np.zeros((8, 3), "float32")}
    with pytest.raises(
        ValueError,
        match=r"`reference_data` must fit the input 'age' .*\(None, 1\) of float32\. "
        r"Received: x\['age'\] of shape \(N, 3\) holding floats",
    ):
        check_inputs(model, ref((wrong, y)))
    numbers = {**x, "thal": np.zeros((8, 1), "float32")}
    with pytest.raises(ValueError, match=r"input 'thal' .* of string\. Received: x\['thal'\] .* holding floats"):
        check_inputs(model, ref((numbers, y)))


def bounded_in_time(make, *args, seconds=120):
    """`make(*args)`, failing (not hanging) if it does not return within `seconds` (a daemon thread runs it)."""
    result = []
    thread = threading.Thread(target=lambda: result.append(make(*args)), daemon=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        thread.start()
        thread.join(seconds)
    assert not thread.is_alive(), f"still reading the dataset after {seconds} s"
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result[0]


def test_a_dataset_of_unknown_cardinality_is_taken_up_to_a_bound_with_a_warning():
    x = np.arange(40, dtype="float32").reshape(20, 2)
    endless = tf.data.Dataset.from_tensor_slices((x, np.arange(20))).repeat().filter(lambda a, b: b % 2 == 0).batch(16)
    assert int(endless.cardinality()) == int(tf.data.UNKNOWN_CARDINALITY)
    with pytest.warns(
        RuntimeWarning,
        match=r"`reference_data` is a tf.data.Dataset of unknown or infinite "
        r"cardinality; its first 128 batches \(2048 examples\)",
    ):
        reference = bounded_in_time(ReferenceData, endless)
    assert len(reference) == MAX_UNBOUNDED_EXAMPLES
    labels = reference.labels()
    assert len(labels) == MAX_UNBOUNDED_EXAMPLES and set(labels) <= set(range(0, 20, 2))
    assert sum(len(b) for b, _ in reference.batches()) == MAX_UNBOUNDED_EXAMPLES  # every pass: the same prefix
    np.testing.assert_array_equal(np.concatenate([y for _, y in reference.batches()]), labels)
    infinite = tf.data.Dataset.from_tensor_slices((x, np.arange(20))).batch(5).repeat()
    with pytest.warns(RuntimeWarning, match="first 410 batches"):
        assert len(ReferenceData(infinite)) == 2050
    finite = tf.data.Dataset.from_tensor_slices((x, np.arange(20))).filter(lambda a, b: b < 7).batch(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(ReferenceData(finite)) == 7  # unknown cardinality, but it ends: read whole, no warning


def test_layer_probe_takes_an_unbounded_dataset_in_its_constructor(tmp_path):
    x = np.ones((8, 2), "float32")
    endless = tf.data.Dataset.from_tensor_slices((x, np.zeros(8))).repeat().filter(lambda a, b: True).batch(64)
    with pytest.warns(RuntimeWarning, match="unknown or infinite cardinality"):
        probe = bounded_in_time(lambda: tfprobe.LayerProbe(tmp_path, reference_data=endless))
    assert len(probe.reference_data) == MAX_UNBOUNDED_EXAMPLES


class Distiller(keras.Model):
    """keras-io's knowledge distillation (the tf.keras version): a custom `train_step`, no `call`."""

    def __init__(self, student, teacher):
        super().__init__()
        self.teacher, self.student = teacher, student
        self.tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.tracker]

    def train_step(self, data):
        x, y = data
        teacher_predictions = self.teacher(x, training=False)
        with tf.GradientTape() as tape:
            student_predictions = self.student(x, training=True)
            student_loss = keras.losses.sparse_categorical_crossentropy(y, student_predictions, from_logits=True)
            distillation = keras.losses.kl_divergence(
                tf.nn.softmax(teacher_predictions / 3.0), tf.nn.softmax(student_predictions / 3.0)
            )
            loss = tf.reduce_mean(0.1 * student_loss + 0.9 * distillation)
        gradients = tape.gradient(loss, self.student.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.student.trainable_variables))
        self.tracker.update_state(loss)
        return {"loss": self.tracker.result()}


def distiller():
    keras.utils.set_random_seed(0)

    def net(name):
        return keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(4, 3, activation="relu"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(3),
            ],
            name=name,
        )

    model = Distiller(net("student"), net("teacher"))
    model.compile(optimizer="adam")
    return model


def test_a_model_without_call_refuses_the_reference_set_with_one_warning(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 8, 8, 1)).astype("float32"), np.arange(16) % 3
    model = distiller()
    probe = tfprobe.LayerProbe(
        tmp_path, reference_data=(x[:4], y[:4]), looks_examples=2, reference_freq=1, record_freq=1, log_freq=2
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[probe])
    mine = [str(w.message) for w in caught if "tfprobe" in str(w.message)]
    assert len(mine) == 1 and "`reference_data` is not analysed in this `fit`: model" in mine[0]
    assert "has no `call` method" in mine[0]
    assert len(history.history["loss"]) == 2
    assert not list(tmp_path.glob("*.tfprobe-reference")) and not list(tmp_path.glob("*.tfprobe-looks"))
    assert any(l.startswith("student/dense") for l in set(tfprobe.read_logdir(tmp_path)["layer"]))  # windows recorded

    strict = tfprobe.LayerProbe(tmp_path / "strict", reference_data=(x[:4], y[:4]), looks_examples=2, strict=True)
    model = distiller()
    with pytest.raises(ValueError, match=r"`reference_data` is not analysed .* has no `call` method.*strict=True"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[strict])
    assert not list((tmp_path / "strict").glob("*.tfprobe-reference"))
    assert not any("call" in layer.__dict__ for layer in model.student.layers)  # never instrumented


def test_looks_on_a_model_it_cannot_explain_is_turned_off_with_one_warning(tmp_path):
    model = heart_model()
    x, y = heart_data()
    probe = tfprobe.LayerProbe(tmp_path, reference_data=(x, y), looks_examples=2, reference_freq=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(model, x, y, probe)
    mine = [str(w.message) for w in caught if "looks_examples" in str(w.message)]
    assert len(mine) == 1 and mine[0].startswith("tfprobe: `looks_examples` is turned off in this `fit`: ")
    assert "hidden" in measured_layers(tmp_path)  # the representation measures still run
    assert not list(tmp_path.glob("*.tfprobe-looks"))
    model = heart_model()
    strict = tfprobe.LayerProbe(tmp_path / "strict", reference_data=(x, y), looks_examples=2, strict=True)
    with pytest.raises(ValueError, match="`looks_examples` is turned off"):
        train(model, x, y, strict)
    assert not list((tmp_path / "strict").glob("*.tfprobe-*"))


def test_models_that_can_be_called_are_recognised():
    from tfprobe.reference import has_call

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    class FromSubclassed(Subclassed):
        pass

    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    assert has_call(unbuilt) and has_call(Subclassed()) and has_call(FromSubclassed()) and has_call(heart_model())
    assert not has_call(distiller())
