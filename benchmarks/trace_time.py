"""What tfprobe adds to the one-time cost of `fit`: building (tracing and optimizing) the train step.

For each model, in one process, fresh model per repetition:

  plain first     the first `fit` without tfprobe (Keras traces its train step)
  probe first     the next `fit`, with `LayerProbe(record_freq=1, histogram_freq=1)`:
                  traces the instrumented step, and the snapshot function at the first window
  probe again     a second `fit` with the same probe (reuses the instrumented step)
  plain again     a `fit` without the probe afterwards (reuses Keras' step)

Each `fit` runs `--steps` steps with `log_freq=--steps` (one window); a
warm-up model is trained first so TensorFlow's own start-up is not counted.
Reported: median seconds per phase and *added* = probe first - (plain first
+ steps), the one-time cost tfprobe adds, per recorded layer.

    python benchmarks/trace_time.py                              # dense50, dense500, cnn (~4 min)
    python benchmarks/trace_time.py --model mobilenetv2 --reps 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import overhead

import tfprobe


def dense(n):
    def build():
        layers = [keras.Input((16,))] + [keras.layers.Dense(16, activation="relu") for _ in range(n)]
        model = keras.Sequential(layers + [keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        return model

    return build


def _vectors(n, rng):
    return rng.normal(size=(n, 16)).astype("float32"), rng.normal(size=(n, 1)).astype("float32")


MODELS = {  # name: (build, batch size, data(n, rng)), as in overhead.py
    "dense50": (dense(50), 64, _vectors),
    "dense500": (dense(500), 64, _vectors),
    "cnn": overhead.MODELS["cnn"],
    "mobilenetv2": overhead.MODELS["mobilenetv2"],
}


def timed_fit(model, x, y, batch, callbacks):
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False, callbacks=callbacks)
    return time.perf_counter() - start


def measure(name, reps, steps, kernel="auto"):
    phases = {k: [] for k in ("plain first", "probe first", "probe again", "plain again")}
    series = 0
    for _ in range(reps):
        build, batch, data = MODELS[name]
        model = build()
        x, y = data(batch * steps, np.random.default_rng(0))
        with tempfile.TemporaryDirectory() as logdir:
            probe = tfprobe.LayerProbe(logdir, record_freq=1, log_freq=steps, histogram_freq=1, kernel=kernel)
            phases["plain first"].append(timed_fit(model, x, y, batch, []))
            phases["probe first"].append(timed_fit(model, x, y, batch, [probe]))
            phases["probe again"].append(timed_fit(model, x, y, batch, [probe]))
            phases["plain again"].append(timed_fit(model, x, y, batch, []))
            series = len(probe.series)
    med = {k: statistics.median(v) for k, v in phases.items()}
    added = med["probe first"] - med["plain first"]
    cells = "  ".join(f"{med[k]:8.2f}" for k in phases)
    print(f"{name:12s} {series:6d}  {cells}  {added:8.2f}  {1000 * added / series:8.1f}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", choices=sorted(MODELS), help="default: dense50, dense500, cnn")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--kernel", choices=["auto", "native", "graph"], default="auto", help="LayerProbe(kernel=...)")
    args = parser.parse_args(argv)
    timed_fit(dense(2)(), *_vectors(64, np.random.default_rng(0)), 64, [])
    print(f"{args.reps} repetitions, {args.steps} steps per fit, kernel={args.kernel}; seconds (median)")
    print(
        f"{'model':12s} {'series':>6s}  {'plain 1st':>8s}  {'probe 1st':>8s}  {'probe 2nd':>8s}  {'plain 2nd':>8s}"
        f"  {'added s':>8s}  {'ms/layer':>8s}"
    )
    for name in args.model or ["dense50", "dense500", "cnn"]:
        measure(name, args.reps, args.steps, args.kernel)


if __name__ == "__main__":
    main()
