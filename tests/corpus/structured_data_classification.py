# Origin: keras-team/keras-io examples/structured_data/structured_data_classification_from_scratch.py
# https://github.com/keras-team/keras-io/blob/master/examples/structured_data/structured_data_classification_from_scratch.py
# The 13 named inputs (6 integer categorical, 1 string categorical, 6 numerical), `encode_numerical_feature`
# (Normalization adapted on the dataset) and `encode_categorical_feature` (StringLookup / IntegerLookup adapted,
# one-hot), the classifier and the compile as in the example; the Cleveland heart-disease CSV replaced by a
# synthetic table of the same columns whose target depends on a few of them. A tf.data dataset of dicts.
import keras
import numpy as np
import tensorflow as tf
from keras import layers
from keras.layers import IntegerLookup, Normalization, StringLookup

ORIGIN = "examples/structured_data/structured_data_classification_from_scratch.py"
# `jit_compile=True` trains (Keras compiles the step without XLA when a model holds lookup layers).
SUPPORTS_XLA = True

CATEGORICAL_INT = {"sex": 2, "cp": 5, "fbs": 2, "restecg": 3, "exang": 2, "ca": 4}
NUMERICAL = ["age", "trestbps", "chol", "thalach", "oldpeak", "slope"]
THAL = np.array(["fixed", "normal", "reversible"])


def table(n, seed=0):
    rng = np.random.default_rng(seed)
    data = {name: rng.integers(0, k, n).astype("int64") for name, k in CATEGORICAL_INT.items()}
    data["thal"] = THAL[rng.integers(0, 3, n)]
    scales = {
        "age": (54, 9),
        "trestbps": (131, 17),
        "chol": (246, 51),
        "thalach": (150, 23),
        "oldpeak": (1.0, 1.1),
        "slope": (1.6, 0.6),
    }
    for name in NUMERICAL:
        mean, std = scales[name]
        data[name] = rng.normal(mean, std, n).astype("float32")
    score = (data["cp"] >= 3) + (data["thal"] == "reversible") + (data["thalach"] < 140) + 0.3 * rng.normal(size=n)
    target = (score >= 1.5).astype("int64")
    return data, target


def encode_numerical_feature(feature, name, dataset):
    # Create a Normalization layer for our feature
    normalizer = Normalization()

    # Prepare a Dataset that only yields our feature
    feature_ds = dataset.map(lambda x, y: x[name])
    feature_ds = feature_ds.map(lambda x: tf.expand_dims(x, -1))

    # Learn the statistics of the data
    normalizer.adapt(feature_ds)

    # Normalize the input feature
    encoded_feature = normalizer(feature)
    return encoded_feature


def encode_categorical_feature(feature, name, dataset, is_string):
    lookup_class = StringLookup if is_string else IntegerLookup
    # Create a lookup layer which will turn strings into integer indices
    lookup = lookup_class(output_mode="one_hot")

    # Prepare a Dataset that only yields our feature
    feature_ds = dataset.map(lambda x, y: x[name])
    feature_ds = feature_ds.map(lambda x: tf.expand_dims(x, -1))

    # Learn the set of possible string values and assign them a fixed integer index
    lookup.adapt(feature_ds)

    # Turn the string input into integer indices
    encoded_feature = lookup(feature)
    return encoded_feature


def build(jit_compile=False):
    data, target = table(16 * 30)
    train_ds = tf.data.Dataset.from_tensor_slices((data, target))
    train_ds = train_ds.batch(16)

    # Categorical features encoded as integers
    inputs = {name: keras.Input(shape=(1,), name=name, dtype="int64") for name in CATEGORICAL_INT}
    # Categorical feature encoded as string
    thal = keras.Input(shape=(1,), name="thal", dtype="string")
    # Numerical features
    numerical = {name: keras.Input(shape=(1,), name=name) for name in NUMERICAL}

    all_inputs = [*inputs.values(), thal, *numerical.values()]

    # Integer categorical features
    encoded = [encode_categorical_feature(inputs[name], name, train_ds, False) for name in CATEGORICAL_INT]
    # String categorical features
    encoded.append(encode_categorical_feature(thal, "thal", train_ds, True))
    # Numerical features
    encoded += [encode_numerical_feature(numerical[name], name, train_ds) for name in NUMERICAL]

    all_features = layers.concatenate(encoded)
    x = layers.Dense(32, activation="relu")(all_features)
    x = layers.Dropout(0.5)(x)
    output = layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(all_inputs, output)
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"], jit_compile=jit_compile)
    from corpus.harness import Built

    return Built(model, train_ds)


def reference(built):
    data, target = table(32, seed=1)
    return ({k: v[:, None] for k, v in data.items()}, target)
