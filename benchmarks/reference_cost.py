"""Cost of a reference step (`LayerProbe(reference_data=...)`): one step, and its share of a whole `fit`.

1. One reference step of the representation analysis on 500 reference
   examples, after one warm-up step: the median wall time over `--reps`
   steps (timed alone), and the peak memory above what the process held before the step,
   both as resident memory (RSS, sampled every millisecond by a thread:
   TensorFlow's activations included) and as Python/NumPy allocations
   (`tracemalloc`: the features, Gram matrices and probes). Models:

     digits_mlp: Dense(64, relu), Dense(32, relu), Dense(10) on the 64 pixels of scikit-learn's digits;
     cnn: the reference CNN of `benchmarks/overhead.py` (32x32x3 synthetic images, 7 recorded layers).

2. The share of the reference steps in the wall time of the digits example
   (`examples/train_digits.py`, `relu` run: 15 epochs of 23 steps, batch 64)
   with 500 reference examples, at the default `reference_freq` (every 5th
   epoch) and at every epoch: the time inside the reference steps (timed
   around each) over the whole `fit`, and the `fit` without `reference_data`.
   The first reference step of a `fit` also traces the capture function.

    python benchmarks/reference_cost.py            # both (~1 min on 2 cores)
    python benchmarks/reference_cost.py --reps 9
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), HERE, os.path.join(HERE, "..", "examples")]

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfprobe  # noqa: E402
from tfprobe.reference import ReferenceData, analysis  # noqa: E402
from tfprobe.reference.representations import RepresentationAnalysis  # noqa: E402

N_REFERENCE = 500


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """The largest RSS seen while the block runs, sampled every millisecond."""

    def __enter__(self):
        self.start = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    return (d.data[order] / 16.0).astype("float32"), d.target[order].astype("int32")


def digits_mlp():
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    x, y = digits()
    return model, x[:N_REFERENCE], y[:N_REFERENCE]


def cnn():
    from overhead import MODELS

    build, _batch, data = MODELS["cnn"]
    x, y = data(N_REFERENCE, np.random.default_rng(0))
    return build(), x, y


def one_step(name, build, reps):
    model, x, y = build()
    reference = ReferenceData((x, y))
    times, rss, heap = [], [], []
    with tempfile.TemporaryDirectory() as logdir:
        repr_analysis = RepresentationAnalysis(logdir)
        repr_analysis.run(model, reference, 0)  # warm-up
        for step in range(1, reps + 1):  # time alone: tracemalloc slows every allocation
            start = time.perf_counter()
            repr_analysis.run(model, reference, step)
            times.append(time.perf_counter() - start)
        for step in range(reps + 1, reps + 3):
            with PeakRSS() as peak:
                repr_analysis.run(model, reference, step)
            rss.append(peak.peak - peak.start)
            tracemalloc.start()
            repr_analysis.run(model, reference, step)
            heap.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        repr_analysis.close()
        layers = len(tfprobe.read_cka(logdir).layer_a.unique())
    print(
        f"{name:<11} {layers} layers, {N_REFERENCE} examples: {statistics.median(times) * 1e3:7.1f} ms "
        f"(min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f}); peak RSS +{max(rss) / 2**20:.1f} MiB, "
        f"peak NumPy/Python +{max(heap) / 2**20:.1f} MiB"
    )


def fit_share(epochs):
    from train_digits import build_model, load_data

    x, y = load_data()
    split = int(0.8 * len(x))
    reference = (x[split:][:N_REFERENCE], y[split:][:N_REFERENCE])
    original = analysis.run_all
    spent = []

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    arms = {
        "no reference_data": {},
        "reference_freq=5 (default)": {"reference_data": reference},
        "reference_freq=1": {"reference_data": reference, "reference_freq": 1},
    }
    with tempfile.TemporaryDirectory() as logdir:
        for i, (arm, extra) in enumerate(arms.items()):
            keras.utils.set_random_seed(0)
            model = build_model()
            probe = tfprobe.LayerProbe(os.path.join(logdir, str(i)), **extra)
            spent.clear()
            analysis.run_all = timed
            try:
                start = time.perf_counter()
                model.fit(x[:split], y[:split], batch_size=64, epochs=epochs, verbose=0, callbacks=[probe])
                total = time.perf_counter() - start
            finally:
                analysis.run_all = original
            print(
                f"digits example, {epochs} epochs, {arm}: fit {total:.2f} s, {len(spent)} reference steps "
                f"{sum(spent):.2f} s ({', '.join(f'{t * 1e3:.0f}' for t in spent)} ms) = "
                f"{100 * sum(spent) / total:.1f}% of fit"
            )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args(argv)
    for name, build in (("digits_mlp", digits_mlp), ("cnn", cnn)):
        one_step(name, build, args.reps)
    fit_share(args.epochs)


if __name__ == "__main__":
    main()
