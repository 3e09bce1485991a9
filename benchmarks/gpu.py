"""tfprobe on a GPU: plain against probed `fit`, one command, no arguments.

    python benchmarks/gpu.py

On a machine with a CUDA GPU visible to TensorFlow it measures, for three
models (the reference CNN, MobileNetV2 96x96 batch 32, a small Transformer
encoder), with XLA on (`jit_compile=True`) and off, and for each
configuration below, interleaved repetitions of a short plain `fit` and a
short probed `fit` on the same model (order alternating), and prints the
median over repetitions of the probed/plain ratio of the median step time,
with its min and max, in a table headed by the device name and the versions
of TensorFlow and Keras. The table is also written as JSON
(`gpu_benchmark.json` in the current directory, or `--json PATH`).

Configurations (`LayerProbe` arguments):
  defaults               one step in 10 recorded, histograms every 100 steps
  every_step             every statistic every step (record_freq=1), no histograms
  gradients              forward and gradient statistics every step (gradients=True)
  histograms             both passes' statistics and histograms every step
  mixed_float16          defaults, the model under keras' mixed_float16 policy

On a machine without a GPU it says so and exits 0 (nothing is measured).
`--cpu` runs the same table on the CPU (a check of the script itself, with
`--models cnn --reps 1 --steps 8` it takes about a minute), not a GPU figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CONFIGS = {
    "defaults": {},
    "every_step": {"record_freq": 1, "histogram_freq": 0},
    "gradients": {"record_freq": 1, "histogram_freq": 0, "gradients": True},
    "histograms": {"record_freq": 1, "histogram_freq": 1, "gradients": True},
    "mixed_float16": {},
}
MODELS = ("cnn", "mobilenetv2", "transformer")


def gpu_devices():
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def device_name(devices):
    import tensorflow as tf

    if not devices:
        return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    details = tf.config.experimental.get_device_details(devices[0])
    return details.get("device_name", devices[0].name) + (
        f" (compute {details['compute_capability']})" if "compute_capability" in details else ""
    )


def build(model_name, jit_compile):
    """`(model, batch size, make_data(n, rng))`; the model compiled with `jit_compile`."""
    import keras
    import numpy as np

    if model_name == "cnn":
        from overhead import reference_cnn  # the same reference CNN as overhead.py (recompiled below)

        model = reference_cnn()
        batch, shape = 128, (32, 32, 3)
    elif model_name == "mobilenetv2":
        model = keras.applications.MobileNetV2(
            input_shape=(96, 96, 3), weights=None, classes=10, classifier_activation=None
        )
        batch, shape = 32, (96, 96, 3)
    elif model_name == "transformer":
        model, batch, shape = transformer_encoder(), 64, None
    else:
        raise ValueError(f"`model` must be one of {MODELS}. Received: model={model_name!r}")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit_compile)

    def data(n, rng):
        if shape is None:
            return rng.integers(0, 1000, (n, 128)).astype(np.int32), rng.integers(0, 10, n)
        return rng.random((n,) + shape, dtype=np.float32), rng.integers(0, 10, n)

    return model, batch, data


def transformer_encoder(vocab=1000, length=128, dim=128, heads=4, blocks=2, classes=10):
    """A small Transformer encoder classifier: token and position embeddings, `blocks` pre-norm blocks
    (multi-head self-attention, a 4x MLP with GELU), mean pooling, a dense head."""
    import keras

    tokens = keras.Input((length,), dtype="int32")
    x = keras.layers.Embedding(vocab, dim)(tokens)
    positions = keras.ops.arange(length)
    x = x + keras.layers.Embedding(length, dim)(positions)
    for _ in range(blocks):
        h = keras.layers.LayerNormalization()(x)
        x = x + keras.layers.MultiHeadAttention(heads, dim // heads)(h, h)
        h = keras.layers.LayerNormalization()(x)
        h = keras.layers.Dense(4 * dim, activation="gelu")(h)
        x = x + keras.layers.Dense(dim)(h)
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.LayerNormalization()(x))
    return keras.Model(tokens, keras.layers.Dense(classes)(x))


def measure(model_name, jit_compile, config, reps, steps, warmup):
    """Median over `reps` interleaved repetitions of probed/plain median step time."""
    import keras
    import numpy as np

    import tfprobe

    keras.mixed_precision.set_global_policy("mixed_float16" if config == "mixed_float16" else "float32")
    logdir = tempfile.mkdtemp(prefix="tfprobe-gpu-")
    try:
        model, batch, data = build(model_name, jit_compile)
        x, y = data(batch * steps, np.random.default_rng(0))
        probe = tfprobe.LayerProbe(os.path.join(logdir, config), **CONFIGS[config])

        class Timer(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.times = []

            def on_train_batch_end(self, b, logs=None):
                self.times.append(time.perf_counter())

        def run(callbacks):
            timer = Timer()
            model.fit(
                x,
                y,
                batch_size=batch,
                epochs=1,
                steps_per_epoch=steps,
                verbose=0,
                shuffle=False,
                callbacks=[timer] + callbacks,
            )
            return float(np.median(np.diff(timer.times)[warmup:]))

        run([])
        run([probe])  # trace both steps
        plain, probed, ratios = [], [], []
        for rep in range(reps):
            times = {}
            for with_probe in (False, True) if rep % 2 == 0 else (True, False):
                times[with_probe] = run([probe] if with_probe else [])
            plain.append(times[False])
            probed.append(times[True])
            ratios.append(times[True] / times[False])
        return {
            "model": model_name,
            "xla": bool(jit_compile),
            "config": config,
            "kernel": probe._recorder.kernel.name,
            "plain_ms": 1000 * statistics.median(plain),
            "probe_ms": 1000 * statistics.median(probed),
            "ratio": statistics.median(ratios),
            "min": min(ratios),
            "max": max(ratios),
        }
    except Exception as e:  # noqa: BLE001 -- a configuration that fails (e.g. not compiling under XLA) is a row
        return {
            "model": model_name,
            "xla": bool(jit_compile),
            "config": config,
            "error": f"{type(e).__name__}: {e}"[:200],
        }
    finally:
        keras.mixed_precision.set_global_policy("float32")
        shutil.rmtree(logdir, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default="gpu_benchmark.json", help="where the table is written as JSON")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (checks the script; not a GPU figure)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    devices = gpu_devices()
    if not devices and not args.cpu:
        print(
            f"benchmarks/gpu.py: no CUDA GPU visible to TensorFlow {tf.__version__} "
            f"(built with CUDA: {tf.test.is_built_with_cuda()}); nothing measured. "
            "Run it on a machine with a GPU (pip install 'tensorflow[and-cuda]')."
        )
        return 0
    head = {
        "device": device_name(devices),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "reps": args.reps,
        "steps": args.steps,
        "warmup": args.warmup,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(
        f"device: {head['device']}; TensorFlow {head['tensorflow']}, Keras {head['keras']}; "
        f"{args.reps} repetitions of {args.steps} steps (median step time after {args.warmup})"
    )
    print(
        f"{'model':12s} {'XLA':4s} {'configuration':14s} {'kernel':7s} {'plain ms':>9s} {'probe ms':>9s} "
        f"{'ratio':>6s} {'min':>6s} {'max':>6s}"
    )
    rows = []
    for model_name in args.models:
        for jit in (True, False):
            for config in args.configs:
                r = measure(model_name, jit, config, args.reps, args.steps, args.warmup)
                rows.append(r)
                lead = f"{model_name:12s} {'on' if jit else 'off':4s} {config:14s}"
                if "error" in r:
                    print(f"{lead} failed: {r['error']}", flush=True)
                else:
                    print(
                        f"{lead} {r['kernel']:7s} {r['plain_ms']:9.2f} {r['probe_ms']:9.2f} {r['ratio']:6.3f} "
                        f"{r['min']:6.3f} {r['max']:6.3f}",
                        flush=True,
                    )
    with open(args.json, "w") as f:
        json.dump({**head, "rows": rows}, f, indent=1)
    print(f"written: {os.path.abspath(args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
