# Origin: keras-team/keras-io examples/vision/conv_lstm.py
# https://github.com/keras-team/keras-io/blob/master/examples/vision/conv_lstm.py
# Next-frame prediction: an input of frames of unknown number, three `ConvLSTM2D` (5x5, 3x3, 1x1, relu,
# `return_sequences`) with `BatchNormalization` between them, a `Conv3D` with a sigmoid, binary cross-entropy
# and Adam, batch 5 as in the example (filters 64 -> 8). Moving MNIST (20 frames of 64x64) replaced by synthetic
# videos of 6 frames of 16x16: a bright square moving at a constant velocity; `x` frames 0..n-2, `y` 1..n-1.
import keras
import numpy as np
from keras import layers

ORIGIN = "examples/vision/conv_lstm.py"
SUPPORTS_XLA = True
FRAMES, SIZE = 6, 16


def moving_squares(n, seed=0):
    rng = np.random.default_rng(seed)
    videos = rng.uniform(0.0, 0.1, (n, FRAMES, SIZE, SIZE, 1)).astype("float32")
    start = rng.integers(2, SIZE - 6, (n, 2))
    velocity = rng.integers(-1, 2, (n, 2))
    for i in range(n):
        for t in range(FRAMES):
            r, c = np.clip(start[i] + t * velocity[i], 0, SIZE - 4)
            videos[i, t, r : r + 4, c : c + 4, 0] = 1.0
    return videos


def create_shifted_frames(data):
    # `x` is frames 0 to n - 1, `y` frames 1 to n
    return data[:, : data.shape[1] - 1], data[:, 1:]


def build(jit_compile=False):
    x_train, y_train = create_shifted_frames(moving_squares(5 * 30))

    # no definite number of frames
    inp = layers.Input(shape=(None, *x_train.shape[2:]))
    x = layers.ConvLSTM2D(filters=8, kernel_size=(5, 5), padding="same", return_sequences=True, activation="relu")(inp)
    x = layers.BatchNormalization()(x)
    x = layers.ConvLSTM2D(filters=8, kernel_size=(3, 3), padding="same", return_sequences=True, activation="relu")(x)
    x = layers.BatchNormalization()(x)
    x = layers.ConvLSTM2D(filters=8, kernel_size=(1, 1), padding="same", return_sequences=True, activation="relu")(x)
    x = layers.Conv3D(filters=1, kernel_size=(3, 3, 3), activation="sigmoid", padding="same")(x)
    model = keras.models.Model(inp, x)
    model.compile(loss=keras.losses.binary_crossentropy, optimizer=keras.optimizers.Adam(), jit_compile=jit_compile)
    from corpus.harness import Built

    return Built(model, x_train, y_train, {"batch_size": 5})
