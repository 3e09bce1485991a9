"""Time to write one logging window of a 500-layer model: as seen in `fit`, and piece by piece.

Model: 500 `Dense(16)` layers, relu and sigmoid alternating (so the bounded
activations' `saturation_fraction` is there too), batch 64, synthetic data,
`LayerProbe(record_freq=1, histogram_freq=1)`: every statistic and a
histogram of all 500 series in every window, the most a window holds. The
content of a window, and so its cost, does not depend on how many steps it
aggregates.

End to end: one `fit` of `--steps` steps with `log_freq=2`; the probe's
`on_train_batch_end` is wrapped with a timer, and its calls are sorted by
whether they wrote a window. That is what a user pays per window, inside
the training loop. The first window also traces the snapshot function and
writes every tag's metadata, so it is reported apart.

Pieces: the accumulators as a real step left them are saved, then `--windows`
times restored (not timed) and turned into one window:

  snapshot   `Accumulators.read_and_reset()`: one host transfer of every accumulator, and their reset
  finalize   the rest of `Recorder.window()`: the NumPy statistics of every series
  write      `WindowWriter.write_window(...)` on a writer of its own (the first write,
             which also carries the metadata, reported apart); "of which framing" is
             the TFRecord CRC32C framing of that many bytes (`tfprobe.logs.events._frame`)
  total      snapshot + finalize + write

The model trains compiled (the usual way); building its step with tfprobe
takes about 80 s for 500 layers (see `trace_time.py`). `--eager` runs it
eagerly instead (~10 s a step); a window's cost is the same either way:
same variables, same compiled snapshot function, same writer.

    python benchmarks/write_window.py                 # 10 steps, 40 timed windows (~3 min)
    python benchmarks/write_window.py --steps 20 --windows 100

Times are ms: median, min and max over n calls.
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

import keras
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import tfprobe
from tfprobe.logs.events import _frame
from tfprobe.logs.writer import WindowWriter

LAYERS = 500
WIDTH = 16
BATCH = 64
LOG_FREQ = 2


def deep_mlp(compiled, n=LAYERS):
    acts = ("relu", "sigmoid")
    layers = [keras.layers.Dense(WIDTH, activation=acts[i % 2]) for i in range(n)]
    model = keras.Sequential([keras.Input((WIDTH,))] + layers)
    model.compile("sgd", "mse", run_eagerly=not compiled)
    return model


class BatchEndTimer:
    """Wraps a probe's `on_train_batch_end`; sorts its durations by whether it wrote a window."""

    def __init__(self, probe):
        self.probe, self.inner = probe, probe.on_train_batch_end
        self.window, self.other = [], []
        probe.on_train_batch_end = self  # Keras calls callbacks synchronously, as it does for the probe

    def __call__(self, batch, logs=None):
        before = self.probe.windows_written
        t = time.perf_counter()
        self.inner(batch, logs)
        (self.window if self.probe.windows_written > before else self.other).append(time.perf_counter() - t)


class SaveAccumulators(keras.callbacks.Callback):
    """Placed before the probe: keeps the accumulators of the last step, before its window drains them."""

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 == self.params["steps"]:
            self.saved = [v.numpy() for v, _ in self.recorder.accumulators.layout()]


def time_pieces(recorder, saved, windows, logdir):
    accumulators = recorder.accumulators
    snapshot, snap_s = accumulators.read_and_reset, []

    def timed_snapshot():
        t = time.perf_counter()
        out = snapshot()
        snap_s.append(time.perf_counter() - t)
        return out

    accumulators.read_and_reset = timed_snapshot  # an instance attribute: `window()` calls it
    writer = WindowWriter(logdir)
    infos = {name: s.info for name, s in recorder.series.items()}
    rows = []
    try:
        for _ in range(windows + 1):  # + the first write, which carries the metadata
            for (v, _), value in zip(accumulators.layout(), saved):
                v.assign(value)
            t0 = time.perf_counter()
            window = recorder.window()
            t1 = time.perf_counter()
            n = writer.write_window(window.step, infos, window.statistics, window.histograms)
            t2 = time.perf_counter()
            rows.append(
                {
                    "snapshot": snap_s[-1],
                    "finalize": t1 - t0 - snap_s[-1],
                    "write": t2 - t1,
                    "bytes": n,
                    "series": len(window.statistics),
                    "histograms": len(window.histograms),
                }
            )
    finally:
        del accumulators.read_and_reset
        writer.close()
    return rows[0], rows[1:]


