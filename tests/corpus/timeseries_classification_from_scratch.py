# Origin: keras-team/keras-io examples/timeseries/timeseries_classification_from_scratch.py
# https://github.com/keras-team/keras-io/blob/master/examples/timeseries/timeseries_classification_from_scratch.py
# The fully convolutional network (`make_model`) and its compile (64 -> 8 filters, 500 -> 64 steps); FordA
# replaced by synthetic univariate series whose frequency gives the class.
import keras

from corpus import synthetic

ORIGIN = "examples/timeseries/timeseries_classification_from_scratch.py"
SUPPORTS_XLA = True
num_classes = 2


def make_model(input_shape):
    input_layer = keras.layers.Input(input_shape)

    conv1 = keras.layers.Conv1D(filters=8, kernel_size=3, padding="same")(input_layer)
    conv1 = keras.layers.BatchNormalization()(conv1)
    conv1 = keras.layers.ReLU()(conv1)

    conv2 = keras.layers.Conv1D(filters=8, kernel_size=3, padding="same")(conv1)
    conv2 = keras.layers.BatchNormalization()(conv2)
    conv2 = keras.layers.ReLU()(conv2)

    conv3 = keras.layers.Conv1D(filters=8, kernel_size=3, padding="same")(conv2)
    conv3 = keras.layers.BatchNormalization()(conv3)
    conv3 = keras.layers.ReLU()(conv3)

    gap = keras.layers.GlobalAveragePooling1D()(conv3)

    output_layer = keras.layers.Dense(num_classes, activation="softmax")(gap)

    return keras.models.Model(inputs=input_layer, outputs=output_layer)


def build(jit_compile=False):
    x, y = synthetic.waves(16 * 30, 64, 1, num_classes)
    model = make_model(input_shape=x.shape[1:])
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["sparse_categorical_accuracy"],
        jit_compile=jit_compile,
    )
    from corpus.harness import Built

    return Built(model, x, y, {"batch_size": 16})
