# Origin: keras-team/keras-io examples/vision/image_classification_from_scratch.py
# https://github.com/keras-team/keras-io/blob/master/examples/vision/image_classification_from_scratch.py
# The Xception-like residual CNN (`make_model`) and its compile, widths and image size shrunk (180 -> 32);
# cats vs dogs replaced by synthetic two-class images in [0, 255].
import keras
from keras import layers

from corpus import synthetic

ORIGIN = "examples/vision/image_classification_from_scratch.py"
SUPPORTS_XLA = True
LOOKS = True
image_size = (32, 32)


def make_model(input_shape, num_classes):
    inputs = keras.Input(shape=input_shape)

    # Entry block
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.Conv2D(16, 3, strides=2, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)

    previous_block_activation = x  # Set aside residual

    for size in [16, 32, 48]:
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(size, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)

        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(size, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)

        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)

        # Project residual
        residual = layers.Conv2D(size, 1, strides=2, padding="same")(previous_block_activation)
        x = layers.add([x, residual])  # Add back residual
        previous_block_activation = x  # Set aside next residual

    x = layers.SeparableConv2D(64, 3, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)

    x = layers.GlobalAveragePooling2D()(x)
    if num_classes == 2:
        units = 1
    else:
        units = num_classes

    x = layers.Dropout(0.25)(x)
    # We specify activation=None so as to return logits
    outputs = layers.Dense(units, activation=None)(x)
    return keras.Model(inputs, outputs)


def build(jit_compile=False):
    x, y = synthetic.images(8 * 30, image_size[0], 3, 2, scale=255.0)
    model = make_model(input_shape=image_size + (3,), num_classes=2)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-4),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[keras.metrics.BinaryAccuracy(name="acc")],
        jit_compile=jit_compile,
    )
    from corpus.harness import Built

    return Built(model, x, y.astype("float32")[:, None], {"batch_size": 8})
