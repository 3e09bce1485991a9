# Origin: keras-team/keras-io examples/vision/pointnet.py
# https://github.com/keras-team/keras-io/blob/master/examples/vision/pointnet.py
# PointNet: `conv_bn` (Conv1D kernel 1, BatchNormalization momentum 0, relu) and `dense_bn`, the T-net (a
# GlobalMaxPooling1D, a Dense initialised to the identity with the custom `OrthogonalRegularizer` as its activity
# regularizer, Reshape, `Dot(axes=(2, 1))` applying the transform) on the input and on the features, dropout,
# softmax, the compile as in the example; the tf.data pipeline with its `augment` (jitter, shuffle of the points)
# kept. Widths / 4 (features 32 -> 8), 2048 -> 64 points; ModelNet10 replaced by synthetic clouds: ten
# anisotropic Gaussian shapes, one per class.
import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

ORIGIN = "examples/vision/pointnet.py"
SUPPORTS_XLA = True
LOOKS = False
NUM_POINTS = 64
NUM_CLASSES = 10
BATCH_SIZE = 32


def clouds(n, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n)
    axes = np.array([[1 + (c % 3), 1 + (c // 3) % 3, 0.5 + (c % 2)] for c in range(NUM_CLASSES)], "float64")
    points = rng.normal(size=(n, NUM_POINTS, 3)) * axes[labels][:, None, :] * 0.3
    return points, labels


def augment(points, label):
    # jitter, then shuffle the points
    points += tf.random.uniform(points.shape, -0.005, 0.005, dtype=tf.float64)
    points = tf.random.shuffle(points)
    return points, label


def conv_bn(x, filters):
    x = layers.Conv1D(filters, kernel_size=1, padding="valid")(x)
    x = layers.BatchNormalization(momentum=0.0)(x)
    return layers.Activation("relu")(x)


def dense_bn(x, filters):
    x = layers.Dense(filters)(x)
    x = layers.BatchNormalization(momentum=0.0)(x)
    return layers.Activation("relu")(x)


class OrthogonalRegularizer(keras.regularizers.Regularizer):
    """Keeps the learnt transform close to orthogonal: l2reg * ||X X^T - I||^2."""

    def __init__(self, num_features, l2reg=0.001):
        self.num_features = num_features
        self.l2reg = l2reg
        self.identity = ops.eye(num_features)

    def __call__(self, x):
        x = ops.reshape(x, (-1, self.num_features, self.num_features))
        xxt = ops.tensordot(x, x, axes=(2, 2))
        xxt = ops.reshape(xxt, (-1, self.num_features, self.num_features))
        return ops.sum(self.l2reg * ops.square(xxt - self.identity))

    def get_config(self):
        return {"num_features": self.num_features, "l2reg": self.l2reg}


def tnet(inputs, num_features):
    # the bias starts as the identity matrix
    bias = keras.initializers.Constant(np.eye(num_features).flatten())
    reg = OrthogonalRegularizer(num_features)
    x = conv_bn(inputs, 8)
    x = conv_bn(x, 16)
    x = conv_bn(x, 64)
    x = layers.GlobalMaxPooling1D()(x)
    x = dense_bn(x, 32)
    x = dense_bn(x, 16)
    x = layers.Dense(
        num_features * num_features, kernel_initializer="zeros", bias_initializer=bias, activity_regularizer=reg
    )(x)
    feat_t = layers.Reshape((num_features, num_features))(x)
    # the affine transform applied to the input features
    return layers.Dot(axes=(2, 1))([inputs, feat_t])


def build(jit_compile=False):
    train_points, train_labels = clouds(BATCH_SIZE * 30)
    train_dataset = tf.data.Dataset.from_tensor_slices((train_points, train_labels))
    train_dataset = train_dataset.shuffle(len(train_points)).map(augment).batch(BATCH_SIZE)

    inputs = keras.Input(shape=(NUM_POINTS, 3))
    x = tnet(inputs, 3)
    x = conv_bn(x, 8)
    x = conv_bn(x, 8)
    x = tnet(x, 8)
    x = conv_bn(x, 8)
    x = conv_bn(x, 16)
    x = conv_bn(x, 64)
    x = layers.GlobalMaxPooling1D()(x)
    x = dense_bn(x, 32)
    x = layers.Dropout(0.3)(x)
    x = dense_bn(x, 16)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax")(x)
    model = keras.Model(inputs=inputs, outputs=outputs, name="pointnet")
    model.compile(
        loss="sparse_categorical_crossentropy",
        optimizer=keras.optimizers.Adam(learning_rate=0.001),
        metrics=["sparse_categorical_accuracy"],
        jit_compile=jit_compile,
    )
    from corpus.harness import Built

    return Built(model, train_dataset)


def reference(built):
    points, labels = clouds(32, seed=1)
    return points.astype("float32"), labels
