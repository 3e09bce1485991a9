# Origin: keras-team/keras-io examples/vision/siamese_contrastive.py ("Image similarity estimation using a
# Siamese Network with a contrastive loss")
# https://github.com/keras-team/keras-io/blob/master/examples/vision/siamese_contrastive.py
# The embedding network shared by two inputs, the Lambda distance, the contrastive loss and the compile, as
# in the example; MNIST pairs replaced by pairs of synthetic images (label 0: same class, 1: different).
import keras
import numpy as np
from keras import ops

from corpus import synthetic

ORIGIN = "examples/vision/siamese_contrastive.py"
SUPPORTS_XLA = True
margin = 1  # Margin for contrastive loss.


def make_pairs(x, y, rng):
    num_classes = max(y) + 1
    digit_indices = [np.where(y == i)[0] for i in range(num_classes)]
    pairs, labels = [], []
    for idx1 in range(len(x)):
        # add a matching example
        x1 = x[idx1]
        label1 = y[idx1]
        idx2 = rng.choice(digit_indices[label1])
        pairs += [[x1, x[idx2]]]
        labels += [0]
        # add a non-matching example
        label2 = rng.integers(0, num_classes - 1)
        label2 = label2 + 1 if label2 >= label1 else label2
        idx2 = rng.choice(digit_indices[label2])
        pairs += [[x1, x[idx2]]]
        labels += [1]
    return np.array(pairs), np.array(labels).astype("float32")


# Provided two tensors t1 and t2
# Euclidean distance = sqrt(sum(square(t1-t2)))
def euclidean_distance(vects):
    x, y = vects
    sum_square = ops.sum(ops.square(x - y), axis=1, keepdims=True)
    return ops.sqrt(ops.maximum(sum_square, keras.backend.epsilon()))


def loss(margin=1):
    def contrastive_loss(y_true, y_pred):
        square_pred = ops.square(y_pred)
        margin_square = ops.square(ops.maximum(margin - (y_pred), 0))
        return ops.mean((1 - y_true) * square_pred + (y_true) * margin_square)

    return contrastive_loss


def build(jit_compile=False):
    x, y = synthetic.images(8 * 30 // 2, 28, 1, 10)
    pairs_train, labels_train = make_pairs(x, y, np.random.default_rng(0))
    x_train_1, x_train_2 = pairs_train[:, 0], pairs_train[:, 1]

    input = keras.layers.Input((28, 28, 1))
    x_ = keras.layers.BatchNormalization()(input)
    x_ = keras.layers.Conv2D(4, (5, 5), activation="tanh")(x_)
    x_ = keras.layers.AveragePooling2D(pool_size=(2, 2))(x_)
    x_ = keras.layers.Conv2D(16, (5, 5), activation="tanh")(x_)
    x_ = keras.layers.AveragePooling2D(pool_size=(2, 2))(x_)
    x_ = keras.layers.Flatten()(x_)

    x_ = keras.layers.BatchNormalization()(x_)
    x_ = keras.layers.Dense(10, activation="tanh")(x_)
    embedding_network = keras.Model(input, x_)

    input_1 = keras.layers.Input((28, 28, 1))
    input_2 = keras.layers.Input((28, 28, 1))

    # As mentioned above, Siamese Network share weights between tower networks (sister networks).
    tower_1 = embedding_network(input_1)
    tower_2 = embedding_network(input_2)

    merge_layer = keras.layers.Lambda(euclidean_distance, output_shape=(1,))([tower_1, tower_2])
    normal_layer = keras.layers.BatchNormalization()(merge_layer)
    output_layer = keras.layers.Dense(1, activation="sigmoid")(normal_layer)
    siamese = keras.Model(inputs=[input_1, input_2], outputs=output_layer)

    siamese.compile(loss=loss(margin=margin), optimizer="RMSprop", metrics=["accuracy"], jit_compile=jit_compile)
    from corpus.harness import Built

    return Built(siamese, [x_train_1, x_train_2], labels_train, {"batch_size": 8})


def reference(built):
    return ([built.x[0][:32], built.x[1][:32]], built.y[:32])
