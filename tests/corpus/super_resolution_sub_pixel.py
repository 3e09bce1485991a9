# Origin: keras-team/keras-io examples/vision/super_resolution_sub_pixel.py
# https://github.com/keras-team/keras-io/blob/master/examples/vision/super_resolution_sub_pixel.py
# ESPCN: four Orthogonal-initialised relu convolutions and the sub-pixel `DepthToSpace` layer (reshape,
# transpose, reshape), MSE and Adam; the tf.data pipeline (`scaling`, `process_input`: YUV, luminance, `area`
# resize down by the upscale factor; `process_target`), validation data and the example's own `ESPCNCallback`
# (PSNR of each validation batch, a `predict` on a low-resolution test image at each epoch's end, no plot).
# Crops 300 -> 48 (upscale factor 3), widths / 4, batch 4 as in the example; BSDS500 replaced by synthetic RGB
# images of smooth blobs and stripes.
import math

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

ORIGIN = "examples/vision/super_resolution_sub_pixel.py"
SUPPORTS_XLA = True
crop_size = 48
upscale_factor = 3
batch_size = 4
input_img_size = (crop_size // upscale_factor, crop_size // upscale_factor)


def photos(n, seed=0):
    """RGB images in [0, 255]: a few Gaussian blobs of random colours over stripes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:crop_size, :crop_size] / crop_size
    out = np.empty((n, crop_size, crop_size, 3), "float32")
    for i in range(n):
        freq, angle = rng.uniform(2, 6), rng.uniform(0, np.pi)
        image = 0.3 + 0.2 * np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy))[..., None]
        for _ in range(3):
            cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.2)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
            image = image + blob[..., None] * rng.uniform(0, 0.6, 3)
        out[i] = 255 * np.clip(image, 0, 1)
    return out


def scaling(input_image):
    return input_image / 255.0


def process_input(input, crop_size, upscale_factor):
    input = tf.image.rgb_to_yuv(input)
    y, u, v = tf.split(input, 3, axis=len(input.shape) - 1)
    crop_size = crop_size // upscale_factor
    return tf.image.resize(y, [crop_size, crop_size], method="area")


def process_target(input):
    input = tf.image.rgb_to_yuv(input)
    y, u, v = tf.split(input, 3, axis=len(input.shape) - 1)
    return y


def dataset(images):
    ds = tf.data.Dataset.from_tensor_slices(images).batch(batch_size).map(scaling)
    return ds.map(lambda x: (process_input(x, crop_size, upscale_factor), process_target(x)))


class DepthToSpace(layers.Layer):
    def __init__(self, block_size):
        super().__init__()
        self.block_size = block_size

    def call(self, input):
        batch, height, width, depth = ops.shape(input)
        depth = depth // (self.block_size**2)
        x = ops.reshape(input, [batch, height, width, self.block_size, self.block_size, depth])
        x = ops.transpose(x, [0, 1, 3, 2, 4, 5])
        return ops.reshape(x, [batch, height * self.block_size, width * self.block_size, depth])


def get_model(upscale_factor=3, channels=1):
    conv_args = {"activation": "relu", "kernel_initializer": "orthogonal", "padding": "same"}
    inputs = keras.Input(shape=(None, None, channels))
    x = layers.Conv2D(16, 5, **conv_args)(inputs)
    x = layers.Conv2D(16, 3, **conv_args)(x)
    x = layers.Conv2D(8, 3, **conv_args)(x)
    x = layers.Conv2D(channels * (upscale_factor**2), 3, **conv_args)(x)
    outputs = DepthToSpace(upscale_factor)(x)
    return keras.Model(inputs, outputs)


class ESPCNCallback(keras.callbacks.Callback):
    """The example's: PSNR of each validation batch; a low-resolution test image upscaled at each epoch's end."""

    def __init__(self, test_image):
        super().__init__()
        self.test_img = test_image

    def on_epoch_begin(self, epoch, logs=None):
        self.psnr = []

    def on_epoch_end(self, epoch, logs=None):
        self.mean_psnr = float(np.mean(self.psnr))
        self.prediction = self.model.predict(self.test_img, verbose=0)

    def on_test_batch_end(self, batch, logs=None):
        self.psnr.append(10 * math.log10(1 / logs["loss"]))


def build(jit_compile=False):
    images = photos(batch_size * 30 + 8)
    train_ds, valid_ds = dataset(images[: batch_size * 30]), dataset(images[batch_size * 30 :])
    test_img = process_input(scaling(images[-1:]), crop_size, upscale_factor).numpy()
    model = get_model(upscale_factor=upscale_factor, channels=1)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.001),
        loss=keras.losses.MeanSquaredError(),
        jit_compile=jit_compile,
    )
    from corpus.harness import Built

    return Built(model, train_ds, None, {"validation_data": valid_ds, "callbacks": [ESPCNCallback(test_img)]})


def reference(built):
    x, y = next(iter(built.x.unbatch().batch(32)))
    return x.numpy(), y.numpy()
