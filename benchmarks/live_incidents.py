"""Cost of the live incidents (`LayerProbe(alerts=True)`, the default) against a window's wall time.

Model: 500 `Dense(16)` layers, relu and sigmoid alternating (as `write_window.py`), batch 64, synthetic
data, trained compiled with the probe's defaults (`record_freq=10, log_freq=100`; `--gradients` adds the
backward statistics). `LiveIncidents.update` (the whole live evaluation: `suspects`, the checks over the
previous and the new window of the suspect layers, the grouping into incidents, the alerts; on the probe's
worker thread) is wrapped with a timer (wall time, and the CPU time of the thread that runs it:
`time.thread_time`, which other jobs on a shared machine do not inflate), and so is what the training loop
waits for (`LayerProbe._evaluate`: handing the window to that thread). A window's wall time (and the
process's CPU time over it, every thread) is the time from one window's evaluation to the next (training,
reading, writing and evaluating included). The first window is left out (it traces the snapshot function).

    python benchmarks/live_incidents.py                    # ~5 min on 2 cores: 500 steps, 4 steady windows
    python benchmarks/live_incidents.py --model residual   # 500 layers in residual blocks, no finding
    python benchmarks/live_incidents.py --steps 300 --gradients
    python benchmarks/live_incidents.py --ab 3             # training time with alerts on against off (A/B)

`--ab N` measures what the evaluation costs training as a whole (its worker thread takes a core from the
step): N pairs of fits, `alerts=True` and `alerts=False` alternated, each fit's time per step after its first
window; prints the median ratio.

`--replay N` skips training: it feeds N synthetic windows of the same 500 series to one `LiveIncidents`
and prints the time per window at the start and at the end (incremental: it does not grow with the run),
for healthy windows (no layer suspect: no `diagnose`) and for windows like the plain stack's (dead units
at every fourth layer: the checks run over about three layers in four, one incident).

Prints ms: median, min and max over the steady windows, and the ratios of the evaluation's CPU time to a
window's wall time and to its process CPU time (the target of issue 27: under 5% of a window's wall time).
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from tfprobe.findings import live

LAYERS = 500
WIDTH = 16
BATCH = 64


class Timed:
    """Wraps `LiveIncidents.update`: `(start, seconds, cpu seconds of the evaluating thread, process cpu
    seconds at the start)` of every call."""

    def __init__(self):
        self.calls = []
        self.inner = live.LiveIncidents.update
        timed = self

        def update(obj, step, results, infos):
            t, c, p = time.perf_counter(), time.thread_time(), time.process_time()
            try:
                return timed.inner(obj, step, results, infos)
            finally:
                timed.calls.append((t, time.perf_counter() - t, time.thread_time() - c, p))

        live.LiveIncidents.update = update


def plain_stack():
    """500 Dense(16), relu and sigmoid alternating (`write_window.py`'s model): a deep stack without
    normalisation, whose activations do grow through it (`exploding_depth`, `dead_units` at most layers: the
    live evaluation's worst case, `diagnose` over most layers at every window)."""
    import keras

    acts = ("relu", "sigmoid")
    return keras.Sequential(
        [keras.Input((WIDTH,))] + [keras.layers.Dense(WIDTH, activation=acts[i % 2]) for i in range(LAYERS)]
    )


def residual_stack():
    """125 pre-norm residual blocks `x + Dense(Dense(LayerNormalization(x), relu))`: 500 layers, no finding
    expected (the usual case: no layer is suspect, no `diagnose`)."""
    import keras

    inp = keras.Input((WIDTH,))
    x = inp
    for i in range(LAYERS // 4):
        h = keras.layers.LayerNormalization(name=f"norm{i}")(x)
        h = keras.layers.Dense(WIDTH, activation="relu", name=f"up{i}")(h)
        h = keras.layers.Dense(WIDTH, name=f"down{i}", kernel_initializer=keras.initializers.RandomNormal(stddev=0.02))(
            h
        )
        x = keras.layers.Add(name=f"add{i}")([x, h])
    return keras.Model(inp, x)


def train(steps, gradients, logdir, model_name="plain"):
    import tfprobe

    model = residual_stack() if model_name == "residual" else plain_stack()
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(steps * BATCH, WIDTH)).astype("float32")
    probe = tfprobe.LayerProbe(logdir, gradients=gradients)
    timer = Timed()
    inner, blocking = probe._evaluate, []

    def evaluate(step, results):  # what the training loop waits for: handing the window to the worker
        t = time.perf_counter()
        inner(step, results)
        blocking.append(time.perf_counter() - t)

    probe._evaluate = evaluate
    model.fit(x, x, batch_size=BATCH, epochs=1, verbose=0, callbacks=[probe])
    return timer.calls, probe, blocking


def timed_fit(steps, gradients, logdir, model_name, alerts):
    """Seconds per step of one fit, from the end of its first window (traced, written) to the end."""
    import keras

    import tfprobe

    model = residual_stack() if model_name == "residual" else plain_stack()
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(steps * BATCH, WIDTH)).astype("float32")
    marks = {}

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 100:
                marks["start"] = time.perf_counter()

        def on_train_end(self, logs=None):
            marks["end"] = time.perf_counter()

    probe = tfprobe.LayerProbe(logdir, gradients=gradients, alerts=alerts)
    model.fit(x, x, batch_size=BATCH, epochs=1, verbose=0, callbacks=[probe, Clock()])
    return (marks["end"] - marks["start"]) / (steps - 101)


def ab(pairs, steps, gradients, model_name):
    """`alerts=True` against `alerts=False`, alternated in pairs: the median ratio of the time per step."""
    per = {True: [], False: []}
    for i in range(pairs):
        for alerts in (True, False) if i % 2 == 0 else (False, True):
            logdir = tempfile.mkdtemp(prefix="tfprobe_live_ab_")
            try:
                per[alerts].append(timed_fit(steps, gradients, logdir, model_name, alerts))
            finally:
                shutil.rmtree(logdir, ignore_errors=True)
    ratios = [a / b for a, b in zip(per[True], per[False])]
    print(
        f"{model_name}: {LAYERS} layers, {steps} steps, gradients={gradients}, {pairs} pairs (alternated); "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )
    for alerts in (True, False):
        ms = [1000 * t for t in per[alerts]]
        print(
            f"  alerts={alerts!s:5s} ms per step: median {statistics.median(ms):.2f}  min {min(ms):.2f}  max {max(ms):.2f}"
        )
    print(
        f"  ratio alerts on / off: median {statistics.median(ratios):.3f}  min {min(ratios):.3f}  max {max(ratios):.3f}"
    )


def replay(windows, dead_every=0):
    """`dead_every`: every so many layers (the first included) a ReLU layer with 60% dead units."""
    rng = np.random.default_rng(0)
    infos = {
        f"d{i}": {
            "order": i,
            "class": "Dense",
            "shape": [None, WIDTH],
            "bounds": [0.0, 1.0] if i % 2 else None,
            "inputs": [f"d{i - 1}"] if i else [],
            "kind": "activation",
        }
        for i in range(LAYERS)
    }
    state = live.LiveIncidents()
    times = []
    for w in range(windows):
        results = {}
        for i in range(LAYERS):
            std = 0.2 + 0.01 * rng.normal()
            results[f"d{i}"] = {
                "mean": 0.1,
                "std": std,
                "min": -1.0,
                "max": 1.0,
                "rms": 0.3,
                "mean_abs": 0.2,
                "zero_fraction": 0.3,
                "near_zero_fraction": 0.31,
                "nan_count": 0.0,
                "inf_count": 0.0,
                "dead_unit_fraction": 0.0,
                "hoyer_sparsity": 0.3,
                "saturation_fraction": 0.01,
            }
            if dead_every and i % dead_every == 0:
                results[f"d{i}"]["dead_unit_fraction"] = 0.6
        t = time.thread_time()
        state.update(100 * (w + 1), results, infos)
        times.append(time.thread_time() - t)
    k = max(1, windows // 10)
    what = f"dead units at every {dead_every}th layer, {len(state.incidents)} incident" if dead_every else "healthy"
    print(f"replay ({what}): {windows} windows of {LAYERS} series; ms of CPU per window")
    print(
        f"  first {k}: median {1000 * statistics.median(times[:k]):.1f}; last {k}: median {1000 * statistics.median(times[-k:]):.1f}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500, help="training steps (a window every 100)")
    parser.add_argument("--gradients", action="store_true", help="LayerProbe(gradients=True)")
    parser.add_argument("--replay", type=int, default=0, help="replay N synthetic windows instead of training")
    parser.add_argument("--ab", type=int, default=0, help="N pairs of fits, alerts on against off")
    parser.add_argument(
        "--model",
        choices=("plain", "residual"),
        default="plain",
        help="plain: 500 Dense (findings at most layers); residual: 125 pre-norm residual blocks",
    )
    args = parser.parse_args(argv)
    if args.ab:
        ab(args.ab, args.steps, args.gradients, args.model)
        return
    if args.replay:
        replay(args.replay)
        replay(args.replay, dead_every=4)
        return
    logdir = tempfile.mkdtemp(prefix="tfprobe_live_")
    atexit.register(shutil.rmtree, logdir, ignore_errors=True)
    calls, probe, blocking = train(args.steps, args.gradients, logdir, args.model)
    # window k (k >= 1): from evaluation k to evaluation k + 1; its evaluation is evaluation k + 1's
    steady = [(b[0] - a[0], b[3] - a[3], b[1], b[2]) for a, b in zip(calls[1:], calls[2:])]
    print(
        f"{args.model}: {LAYERS} layers of width {WIDTH}, record_freq=10, log_freq=100, gradients={args.gradients}: "
        f"{len(calls)} windows evaluated, {len(steady)} steady; load average {os.getloadavg()[0]:.1f} at the end"
    )
    if not steady:
        print("not enough windows: use --steps >= 400")
        return
    wall, cpu, cost, cost_cpu = ([row[i] for row in steady] for i in range(4))
    for name, values in (
        ("window wall time", wall),
        ("window process CPU", cpu),
        ("evaluation wall", cost),
        ("evaluation CPU", cost_cpu),
        ("training loop waits", blocking[2 : len(steady) + 2]),
    ):
        print(
            f"  {name:20s} ms: median {1000 * statistics.median(values):9.1f}  min {1000 * min(values):9.1f}  "
            f"max {1000 * max(values):9.1f}"
        )
    for name, ratio in (
        ("evaluation CPU / window wall", [c / w for c, w in zip(cost_cpu, wall)]),
        ("evaluation CPU / window process CPU", [c / p for c, p in zip(cost_cpu, cpu)]),
        ("evaluation wall / window wall", [c / w for c, w in zip(cost, wall)]),
    ):
        print(f"  {name:36s}: median {100 * statistics.median(ratio):.2f}%  max {100 * max(ratio):.2f}%")
    waits = [b / w for b, w in zip(blocking[2:], wall)]
    print(
        f"  training loop waits / window wall   : median {100 * statistics.median(waits):.3f}%  max {100 * max(waits):.3f}%"
    )
    print(f"  incidents: {len(probe.incidents)}")


if __name__ == "__main__":
    main()
