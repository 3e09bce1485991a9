"""The small Keras models the tests train (each built in a fraction of a second; model building dominates a
test's time, so keep them tiny). The builders of the model zoos are in `zoo.py`."""

from __future__ import annotations

import keras
import tensorflow as tf

L = keras.layers


def mlp(
    names=("d1", "d2", "out"), widths=(8, 16, 8, 4), activations=("relu", "tanh", None), name=None, functional=False
):
    """`Input(widths[0])`, then one `Dense` per name: `names[i]` with `widths[i + 1]` units and `activations[i]`.

    By default the tests' small regression MLP: 8 -> d1 (16, ReLU) -> d2 (8, tanh) -> out (4). Uncompiled; a
    `keras.Sequential` named `name`, or a functional `keras.Model` with `functional=True`.
    """
    if not len(names) == len(activations) == len(widths) - 1:
        raise ValueError(f"one width per name after the input's: names={names!r}, widths={widths!r}")
    dense = [L.Dense(units, activation=act, name=n) for n, units, act in zip(names, widths[1:], activations)]
    if not functional:
        return keras.Sequential([keras.Input((widths[0],)), *dense], name=name)
    x = inputs = keras.Input((widths[0],))
    for layer in dense:
        x = layer(x)
    return keras.Model(inputs, x, name=name)


def planted(*layers, width=32, head_bias="zeros"):
    """A model with planted layers: `Input(16)` -> `hidden` (Dense `width`, ReLU) -> `layers` -> `out` (Dense 4,
    bias initialised by `head_bias`). Functional, uncompiled."""
    inp = keras.Input((16,))
    x = L.Dense(width, activation="relu", name="hidden")(inp)
    for layer in layers:
        x = layer(x)
    return keras.Model(inp, L.Dense(4, name="out", bias_initializer=head_bias)(x))


CNN_LAYERS = ["conv_a", "pool", "conv_b", "gap", "dense_sig", "logits"]


def frozen_cnn():
    """`Input(12, 12, 2)` -> conv_a (ReLU) -> pool -> conv_b (tanh) -> gap -> dense_sig (sigmoid) -> logits (3),
    compiled with learning rate 0, so a second model of the same layers sees the same activations
    (`data.cnn_data` is its data)."""
    inputs = keras.Input((12, 12, 2))
    x = L.Conv2D(4, 3, activation="relu", name="conv_a")(inputs)
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Conv2D(6, 3, activation="tanh", name="conv_b")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(8, activation="sigmoid", name="dense_sig")(x)
    outputs = L.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(learning_rate=0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class GAN(keras.Model):
    """The DCGAN example's `train_step`: the discriminator is called twice per step (`#1` series), the
    generator's update goes through the discriminator's second call."""

    def __init__(self, discriminator, generator, latent_dim):
        super().__init__()
        self.discriminator, self.generator, self.latent_dim = discriminator, generator, latent_dim
        self.seed_generator = keras.random.SeedGenerator(1337)

    def compile(self, d_optimizer, g_optimizer, loss_fn):
        super().compile()
        self.d_optimizer, self.g_optimizer, self.loss_fn = d_optimizer, g_optimizer, loss_fn

    def train_step(self, real_images):
        batch_size = tf.shape(real_images)[0]
        z = keras.random.normal(shape=(batch_size, self.latent_dim), seed=self.seed_generator)
        combined = tf.concat([self.generator(z), real_images], axis=0)
        labels = tf.concat([tf.ones((batch_size, 1)), tf.zeros((batch_size, 1))], axis=0)
        with tf.GradientTape() as tape:
            d_loss = self.loss_fn(labels, self.discriminator(combined))
        grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))
        z = keras.random.normal(shape=(batch_size, self.latent_dim), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            g_loss = self.loss_fn(tf.zeros((batch_size, 1)), self.discriminator(self.generator(z)))
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))
        return {"d_loss": d_loss, "g_loss": g_loss}
