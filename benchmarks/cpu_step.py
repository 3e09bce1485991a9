"""CPU seconds of a training step on one thread: plain against probed `fit` (a busy machine's proxy for time).

Wall-clock ratios mean nothing on a machine shared with other work. This
runs every arm in a fresh subprocess with TensorFlow's intra- and inter-op
thread pools at one thread each, and measures `time.process_time()` (the
CPU time of the process) across each step from Keras' batch callbacks,
after one traced warm-up `fit`. Per arm and repetition: the median step;
the arms alternate within each repetition; reported per configuration: the
median over repetitions of probed/plain, with its min and max. Other
processes slow the caches a step shares with them, not the CPU seconds it
is charged, so the ratio holds within a few percent on a busy machine.

    python benchmarks/cpu_step.py                                   # cnn, graph ops, XLA off and on
    python benchmarks/cpu_step.py --model mobilenetv2 --xla off --configs every_step
    python benchmarks/cpu_step.py --kernel native --xla off
    python benchmarks/cpu_step.py --repo /path/to/other/checkout       # the same measure of another version

Configurations (`LayerProbe` arguments, as `benchmarks/gpu.py`):
  defaults       one step in 10 recorded, histograms every 100 steps
  every_step     every statistic every step (record_freq=1), no histograms
  gradients      forward and gradient statistics every step (gradients=True)
  histograms     both passes' statistics and histograms every step
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CONFIGS = {
    "defaults": {},
    "every_step": {"record_freq": 1, "histogram_freq": 0},
    "gradients": {"record_freq": 1, "histogram_freq": 0, "gradients": True},
    "histograms": {"record_freq": 1, "histogram_freq": 1, "gradients": True},
}

_CHILD = r"""
import json, os, sys, tempfile, time
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
sys.path.insert(0, {bench!r})
sys.path.insert(0, {repo!r})
import keras
import numpy as np
from gpu import build
import tfprobe
model, batch, data = build({model!r}, {xla!r})
x, y = data(batch * {steps}, np.random.default_rng(0))
kwargs = json.loads({kwargs!r})
callbacks = [] if kwargs is None else [tfprobe.LayerProbe(tempfile.mkdtemp(), kernel={kernel!r}, **kwargs)]

class Clock(keras.callbacks.Callback):
    def on_train_batch_begin(self, b, logs=None):
        self.start = time.process_time()
    def on_train_batch_end(self, b, logs=None):
        self.times.append(time.process_time() - self.start)

clock = Clock()
for epoch in range(2):
    clock.times = []
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False, callbacks=callbacks + [clock])
if callbacks:
    assert callbacks[0]._recorder is not None, "the probe detached"
    kernel = callbacks[0]._recorder.kernel.name
else:
    kernel = None
print(json.dumps({{"step": float(np.median(clock.times)), "kernel": kernel}}))
"""


def run_arm(model, xla, kernel, config, steps, repo=None):
    here = os.path.dirname(os.path.abspath(__file__))
    code = _CHILD.format(
        bench=here,
        repo=repo or os.path.dirname(here),
        model=model,
        xla=xla,
        steps=steps,
        kernel=kernel,
        kwargs=json.dumps(None if config is None else CONFIGS[config]),
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "child failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["cnn", "mobilenetv2", "transformer"], default="cnn")
    parser.add_argument("--kernel", choices=["auto", "native", "graph"], default="graph")
    parser.add_argument("--xla", choices=["off", "on", "both"], default="both")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=["every_step"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12, help="steps per measured epoch (median step reported)")
    parser.add_argument("--repo", help="the checkout whose tfprobe is measured (default: this one), for A/B runs")
    args = parser.parse_args(argv)
    for xla in {"off": [False], "on": [True], "both": [False, True]}[args.xla]:
        for config in args.configs:
            ratios, plain, probed, kernel = [], [], [], None
            for rep in range(args.reps):
                arms = {}
                for arm in (None, config) if rep % 2 == 0 else (config, None):
                    try:
                        arms[arm] = run_arm(args.model, xla, args.kernel, arm, args.steps, args.repo)
                    except RuntimeError as e:
                        arms = None
                        print(f"{args.model} xla={xla} {config}: failed: {e}", flush=True)
                        break
                if arms is None:
                    break
                kernel = arms[config]["kernel"]
                plain.append(arms[None]["step"])
                probed.append(arms[config]["step"])
                ratios.append(probed[-1] / plain[-1])
            if ratios:
                print(
                    f"{args.model:12s} xla={'on ' if xla else 'off'} kernel={kernel:6s} {config:11s} "
                    f"plain {1000 * statistics.median(plain):8.1f} ms  probe {1000 * statistics.median(probed):8.1f} ms"
                    f"  cpu ratio {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f},"
                    f" {len(ratios)} reps)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
