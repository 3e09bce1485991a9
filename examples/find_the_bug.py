"""Find the bug: which of four networks is broken, where, and why?

    python examples/find_the_bug.py --logdir logs/find_the_bug      # about a minute on 2 CPU cores
    tfprobe report logs/find_the_bug --run dying_relu --fail-on warning
    tensorboard --logdir logs/find_the_bug                          # tfprobe tab: Health, Gradient flow

The same MLP on scikit-learn's bundled digits is trained four times, each run with one planted bug
(or none), with `LayerProbe(gradients=True)`:

- `healthy`: ReLU layers, Glorot weights, Adam 1e-3.
- `dying_relu`: `hidden2` starts with a bias of -10, so its ReLU outputs 0 for every input; nothing
  above it learns from the data (its gradient is zero too).
- `saturated_sigmoid`: sigmoid layers initialised with N(0, 5²) weights: their units sit at 0 or 1 from
  the first step on and their error signal shrinks at every layer toward the input.
- `exploding_lr`: the healthy network trained by SGD with momentum 0.9 and a learning rate of 1.0: it
  trains for a window, then the updates overshoot, every layer's activations grow by orders of
  magnitude within one window (std by 1e8 or more) and the weights turn to NaN (`nan_weights`; their
  fused Dense+ReLU kernels output 0 for them, which is not reported as a dead layer).

Each probe watches its run while it trains (`LayerProbe(alerts=True)`, the default): a broken run logs one
line per incident as it happens, naming the root cause (`tfprobe: step 15: error dead_layer in
hidden2..hidden3 from step 5 (...)`); the healthy run logs nothing. After training, `tfprobe.incidents`
groups each run's findings into incidents: one per broken run, at the layer and step where it starts, with
a suggested fix.

For each run the script calls `tfprobe report <logdir> --run <run> --fail-on warning` (the command a CI
job would run, through its `main` function) and prints its exit status, the first step with a warning or
an error, the *culprit* (the most severe finding of that first step, the earliest layer in model order
among them: where to look first), every finding kind with the layers it names, and each run's
validation accuracy. `--fast` trains for fewer epochs (the CI test).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from sklearn.datasets import load_digits

import tfprobe
import tfprobe.cli
from tfprobe.findings import severity_rank

HIDDEN = ("hidden1", "hidden2", "hidden3")

RUNS = {
    "healthy": dict(),
    "dying_relu": dict(bias={"hidden2": -10.0}),
    "saturated_sigmoid": dict(activation="sigmoid", init_std=5.0),
    "exploding_lr": dict(optimizer="sgd", learning_rate=1.0),
}
"""Each run's deviation from the healthy network."""


def load_data(seed=0):
    """Digits as 64 standardised features, shuffled, split 80/20: `(x, y), (x_val, y_val)`."""
    digits = load_digits()
    x = digits.data.astype("float32")
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1.0)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], digits.target[order].astype("int32")
    split = int(0.8 * len(x))
    return (x[:split], y[:split]), (x[split:], y[split:])


def build_model(activation="relu", init_std=None, bias=None, optimizer="adam", learning_rate=1e-3):
    """The MLP 64 -> 3 x 64 -> 10 of every run, with the run's deviation."""
    bias = bias or {}
    init = keras.initializers.RandomNormal(stddev=init_std) if init_std else "glorot_uniform"
    layers = [keras.Input((64,))]
    for name in HIDDEN:
        layers.append(
            keras.layers.Dense(
                64,
                activation=activation,
                kernel_initializer=init,
                name=name,
                bias_initializer=keras.initializers.Constant(bias.get(name, 0.0)),
            )
        )
    layers.append(keras.layers.Dense(10, name="logits"))
    model = keras.Sequential(layers)
    opt = (
        keras.optimizers.Adam(learning_rate)
        if optimizer == "adam"
        else keras.optimizers.SGD(learning_rate, momentum=0.9)
    )
    model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def train(logdir, epochs, seed=0, probes=None):
    """Trains every run into `logdir/<run>`; returns `{run: validation accuracy}` (and fills `probes`, a
    dict, with `{run: LayerProbe}` when given)."""
    (x, y), (x_val, y_val) = load_data(seed)
    accuracy = {}
    for run, deviation in RUNS.items():
        keras.utils.set_random_seed(seed)
        model = build_model(**deviation)
        probe = tfprobe.LayerProbe(
            os.path.join(logdir, run), record_freq=1, log_freq=5, histogram_freq=5, gradients=True
        )
        history = model.fit(
            x, y, validation_data=(x_val, y_val), batch_size=64, epochs=epochs, verbose=0, callbacks=[probe]
        )
        accuracy[run] = float(np.nan_to_num(history.history["val_accuracy"][-1]))
        if probes is not None:
            probes[run] = probe
    return accuracy


