# Origin: keras-team/keras-io examples/timeseries/timeseries_classification_transformer.py
# https://github.com/keras-team/keras-io/blob/master/examples/timeseries/timeseries_classification_transformer.py
# `transformer_encoder`, `build_model` and the compile (head_size 256 -> 16, 4 -> 2 heads, 4 -> 2 blocks,
# mlp_units [128] -> [16], 500 -> 64 steps); FordA replaced by synthetic univariate series.
#
# Not healthy, and kept as the example has it: the inputs are `(steps, 1)`, so the encoder's
# `LayerNormalization(epsilon=1e-6)` after the attention normalises over an axis of size 1: its output is its
# `beta` whatever the input, and the attention (and its dropout) before it gets an exactly-zero gradient: it never
# learns. `true_problem()` shows it with a GradientTape, without tfprobe.
import keras
import numpy as np
from keras import layers

from corpus import synthetic

ORIGIN = "examples/timeseries/timeseries_classification_transformer.py"
SUPPORTS_XLA = True
healthy = False
n_classes = 2


def transformer_encoder(inputs, head_size, num_heads, ff_dim, dropout=0):
    # Attention and Normalization
    x = layers.MultiHeadAttention(key_dim=head_size, num_heads=num_heads, dropout=dropout)(inputs, inputs)
    x = layers.Dropout(dropout)(x)
    x = layers.LayerNormalization(epsilon=1e-6)(x)
    res = x + inputs

    # Feed Forward Part
    x = layers.Conv1D(filters=ff_dim, kernel_size=1, activation="relu")(res)
    x = layers.Dropout(dropout)(x)
    x = layers.Conv1D(filters=inputs.shape[-1], kernel_size=1)(x)
    x = layers.LayerNormalization(epsilon=1e-6)(x)
    return x + res


def build_model(input_shape, head_size, num_heads, ff_dim, num_transformer_blocks, mlp_units, dropout=0, mlp_dropout=0):
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for _ in range(num_transformer_blocks):
        x = transformer_encoder(x, head_size, num_heads, ff_dim, dropout)

    x = layers.GlobalAveragePooling1D(data_format="channels_first")(x)
    for dim in mlp_units:
        x = layers.Dense(dim, activation="relu")(x)
        x = layers.Dropout(mlp_dropout)(x)
    outputs = layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def build(jit_compile=False):
    x, y = synthetic.waves(8 * 30, 64, 1, n_classes)
    model = build_model(
        x.shape[1:],
        head_size=16,
        num_heads=2,
        ff_dim=4,
        num_transformer_blocks=2,
        mlp_units=[16],
        mlp_dropout=0.4,
        dropout=0.25,
    )
    model.compile(
        loss="sparse_categorical_crossentropy",
        optimizer=keras.optimizers.Adam(learning_rate=1e-4),
        metrics=["sparse_categorical_accuracy"],
        jit_compile=jit_compile,
    )
    from corpus.harness import Built

    return Built(model, x, y, {"batch_size": 8})


def true_problem():
    """The layers with an exactly-zero gradient, found without tfprobe: `{index in model.layers: class}` of the
    layers whose every trainable weight gets a gradient of exactly 0 on a batch (a GradientTape over the
    example's loss, the model built as `build` builds it)."""
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    built = build()
    model = built.model
    x, y = built.x[:8], built.y[:8]
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(y, model(x, training=True))
    grads = tape.gradient(tf.reduce_mean(loss), model.trainable_variables)
    zero = {}
    for index, layer in enumerate(model.layers):
        weights = {id(w) for w in layer.trainable_weights}
        g = [grad for v, grad in zip(model.trainable_variables, grads) if id(v) in weights]
        if g and all(grad is None or not np.any(np.asarray(grad)) for grad in g):
            zero[index] = type(layer).__name__
    return zero
