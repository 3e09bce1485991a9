# Origin: keras-team/keras-io examples/nlp/bidirectional_lstm_imdb.py
# https://github.com/keras-team/keras-io/blob/master/examples/nlp/bidirectional_lstm_imdb.py
# Two stacked Bidirectional LSTMs and the compile (embedding 128 -> 16, LSTM 64 -> 8, 200 -> 24 tokens,
# 20000 -> 500 words); IMDB replaced by synthetic token ids.
import keras
from keras import layers

from corpus import synthetic

ORIGIN = "examples/nlp/bidirectional_lstm_imdb.py"
SUPPORTS_XLA = True
max_features = 500  # Only consider the top 20k words
maxlen = 24  # Only consider the first 200 words of each movie review


def build(jit_compile=False):
    x, y = synthetic.tokens(16 * 30, maxlen, max_features, 2)
    # Input for variable-length sequences of integers
    inputs = keras.Input(shape=(None,), dtype="int32")
    # Embed each integer in a 128-dimensional vector
    x_ = layers.Embedding(max_features, 16)(inputs)
    # Add 2 bidirectional LSTMs
    x_ = layers.Bidirectional(layers.LSTM(8, return_sequences=True))(x_)
    x_ = layers.Bidirectional(layers.LSTM(8))(x_)
    # Add a classifier
    outputs = layers.Dense(1, activation="sigmoid")(x_)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"], jit_compile=jit_compile)
    from corpus.harness import Built

    return Built(model, x.astype("int32"), y.astype("float32"), {"batch_size": 16})
