# Origin: keras-team/keras-io examples/vision/oxford_pets_image_segmentation.py
# https://github.com/keras-team/keras-io/blob/master/examples/vision/oxford_pets_image_segmentation.py
# The U-Net-like Xception segmentation model (`get_model`) and its compile, widths /4 and 160 -> 32 pixels;
# the pets and their trimaps replaced by synthetic images whose 3-class mask is read off the image.
import keras
import numpy as np
from keras import layers

from corpus import synthetic

ORIGIN = "examples/vision/oxford_pets_image_segmentation.py"
SUPPORTS_XLA = True
img_size = (32, 32)
num_classes = 3


def get_model(img_size, num_classes):
    inputs = keras.Input(shape=img_size + (3,))

    ### [First half of the network: downsampling inputs] ###

    # Entry block
    x = layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)

    previous_block_activation = x  # Set aside residual

    # Blocks 1, 2, 3 are identical apart from the feature depth.
    for filters in [16, 32, 64]:
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(filters, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)

        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(filters, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)

        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)

        # Project residual
        residual = layers.Conv2D(filters, 1, strides=2, padding="same")(previous_block_activation)
        x = layers.add([x, residual])  # Add back residual
        previous_block_activation = x  # Set aside next residual

    ### [Second half of the network: upsampling inputs] ###

    for filters in [64, 32, 16, 8]:
        x = layers.Activation("relu")(x)
        x = layers.Conv2DTranspose(filters, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)

        x = layers.Activation("relu")(x)
        x = layers.Conv2DTranspose(filters, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)

        x = layers.UpSampling2D(2)(x)

        # Project residual
        residual = layers.UpSampling2D(2)(previous_block_activation)
        residual = layers.Conv2D(filters, 1, padding="same")(residual)
        x = layers.add([x, residual])  # Add back residual
        previous_block_activation = x  # Set aside next residual

    # Add a per-pixel classification layer
    outputs = layers.Conv2D(num_classes, 3, activation="softmax", padding="same")(x)

    # Define the model
    model = keras.Model(inputs, outputs)
    return model


def build(jit_compile=False):
    x, _ = synthetic.images(8 * 30, img_size[0], 3, 16)
    brightness = x.mean(axis=-1)
    # the trimap's three classes: the object (bright square), its border, the background
    mask = np.where(brightness > 0.7, 1, 0)
    border = np.zeros_like(mask, bool)
    for axis in (1, 2):
        border |= np.abs(np.diff(mask, axis=axis, prepend=0)).astype(bool)
    y = np.where(border, 2, mask).astype("int32")[..., None]
    model = get_model(img_size, num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy", jit_compile=jit_compile
    )
    from corpus.harness import Built

    return Built(model, x, y, {"batch_size": 8})
