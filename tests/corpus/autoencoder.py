# Origin: keras-team/keras-io examples/vision/autoencoder.py ("Convolutional autoencoder for image denoising")
# https://github.com/keras-team/keras-io/blob/master/examples/vision/autoencoder.py
# The autoencoder and its compile (32 filters -> 8); noisy MNIST replaced by noisy synthetic images.

import numpy as np
from keras import layers
from keras.models import Model

from corpus import synthetic

ORIGIN = "examples/vision/autoencoder.py"
SUPPORTS_XLA = True


def build(jit_compile=False):
    clean, _ = synthetic.images(16 * 30, 28, 1, 10)
    noisy = np.clip(clean + 0.4 * np.random.default_rng(3).normal(size=clean.shape), 0.0, 1.0).astype("float32")

    input = layers.Input(shape=(28, 28, 1))

    # Encoder
    x = layers.Conv2D(8, (3, 3), activation="relu", padding="same")(input)
    x = layers.MaxPooling2D((2, 2), padding="same")(x)
    x = layers.Conv2D(8, (3, 3), activation="relu", padding="same")(x)
    x = layers.MaxPooling2D((2, 2), padding="same")(x)

    # Decoder
    x = layers.Conv2DTranspose(8, (3, 3), strides=2, activation="relu", padding="same")(x)
    x = layers.Conv2DTranspose(8, (3, 3), strides=2, activation="relu", padding="same")(x)
    x = layers.Conv2D(1, (3, 3), activation="sigmoid", padding="same")(x)

    # Autoencoder
    autoencoder = Model(input, x)
    autoencoder.compile(optimizer="adam", loss="binary_crossentropy", jit_compile=jit_compile)
    from corpus.harness import Built

    return Built(autoencoder, noisy, clean, {"batch_size": 16})
