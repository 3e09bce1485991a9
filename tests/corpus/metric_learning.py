# Origin: keras-team/keras-io examples/vision/metric_learning.py ("Metric learning for image similarity search")
# https://github.com/keras-team/keras-io/blob/master/examples/vision/metric_learning.py
# `AnchorPositivePairs` (a PyDataset of anchor/positive images, one per class), the `EmbeddingModel` with its
# own `train_step` (the functional model called twice per step, a similarity matrix as logits) and the compile
# (32/64/128 -> 8/16/32 filters); CIFAR-10 replaced by synthetic 32x32 images.
import keras
import numpy as np
import tensorflow as tf
from keras import layers

from corpus import synthetic

ORIGIN = "examples/vision/metric_learning.py"
SUPPORTS_XLA = True
height_width = 32
num_classes = 10


class AnchorPositivePairs(keras.utils.PyDataset):
    def __init__(self, num_batches, x_train, class_idx_to_train_idxs, seed=0):
        super().__init__()
        self._num_batches = num_batches
        self.x_train = x_train
        self.class_idx_to_train_idxs = class_idx_to_train_idxs
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return self._num_batches

    def __getitem__(self, _idx):
        x = np.empty((2, num_classes, height_width, height_width, 3), dtype=np.float32)
        for class_idx in range(num_classes):
            examples_for_class = self.class_idx_to_train_idxs[class_idx]
            anchor_idx = self.rng.choice(examples_for_class)
            positive_idx = self.rng.choice(examples_for_class)
            while positive_idx == anchor_idx:
                positive_idx = self.rng.choice(examples_for_class)
            x[0, class_idx] = self.x_train[anchor_idx]
            x[1, class_idx] = self.x_train[positive_idx]
        return x


class EmbeddingModel(keras.Model):
    def train_step(self, data):
        # Note: Workaround for open issue, to be removed.
        if isinstance(data, tuple):
            data = data[0]
        anchors, positives = data[0], data[1]

        with tf.GradientTape() as tape:
            # Run both anchors and positives through model.
            anchor_embeddings = self(anchors, training=True)
            positive_embeddings = self(positives, training=True)

            # Calculate cosine similarity between anchors and positives. As they have
            # been normalised this is just the pair wise dot products.
            similarities = keras.ops.einsum("ae,pe->ap", anchor_embeddings, positive_embeddings)

            # Since we intend to use these as logits we scale them by a temperature.
            # This value would normally be chosen as a hyper parameter.
            temperature = 0.2
            similarities /= temperature

            # We use these similarities as logits for a softmax. The labels for
            # this call are just the sequence [0, 1, 2, ..., num_classes] since we
            # want the main diagonal values, which correspond to the anchor/positive
            # pairs, to be high. This loss will move embeddings for the
            # anchor/positive pairs together and move all other pairs apart.
            sparse_labels = keras.ops.arange(num_classes)
            loss = self.compute_loss(y=sparse_labels, y_pred=similarities)

        # Calculate gradients and apply via optimizer.
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))

        # Update and return metrics (specifically the one for the loss value).
        for metric in self.metrics:
            # Calling `self.compile` will by default add a `keras.metrics.Mean` loss
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(sparse_labels, similarities)

        return {m.name: m.result() for m in self.metrics}


def build(jit_compile=False):
    x_train, y_train = synthetic.images(400, height_width, 3, num_classes)
    class_idx_to_train_idxs = {c: np.where(y_train == c)[0] for c in range(num_classes)}

    inputs = layers.Input(shape=(height_width, height_width, 3))
    x = layers.Conv2D(filters=8, kernel_size=3, strides=2, activation="relu")(inputs)
    x = layers.Conv2D(filters=16, kernel_size=3, strides=2, activation="relu")(x)
    x = layers.Conv2D(filters=32, kernel_size=3, strides=2, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    embeddings = layers.Dense(units=8, activation=None)(x)
    embeddings = layers.UnitNormalization()(embeddings)

    model = EmbeddingModel(inputs, embeddings)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    from corpus.harness import Built

    return Built(
        model, AnchorPositivePairs(num_batches=30, x_train=x_train, class_idx_to_train_idxs=class_idx_to_train_idxs)
    )


def reference(built):
    return built.x.x_train[:32]
