# Origin: keras-team/keras-io examples/vision/convmixer.py ("Image classification with ConvMixer")
# https://github.com/keras-team/keras-io/blob/master/examples/vision/convmixer.py
# `get_conv_mixer_256_8` with filters 256 -> 16 and depth 8 -> 2; CIFAR-10 replaced by synthetic 32x32 images.
import keras
from keras import layers

from corpus import synthetic

ORIGIN = "examples/vision/convmixer.py"
SUPPORTS_XLA = True
LOOKS = True
learning_rate = 0.001
weight_decay = 0.0001
image_size = 32


def activation_block(x):
    x = layers.Activation("gelu")(x)
    return layers.BatchNormalization()(x)


def conv_stem(x, filters: int, patch_size: int):
    x = layers.Conv2D(filters, kernel_size=patch_size, strides=patch_size)(x)
    return activation_block(x)


def conv_mixer_block(x, filters: int, kernel_size: int):
    # Depthwise convolution.
    x0 = x
    x = layers.DepthwiseConv2D(kernel_size=kernel_size, padding="same")(x)
    x = layers.Add()([activation_block(x), x0])  # Residual.

    # Pointwise convolution.
    x = layers.Conv2D(filters, kernel_size=1)(x)
    x = activation_block(x)

    return x


def get_conv_mixer_256_8(image_size=32, filters=16, depth=2, kernel_size=5, patch_size=2, num_classes=10):
    """ConvMixer-256/8: https://openreview.net/pdf?id=TVHS5Y4dNvM (shrunk)."""
    inputs = keras.Input((image_size, image_size, 3))
    x = layers.Rescaling(scale=1.0 / 255)(inputs)

    # Extract patch embeddings.
    x = conv_stem(x, filters, patch_size)

    # ConvMixer blocks.
    for _ in range(depth):
        x = conv_mixer_block(x, filters, kernel_size)

    # Classification block.
    x = layers.GlobalAvgPool2D()(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)

    return keras.Model(inputs, outputs)


def build(jit_compile=False):
    x, y = synthetic.images(16 * 30, image_size, 3, 10, scale=255.0)
    model = get_conv_mixer_256_8()
    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    model.compile(
        optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=jit_compile
    )
    from corpus.harness import Built

    return Built(model, x, y, {"batch_size": 16})
