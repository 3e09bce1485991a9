"""CPU milliseconds of the graph kernel's per-tensor functions on one activation (a busy machine's proxy for time).

On the reference CNN's first activation (`[128, 30, 30, 32]` by default,
the ReLU of normal values), one thread, `time.process_time()` around each
call, min of `--reps`: the forward partials, the gradient partials and the
histogram of `GraphKernel`, called from a step XLA compiles (`xla`) and
from one it does not (`no xla`, TensorFlow ops, and `no xla, compile_ops=True`, where the kernel has
XLA compile each tensor's partials on their own).

    python benchmarks/graph_ops.py
    python benchmarks/graph_ops.py --shape 32 96 96 32 --reps 15
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[128, 30, 30, 32], help="activation shape")
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from tfprobe.kernels import graph

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    x = tf.nn.relu(tf.constant(np.random.default_rng(0).standard_normal(args.shape).astype(np.float32)))
    units = args.shape[-1] if len(args.shape) > 1 else None

    def cpu_ms(fn):
        tf.nest.map_structure(lambda t: t.numpy(), fn(x))  # trace and compile
        best = float("inf")
        for _ in range(args.reps):
            start = time.process_time()
            tf.nest.map_structure(lambda t: t.numpy(), fn(x))
            best = min(best, time.process_time() - start)
        return 1e3 * best

    print(f"activation {args.shape}, one thread, CPU ms, min of {args.reps}")
    arms = {"xla": dict(xla=True), "no xla": dict(xla=False), "no xla, compile_ops=True": dict(compile_ops=True)}
    for name, kw in arms.items():
        k = graph.GraphKernel(near_zero=1e-6, saturation_margin=0.01, sample_size=None, **kw)
        jit = kw.get("xla", False)
        fns = {
            "partials": lambda t, k=k: k.partials(k.rows(t), units, None, False)[:2],
            "gradient partials": lambda t, k=k: k.gradient_partials(k.rows(t), False)[:2],
            "histogram": lambda t, k=k: k.histogram(k.rows(t)),
        }
        row = [f"{what} {cpu_ms(tf.function(fn, jit_compile=jit, autograph=False)):7.2f}" for what, fn in fns.items()]
        print(f"{name:26s} " + "   ".join(row), flush=True)


if __name__ == "__main__":
    main()
