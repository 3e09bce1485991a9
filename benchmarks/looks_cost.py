"""The cost of one "where the model looks" reference step: wall time and bytes written.

Runs `tfprobe.looks.LooksAnalysis.run` (one inference pass with every layer
captured, Grad-CAM of the predicted and the true class, feature-map grids
of the default feature layers, PNG encoding, one event written) on 8
labelled reference examples, `--reps` times after a first step, and prints
the median wall time of a step and the bytes it writes (the first step also
writes the inputs).

    python benchmarks/looks_cost.py                      # digits CNN and MobileNetV2 96x96
    python benchmarks/looks_cost.py --model mobilenetv2 --reps 3
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
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
from tfprobe.looks import LooksAnalysis
from tfprobe.reference import ReferenceData


def digits():
    from train_digits import build_model, load_data

    x, y = load_data()
    return build_model(), x[:8], y[:8]


def mobilenetv2():
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3))
    rng = np.random.default_rng(0)
    return model, rng.random((8, 96, 96, 3), dtype=np.float32), rng.integers(0, 1000, 8)


MODELS = {"digits": digits, "mobilenetv2": mobilenetv2}


def measure(name, reps):
    model, x, y = MODELS[name]()
    reference = ReferenceData((x, y))
    with tempfile.TemporaryDirectory() as log_dir:
        looks = LooksAnalysis(log_dir, examples=8)
        layer, features = looks.check(model, reference)
        start = time.perf_counter()
        looks.run(model, reference, step=0)
        first, first_bytes = time.perf_counter() - start, looks.last_step_bytes
        times = []
        for step in range(1, reps + 1):
            start = time.perf_counter()
            looks.run(model, reference, step=step)
            times.append(time.perf_counter() - start)
        looks.close()
    print(f"{name}: {model.count_params():,} parameters, Grad-CAM layer {layer}, feature layers {features}")
    print(f"  first step {first:.2f} s, {first_bytes:,} bytes (with the inputs)")
    print(f"  later steps median {statistics.median(times):.3f} s over {reps}, {looks.last_step_bytes:,} bytes each")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    for name in MODELS if args.model == "all" else [args.model]:
        measure(name, args.reps)


if __name__ == "__main__":
    main()
