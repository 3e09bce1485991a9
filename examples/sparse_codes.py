"""Sparse codes: what does an L1 penalty on an autoencoder's bottleneck buy, and what does it cost?

    python examples/sparse_codes.py --logdir logs/sparse_codes      # under a minute on 2 CPU cores
    tensorboard --logdir logs/sparse_codes                          # tfprobe tab: layer `code`, Representations

An autoencoder 64 -> 64 -> 32 (`code`, ReLU) -> 64 -> 64 on scikit-learn's bundled digits is trained three
times, with no (`l1_none`), weak (`l1_weak`) and strong (`l1_strong`) L1 activity regularisation on the
code (`activity_regularizer=keras.regularizers.L1(l1)`). `LayerProbe` records the code's sparsity
statistics during training (`hoyer_sparsity`, `zero_fraction`, `near_zero_fraction`,
`dead_unit_fraction`) and, on 500 held-out digits (`reference_data`, with their labels), its effective
rank and how well a linear probe reads the digit from it. The script prints, per run, the code's
statistics at the first and the last window, the effective rank and probe accuracy of the code at the
last reference step, and the held-out reconstruction error (mean squared error, without the penalty).
`--fast` trains for fewer epochs (the CI test).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from sklearn.datasets import load_digits

import tfprobe

RUNS = {"l1_none": 0.0, "l1_weak": 1e-3, "l1_strong": 3e-3}
"""Each run's L1 weight on the code's activations."""

SPARSITY = ("hoyer_sparsity", "zero_fraction", "near_zero_fraction", "dead_unit_fraction")
REPRESENTATION = ("effective_rank", "probe_accuracy")


def load_data(seed=0):
    """Digits as 64 pixels in [0, 1], shuffled, split 80/20: `(x, y), (x_val, y_val)`."""
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], digits.target[order].astype("int32")
    split = int(0.8 * len(x))
    return (x[:split], y[:split]), (x[split:], y[split:])


def build_model(l1):
    """The autoencoder, with an L1 activity penalty of weight `l1` on `code` (none for 0)."""
    penalty = keras.regularizers.L1(l1) if l1 else None
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, activation="relu", name="encoder"),
            keras.layers.Dense(32, activation="relu", activity_regularizer=penalty, name="code"),
            keras.layers.Dense(64, activation="relu", name="decoder"),
            keras.layers.Dense(64, activation="sigmoid", name="reconstruction"),
        ]
    )
    model.compile(keras.optimizers.Adam(3e-3), "mse", metrics=[keras.metrics.MeanSquaredError(name="mse")])
    return model


def train(logdir, epochs, seed=0):
    """Trains every run into `logdir/<run>`; returns `{run: held-out reconstruction MSE}`."""
    (x, y), (x_val, y_val) = load_data(seed)
    mse = {}
    for run, l1 in RUNS.items():
        keras.utils.set_random_seed(seed)
        model = build_model(l1)
        probe = tfprobe.LayerProbe(
            os.path.join(logdir, run),
            record_freq=1,
            log_freq=20,
            histogram_freq=10,
            reference_data=(x_val[:500], y_val[:500]),
            reference_freq=max(1, epochs // 5),
        )
        model.fit(x, x, batch_size=64, epochs=epochs, verbose=0, callbacks=[probe])
        mse[run] = float(model.evaluate(x_val, x_val, verbose=0, return_dict=True)["mse"])
    return mse


def answer(logdir, mse, layer="code"):
    """Per run: the code's statistics at the first and last window, its representation measures at the last
    reference step, and the reconstruction error: `{run: {"l1", "mse", "<stat>_first", "<stat>", ...}}`."""
    wide = tfprobe.read_logdir(logdir, pivot=True)
    wide = wide[wide.layer == layer].sort_values("step")
    rows = {}
    for run, l1 in RUNS.items():
        mine = wide[wide.run == run]
        windows = mine.dropna(subset=["hoyer_sparsity"])
        reference = mine.dropna(subset=["effective_rank"])
        row = {"l1": l1, "mse": mse[run]}
        for stat in SPARSITY:
            row[stat + "_first"] = float(windows[stat].iloc[0])
            row[stat] = float(windows[stat].iloc[-1])
        for stat in REPRESENTATION:
            row[stat] = float(reference[stat].iloc[-1])
        rows[run] = row
    return rows


def print_table(rows):
    print("code layer, first window -> last window; representation at the last reference step")
    head = f"{'run':<10} {'l1':>6} {'hoyer':>13} {'zero':>13} {'near_zero':>13} {'dead_units':>13} {'eff_rank':>8} {'probe':>6} {'mse':>7}"
    print(head)
    for run, r in rows.items():
        cells = " ".join(f"{r[s + '_first']:>5.2f} -> {r[s]:<4.2f}" for s in SPARSITY)
        print(
            f"{run:<10} {r['l1']:>6g} {cells} {r['effective_rank']:>8.2f} {r['probe_accuracy']:>6.3f} {r['mse']:>7.4f}"
        )


def main(argv=None):
    """Trains the three runs, prints the table; returns `{run: row}` (see `answer`)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logdir", default="logs/sparse_codes")
    parser.add_argument("--fast", action="store_true", help="fewer epochs (the CI test)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = answer(args.logdir, train(args.logdir, epochs=5 if args.fast else 30, seed=args.seed))
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
