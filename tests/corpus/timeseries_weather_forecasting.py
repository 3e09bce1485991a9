# Origin: keras-team/keras-io examples/timeseries/timeseries_weather_forecasting.py
# https://github.com/keras-team/keras-io/blob/master/examples/timeseries/timeseries_weather_forecasting.py
# The LSTM regressor and its compile, its data made as the example makes it (normalised features,
# `keras.utils.timeseries_dataset_from_array` with a sampling rate and a target 72 steps ahead, shrunk);
# the Jena climate record replaced by 7 synthetic daily-cycle features, the target one of them.
import keras
import numpy as np

ORIGIN = "examples/timeseries/timeseries_weather_forecasting.py"
SUPPORTS_XLA = True
step = 6
past = 144
future = 12
learning_rate = 0.001
batch_size = 16


def normalize(data, train_split):
    data_mean = data[:train_split].mean(axis=0)
    data_std = data[:train_split].std(axis=0)
    return (data - data_mean) / data_std


def build(jit_compile=False):
    rng = np.random.default_rng(0)
    n = past + future + batch_size * 30 + 8
    t = np.arange(n)
    phases = rng.uniform(0, 2 * np.pi, 7)
    features = np.stack([np.sin(2 * np.pi * t / 144 + p) + 0.1 * rng.normal(size=n) for p in phases], axis=1)
    features = normalize(features, n)
    start = past + future
    end = start + n - past - future
    x_train = features[: n - past - future]
    y_train = features[start:end, 1:2]
    sequence_length = int(past / step)
    dataset_train = keras.utils.timeseries_dataset_from_array(
        x_train.astype("float32"),
        y_train.astype("float32"),
        sequence_length=sequence_length,
        sampling_rate=step,
        batch_size=batch_size,
    ).take(30)

    for batch in dataset_train.take(1):
        inputs, targets = batch

    inputs = keras.layers.Input(shape=(inputs.shape[1], inputs.shape[2]))
    lstm_out = keras.layers.LSTM(32)(inputs)
    outputs = keras.layers.Dense(1)(lstm_out)

    model = keras.Model(inputs=inputs, outputs=outputs)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss="mse", jit_compile=jit_compile)
    from corpus.harness import Built

    return Built(model, dataset_train)


def reference(built):
    x, y = next(iter(built.x))
    return (x.numpy(), y.numpy())
