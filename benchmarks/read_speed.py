"""Reading speed of `tfprobe.read_logdir`: points per second on a synthetic run.

Writes one run with `WindowWriter` (`--layers` series x `--windows` windows x
the 13 activation statistics, plus a histogram of every series every
`--histogram-every` windows, 0 = none), then times `read_logdir` (long and
pivot) `--repeat` times and prints the best time and points/second.
Writing the default size (13 M points) takes a few minutes and ~0.7 GB of
disk; the log is deleted at the end unless `--keep`.

    python benchmarks/read_speed.py                          # 500 x 2,000 x 13 = 13 M points
    python benchmarks/read_speed.py --layers 100 --windows 500
    python benchmarks/read_speed.py --windows 10000 --keep --report   # 65 M points; `tfprobe report` too
    python benchmarks/read_speed.py --logdir DIR --report --repeat 0  # a run written before (--keep)

`--report` runs `tfprobe report` on the run in a subprocess and prints its
wall time and peak resident memory (`getrusage` of the child).
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tfprobe
from tfprobe import metadata
from tfprobe.logs.writer import WindowWriter


def write_run(path, layers, windows, histogram_every):
    rng = np.random.default_rng(0)
    infos = {
        f"layer_{i}": {"series": f"layer_{i}", "layer": f"layer_{i}", "class": "Dense", "order": i}
        for i in range(layers)
    }
    hist = np.zeros(metadata.NUM_BUCKETS, np.int64)
    hist[metadata.HIST_ZERO_BUCKET - 10 : metadata.HIST_ZERO_BUCKET + 10] = rng.integers(0, 1000, 20)
    writer = WindowWriter(path)
    for step in range(1, windows + 1):
        stats = {
            name: dict(zip(metadata.ACTIVATION_STATS, rng.random(len(metadata.ACTIVATION_STATS)).tolist()))
            for name in infos
        }
        hists = {name: hist for name in infos} if histogram_every and step % histogram_every == 0 else {}
        writer.write_window(step, infos, stats, hists)
    writer.close()
    return layers * windows * len(metadata.ACTIVATION_STATS)


def best_time(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=500)
    parser.add_argument("--windows", type=int, default=2000)
    parser.add_argument("--histogram-every", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--report", action="store_true", help="also time `tfprobe report` and its peak memory")
    parser.add_argument("--logdir", help="read this run (written before with --keep) instead of writing one")
    args = parser.parse_args(argv)
    logdir = args.logdir or tempfile.mkdtemp(prefix="tfprobe_read_speed_")
    try:
        start = time.perf_counter()
        if args.logdir:
            points = args.layers * args.windows * len(metadata.ACTIVATION_STATS)
            print(f"reading {logdir} (taken as {args.layers} layers x {args.windows} windows)")
        else:
            points = write_run(os.path.join(logdir, "run"), args.layers, args.windows, args.histogram_every)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(logdir) for f in fs)
        print(f"{points:,} points ({size / 1e6:.0f} MB), written in {time.perf_counter() - start:.1f} s")
        if args.report:
            root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "tfprobe.cli", "report", logdir], env=env, check=True, stdout=subprocess.DEVNULL
            )
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
            print(f"tfprobe report: {time.perf_counter() - start:.1f} s, peak resident memory {peak:.2f} GiB")
        for label, kwargs in (("long", {}), ("pivot", {"pivot": True})) if args.repeat else ():
            seconds, frame = best_time(
                functools.partial(tfprobe.read_logdir, logdir, progress=False, **kwargs), args.repeat
            )
            print(
                f"read_logdir {label:5s}: {seconds:.2f} s, {points / seconds / 1e6:.2f} M points/s "
                f"({len(frame):,} rows)"
            )
    finally:
        if args.keep or args.logdir:
            print("kept", logdir)
        else:
            shutil.rmtree(logdir)


if __name__ == "__main__":
    main()
