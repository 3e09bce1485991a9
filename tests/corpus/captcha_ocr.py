# Origin: keras-team/keras-io examples/vision/captcha_ocr.py
# https://github.com/keras-team/keras-io/blob/master/examples/vision/captcha_ocr.py
# `ctc_batch_cost`, `ctc_label_dense_to_sparse`, the `CTCLayer` (the loss by `add_loss`, the output is the
# prediction it was given), `build_model` (two inputs "image" / "label", compiled without a loss) and the
# `char_to_num` StringLookup of the labels as in the example (200x50 images -> 64x16, Conv 32/64 -> 8/16 filters,
# dense1 64 -> 16, LSTM 128/64 -> 16/8 units). The captcha PNGs replaced by synthetic transposed images of 5
# characters, each a bar whose height depends on the character, batched as dicts as the example's dataset is.
# One change for Keras 3.15: `ctc_label_dense_to_sparse`'s two `ops.tile` take `tf.tile` (Keras 3.15's `ops.tile`
# iterates over its `repeats`, which are symbolic tensors here: the example fails to build as written).
import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

ORIGIN = "examples/vision/captcha_ocr.py"
# `tf.compat.v1.nn.ctc_loss` (CTCLoss), `tf.compat.v1.scan` and the boolean masks have no XLA kernels: the
# example's step does not compile with `jit_compile=True`, probe or not.
SUPPORTS_XLA = False

characters = sorted("2345678bcd")
batch_size = 16
img_width = 64
img_height = 16
downsample_factor = 4
max_length = 5

# Mapping characters to integers
char_to_num = layers.StringLookup(vocabulary=list(characters), mask_token=None)


