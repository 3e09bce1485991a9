"""Building the probed train step against Keras' own build of the same step.

For each model, in one process: the model is compiled and trained one step
(TensorFlow warm, the optimizer built). Then, alternating, repeated:

  keras   Keras builds its train function again (`model.train_function = None`) and
          runs one step: tracing and optimizing the step, as every `fit` after a
          `compile` does
  probe   a `fit` of one step with a new `LayerProbe` (default settings, no reuse):
          tracing and optimizing the instrumented step, plus the one window's
          read-back function

Reported: the median seconds of each and their ratio (probe / keras), the honest
measure of what tfprobe adds to building the step (not against Keras' first
`fit`, which also builds the optimizer).

    python benchmarks/build_time.py --model mobilenetv2 --reps 3
    python benchmarks/build_time.py --model densenet121 --model inceptionv3 --reps 3
    python benchmarks/build_time.py --model mobilenetv2 --gradients   # with the backward path recorded too
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


def application(name, size):
    def build():
        model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=10)
        model.compile("adam", "sparse_categorical_crossentropy")
        return model

    return build, (size, size, 3)


MODELS = {
    "mobilenetv2": application("MobileNetV2", 32),
    "densenet121": application("DenseNet121", 32),
    "inceptionv3": application("InceptionV3", 75),
    "resnet50": application("ResNet50", 32),
}


def one_step(model, x, y, callbacks=()):
    started = time.perf_counter()
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0, callbacks=list(callbacks))
    return time.perf_counter() - started


def measure(name, reps, kernel, gradients=False):
    build, shape = MODELS[name]
    model = build()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, *shape)).astype("float32")
    y = rng.integers(0, 10, size=8)
    one_step(model, x, y)  # TensorFlow warm, the optimizer built
    times = {"keras": [], "probe": []}
    logdir = tempfile.mkdtemp(prefix="tfprobe-build-")
    atexit.register(shutil.rmtree, logdir, ignore_errors=True)
    for rep in range(reps):
        model.train_function = None
        times["keras"].append(one_step(model, x, y))
        model.__dict__.pop("_tfprobe_recorders", None)  # a new probe on its own: no reuse of a traced step
        model.train_function = None
        probe = tfprobe.LayerProbe(os.path.join(logdir, str(rep)), kernel=kernel, gradients=gradients)
        times["probe"].append(one_step(model, x, y, [probe]))
    keras_s, probe_s = statistics.median(times["keras"]), statistics.median(times["probe"])
    return keras_s, probe_s, len(probe.series)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", choices=sorted(MODELS), help="default: mobilenetv2")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--kernel", choices=["auto", "native", "graph"], default="auto")
    parser.add_argument("--gradients", action="store_true", help="LayerProbe(gradients=True): the backward path too")
    args = parser.parse_args(argv)
    print(f"{'model':14s} {'series':>6s} {'keras s':>8s} {'probe s':>8s} {'ratio':>6s}")
    for name in args.model or ["mobilenetv2"]:
        keras_s, probe_s, series = measure(name, args.reps, args.kernel, args.gradients)
        print(f"{name:14s} {series:6d} {keras_s:8.2f} {probe_s:8.2f} {probe_s / keras_s:6.2f}", flush=True)


if __name__ == "__main__":
    main()