def report(logdir, run):
    """`tfprobe report <logdir> --run <run> --fail-on warning`: `(exit status, its output)`."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = tfprobe.cli.main(["report", logdir, "--run", run, "--fail-on", "warning"])
    return status, out.getvalue()


def verdicts(logdir, accuracy):
    """One row per run: the report's exit status, the culprit, and the warnings and errors `diagnose` found."""
    df, layers = tfprobe.read_logdir(logdir), tfprobe.read_layers(logdir)
    findings = tfprobe.diagnose(df, layers)
    incidents = tfprobe.incidents(df, layers, findings=findings)
    serious = findings[findings.severity.isin(["warning", "error"])]
    order = layers.set_index(["run", "layer"])["order"]
    rows = {}
    for run in RUNS:
        mine = serious[serious.run == run]
        first = culprit(mine, order)
        rows[run] = {
            "exit_status": report(logdir, run)[0],
            "val_accuracy": accuracy[run],
            "first_step": None if first is None else int(first.first_step),
            "culprit": None if first is None else first.layer,
            "culprit_kind": None if first is None else first.kind,
            "kinds": {
                kind: sorted(set(g.layer), key=lambda layer: order[(run, layer)]) for kind, g in mine.groupby("kind")
            },
            "first_steps": mine.groupby("kind").first_step.min().astype(int).to_dict(),
            "incidents": incidents[incidents.run == run].to_dict("records"),
        }
    return rows


def culprit(findings, order):
    """The finding to look at first: of the earliest step, the most severe, at the earliest layer in model
    order (`order`: by `(run, layer)`); None without findings."""
    if findings.empty:
        return None
    first = findings[findings.first_step == findings.first_step.min()]
    rank = first.severity.map(severity_rank)
    worst = first[rank == rank.max()]
    return min(worst.itertuples(index=False), key=lambda f: order[(f.run, f.layer)])


def print_table(rows):
    print(f"{'run':<18} {'exit':>4} {'val_acc':>7} {'first':>5}  culprit")
    for run, r in rows.items():
        first = "-" if r["first_step"] is None else r["first_step"]
        where = f"{r['culprit']} ({r['culprit_kind']})" if r["culprit"] else "-"
        print(f"{run:<18} {r['exit_status']:>4} {r['val_accuracy']:>7.3f} {first:>5}  {where}")
        for kind, layers in sorted(r["kinds"].items(), key=lambda kv: r["first_steps"][kv[0]]):
            print(f"{'':<20}from step {r['first_steps'][kind]:<4} {kind}: {', '.join(layers)}")
    print("\nIncidents (tfprobe.incidents: the findings grouped by root cause)")
    for run, r in rows.items():
        for inc in r["incidents"]:
            print(
                f"{run:<18} #{inc['incident']} {inc['severity']} root {inc['root_kind']} at {inc['root_layer']} "
                f"from step {inc['first_step']} ({inc['findings']} findings)"
            )
            print(f"{'':<20}fix: {inc['fix']}")
        if not r["incidents"]:
            print(f"{run:<18} none")


def main(argv=None):
    """Trains the four runs, prints the verdict table; returns `{run: row}` (see `verdicts`)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logdir", default="logs/find_the_bug")
    parser.add_argument("--fast", action="store_true", help="fewer epochs (the CI test)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    probes = {}
    accuracy = train(args.logdir, epochs=4 if args.fast else 20, seed=args.seed, probes=probes)
    rows = verdicts(args.logdir, accuracy)
    for run, probe in probes.items():
        rows[run]["live_incidents"] = probe.incidents.to_dict("records")
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
