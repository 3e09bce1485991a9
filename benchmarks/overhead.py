"""Training-step overhead of tfprobe: plain `fit` vs `fit` with `LayerProbe`.

Interleaved A/B repetitions in one process on one model: each repetition runs
a short `fit` without the probe, then one with it (order alternating), and
times every step from Keras' batch callbacks. Per repetition and arm: the
median step time after warm-up (what a typical step costs) and the mean step
time (the amortized cost, which includes the 1-in-`record_freq` recorded
steps). Reported: the median over repetitions of the probe/plain ratio of
each, with the min and max of the median-step ratio.

    python benchmarks/overhead.py                      # every configuration on the reference CNN
    python benchmarks/overhead.py --config default --reps 9
    python benchmarks/overhead.py --model mobilenetv2 --config sampled_every_step
    python benchmarks/overhead.py --model lstm --config all_stats_every_step
    python benchmarks/overhead.py --model mobilenetv2 --config gradients_every_step --paired --steps 12 --warmup 3
    python benchmarks/overhead.py --kernel graph           # the graph ops instead of the native kernel
    python benchmarks/overhead.py --clock cpu              # CPU time of the process per step (a busy machine)

Models (synthetic data):
  cnn (reference CNN of issue 2): input 32x32x3, Conv2D(32,3,relu), MaxPooling2D,
    Conv2D(64,3,relu), MaxPooling2D, Conv2D(128,3,relu), GlobalAveragePooling2D,
    Dense(128,relu), Dense(10); batch 128.
  mobilenetv2: keras.applications.MobileNetV2(weights=None, input 96x96x3, 10 classes); batch 32.
  lstm: Embedding(20000, 128), LSTM(128), Dense(1, sigmoid); sequences of 200 tokens; batch 64.
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
from tfprobe.logs.events import read_records

CONFIGS = {
    "default": {},
    "default_no_alerts": {"alerts": False},
    "all_stats_every_step": {"record_freq": 1, "histogram_freq": 0},
    "all_stats_and_histograms_every_step": {"record_freq": 1, "histogram_freq": 1},
    "record_freq_10": {"record_freq": 10, "histogram_freq": 100},
    "sampled_every_step": {"record_freq": 1, "histogram_freq": 0, "sample_size": 16},
    "sampled_with_histograms_every_step": {"record_freq": 1, "histogram_freq": 1, "sample_size": 16},
    "default_sampled": {"sample_size": 16},
    "gradients_every_step": {"record_freq": 1, "histogram_freq": 0, "gradients": True},
    "gradients_and_histograms_every_step": {"record_freq": 1, "histogram_freq": 1, "gradients": True},
    "default_gradients": {"gradients": True},
}


def reference_cnn():
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(128, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def mobilenetv2():
    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), weights=None, classes=10)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy())
    return model


def lstm_text():
    model = keras.Sequential(
        [
            keras.Input((200,), dtype="int32"),
            keras.layers.Embedding(20000, 128),
            keras.layers.LSTM(128),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile("adam", "binary_crossentropy")
    return model


def _images(shape, classes):
    def make(n, rng):
        return rng.random((n,) + shape, dtype=np.float32), rng.integers(0, classes, n)

    return make


def _tokens(n, rng):
    return rng.integers(0, 20000, (n, 200)).astype(np.int32), rng.integers(0, 2, n).astype(np.float32)


MODELS = {  # name: (build, batch size, data(n, rng))
    "cnn": (reference_cnn, 128, _images((32, 32, 3), 10)),
    "mobilenetv2": (mobilenetv2, 32, _images((96, 96, 3), 10)),
    "lstm": (lstm_text, 64, _tokens),
}


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
CLOCK = ["wall"]  # `--clock cpu`: the process's CPU time per step (all its threads), less moved by other jobs


class StepTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(CLOCKS[CLOCK[0]]())


def scratch(prefix):
    """A temporary log directory, removed when the benchmark exits."""
    logdir = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, logdir, ignore_errors=True)
    return logdir


def run(model, x, y, batch, steps, callbacks, warmup):
    timer = StepTimer()
    model.fit(
        x, y, batch_size=batch, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=[timer] + callbacks
    )
    deltas = np.diff(timer.times)[warmup:]
    return float(np.median(deltas)), float(np.mean(deltas))


def measure(name, kwargs, reps, steps, warmup, model_name="cnn"):
    build, batch, data = MODELS[model_name]
    x, y = data(batch * steps, np.random.default_rng(0))
    model = build()
    logdir = scratch("tfprobe-bench-")
    probe = tfprobe.LayerProbe(os.path.join(logdir, name), **kwargs)
    run(model, x, y, batch, steps, [], warmup)  # warm-up: trace both functions once
    run(model, x, y, batch, steps, [probe], warmup)
    ratios, mean_ratios, plain_times, probe_times = [], [], [], []
    for rep in range(reps):
        order = (False, True) if rep % 2 == 0 else (True, False)
        times = {}
        for with_probe in order:
            times[with_probe] = run(model, x, y, batch, steps, [probe] if with_probe else [], warmup)
        plain_times.append(times[False][0])
        probe_times.append(times[True][0])
        ratios.append(times[True][0] / times[False][0])
        mean_ratios.append(times[True][1] / times[False][1])
    return {
        "config": name,
        "plain_ms": 1000 * statistics.median(plain_times),
        "probe_ms": 1000 * statistics.median(probe_times),
        "ratio": statistics.median(ratios),
        "mean_ratio": statistics.median(mean_ratios),
        "min": min(ratios),
        "max": max(ratios),
    }


def paired(name, kwargs, steps, model_name="cnn", fits=3):
    """Recorded vs unrecorded steps of the same `fit`s: `record_freq=2` alternates them step by step.

    The finest interleaving there is: both arms see the same machine state
    within ~0.1 s, so the ratio is much less noisy than two separate `fit`s.
    It measures the cost of the recorded steps themselves; the cost of an
    unrecorded step over a plain one is the `record_freq_10`-style figure.
    Returns the median over all recorded steps / median over unrecorded steps.
    """
    build, batch, data = MODELS[model_name]
    x, y = data(batch * steps, np.random.default_rng(0))
    model = build()
    kwargs = dict(kwargs, record_freq=2, log_freq=steps)
    if kwargs.get("histogram_freq"):
        kwargs["histogram_freq"] = 2
    probe = tfprobe.LayerProbe(os.path.join(scratch("tfprobe-paired-"), name), **kwargs)
    run(model, x, y, batch, steps, [probe], 0)  # trace
    on, off = [], []
    for _ in range(fits):
        first = int(model.optimizer.iterations.numpy())
        timer = StepTimer()
        model.fit(
            x, y, batch_size=batch, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=[timer, probe]
        )
        for b, dt in enumerate(np.diff(timer.times), start=1):  # dt: duration of batch b
            (on if (first + b + 1) % 2 == 0 else off).append(dt)
    return statistics.median(on) / statistics.median(off), 1000 * statistics.median(off)


def bytes_per_layer_window(steps=50, batch=128):
    """Event bytes per layer per logged window, histograms included, in one longer `fit`.

    Returns `(steady, first)`: the median over windows after the first, and the
    first window, which also carries each tag's metadata.
    """
    rng = np.random.default_rng(1)
    x = rng.random((batch * steps, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, batch * steps)
    model = reference_cnn()
    logdir = scratch("tfprobe-bytes-")
    probe = tfprobe.LayerProbe(logdir, record_freq=1, log_freq=10, histogram_freq=10)
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=[probe])
    (path,) = [os.path.join(logdir, f) for f in os.listdir(logdir)]
    sizes = [len(r) + 16 for r in read_records(path)][1:]  # skip the file-version event; 16 = framing
    layers = len(probe.series)
    return statistics.median(sizes[1:]) / layers, sizes[0] / layers


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), action="append")
    parser.add_argument("--model", choices=sorted(MODELS), default="cnn")
    parser.add_argument(
        "--kernel",
        choices=["auto", "native", "graph"],
        default="auto",
        help="LayerProbe(kernel=...): the one-pass native kernel or the graph ops",
    )
    parser.add_argument("--no-bytes", action="store_true", help="skip the log-size measurement")
    parser.add_argument(
        "--paired",
        action="store_true",
        help="also the recorded/unrecorded step ratio within the same fits (every-step configs)",
    )
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="time steps by the wall clock or by the process's CPU time (on a machine shared with other jobs)",
    )
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    CLOCK[0] = args.clock
    if not args.no_bytes:
        steady, first = bytes_per_layer_window()
        print(
            f"event bytes per layer per window (histograms included): {steady:.0f} "
            f"(first window, with metadata: {first:.0f})"
        )
    print(
        f"model: {args.model}, kernel: {args.kernel}, {args.reps} repetitions of {args.steps} steps, {args.clock} clock"
    )
    print(
        f"{'configuration':40s} {'plain ms':>9s} {'probe ms':>9s} {'ratio':>7s} {'min':>6s} {'max':>6s} {'mean ratio':>10s}"
    )
    for name in args.config or list(CONFIGS):
        r = measure(name, {**CONFIGS[name], "kernel": args.kernel}, args.reps, args.steps, args.warmup, args.model)
        print(
            f"{r['config']:40s} {r['plain_ms']:9.1f} {r['probe_ms']:9.1f} {r['ratio']:7.3f} {r['min']:6.3f} "
            f"{r['max']:6.3f} {r['mean_ratio']:10.3f}",
            flush=True,
        )
    if args.paired:
        print("paired: recorded / unrecorded steps of the same fits (record_freq=2)")
        for name in args.config or list(CONFIGS):
            if CONFIGS[name].get("record_freq") == 1:
                ratio, off_ms = paired(name, {**CONFIGS[name], "kernel": args.kernel}, 4 * args.steps, args.model)
                print(f"{name:40s} unrecorded {off_ms:7.1f} ms  recorded/unrecorded {ratio:6.3f}", flush=True)


if __name__ == "__main__":
    main()
