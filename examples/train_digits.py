"""Train a small CNN with pooling on scikit-learn's bundled digits, with tfprobe attached.

    python examples/train_digits.py --logdir logs --epochs 15
    tensorboard --logdir logs          # open the "tfprobe" tab

Two runs are written so the dashboard has something to compare: `relu`, a
healthy network, and `sigmoid_deep`, a deeper sigmoid stack whose upper layers
saturate and whose gradients vanish toward the input (`gradients=True` records
the backward pass: the dashboard's Gradient flow view). 500 held-out digits are the reference set: every 5th epoch and at
the end, each layer's representation is measured on them (the dashboard's
Representations view), and `dense1`'s is written for TensorBoard's Projector
tab. Runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from sklearn.datasets import load_digits

import tfprobe


def load_data():
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]  # 1797 x 8 x 8 x 1, no download
    y = digits.target.astype("int32")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    return x[order], y[order]


def build_model(activation="relu", depth=1, init_std=None):
    layers = [
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation=activation, name="conv1"),
        keras.layers.MaxPooling2D(name="pool1"),
        keras.layers.Conv2D(32, 3, padding="same", activation=activation, name="conv2"),
        keras.layers.MaxPooling2D(name="pool2"),
        keras.layers.Conv2D(64, 2, padding="same", activation=activation, name="conv3"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
    ]
    init = keras.initializers.RandomNormal(stddev=init_std) if init_std else "glorot_uniform"
    for i in range(depth):
        layers.append(keras.layers.Dense(64, activation=activation, kernel_initializer=init, name=f"dense{i + 1}"))
    layers.append(keras.layers.Dense(10, name="logits"))
    model = keras.Sequential(layers, name=f"digits_{activation}")
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


# `sigmoid_deep` starts with large dense weights: its sigmoid units saturate and learning stalls; each
# sigmoid scales the error signal down by its derivative (at most 1/4), so `grad_rms` falls toward the input.
RUNS = {
    "relu": dict(activation="relu", depth=1),
    "sigmoid_deep": dict(activation="sigmoid", depth=4, init_std=3.0),
}


def train(logdir="logs", epochs=15, runs=tuple(RUNS), verbose=0, record_freq=1, log_freq=10):
    """Trains each run with a `LayerProbe`; returns `{run: history}`."""
    x, y = load_data()
    split = int(0.8 * len(x))
    histories = {}
    for run in runs:
        keras.utils.set_random_seed(0)
        model = build_model(**RUNS[run])
        probe = tfprobe.LayerProbe(
            log_dir=os.path.join(logdir, run),
            record_freq=record_freq,
            log_freq=log_freq,
            histogram_freq=record_freq * 5,
            reference_data=(x[split:][:500], y[split:][:500]),
            reference_embeddings=["dense1"],
            gradients=True,
        )
        histories[run] = model.fit(
            x[:split],
            y[:split],
            validation_data=(x[split:], y[split:]),
            batch_size=64,
            epochs=epochs,
            verbose=verbose,
            callbacks=[probe],
        )
        acc = histories[run].history["val_accuracy"][-1]
        print(
            f"{run}: val_accuracy={acc:.3f}, {probe.windows_written} windows, "
            f"{probe.bytes_written / max(probe.windows_written * len(probe.series), 1):.0f} bytes/layer/window"
        )
    return histories


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logdir", default="logs")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--runs", nargs="+", choices=sorted(RUNS), default=list(RUNS))
    args = parser.parse_args(argv)
    train(args.logdir, args.epochs, args.runs)


if __name__ == "__main__":
    main()
