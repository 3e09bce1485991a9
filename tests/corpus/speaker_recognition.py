# Origin: keras-team/keras-io examples/audio/speaker_recognition_using_cnn.py
# https://github.com/keras-team/keras-io/blob/master/examples/audio/speaker_recognition_using_cnn.py
# The residual Conv1D network (`residual_block`, `build_model`) and its compile (filters / 4, dense 256/128 ->
# 64/32, 16 kHz -> 1024 samples); the speakers' clips replaced by synthetic voices (a class-dependent harmonic
# mix with background noise), turned into the model's input as the example does (`audio_to_fft`: the magnitude
# of the first half of the FFT).
import keras
import numpy as np

ORIGIN = "examples/audio/speaker_recognition_using_cnn.py"
SUPPORTS_XLA = True
SAMPLING_RATE = 1024
SCALE = 0.5
num_classes = 5


def audio_to_fft(audio):
    # Since tf.signal.fft applies FFT on the innermost dimension, we need to squeeze the dimensions and then
    # expand them again after FFT (here in NumPy, on the synthetic clips)
    fft = np.fft.fft(audio[..., 0])
    # Return the absolute value of the first half of the FFT which represents the positive frequencies
    return np.abs(fft[:, : (audio.shape[1] // 2)])[..., None].astype("float32")


def residual_block(x, filters, conv_num=3, activation="relu"):
    # Shortcut
    s = keras.layers.Conv1D(filters, 1, padding="same")(x)
    for _i in range(conv_num - 1):
        x = keras.layers.Conv1D(filters, 3, padding="same")(x)
        x = keras.layers.Activation(activation)(x)
    x = keras.layers.Conv1D(filters, 3, padding="same")(x)
    x = keras.layers.Add()([x, s])
    x = keras.layers.Activation(activation)(x)
    return keras.layers.MaxPool1D(pool_size=2, strides=2)(x)


def build_model(input_shape, num_classes):
    inputs = keras.layers.Input(shape=input_shape, name="input")

    x = residual_block(inputs, 4, 2)
    x = residual_block(x, 8, 2)
    x = residual_block(x, 16, 3)
    x = residual_block(x, 32, 3)
    x = residual_block(x, 32, 3)

    x = keras.layers.AveragePooling1D(pool_size=3, strides=3)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    x = keras.layers.Dense(32, activation="relu")(x)

    outputs = keras.layers.Dense(num_classes, activation="softmax", name="output")(x)

    return keras.models.Model(inputs=inputs, outputs=outputs)


def build(jit_compile=False):
    rng = np.random.default_rng(0)
    n = 8 * 30
    y = rng.integers(0, num_classes, n)
    t = np.arange(SAMPLING_RATE) / SAMPLING_RATE
    base = 40 + 30 * y[:, None]
    audio = sum(np.sin(2 * np.pi * k * base * t + rng.uniform(0, 6.3, (n, 1))) / k for k in (1, 2, 3))
    audio = audio + SCALE * rng.normal(size=audio.shape)  # the example's added background noise
    x = audio_to_fft(audio[..., None])
    model = build_model((SAMPLING_RATE // 2, 1), num_classes)
    model.compile(
        optimizer="Adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=jit_compile
    )
    from corpus.harness import Built

    return Built(model, x, y, {"batch_size": 8})
