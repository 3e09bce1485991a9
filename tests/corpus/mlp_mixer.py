# Origin: keras-team/keras-io examples/vision/mlp_image_classification.py ("Image classification with modern
# MLP models": the MLP-Mixer part)
# https://github.com/keras-team/keras-io/blob/master/examples/vision/mlp_image_classification.py
# `build_classifier` with `MLPMixerLayer` blocks and its compile (embedding 256 -> 16, 4 -> 2 blocks,
# 64 -> 32 pixels); the example's `Patches` is the ViT one's (`corpus.vit`). CIFAR-100 -> synthetic images.
import keras
from keras import layers, ops

from corpus import synthetic
from corpus.vit import Patches

ORIGIN = "examples/vision/mlp_image_classification.py"
SUPPORTS_XLA = True
LOOKS = True
num_classes = 10
input_shape = (32, 32, 3)
weight_decay = 0.0001
learning_rate = 0.005
image_size = 32
patch_size = 8
num_patches = (image_size // patch_size) ** 2
embedding_dim = 16
dropout_rate = 0.2
num_blocks = 2


def data_augmentation_for(x_train):
    data_augmentation = keras.Sequential(
        [
            layers.Normalization(),
            layers.Resizing(image_size, image_size),
            layers.RandomFlip("horizontal"),
        ],
        name="data_augmentation",
    )
    data_augmentation.layers[0].adapt(x_train)
    return data_augmentation


def build_classifier(blocks, data_augmentation, positional_encoding=False):
    inputs = layers.Input(shape=input_shape)
    # Augment data.
    augmented = data_augmentation(inputs)
    # Create patches.
    patches = Patches(patch_size)(augmented)
    # Encode patches to generate a [batch_size, num_patches, embedding_dim] tensor.
    x = layers.Dense(units=embedding_dim)(patches)
    # Process x using the module blocks.
    x = blocks(x)
    # Apply global average pooling to generate a [batch_size, embedding_dim] representation tensor.
    representation = layers.GlobalAveragePooling1D()(x)
    # Apply dropout.
    representation = layers.Dropout(rate=dropout_rate)(representation)
    # Compute logits outputs.
    logits = layers.Dense(num_classes)(representation)
    # Create the Keras model.
    return keras.Model(inputs=inputs, outputs=logits)


class MLPMixerLayer(layers.Layer):
    def __init__(self, num_patches, hidden_units, dropout_rate, *args, **kwargs):
        super().__init__(*args, **kwargs)

        self.mlp1 = keras.Sequential(
            [
                layers.Dense(units=num_patches, activation="gelu"),
                layers.Dense(units=num_patches),
                layers.Dropout(rate=dropout_rate),
            ]
        )
        self.mlp2 = keras.Sequential(
            [
                layers.Dense(units=num_patches, activation="gelu"),
                layers.Dense(units=hidden_units),
                layers.Dropout(rate=dropout_rate),
            ]
        )
        self.normalize = layers.LayerNormalization(epsilon=1e-6)

    def build(self, input_shape):
        return super().build(input_shape)

    def call(self, inputs):
        # Apply layer normalization.
        x = self.normalize(inputs)
        # Transpose inputs from [num_batches, num_patches, hidden_units] to [num_batches, hidden_units, num_patches].
        x_channels = ops.transpose(x, axes=(0, 2, 1))
        # Apply mlp1 on each channel independently.
        mlp1_outputs = self.mlp1(x_channels)
        # Transpose mlp1_outputs from [num_batches, hidden_dim, num_patches] to [num_batches, num_patches, hidden_units].
        mlp1_outputs = ops.transpose(mlp1_outputs, axes=(0, 2, 1))
        # Add skip connection.
        x = mlp1_outputs + inputs
        # Apply layer normalization.
        x_patches = self.normalize(x)
        # Apply mlp2 on each patch independtenly.
        mlp2_outputs = self.mlp2(x_patches)
        # Add skip connection.
        x = x + mlp2_outputs
        return x


def build(jit_compile=False):
    x, y = synthetic.images(16 * 30, image_size, 3, num_classes, scale=255.0)
    mlpmixer_blocks = keras.Sequential(
        [MLPMixerLayer(num_patches, embedding_dim, dropout_rate) for _ in range(num_blocks)]
    )
    model = build_classifier(mlpmixer_blocks, data_augmentation_for(x))
    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[
            keras.metrics.SparseCategoricalAccuracy(name="acc"),
            keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5-acc"),
        ],
        jit_compile=jit_compile,
    )
    from corpus.harness import Built

    return Built(model, x, y, {"batch_size": 16})
