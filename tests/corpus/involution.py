# Origin: keras-team/keras-io examples/vision/involution.py
# https://github.com/keras-team/keras-io/blob/master/examples/vision/involution.py
# The `Involution` layer (built in `build`: a kernel-generating Sequential of 1x1 Conv2D, BatchNormalization,
# ReLU, 1x1 Conv2D, three Reshape layers; `call` extracts patches, multiplies and sums, and returns two outputs,
# the result and the generated kernel, which the model leaves unused) and the involution classifier with its
# compile as in the example; Dense 64 -> 16, batch 256 -> 16; CIFAR-10 replaced by synthetic 32x32 RGB images.
#
# Not healthy, and kept as the example has it: `channel=3, reduction_ratio=2` gives a kernel generator of a
# single filter (3 // 2), so every generated kernel is one ReLU'd map times fixed weights, and the sign of the
# involution's output is set by the initialisation: from `keras.utils.set_random_seed(0)` (the corpus' seed; also
# 1 and 3, not 42, the example's own `tf.random.set_seed(42)`) the ReLU after each involution outputs exact zeros
# for over 95% of its values on every batch, before and after 30 steps, and the accuracy stays at chance.
# `true_problem()` shows it without tfprobe.
import keras
import tensorflow as tf

from corpus import synthetic

ORIGIN = "examples/vision/involution.py"
SUPPORTS_XLA = True
LOOKS = True
healthy = False


class Involution(keras.layers.Layer):
    def __init__(self, channel, group_number, kernel_size, stride, reduction_ratio, name):
        super().__init__(name=name)
        self.channel = channel
        self.group_number = group_number
        self.kernel_size = kernel_size
        self.stride = stride
        self.reduction_ratio = reduction_ratio

    def build(self, input_shape):
        (_, height, width, num_channels) = input_shape
        height = height // self.stride
        width = width // self.stride
        # average pooling of the input when the stride is above 1
        self.stride_layer = (
            keras.layers.AveragePooling2D(pool_size=self.stride, strides=self.stride, padding="same")
            if self.stride > 1
            else tf.identity
        )
        # the kernel generation
        self.kernel_gen = keras.Sequential(
            [
                keras.layers.Conv2D(filters=self.channel // self.reduction_ratio, kernel_size=1),
                keras.layers.BatchNormalization(),
                keras.layers.ReLU(),
                keras.layers.Conv2D(filters=self.kernel_size * self.kernel_size * self.group_number, kernel_size=1),
            ]
        )
        k2 = self.kernel_size * self.kernel_size
        self.kernel_reshape = keras.layers.Reshape(target_shape=(height, width, k2, 1, self.group_number))
        self.input_patches_reshape = keras.layers.Reshape(
            target_shape=(height, width, k2, num_channels // self.group_number, self.group_number)
        )
        self.output_reshape = keras.layers.Reshape(target_shape=(height, width, num_channels))

    def call(self, x):
        # the kernel, from the input: B, H, W, K*K*G -> B, H, W, K*K, 1, G
        kernel_input = self.stride_layer(x)
        kernel = self.kernel_gen(kernel_input)
        kernel = self.kernel_reshape(kernel)
        # the input patches: B, H, W, K*K*C -> B, H, W, K*K, C//G, G
        input_patches = tf.image.extract_patches(
            images=x,
            sizes=[1, self.kernel_size, self.kernel_size, 1],
            strides=[1, self.stride, self.stride, 1],
            rates=[1, 1, 1, 1],
            padding="SAME",
        )
        input_patches = self.input_patches_reshape(input_patches)
        # multiply-add of kernels and patches: B, H, W, C//G, G -> B, H, W, C
        output = tf.multiply(kernel, input_patches)
        output = tf.reduce_sum(output, axis=3)
        output = self.output_reshape(output)
        return output, kernel


def build(jit_compile=False):
    train_images, train_labels = synthetic.images(16 * 30, 32, 3, 10)
    train_ds = tf.data.Dataset.from_tensor_slices((train_images, train_labels[:, None])).shuffle(256).batch(16)

    inputs = keras.Input(shape=(32, 32, 3))
    x, _ = Involution(channel=3, group_number=1, kernel_size=3, stride=1, reduction_ratio=2, name="inv_1")(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D((2, 2))(x)
    x, _ = Involution(channel=3, group_number=1, kernel_size=3, stride=1, reduction_ratio=2, name="inv_2")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D((2, 2))(x)
    x, _ = Involution(channel=3, group_number=1, kernel_size=3, stride=1, reduction_ratio=2, name="inv_3")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu")(x)
    outputs = keras.layers.Dense(10)(x)
    inv_model = keras.Model(inputs=[inputs], outputs=[outputs], name="inv_model")
    inv_model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    from corpus.harness import Built

    return Built(inv_model, train_ds)


def reference(built):
    x, y = synthetic.images(32, 32, 3, 10, seed=1)
    return x, y[:, None]


def true_problem():
    """The dead ReLUs, found without tfprobe: `{index in model.layers: class}` of the `ReLU` layers whose output
    is at least 95% exact zeros on the reference batch after the 30 steps of `build`'s data (a plain `fit`)."""
    import numpy as np

    keras.utils.set_random_seed(0)
    built = build()
    model = built.model
    model.fit(built.x, epochs=1, verbose=0)
    relus = [(i, layer) for i, layer in enumerate(model.layers) if isinstance(layer, keras.layers.ReLU)]
    probe = keras.Model(model.inputs, [layer.output for _, layer in relus])
    outputs = probe.predict(np.asarray(reference(built)[0]), verbose=0)
    return {i: type(layer).__name__ for (i, layer), out in zip(relus, outputs) if np.mean(out == 0) >= 0.95}
