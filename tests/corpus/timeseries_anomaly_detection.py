# Origin: keras-team/keras-io examples/timeseries/timeseries_anomaly_detection.py
# https://github.com/keras-team/keras-io/blob/master/examples/timeseries/timeseries_anomaly_detection.py
# The Conv1D / Conv1DTranspose reconstruction autoencoder and its compile (32/16 -> 8/4 filters, 288 -> 64
# steps); the NAB series replaced by a normalised synthetic daily cycle cut into windows as `create_sequences`.
import keras
import numpy as np
from keras import layers

ORIGIN = "examples/timeseries/timeseries_anomaly_detection.py"
SUPPORTS_XLA = True
TIME_STEPS = 64


# Generated training sequences for use in the model.
def create_sequences(values, time_steps=TIME_STEPS):
    output = []
    for i in range(len(values) - time_steps + 1):
        output.append(values[i : (i + time_steps)])
    return np.stack(output)


def build(jit_compile=False):
    rng = np.random.default_rng(0)
    t = np.arange(16 * 30 + TIME_STEPS - 1)
    values = (np.sin(2 * np.pi * t / 48) + 0.1 * rng.normal(size=t.size))[:, None]
    values = (values - values.mean()) / values.std()
    x_train = create_sequences(values.astype("float32"))
    model = keras.Sequential(
        [
            layers.Input(shape=(x_train.shape[1], x_train.shape[2])),
            layers.Conv1D(filters=8, kernel_size=7, padding="same", strides=2, activation="relu"),
            layers.Dropout(rate=0.2),
            layers.Conv1D(filters=4, kernel_size=7, padding="same", strides=2, activation="relu"),
            layers.Conv1DTranspose(filters=4, kernel_size=7, padding="same", strides=2, activation="relu"),
            layers.Dropout(rate=0.2),
            layers.Conv1DTranspose(filters=8, kernel_size=7, padding="same", strides=2, activation="relu"),
            layers.Conv1DTranspose(filters=1, kernel_size=7, padding="same"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.001), loss="mse", jit_compile=jit_compile)
    from corpus.harness import Built

    return Built(model, x_train, x_train, {"batch_size": 16})
