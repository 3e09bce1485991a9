# Origin: keras-team/keras-io examples/vision/semisupervised_simclr.py
# https://github.com/keras-team/keras-io/blob/master/examples/vision/semisupervised_simclr.py
# Contrastive pretraining (SimCLR): `RandomColorAffine` (a custom preprocessing layer with its SeedGenerator),
# the augmenters (Rescaling, RandomFlip, RandomTranslation, RandomZoom, colour affine) inside the model, the
# encoder, projection head and linear probe, the `ContrastiveModel` with its own `compile` (two optimizers), NT-Xent
# `contrastive_loss`, `train_step` (each image augmented twice, the encoder and head called twice under one tape,
# the encoder again in inference mode under the probe's tape) and `test_step`. Images 96x96 -> 32x32, width
# 128 -> 16, batch 525 -> 24 unlabeled + 8 labeled; STL-10 replaced by synthetic uint8-range images zipped as in
# the example (unlabeled with label -1, labeled), validation on labeled ones.
import math

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from corpus import synthetic

ORIGIN = "examples/vision/semisupervised_simclr.py"
SUPPORTS_XLA = True
width = 16
temperature = 0.1
contrastive_augmentation = {"min_area": 0.25, "brightness": 0.6, "jitter": 0.2}
classification_augmentation = {"min_area": 0.75, "brightness": 0.3, "jitter": 0.1}


