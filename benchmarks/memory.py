"""Peak memory increase of training with tfprobe: plain `fit` vs `fit` with `LayerProbe`.

Requirement: the increase must not grow with the batch size (beyond the
statistics' own state) nor with the number of steps.

Every measurement runs in a fresh subprocess (`--child`), so that peaks do not
carry over: it builds the reference CNN of `benchmarks/overhead.py` and runs
one `fit` of `steps` steps on one synthetic batch repeated by `tf.data` (the
same seeded array in both arms, so the data is identical and small), either
plain or with `LayerProbe(record_freq=1, log_freq=10, histogram_freq=1)`:
every statistic and histogram on every step, a window every 10 steps, the
worst case. It reports the peak RSS of the process (`ru_maxrss`; it includes
TensorFlow itself, the same in both arms) and the RSS after every step.

The parent runs each cell `--reps` times, the order of the arms alternating,
and prints per cell:

  plain / probe peak   median peak RSS of each arm
  increase, min, max   probe peak - plain peak, paired by repetition: median, min, max
  steady               the same for the median RSS after warm-up (steps > 10):
                       what the probe holds during training rather than at its peak
  growth               median RSS of the last 10 steps - that of steps 11-20, per arm
                       (a per-step leak shows here; only for runs of 40 steps or more)

Cells: every batch size at the fewest steps, and every step count at the
smallest batch (`--full` for the whole product; 256 x 200 costs ~3 min a repetition).

    python benchmarks/memory.py            # batch 32, 256 at 20 steps; steps 20, 200 at batch 32; 3 reps (~6 min)
    python benchmarks/memory.py --quick    # batch 32, 128; steps 20, 60; 2 reps (~3 min)
    python benchmarks/memory.py --quick --gradients   # the same with the backward path recorded too

How to read it: "increase" is what tfprobe costs at peak. The last line
compares how much it moves along each axis with the spread of a peak over
repetitions: within that spread, it does not grow.
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
WARMUP = 10  # steps: tracing, compilation and the first window (written at step 10) are done


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def child(batch, steps, probe, sample_size=None, kernel="auto", gradients=False):
    """One measurement; prints one JSON line."""
    import keras
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, os.path.join(HERE, ".."))
    sys.path.insert(0, HERE)
    from overhead import reference_cnn

    import tfprobe

    class Rss(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.trace = []

        def on_train_batch_end(self, batch, logs=None):
            self.trace.append(rss_kib())

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
            p = tfprobe.LayerProbe(
                logdir,
                record_freq=1,
                log_freq=10,
                histogram_freq=1,
                sample_size=sample_size,
                kernel=kernel,
                gradients=gradients,
            )
            callbacks.insert(0, p)  # before `Rss`: a window is written before the RSS is read
        model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=callbacks)
        if probe:
            r = p._recorder
            series = len(r.series)
            state = r.accumulators.step.numpy().nbytes + sum(v.numpy().nbytes for v, _ in r.accumulators.layout())
    trace = rss.trace
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    growth = None
    if steps >= 4 * WARMUP:
        growth = statistics.median(trace[-WARMUP:]) - statistics.median(trace[WARMUP : 2 * WARMUP])
    steady = statistics.median(trace[WARMUP:])
    print(json.dumps({"peak": peak, "steady": steady, "growth": growth, "state": state, "series": series}))


def measure(batch, steps, probe, sample_size=None, kernel="auto", gradients=False):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--batch", str(batch), "--steps", str(steps)]
    if probe:
        cmd.append("--probe")
    if sample_size:
        cmd += ["--sample-size", str(sample_size)]
    cmd += ["--kernel", kernel] + (["--gradients"] if gradients else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def mb(kib):
    return kib / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="every batch size x every step count")
    parser.add_argument("--quick", action="store_true", help="batch 32, 128; steps 20, 60; 2 reps")
    parser.add_argument("--sample-size", type=int, default=None, help="LayerProbe(sample_size=...)")
    parser.add_argument("--kernel", choices=["auto", "native", "graph"], default="auto", help="LayerProbe(kernel=...)")
    parser.add_argument("--gradients", action="store_true", help="LayerProbe(gradients=True): the backward path too")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.batch, args.steps[0], args.probe, args.sample_size, args.kernel, args.gradients)
    if args.quick:
        args.batches, args.steps, args.reps = [32, 128], [20, 60], 2
    if min(args.steps) < 2 * WARMUP:
        parser.error(f"--steps must be at least {2 * WARMUP}")
    if args.reps < 2:
        parser.error("--reps must be at least 2 (the reading compares with the spread over repetitions)")

    started = time.perf_counter()
    lo_b, hi_b, lo_s, hi_s = min(args.batches), max(args.batches), min(args.steps), max(args.steps)
    if args.full:
        cells = [(b, s) for b in sorted(args.batches) for s in sorted(args.steps)]
    else:
        cells = [(b, lo_s) for b in sorted(args.batches)] + [(lo_b, s) for s in sorted(args.steps) if s != lo_s]
    runs = {(cell, probe): [] for cell in cells for probe in (False, True)}
    for rep in range(args.reps):
        for i, cell in enumerate(cells):
            for probe in (False, True) if (rep + i) % 2 == 0 else (True, False):
                runs[cell, probe].append(measure(*cell, probe, args.sample_size, args.kernel, args.gradients))

    state = max(r["state"] for cell in cells for r in runs[cell, True])
    series = max(r["series"] for cell in cells for r in runs[cell, True])
    print("    " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:])))
    print(
        f"reference CNN, LayerProbe(record_freq=1, log_freq=10, histogram_freq=1, sample_size={args.sample_size}, "
        f"kernel={args.kernel!r}, gradients={args.gradients}); "
        f"{args.reps} reps per cell; "
        f"MB = MiB of RSS"
    )
    print(f"tfprobe state (the accumulators of its {series} series): {state / 1024:.1f} KiB")
    print(
        f"{'batch':>5s} {'steps':>5s} {'plain peak':>10s} {'probe peak':>10s} {'increase':>8s} {'min':>6s} "
        f"{'max':>6s} {'steady':>6s} {'plain growth':>12s} {'probe growth':>12s}"
    )
    med = lambda rs, key: statistics.median(r[key] for r in rs)  # noqa: E731
    increases = {}
    for cell in cells:
        plain, probe = runs[cell, False], runs[cell, True]
        inc = [mb(b["peak"] - a["peak"]) for a, b in zip(plain, probe)]
        steady = statistics.median(mb(b["steady"] - a["steady"]) for a, b in zip(plain, probe))
        increases[cell] = statistics.median(inc)
        growth = [
            f"{mb(med(rs, 'growth')):12.1f}" if rs[0]["growth"] is not None else f"{'-':>12s}" for rs in (plain, probe)
        ]
        print(
            f"{cell[0]:5d} {cell[1]:5d} {mb(med(plain, 'peak')):10.1f} {mb(med(probe, 'peak')):10.1f} "
            f"{increases[cell]:8.1f} {min(inc):6.1f} {max(inc):6.1f} {steady:6.1f} {growth[0]} {growth[1]}"
        )

    # Reading: how much the increase moves along each axis, next to the spread of a peak over repetitions.
    by_batch = statistics.median(increases[hi_b, s] - increases[lo_b, s] for s in args.steps if (hi_b, s) in increases)
    by_steps = statistics.median(
        increases[b, hi_s] - increases[b, lo_s] for b in args.batches if (b, hi_s) in increases
    )
    noise = statistics.median(mb(max(r["peak"] for r in rs) - min(r["peak"] for r in rs)) for rs in runs.values())
    verdict = lambda d: "within the spread" if abs(d) <= 2 * noise else ("grows" if d > 0 else "shrinks")  # noqa: E731
    print(
        f"reading: the peak increase is {min(increases.values()):.1f}-{max(increases.values()):.1f} MB over the "
        f"cells; batch {lo_b} -> {hi_b} changes it by {by_batch:+.1f} MB ({verdict(by_batch)}), steps {lo_s} -> "
        f"{hi_s} by {by_steps:+.1f} MB ({verdict(by_steps)}); spread of a peak over reps (median) {noise:.1f} MB; "
        f"tfprobe state {state / 1024:.1f} KiB. Total {time.perf_counter() - started:.0f} s."
    )


if __name__ == "__main__":
    main()