def samples(n, seed=0):
    """Images `(n, img_width, img_height, 1)` already transposed as `encode_single_sample` returns them (the width
    is the time axis) and their labels as strings: character k of a label is a bright bar over columns
    [12k + 3, 12k + 11) whose rows depend on the character."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.3, (n, img_width, img_height, 1)).astype("float32")
    labels = []
    for i in range(n):
        chars = rng.integers(0, len(characters), max_length)
        for k, c in enumerate(chars):
            images[i, 12 * k + 3 : 12 * k + 11, c + 2 : c + 5, 0] += 0.7
        labels.append("".join(characters[c] for c in chars))
    return np.clip(images, 0.0, 1.0), np.array(labels)


def encode_single_sample(img, label):
    # Map the characters in label to numbers
    label = char_to_num(tf.strings.unicode_split(label, input_encoding="UTF-8"))
    # Return a dict as our model is expecting two inputs
    return {"image": img, "label": label}


def ctc_batch_cost(y_true, y_pred, input_length, label_length):
    label_length = ops.cast(ops.squeeze(label_length, axis=-1), dtype="int32")
    input_length = ops.cast(ops.squeeze(input_length, axis=-1), dtype="int32")
    sparse_labels = ops.cast(ctc_label_dense_to_sparse(y_true, label_length), dtype="int32")

    y_pred = ops.log(ops.transpose(y_pred, axes=[1, 0, 2]) + keras.backend.epsilon())

    return ops.expand_dims(
        tf.compat.v1.nn.ctc_loss(inputs=y_pred, labels=sparse_labels, sequence_length=input_length),
        1,
    )


def ctc_label_dense_to_sparse(labels, label_lengths):
    label_shape = ops.shape(labels)
    num_batches_tns = ops.stack([label_shape[0]])
    max_num_labels_tns = ops.stack([label_shape[1]])

    def range_less_than(old_input, current_input):
        return ops.expand_dims(ops.arange(ops.shape(old_input)[1]), 0) < tf.fill(max_num_labels_tns, current_input)

    init = ops.cast(tf.fill([1, label_shape[1]], 0), dtype="bool")
    dense_mask = tf.compat.v1.scan(range_less_than, label_lengths, initializer=init, parallel_iterations=1)
    dense_mask = dense_mask[:, 0, :]

    label_array = ops.reshape(tf.tile(ops.arange(0, label_shape[1]), num_batches_tns), label_shape)
    label_ind = tf.compat.v1.boolean_mask(label_array, dense_mask)

    batch_array = ops.transpose(
        ops.reshape(
            tf.tile(ops.arange(0, label_shape[0]), max_num_labels_tns),
            tf.reverse(label_shape, [0]),
        )
    )
    batch_ind = tf.compat.v1.boolean_mask(batch_array, dense_mask)
    indices = ops.transpose(ops.reshape(ops.concatenate([batch_ind, label_ind], axis=0), [2, -1]))

    vals_sparse = tf.compat.v1.gather_nd(labels, indices)

    return tf.SparseTensor(
        ops.cast(indices, dtype="int64"),
        vals_sparse,
        ops.cast(label_shape, dtype="int64"),
    )


class CTCLayer(layers.Layer):
    def __init__(self, name=None):
        super().__init__(name=name)
        self.loss_fn = ctc_batch_cost

    def call(self, y_true, y_pred):
        # Compute the training-time loss value and add it
        # to the layer using `self.add_loss()`.
        batch_len = ops.cast(ops.shape(y_true)[0], dtype="int64")
        input_length = ops.cast(ops.shape(y_pred)[1], dtype="int64")
        label_length = ops.cast(ops.shape(y_true)[1], dtype="int64")

        input_length = input_length * ops.ones(shape=(batch_len, 1), dtype="int64")
        label_length = label_length * ops.ones(shape=(batch_len, 1), dtype="int64")

        loss = self.loss_fn(y_true, y_pred, input_length, label_length)
        self.add_loss(loss)

        # At test time, just return the computed predictions
        return y_pred


def build_model(jit_compile=False):
    # Inputs to the model
    input_img = layers.Input(shape=(img_width, img_height, 1), name="image", dtype="float32")
    labels = layers.Input(name="label", shape=(None,), dtype="float32")

    # First conv block
    x = layers.Conv2D(8, (3, 3), activation="relu", kernel_initializer="he_normal", padding="same", name="Conv1")(
        input_img
    )
    x = layers.MaxPooling2D((2, 2), name="pool1")(x)

    # Second conv block
    x = layers.Conv2D(16, (3, 3), activation="relu", kernel_initializer="he_normal", padding="same", name="Conv2")(x)
    x = layers.MaxPooling2D((2, 2), name="pool2")(x)

    # We have used two max pool with pool size and strides 2.
    # Hence, downsampled feature maps are 4x smaller. The number of
    # filters in the last layer is 16 (64 in the example). Reshape accordingly before
    # passing the output to the RNN part of the model
    new_shape = ((img_width // 4), (img_height // 4) * 16)
    x = layers.Reshape(target_shape=new_shape, name="reshape")(x)
    x = layers.Dense(16, activation="relu", name="dense1")(x)
    x = layers.Dropout(0.2)(x)

    # RNNs
    x = layers.Bidirectional(layers.LSTM(16, return_sequences=True, dropout=0.25))(x)
    x = layers.Bidirectional(layers.LSTM(8, return_sequences=True, dropout=0.25))(x)

    # Output layer
    x = layers.Dense(len(char_to_num.get_vocabulary()) + 1, activation="softmax", name="dense2")(x)

    # Add CTC layer for calculating CTC loss at each step
    output = CTCLayer(name="ctc_loss")(labels, x)

    # Define the model
    model = keras.models.Model(inputs=[input_img, labels], outputs=output, name="ocr_model_v1")
    # Optimizer
    opt = keras.optimizers.Adam()
    # Compile the model and return
    model.compile(optimizer=opt, jit_compile=jit_compile)
    return model


def build(jit_compile=False):
    x_train, y_train = samples(batch_size * 30)
    train_dataset = tf.data.Dataset.from_tensor_slices((x_train, y_train))
    train_dataset = train_dataset.map(encode_single_sample).batch(batch_size)
    model = build_model(jit_compile)
    from corpus.harness import Built

    return Built(model, train_dataset)


def reference(built):
    images, labels = samples(32, seed=1)
    return {"image": images, "label": char_to_num(tf.strings.unicode_split(labels, "UTF-8")).to_tensor().numpy()}
