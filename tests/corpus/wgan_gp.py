# Origin: keras-team/keras-io examples/generative/wgan_gp.py
# https://github.com/keras-team/keras-io/blob/master/examples/generative/wgan_gp.py
# The critic (zero-padded 32x32 input, four strided 5x5 conv blocks with LeakyReLU and dropout), the generator
# (Dense without bias, BatchNormalization, upsample blocks, tanh, Cropping2D back to 28x28), the `WGAN` model
# with its own `compile` (two optimizers, two loss functions) and `train_step`: `d_steps` critic updates per
# generator update, each with a gradient penalty computed by a GradientTape inside the critic's GradientTape,
# unseeded `tf.random.normal` as in the example. Widths / 8, noise 128 -> 16, batch 512 -> 16; Fashion-MNIST
# replaced by synthetic 28x28 images in [-1, 1].
import keras
import tensorflow as tf
from keras import layers

from corpus import synthetic

ORIGIN = "examples/generative/wgan_gp.py"
SUPPORTS_XLA = True
IMG_SHAPE = (28, 28, 1)
noise_dim = 16


def conv_block(x, filters, activation, kernel_size=(3, 3), strides=(1, 1), padding="same", use_bias=True,
               use_bn=False, use_dropout=False, drop_value=0.5):  # fmt: skip
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias)(x)
    if use_bn:
        x = layers.BatchNormalization()(x)
    x = activation(x)
    if use_dropout:
        x = layers.Dropout(drop_value)(x)
    return x


def get_discriminator_model():
    img_input = layers.Input(shape=IMG_SHAPE)
    x = layers.ZeroPadding2D((2, 2))(img_input)  # 28x28 -> 32x32
    for filters, dropout in ((8, False), (16, True), (32, True), (64, False)):
        x = conv_block(x, filters, kernel_size=(5, 5), strides=(2, 2), activation=layers.LeakyReLU(0.2),
                       use_bias=True, use_dropout=dropout, drop_value=0.3)  # fmt: skip
    x = layers.Flatten()(x)
    x = layers.Dropout(0.2)(x)
    x = layers.Dense(1)(x)
    return keras.models.Model(img_input, x, name="discriminator")


def upsample_block(x, filters, activation, kernel_size=(3, 3), strides=(1, 1), up_size=(2, 2), padding="same",
                   use_bn=False, use_bias=True, use_dropout=False, drop_value=0.3):  # fmt: skip
    x = layers.UpSampling2D(up_size)(x)
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias)(x)
    if use_bn:
        x = layers.BatchNormalization()(x)
    if activation:
        x = activation(x)
    if use_dropout:
        x = layers.Dropout(drop_value)(x)
    return x


def get_generator_model():
    noise = layers.Input(shape=(noise_dim,))
    x = layers.Dense(4 * 4 * 32, use_bias=False)(noise)
    x = layers.BatchNormalization()(x)
    x = layers.LeakyReLU(0.2)(x)
    x = layers.Reshape((4, 4, 32))(x)
    x = upsample_block(x, 16, layers.LeakyReLU(0.2), use_bias=False, use_bn=True)
    x = upsample_block(x, 8, layers.LeakyReLU(0.2), use_bias=False, use_bn=True)
    x = upsample_block(x, 1, layers.Activation("tanh"), use_bias=False, use_bn=True)
    x = layers.Cropping2D((2, 2))(x)  # 32x32 -> 28x28
    return keras.models.Model(noise, x, name="generator")


class WGAN(keras.Model):
    def __init__(self, discriminator, generator, latent_dim, discriminator_extra_steps=3, gp_weight=10.0):
        super().__init__()
        self.discriminator = discriminator
        self.generator = generator
        self.latent_dim = latent_dim
        self.d_steps = discriminator_extra_steps
        self.gp_weight = gp_weight

    def compile(self, d_optimizer, g_optimizer, d_loss_fn, g_loss_fn, **kwargs):
        """As the example's (`kwargs`: the `jit_compile` of the corpus)."""
        super().compile(**kwargs)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.d_loss_fn = d_loss_fn
        self.g_loss_fn = g_loss_fn

    def gradient_penalty(self, batch_size, real_images, fake_images):
        # an image between the real and the fake one; the critic's gradient with respect to it
        alpha = tf.random.normal([batch_size, 1, 1, 1], 0.0, 1.0)
        interpolated = real_images + alpha * (fake_images - real_images)
        with tf.GradientTape() as gp_tape:
            gp_tape.watch(interpolated)
            pred = self.discriminator(interpolated, training=True)
        grads = gp_tape.gradient(pred, [interpolated])[0]
        norm = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]))
        return tf.reduce_mean((norm - 1.0) ** 2)

    def train_step(self, real_images):
        if isinstance(real_images, tuple):
            real_images = real_images[0]
        batch_size = tf.shape(real_images)[0]

        # the critic first, `d_steps` times
        for _ in range(self.d_steps):
            random_latent_vectors = tf.random.normal(shape=(batch_size, self.latent_dim))
            with tf.GradientTape() as tape:
                fake_images = self.generator(random_latent_vectors, training=True)
                fake_logits = self.discriminator(fake_images, training=True)
                real_logits = self.discriminator(real_images, training=True)
                d_cost = self.d_loss_fn(real_img=real_logits, fake_img=fake_logits)
                gp = self.gradient_penalty(batch_size, real_images, fake_images)
                d_loss = d_cost + gp * self.gp_weight
            d_gradient = tape.gradient(d_loss, self.discriminator.trainable_variables)
            self.d_optimizer.apply_gradients(zip(d_gradient, self.discriminator.trainable_variables))

        # then the generator once
        random_latent_vectors = tf.random.normal(shape=(batch_size, self.latent_dim))
        with tf.GradientTape() as tape:
            generated_images = self.generator(random_latent_vectors, training=True)
            gen_img_logits = self.discriminator(generated_images, training=True)
            g_loss = self.g_loss_fn(gen_img_logits)
        gen_gradient = tape.gradient(g_loss, self.generator.trainable_variables)
        self.g_optimizer.apply_gradients(zip(gen_gradient, self.generator.trainable_variables))
        return {"d_loss": d_loss, "g_loss": g_loss}


def discriminator_loss(real_img, fake_img):
    return tf.reduce_mean(fake_img) - tf.reduce_mean(real_img)


def generator_loss(fake_img):
    return -tf.reduce_mean(fake_img)


def build(jit_compile=False):
    images, _ = synthetic.images(16 * 30, 28, 1, 10)
    train_images = (images * 2.0 - 1.0).astype("float32")
    wgan = WGAN(
        discriminator=get_discriminator_model(),
        generator=get_generator_model(),
        latent_dim=noise_dim,
        discriminator_extra_steps=3,
    )
    wgan.compile(
        d_optimizer=keras.optimizers.Adam(learning_rate=0.0002, beta_1=0.5, beta_2=0.9),
        g_optimizer=keras.optimizers.Adam(learning_rate=0.0002, beta_1=0.5, beta_2=0.9),
        g_loss_fn=generator_loss,
        d_loss_fn=discriminator_loss,
        jit_compile=jit_compile,
    )
    from corpus.harness import Built

    return Built(wgan, train_images, None, {"batch_size": 16})


def reference(built):
    return built.x[:32]
