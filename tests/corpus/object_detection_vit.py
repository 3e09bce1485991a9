# Origin: keras-team/keras-io examples/vision/object_detection_using_vision_transformer.py
# https://github.com/keras-team/keras-io/blob/master/examples/vision/object_detection_using_vision_transformer.py
# `create_vit_object_detector` (the ViT backbone with a 4-unit bounding-box regression head) and its compile,
# shrunk (224 -> 32 pixels, patch 32 -> 8, projection 64 -> 16, 4 -> 2 layers); the example's `Patches`,
# `PatchEncoder` and `mlp` are the same as the ViT classifier's (imported from `corpus.vit`). Caltech-101
# airplanes replaced by synthetic images holding one bright box, its (x0, y0, x1, y1) / size as the target.
import keras
import numpy as np
from keras import layers

from corpus.vit import PatchEncoder, Patches, mlp

ORIGIN = "examples/vision/object_detection_using_vision_transformer.py"
SUPPORTS_XLA = True
image_size = 32
patch_size = 8
input_shape = (image_size, image_size, 3)
learning_rate = 0.001
weight_decay = 0.0001
num_patches = (image_size // patch_size) ** 2
projection_dim = 16
num_heads = 2
transformer_units = [projection_dim * 2, projection_dim]
transformer_layers = 2
mlp_head_units = [64, 32, 16, 8]


def create_vit_object_detector(
    input_shape,
    patch_size,
    num_patches,
    projection_dim,
    num_heads,
    transformer_units,
    transformer_layers,
    mlp_head_units,
):
    inputs = keras.Input(shape=input_shape)
    # Create patches
    patches = Patches(patch_size)(inputs)
    # Encode patches
    encoded_patches = PatchEncoder(num_patches, projection_dim)(patches)

    # Create multiple layers of the Transformer block.
    for _ in range(transformer_layers):
        # Layer normalization 1.
        x1 = layers.LayerNormalization(epsilon=1e-6)(encoded_patches)
        # Create a multi-head attention layer.
        attention_output = layers.MultiHeadAttention(num_heads=num_heads, key_dim=projection_dim, dropout=0.1)(x1, x1)
        # Skip connection 1.
        x2 = layers.Add()([attention_output, encoded_patches])
        # Layer normalization 2.
        x3 = layers.LayerNormalization(epsilon=1e-6)(x2)
        # MLP
        x3 = mlp(x3, hidden_units=transformer_units, dropout_rate=0.1)
        # Skip connection 2.
        encoded_patches = layers.Add()([x3, x2])

    # Create a [batch_size, projection_dim] tensor.
    representation = layers.LayerNormalization(epsilon=1e-6)(encoded_patches)
    representation = layers.Flatten()(representation)
    representation = layers.Dropout(0.3)(representation)

    # Add MLP.
    features = mlp(representation, hidden_units=mlp_head_units, dropout_rate=0.3)

    bounding_box = layers.Dense(4)(features)  # Final four neurons that output bounding box

    # return Keras model.
    return keras.Model(inputs=inputs, outputs=bounding_box)


def build(jit_compile=False):
    rng = np.random.default_rng(0)
    n = 8 * 30
    x = rng.uniform(0.0, 0.3, (n, image_size, image_size, 3)).astype("float32")
    y = np.zeros((n, 4), "float32")
    for i in range(n):
        x0, y0 = rng.integers(0, image_size // 2, 2)
        w, h = rng.integers(6, image_size // 2, 2)
        x[i, y0 : y0 + h, x0 : x0 + w, :] += 0.7
        y[i] = (x0 / image_size, y0 / image_size, (x0 + w) / image_size, (y0 + h) / image_size)
    vit_object_detector = create_vit_object_detector(
        input_shape,
        patch_size,
        num_patches,
        projection_dim,
        num_heads,
        transformer_units,
        transformer_layers,
        mlp_head_units,
    )
    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    # Compile model.
    vit_object_detector.compile(optimizer=optimizer, loss=keras.losses.MeanSquaredError(), jit_compile=jit_compile)
    from corpus.harness import Built

    return Built(vit_object_detector, x, y, {"batch_size": 8})