class RandomColorAffine(layers.Layer):
    """Distorts the colour distributions of images (the example's)."""

    def __init__(self, brightness=0, jitter=0, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(1337)
        self.brightness = brightness
        self.jitter = jitter

    def get_config(self):
        config = super().get_config()
        config.update({"brightness": self.brightness, "jitter": self.jitter})
        return config

    def call(self, images, training=True):
        if training:
            batch_size = ops.shape(images)[0]
            # the same for every colour, then different per colour
            brightness_scales = 1 + keras.random.uniform(
                (batch_size, 1, 1, 1), minval=-self.brightness, maxval=self.brightness, seed=self.seed_generator
            )
            jitter_matrices = keras.random.uniform(
                (batch_size, 1, 3, 3), minval=-self.jitter, maxval=self.jitter, seed=self.seed_generator
            )
            color_transforms = (
                ops.tile(ops.expand_dims(ops.eye(3), axis=0), (batch_size, 1, 1, 1)) * brightness_scales
                + jitter_matrices
            )
            images = ops.clip(ops.matmul(images, color_transforms), 0, 1)
        return images


def get_augmenter(min_area, brightness, jitter):
    zoom_factor = 1.0 - math.sqrt(min_area)
    return keras.Sequential(
        [
            layers.Rescaling(1 / 255),
            layers.RandomFlip("horizontal"),
            layers.RandomTranslation(zoom_factor / 2, zoom_factor / 2),
            layers.RandomZoom((-zoom_factor, 0.0), (-zoom_factor, 0.0)),
            RandomColorAffine(brightness, jitter),
        ]
    )


def get_encoder():
    return keras.Sequential(
        [
            layers.Conv2D(width, kernel_size=3, strides=2, activation="relu"),
            layers.Conv2D(width, kernel_size=3, strides=2, activation="relu"),
            layers.Conv2D(width, kernel_size=3, strides=2, activation="relu"),
            layers.Flatten(),
            layers.Dense(width, activation="relu"),
        ],
        name="encoder",
    )


class ContrastiveModel(keras.Model):
    def __init__(self):
        super().__init__()
        self.temperature = temperature
        self.contrastive_augmenter = get_augmenter(**contrastive_augmentation)
        self.classification_augmenter = get_augmenter(**classification_augmentation)
        self.encoder = get_encoder()
        # a non-linear MLP as projection head; a single dense layer for linear probing
        self.projection_head = keras.Sequential(
            [keras.Input(shape=(width,)), layers.Dense(width, activation="relu"), layers.Dense(width)],
            name="projection_head",
        )
        self.linear_probe = keras.Sequential([layers.Input(shape=(width,)), layers.Dense(10)], name="linear_probe")

    def compile(self, contrastive_optimizer, probe_optimizer, **kwargs):
        super().compile(**kwargs)
        self.contrastive_optimizer = contrastive_optimizer
        self.probe_optimizer = probe_optimizer
        self.probe_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.contrastive_loss_tracker = keras.metrics.Mean(name="c_loss")
        self.contrastive_accuracy = keras.metrics.SparseCategoricalAccuracy(name="c_acc")
        self.probe_loss_tracker = keras.metrics.Mean(name="p_loss")
        self.probe_accuracy = keras.metrics.SparseCategoricalAccuracy(name="p_acc")

    @property
    def metrics(self):
        return [self.contrastive_loss_tracker, self.contrastive_accuracy, self.probe_loss_tracker, self.probe_accuracy]

    def contrastive_loss(self, projections_1, projections_2):
        # NT-Xent: temperature-scaled cosine similarities as the logits of a symmetrised cross-entropy
        projections_1 = ops.normalize(projections_1, axis=1)
        projections_2 = ops.normalize(projections_2, axis=1)
        similarities = ops.matmul(projections_1, ops.transpose(projections_2)) / self.temperature
        batch_size = ops.shape(projections_1)[0]
        contrastive_labels = ops.arange(batch_size)
        self.contrastive_accuracy.update_state(contrastive_labels, similarities)
        self.contrastive_accuracy.update_state(contrastive_labels, ops.transpose(similarities))
        loss_1_2 = keras.losses.sparse_categorical_crossentropy(contrastive_labels, similarities, from_logits=True)
        loss_2_1 = keras.losses.sparse_categorical_crossentropy(
            contrastive_labels, ops.transpose(similarities), from_logits=True
        )
        return (loss_1_2 + loss_2_1) / 2

    def train_step(self, data):
        (unlabeled_images, _), (labeled_images, labels) = data
        # every image, without its label, augmented twice
        images = ops.concatenate((unlabeled_images, labeled_images), axis=0)
        augmented_images_1 = self.contrastive_augmenter(images, training=True)
        augmented_images_2 = self.contrastive_augmenter(images, training=True)
        with tf.GradientTape() as tape:
            features_1 = self.encoder(augmented_images_1, training=True)
            features_2 = self.encoder(augmented_images_2, training=True)
            projections_1 = self.projection_head(features_1, training=True)
            projections_2 = self.projection_head(features_2, training=True)
            contrastive_loss = self.contrastive_loss(projections_1, projections_2)
        weights = self.encoder.trainable_weights + self.projection_head.trainable_weights
        gradients = tape.gradient(contrastive_loss, weights)
        self.contrastive_optimizer.apply_gradients(zip(gradients, weights))
        self.contrastive_loss_tracker.update_state(contrastive_loss)

        # the labels: only for an on-the-fly logistic regression on the encoder in inference mode
        preprocessed_images = self.classification_augmenter(labeled_images, training=True)
        with tf.GradientTape() as tape:
            features = self.encoder(preprocessed_images, training=False)
            class_logits = self.linear_probe(features, training=True)
            probe_loss = self.probe_loss(labels, class_logits)
        gradients = tape.gradient(probe_loss, self.linear_probe.trainable_weights)
        self.probe_optimizer.apply_gradients(zip(gradients, self.linear_probe.trainable_weights))
        self.probe_loss_tracker.update_state(probe_loss)
        self.probe_accuracy.update_state(labels, class_logits)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        labeled_images, labels = data
        preprocessed_images = self.classification_augmenter(labeled_images, training=False)
        features = self.encoder(preprocessed_images, training=False)
        class_logits = self.linear_probe(features, training=False)
        probe_loss = self.probe_loss(labels, class_logits)
        self.probe_loss_tracker.update_state(probe_loss)
        self.probe_accuracy.update_state(labels, class_logits)
        return {m.name: m.result() for m in self.metrics[2:]}


def prepare_dataset(steps=30, unlabeled_batch_size=24, labeled_batch_size=8):
    unlabeled, _ = synthetic.images(steps * unlabeled_batch_size, 32, 3, 10, seed=2, scale=255.0)
    labeled, labels = synthetic.images(steps * labeled_batch_size, 32, 3, 10, seed=3, scale=255.0)
    test, test_labels = synthetic.images(2 * 16, 32, 3, 10, seed=4, scale=255.0)
    unlabeled_train_dataset = tf.data.Dataset.from_tensor_slices((unlabeled, -np.ones(len(unlabeled), "int64"))).batch(
        unlabeled_batch_size
    )
    labeled_train_dataset = tf.data.Dataset.from_tensor_slices((labeled, labels)).batch(labeled_batch_size)
    test_dataset = tf.data.Dataset.from_tensor_slices((test, test_labels)).batch(16)
    train_dataset = tf.data.Dataset.zip((unlabeled_train_dataset, labeled_train_dataset))
    return train_dataset, labeled_train_dataset, test_dataset


def build(jit_compile=False):
    train_dataset, _, test_dataset = prepare_dataset()
    pretraining_model = ContrastiveModel()
    pretraining_model.compile(
        contrastive_optimizer=keras.optimizers.Adam(),
        probe_optimizer=keras.optimizers.Adam(),
        jit_compile=jit_compile,
    )
    from corpus.harness import Built

    return Built(pretraining_model, train_dataset, None, {"validation_data": test_dataset})


def reference(built):
    (unlabeled, _), (labeled, labels) = next(iter(built.x))
    return labeled.numpy(), labels.numpy()
