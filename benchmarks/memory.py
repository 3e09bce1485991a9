"""Peak memory increase of training with tfprobe: plain `fit` vs `fit` with `LayerProbe`.

Requirement: the increase must not grow with the batch size (beyond the
statistics' own state) nor with the number of steps.

Every measurement runs in a fresh subprocess (`--child`), so that peaks do not
carry over: it builds the reference CNN of `benchmarks/overhead.py` and runs
one `fit` of `steps` steps on one synthetic batch repeated by `tf.data` (the
same seeded array in both arms, so the data is identical and small), without
the probe or with `LayerProbe(record_freq=1, log_freq=10, histogram_freq=1)`:
every statistic and histogram on every step, a window every 10 steps, the
worst case. It reports the peak RSS of the process (`ru_maxrss`, which
includes TensorFlow itself, the same in both arms), its RSS after the first
10 steps (tracing, compilation and the first window done) and after `fit`.

The parent runs the grid arms x batch sizes x steps, `--reps` times with the
order of the arms alternating, and prints per cell the median peaks, the
median of the paired increases (probe - plain in the same repetition) with
its min-max, and the RSS growth after warm-up of each arm (a leak per step
would show there). The probe's own state (its accumulators) is printed too.

    python benchmarks/memory.py               # batch 32, 256 x steps 20, 200; 3 reps (~5 min)
    python benchmarks/memory.py --quick       # batch 32, 128 x steps 10, 40; 2 reps

How to read it: "increase" is what tfprobe costs at peak. If it is about the
same in every row (differences within the spread of the repetitions), it
does not grow with the batch size or the number of steps.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
WARMUP = 10  # steps: the first window is written at step 10


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def child(batch, steps, probe):
    """One measurement; prints one JSON line."""
    import numpy as np
    import keras
    import tensorflow as tf

    sys.path.insert(0, os.path.join(HERE, ".."))
    sys.path.insert(0, HERE)
    import tfprobe
    from overhead import reference_cnn

    class Rss(keras.callbacks.Callback):
        warm = None

        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 == WARMUP:
                self.warm = rss_kib()

    rng = np.random.default_rng(0)
    x = rng.random((batch, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    model = reference_cnn()
    rss = Rss()
    callbacks = [rss]
    state = series = 0
    with tempfile.TemporaryDirectory(prefix="tfprobe-mem-") as logdir:
        if probe:
            p = tfprobe.LayerProbe(logdir, record_freq=1, log_freq=10, histogram_freq=1)
            callbacks.insert(0, p)  # before `rss`: the window of step 10 is written when it reads
        model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=callbacks)
        end = rss_kib()
        if probe:
            r = p._recorder
            series = len(r.series)
            state = r.step.numpy().nbytes + sum(
                v.numpy().nbytes for s in r.series.values() for v in (s.sums, s.maxes, s.hist) if v is not None
            )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"peak": peak, "warm": rss.warm, "end": end, "state": state, "series": series}))


def measure(batch, steps, probe):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--batch", str(batch), "--steps", str(steps)]
    if probe:
        cmd.append("--probe")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def mb(kib):
    return kib / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="batch 32, 128 x steps 10, 40, 2 reps")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.batch, args.steps[0], args.probe)
    if args.quick:
        args.batches, args.steps, args.reps = [32, 128], [10, 40], 2
    if min(args.steps) < WARMUP:
        parser.error(f"--steps must be at least {WARMUP}")

    started = time.perf_counter()
    cells = [(b, s) for b in args.batches for s in args.steps]
    runs = {(cell, probe): [] for cell in cells for probe in (False, True)}
    for rep in range(args.reps):
        for i, cell in enumerate(cells):
            order = (False, True) if (rep + i) % 2 == 0 else (True, False)
            for probe in order:
                runs[cell, probe].append(measure(*cell, probe))

    state = max(r["state"] for cell in cells for r in runs[cell, True])
    series = max(r["series"] for cell in cells for r in runs[cell, True])
    print(f"reference CNN, LayerProbe(record_freq=1, log_freq=10, histogram_freq=1); {args.reps} reps per cell; "
          f"MB = MiB of RSS")
    print(f"tfprobe state (accumulators of its {series} series): {state / 1024:.1f} KiB")
    head = (f"{'batch':>5s} {'steps':>5s} {'plain peak':>10s} {'probe peak':>10s} {'increase':>8s} {'min':>6s} "
            f"{'max':>6s} {'plain growth':>12s} {'probe growth':>12s}")
    print(head)
    increases = {}
    for cell in cells:
        plain, probe = runs[cell, False], runs[cell, True]
        inc = [mb(b["peak"] - a["peak"]) for a, b in zip(plain, probe)]
        increases[cell] = statistics.median(inc)
        growth = lambda rs: statistics.median(mb(r["end"] - r["warm"]) for r in rs)  # noqa: E731
        print(f"{cell[0]:5d} {cell[1]:5d} {mb(statistics.median(r['peak'] for r in plain)):10.1f} "
              f"{mb(statistics.median(r['peak'] for r in probe)):10.1f} {increases[cell]:8.1f} {min(inc):6.1f} "
              f"{max(inc):6.1f} {growth(plain):12.1f} {growth(probe):12.1f}")
    print("increase = median over reps of (probe peak - plain peak), paired by rep; growth = RSS after fit - RSS "
          f"after step {WARMUP} (median)")

    # Reading: how much the increase moves along each axis, next to the repetitions' own spread.
    lo_b, hi_b, lo_s, hi_s = min(args.batches), max(args.batches), min(args.steps), max(args.steps)
    by_batch = statistics.median(increases[hi_b, s] - increases[lo_b, s] for s in args.steps)
    by_steps = statistics.median(increases[b, hi_s] - increases[b, lo_s] for b in args.batches)
    noise = statistics.median(
        max(mb(r["peak"]) for r in runs[key]) - min(mb(r["peak"]) for r in runs[key]) for key in runs
    )
    verdict = lambda d: "within noise" if abs(d) <= max(noise, 1.0) else ("grows" if d > 0 else "shrinks")  # noqa: E731
    print(f"reading: the increase is {min(increases.values()):.1f}-{max(increases.values()):.1f} MB over the grid; "
          f"batch {lo_b}->{hi_b} changes it by {by_batch:+.1f} MB ({verdict(by_batch)}), steps {lo_s}->{hi_s} by "
          f"{by_steps:+.1f} MB ({verdict(by_steps)}); typical spread of a peak over reps {noise:.1f} MB; "
          f"tfprobe state {state / 1024:.1f} KiB; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