def ms(seconds):
    return f"{1000 * seconds:9.2f}"


def row(name, values, note=""):
    values = values if isinstance(values, list) else [values]
    print(f"{name:40s} {ms(statistics.median(values))} {ms(min(values))} {ms(max(values))} {len(values):4d}  {note}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help=f"steps of the `fit` (a window every {LOG_FREQ})")
    parser.add_argument("--windows", type=int, default=40, help="windows timed piece by piece")
    parser.add_argument("--layers", type=int, default=LAYERS)
    parser.add_argument("--eager", action="store_true", help="train eagerly (run_eagerly=True)")
    args = parser.parse_args(argv)
    if args.steps < 2 * LOG_FREQ:
        parser.error(f"--steps must be at least {2 * LOG_FREQ}")
    started = time.perf_counter()
    logdir = tempfile.mkdtemp(prefix="tfprobe-window-")
    atexit.register(shutil.rmtree, logdir, ignore_errors=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH * args.steps, WIDTH), dtype=np.float32)
    y = rng.random((BATCH * args.steps, WIDTH), dtype=np.float32)
    model = deep_mlp(not args.eager, args.layers)

    probe = tfprobe.LayerProbe(os.path.join(logdir, "fit"), record_freq=1, log_freq=LOG_FREQ, histogram_freq=1)
    hook = BatchEndTimer(probe)
    save = SaveAccumulators()
    save.recorder = probe._recorder
    t = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[save, probe])
    fit_s = time.perf_counter() - t

    first, steady = time_pieces(probe._recorder, save.saved, args.windows, os.path.join(logdir, "pieces"))
    pieces = {key: [r[key] for r in steady] for key in ("snapshot", "finalize", "write")}
    nbytes = steady[-1]["bytes"]
    framing = []
    for _ in range(11):
        t = time.perf_counter()
        _frame(bytes(nbytes))
        framing.append(time.perf_counter() - t)

    print("    " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:])))
    print(
        f"{args.layers} x Dense({WIDTH}) relu/sigmoid, batch {BATCH}, {'eager' if args.eager else 'compiled'}, "
        f"LayerProbe(record_freq=1, log_freq={LOG_FREQ}, histogram_freq=1): {steady[-1]['series']} series with "
        f"statistics and {steady[-1]['histograms']} histograms per window"
    )
    print(f"{'':40s} {'median ms':>9s} {'min':>9s} {'max':>9s} {'n':>4s}")
    print(f"end to end, in `fit` ({args.steps} steps):")
    row("  on_train_batch_end with a window", hook.window[1:])
    row("  on_train_batch_end without", hook.other)
    row("  on_train_batch_end, first window", hook.window[0], "traces the snapshot function; metadata")
    print("pieces of one window:")
    row("  snapshot (host read + reset)", pieces["snapshot"])
    row("  finalize (NumPy)", pieces["finalize"])
    row("  write_window", pieces["write"], f"{nbytes:,} bytes per window")
    row("    of which framing (CRC32C)", framing)
    row("  total", [a + b + c for a, b, c in zip(*pieces.values())])
    row("  first write_window (with metadata)", first["write"], f"{first['bytes']:,} bytes")
    total = time.perf_counter() - started
    print(f"fit: {fit_s:.0f} s for {args.steps} steps, tracing included; total run {total:.0f} s")


if __name__ == "__main__":
    main()
