# Origin: keras-team/keras-io examples/nlp/text_classification_from_scratch.py
# https://github.com/keras-team/keras-io/blob/master/examples/nlp/text_classification_from_scratch.py
# The 1D convnet over an Embedding and its compile (embedding 128 -> 16, 128 filters -> 16, sequences
# 500 -> 64 tokens, 20000 -> 500 features); IMDB after TextVectorization replaced by synthetic token ids.
import keras
from keras import layers

from corpus import synthetic

ORIGIN = "examples/nlp/text_classification_from_scratch.py"
SUPPORTS_XLA = True
max_features = 500
embedding_dim = 16
sequence_length = 64


def build(jit_compile=False):
    x, y = synthetic.tokens(16 * 30, sequence_length, max_features, 2)
    # A integer input for vocab indices.
    inputs = keras.Input(shape=(None,), dtype="int64")

    # Next, we add a layer to map those vocab indices into a space of dimensionality 'embedding_dim'.
    x_ = layers.Embedding(max_features, embedding_dim)(inputs)
    x_ = layers.Dropout(0.5)(x_)

    # Conv1D + global max pooling
    x_ = layers.Conv1D(16, 7, padding="valid", activation="relu", strides=3)(x_)
    x_ = layers.Conv1D(16, 7, padding="valid", activation="relu", strides=3)(x_)
    x_ = layers.GlobalMaxPooling1D()(x_)

    # We add a vanilla hidden layer:
    x_ = layers.Dense(16, activation="relu")(x_)
    x_ = layers.Dropout(0.5)(x_)

    # We project onto a single unit output layer, and squash it with a sigmoid:
    predictions = layers.Dense(1, activation="sigmoid", name="predictions")(x_)

    model = keras.Model(inputs, predictions)

    # Compile the model with binary crossentropy loss and an adam optimizer.
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"], jit_compile=jit_compile)
    from corpus.harness import Built

    return Built(model, x, y.astype("float32")[:, None], {"batch_size": 16})
