"""Lookup layers: the one-hot / multi-hot outputs of `IntegerLookup` and `StringLookup` are recorded.

Keras' graph declares them floating (`compute_output_spec`: floatx), but the layers compute them as int64 and the
next layer casts them (the structured-data example of the corpus, issue 23). tfprobe records the float values the
model goes on with, and leaves the integer tensor in the model; an `output_mode="int"` lookup, declared int64,
is still not recorded, with its warning.
"""

import warnings

import keras
import numpy as np
import pytest
from helpers import oracle

import tfprobe

NEAR = 1e-3
BATCH, STEPS = 8, 4


def _data(seed=0):
    rng = np.random.default_rng(seed)
    n = BATCH * STEPS
    x = {
        "code": rng.integers(0, 5, (n, 1)).astype("int64"),  # 4 is out of the vocabulary [1, 2, 3]
        "word": np.array(["a", "b", "c"])[rng.integers(0, 3, (n, 2))],  # "c" is out of ["a", "b"]
        "value": rng.normal(size=(n, 1)).astype("float32"),
    }
    y = ((x["code"][:, 0] >= 2) + (x["word"][:, 0] == "a")).astype("float32")
    return x, y


def _model(jit_compile=False):
    code = keras.Input((1,), name="code", dtype="int64")
    word = keras.Input((2,), name="word", dtype="string")
    value = keras.Input((1,), name="value")
    one_hot = keras.layers.IntegerLookup(vocabulary=[1, 2, 3], output_mode="one_hot", name="code_lookup")(code)
    multi_hot = keras.layers.StringLookup(vocabulary=["a", "b"], output_mode="multi_hot", name="word_lookup")(word)
    x = keras.layers.Concatenate(name="features")([one_hot, multi_hot, value])
    out = keras.layers.Dense(1, name="out")(x)
    model = keras.Model([code, word, value], out)
    model.compile(keras.optimizers.SGD(0.01), "mse", jit_compile=jit_compile)
    return model


def _fit(model, x, y, callbacks=()):
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)  # string inputs: as the corpus example
    return model.fit(dataset, verbose=0, callbacks=list(callbacks)).history


@pytest.mark.parametrize("gradients", [False, True], ids=["forward", "gradients"])
def test_lookup_one_hot_outputs_are_recorded_as_the_model_uses_them(tmp_path, gradients):
    x, y = _data()
    keras.utils.set_random_seed(0)
    plain = _fit(_model(), x, y)
    keras.utils.set_random_seed(0)
    model = _model()
    probe = tfprobe.LayerProbe(tmp_path, record_freq=1, log_freq=STEPS, near_zero=NEAR, gradients=gradients)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "not recording" warning
        probed = _fit(model, x, y, [probe])
    assert probed["loss"] == plain["loss"]  # the probe does not change what training computes

    wide = tfprobe.read_logdir(tmp_path, pivot=True)
    assert {"code_lookup", "word_lookup", "features", "out"} <= set(wide.layer)
    layers = tfprobe.read_layers(tmp_path).set_index("layer")
    # the concatenation is computed from the lookups' outputs (the graph walk crosses Keras' cast)
    assert {"code_lookup", "word_lookup"} <= set(layers.loc["features", "inputs"])
    for name in ("code_lookup", "word_lookup"):
        want = np.asarray(model.get_layer(name)(x[name.split("_")[0]])).astype("float32")
        assert want.shape[1] == 4 if name == "code_lookup" else 3  # the OOV index and the vocabulary
        got = wide[(wide.layer == name) & (wide.step == STEPS)].iloc[0].to_dict()
        oracle.assert_close(
            got,
            oracle.activation_stats([want], NEAR),
            rtol=1e-5,
            atol=1e-6,
            keys=["mean", "std", "min", "max", "zero_fraction", "dead_unit_fraction"],
        )


def test_an_integer_index_lookup_is_not_recorded_and_says_why(tmp_path):
    code = keras.Input((1,), name="code", dtype="int64")
    index = keras.layers.IntegerLookup(vocabulary=[1, 2, 3], name="index")(code)  # output_mode="int": int64
    x = keras.layers.Embedding(4, 2, name="embed")(index)
    model = keras.Model(code, keras.layers.Dense(1, name="out")(keras.layers.Flatten(name="flat")(x)))
    model.compile("sgd", "mse")
    data = np.arange(16, dtype="int64").reshape(16, 1) % 5
    probe = tfprobe.LayerProbe(tmp_path, record_freq=1, log_freq=2)
    with pytest.warns(RuntimeWarning, match=r"not recording index \(output is not a floating tensor: int64\)"):
        model.fit(data, np.zeros(16, "float32"), batch_size=8, verbose=0, callbacks=[probe])
    assert "index" not in set(tfprobe.read_logdir(tmp_path).layer)
