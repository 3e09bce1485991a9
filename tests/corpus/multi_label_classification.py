# Origin: keras-team/keras-io examples/nlp/multi_label_classification.py
# https://github.com/keras-team/keras-io/blob/master/examples/nlp/multi_label_classification.py
# `make_model` (a Sequential without an `Input`, built by its first batch: Dense 512/256 -> 32/16 relu, a sigmoid
# unit per label) and its compile (binary cross-entropy, adam, binary_accuracy), the labels multi-hot encoded by
# `StringLookup(output_mode="multi_hot")` as in the example (its "[UNK]" column included, never positive). The
# arXiv abstracts vectorised by `TextVectorization(output_mode="tf_idf")` replaced by synthetic tf-idf rows
# (200 terms, sparse, non-negative) whose terms say which of 12 subject labels the paper has.
import keras
import numpy as np
import tensorflow as tf
from keras import layers

ORIGIN = "examples/nlp/multi_label_classification.py"
SUPPORTS_XLA = True

batch_size = 16
vocabulary = 200
subjects = [f"cs.{name}" for name in ("LG", "CV", "CL", "AI", "IR", "RO", "NE", "SD", "CR", "DS", "GT", "SI")]
terms = tf.ragged.constant([subjects])  # the example adapts the lookup on the papers' lists of terms
lookup = layers.StringLookup(output_mode="multi_hot")
lookup.adapt(terms)


def papers(n, seed=0):
    """tf-idf rows `(n, vocabulary)` and each paper's list of subjects (1 to 3): subject k puts weight on terms
    [10k, 10k + 10), on top of a few background terms."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, vocabulary), "float32")
    labels = []
    for i in range(n):
        chosen = rng.choice(len(subjects), rng.integers(1, 4), replace=False)
        for k in chosen:
            words = 10 * k + rng.choice(10, 4, replace=False)
            x[i, words] = rng.uniform(1.0, 3.0, 4)
        background = rng.choice(np.arange(120, vocabulary), 8, replace=False)
        x[i, background] = rng.uniform(0.5, 2.0, 8)
        labels.append([subjects[k] for k in chosen])
    return x, labels


def make_dataset(x, labels):
    label_binarized = lookup(tf.ragged.constant(labels)).numpy()
    dataset = tf.data.Dataset.from_tensor_slices((x, label_binarized))
    return dataset.batch(batch_size)


def make_model():
    shallow_mlp_model = keras.Sequential(
        [
            layers.Dense(32, activation="relu"),
            layers.Dense(16, activation="relu"),
            layers.Dense(lookup.vocabulary_size(), activation="sigmoid"),
        ]  # More on why "sigmoid" has been used here in a moment.
    )
    return shallow_mlp_model


def build(jit_compile=False):
    x, labels = papers(batch_size * 30)
    train_dataset = make_dataset(x, labels)
    shallow_mlp_model = make_model()
    shallow_mlp_model.compile(
        loss="binary_crossentropy", optimizer="adam", metrics=["binary_accuracy"], jit_compile=jit_compile
    )
    from corpus.harness import Built

    return Built(shallow_mlp_model, train_dataset)


def reference(built):
    x, labels = papers(32, seed=1)
    return x, lookup(tf.ragged.constant(labels)).numpy()
