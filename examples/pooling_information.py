"""Information reduction up the network: how much of the signal does each downsampling keep?

    python examples/pooling_information.py --logdir logs/pooling_information   # under a minute on 2 CPU cores
    tensorboard --logdir logs/pooling_information                              # tfprobe tab: Pooling

The same small CNN on scikit-learn's bundled digits (8x8) is trained three times, downsampling twice by 2x2
with max pooling (`max_pool`), average pooling (`avg_pool`) or a stride-2 3x3 convolution in place of each
pooling layer (`strided`); every variant ends with global average pooling and a dense classifier.
`LayerProbe` records, for each pooling layer, the share of the elements (`size_ratio`), of the activation
mass (`mass_retention`, sum|out| / sum|in|) and of the energy (`energy_retention`, sum out^2 / sum in^2)
that survive, over training. The script prints them at the first and the last window, then the depth
funnel at the last window: per layer, the elements per example (from the recorded shapes), the
activation mass per example (`mean_abs` x elements, a figure every layer has, so the strided network's
downsampling convolutions can be compared with the pooling layers) and the cumulative mass (the product
of the pooling layers' mass retentions up to the layer, as the dashboard's depth funnel shows it).
`--fast` trains for fewer epochs (the CI test).
"""

from __future__ import annotations

import argparse
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from sklearn.datasets import load_digits

import tfprobe

RUNS = ("max_pool", "avg_pool", "strided")
POOLING = ("size_ratio", "mass_retention", "energy_retention")


def load_data(seed=0):
    """Digits as 8x8x1 images in [0, 1], shuffled, split 80/20: `(x, y), (x_val, y_val)`."""
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], digits.target[order].astype("int32")
    split = int(0.8 * len(x))
    return (x[:split], y[:split]), (x[split:], y[split:])


def downsample(variant, channels, name):
    """The layer that halves the resolution in `variant`."""
    if variant == "max_pool":
        return keras.layers.MaxPooling2D(2, name=name)
    if variant == "avg_pool":
        return keras.layers.AveragePooling2D(2, name=name)
    return keras.layers.Conv2D(channels, 3, strides=2, padding="same", activation="relu", name=name)


def build_model(variant):
    """8x8 -> conv 16 -> down1 -> conv 32 -> down2 -> conv 64 -> global average -> 10 logits."""
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            downsample(variant, 16, "down1"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            downsample(variant, 32, "down2"),
            keras.layers.Conv2D(64, 2, padding="same", activation="relu", name="conv3"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(10, name="logits"),
        ],
        name=variant,
    )
    model.compile(
        keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    return model


def train(logdir, epochs, seed=0):
    """Trains every variant into `logdir/<variant>`; returns `{variant: validation accuracy}`."""
    (x, y), (x_val, y_val) = load_data(seed)
    accuracy = {}
    for run in RUNS:
        keras.utils.set_random_seed(seed)
        model = build_model(run)
        probe = tfprobe.LayerProbe(os.path.join(logdir, run), record_freq=1, log_freq=10, histogram_freq=10)
        history = model.fit(
            x, y, validation_data=(x_val, y_val), batch_size=64, epochs=epochs, verbose=0, callbacks=[probe]
        )
        accuracy[run] = float(history.history["val_accuracy"][-1])
    return accuracy


def elements(shape):
    """Values per example of a recorded shape (`[None, 4, 4, 16]` -> 256)."""
    return math.prod(shape[1:])


def answer(logdir, accuracy):
    """Per variant: `val_accuracy`, `pooling` ({layer: {stat: value, stat + "_first": value}}) and `funnel`
    ([{layer, class, elements, mass, cumulative_mass}] in model order, at the last window)."""
    wide = tfprobe.read_logdir(logdir, pivot=True).sort_values("step")
    layers = tfprobe.read_layers(logdir).sort_values("order")
    rows = {}
    for run in RUNS:
        mine, series = wide[wide.run == run], layers[layers.run == run]
        last = mine[mine.step == mine.step.max()].set_index("layer")
        pooling, funnel, kept = {}, [], 1.0
        for layer, cls, kind, shape in zip(series.layer, series["class"], series.kind, series["shape"]):
            if kind == "pooling":
                history = mine[mine.layer == layer]
                pooling[layer] = {
                    s + suffix: float(history[s].iloc[i]) for s in POOLING for suffix, i in (("_first", 0), ("", -1))
                }
                kept *= pooling[layer]["mass_retention"]
            n = elements(shape)
            funnel.append(
                {
                    "layer": layer,
                    "class": cls,
                    "elements": n,
                    "mass": float(last.mean_abs[layer] * n),
                    "cumulative_mass": kept,
                }
            )
        rows[run] = {"val_accuracy": accuracy[run], "pooling": pooling, "funnel": funnel}
    return rows


def print_table(rows):
    print("pooling layers, first window -> last window")
    print(f"{'run':<9} {'layer':<6} {'size_ratio':>10} {'mass_retention':>16} {'energy_retention':>16}")
    for run, r in rows.items():
        for layer, p in r["pooling"].items():
            cells = " ".join(f"{p[s + '_first']:>6.3f} -> {p[s]:<6.3f}" for s in POOLING[1:])
            print(f"{run:<9} {layer:<6} {p['size_ratio']:>10.4f} {cells}")
    print("\ndepth funnel at the last window: elements / activation mass per example / cumulative mass")
    names = [f["layer"] for f in next(iter(rows.values()))["funnel"]]
    print(f"{'layer':<7}" + "".join(f"{run:>26}" for run in rows))
    for i, layer in enumerate(names):
        cells = "".join(
            f"{f['elements']:>8} {f['mass']:>9.1f} {f['cumulative_mass']:>7.3f}"
            for f in (rows[run]["funnel"][i] for run in rows)
        )
        print(f"{layer:<7}{cells}")
    print("val_accuracy: " + ", ".join(f"{run} {r['val_accuracy']:.3f}" for run, r in rows.items()))


def main(argv=None):
    """Trains the three variants, prints the tables; returns `{variant: row}` (see `answer`)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logdir", default="logs/pooling_information")
    parser.add_argument("--fast", action="store_true", help="fewer epochs (the CI test)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = answer(args.logdir, train(args.logdir, epochs=3 if args.fast else 15, seed=args.seed))
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
