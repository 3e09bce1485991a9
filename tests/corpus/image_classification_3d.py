# Origin: keras-team/keras-io examples/vision/3D_image_classification.py
# https://github.com/keras-team/keras-io/blob/master/examples/vision/3D_image_classification.py
# `get_model` (four Conv3D / MaxPool3D / BatchNormalization blocks, Flatten, Dense, Dropout, a sigmoid unit) and
# the compile (binary cross-entropy, Adam on an ExponentialDecay schedule, "acc") as in the example (volumes
# 128^3 -> 48^3, filters 16/32/64/128 -> 2/4/4/8, Dense 256 -> 16, batch 2 -> 4). The CT scans replaced by
# synthetic volumes in [0, 1] where the positive class has a bright ball on its left side.
import keras
import numpy as np
from keras import layers

ORIGIN = "examples/vision/3D_image_classification.py"
SUPPORTS_XLA = True
LOOKS = True
size = 48


def volumes(n, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.uniform(0.0, 0.3, (n, size, size, size, 1)).astype("float32")
    zz, yy, xx = np.mgrid[:size, :size, :size]
    for i in range(n):
        centre = rng.uniform(12, 36, 3)
        if y[i]:
            centre[2] = rng.uniform(8, 18)
        ball = ((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) < 36
        x[i, ball, 0] += 0.6 if y[i] else 0.3
    return np.clip(x, 0.0, 1.0), y.astype("float32")


def get_model(img_size, num_classes):
    # build a 3D convolutional neural network model

    inputs = keras.Input(img_size)

    x = layers.Conv3D(filters=2, kernel_size=3, activation="relu")(inputs)
    x = layers.MaxPool3D(pool_size=2)(x)
    x = layers.BatchNormalization()(x)

    x = layers.Conv3D(filters=4, kernel_size=3, activation="relu")(x)
    x = layers.MaxPool3D(pool_size=2)(x)
    x = layers.BatchNormalization()(x)

    x = layers.Conv3D(filters=4, kernel_size=3, activation="relu")(x)
    x = layers.MaxPool3D(pool_size=2)(x)
    x = layers.BatchNormalization()(x)

    x = layers.Conv3D(filters=8, kernel_size=3, activation="relu")(x)
    x = layers.MaxPool3D(pool_size=2)(x)
    x = layers.BatchNormalization()(x)

    x = layers.Flatten()(x)
    x = layers.Dense(units=16, activation="relu")(x)
    x = layers.Dropout(0.3)(x)

    outputs = layers.Dense(units=1, activation="sigmoid")(x)

    # define the model
    model = keras.Model(inputs, outputs, name="3dcnn")
    return model


def build(jit_compile=False):
    x_train, y_train = volumes(4 * 30)
    model = get_model((size, size, size, 1), 2)
    initial_learning_rate = 0.0001
    lr_schedule = keras.optimizers.schedules.ExponentialDecay(
        initial_learning_rate, decay_steps=100000, decay_rate=0.96, staircase=True
    )
    model.compile(
        loss="binary_crossentropy",
        optimizer=keras.optimizers.Adam(learning_rate=lr_schedule),
        metrics=["acc"],
        jit_compile=jit_compile,
    )
    from corpus.harness import Built

    return Built(model, x_train, y_train, {"batch_size": 4})


def reference(built):
    return volumes(32, seed=1)
