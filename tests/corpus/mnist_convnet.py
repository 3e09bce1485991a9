# Origin: keras-team/keras-io examples/vision/mnist_convnet.py ("Simple MNIST convnet")
# https://github.com/keras-team/keras-io/blob/master/examples/vision/mnist_convnet.py
# Model and compile as in the example (Conv2D 32/64 shrunk to 8/16); MNIST replaced by synthetic 28x28 images.
import keras
from keras import layers

from corpus import synthetic

ORIGIN = "examples/vision/mnist_convnet.py"
SUPPORTS_XLA = True
LOOKS = True
num_classes = 10
input_shape = (28, 28, 1)


def build(jit_compile=False):
    x, y = synthetic.images(16 * 30, 28, 1, num_classes)
    y = keras.utils.to_categorical(y, num_classes)
    model = keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Conv2D(8, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(16, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(num_classes, activation="softmax"),
        ]
    )
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"], jit_compile=jit_compile)
    from corpus.harness import Built

    return Built(model, x, y, {"batch_size": 16})
