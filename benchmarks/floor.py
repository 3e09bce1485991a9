"""The physical floor of recording: how long it takes to read every recorded activation once.

Takes one batch's activations of every layer tfprobe records (the model's
layer outputs, computed once and held as tensors), then times, each in its
own `tf.function` over all of them (median of `--reps` calls):

  one pass          one `reduce_sum` per activation: reading each once, the floor
  extremes          per-unit max and min over the whole batch (what exact max, min,
                    dead units and NaN/Inf detection take)
  graph statistics  tfprobe's graph ops (`graph.traced_sums_and_maxes`), whole batch; and k=16
  native            tfprobe's one-pass kernel (`tfprobe.kernels.native`), whole batch; and k=16;
                    and with the histogram counted in the same pass

With `--gradients`, the same for the backward path (`LayerProbe(gradients=True)`): the
gradient of the loss with respect to every recorded activation (one batch, held as
tensors), read once (`reduce_sum`: the gradient floor) and through the native kernel.

Prints each next to the model's plain training step (median of `--steps`
steps of `fit`): the ratio 1 + t / step is what that much work would cost a
recorded step if nothing else did.

    python benchmarks/floor.py                       # reference CNN
    python benchmarks/floor.py --model mobilenetv2
    python benchmarks/floor.py --gradients           # and the floor of the activation gradients
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from overhead import MODELS

from tfprobe.kernels import graph, native, stats
from tfprobe.recording.selection import saturation_bounds, walk


def median_seconds(fn, reps):
    fn()  # trace and warm up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def activation_gradients(model, layers, x, y):
    """dL/da of one batch for every output of `layers` that has one (the loss `fit` differentiates)."""
    taps = keras.Model(model.inputs, [layer.output for layer in layers] + list(model.outputs))
    with tf.GradientTape() as tape:
        outs = taps(tf.constant(x), training=True)
        y_pred = outs[len(layers) :]
        loss = model.compute_loss(x=x, y=y, y_pred=y_pred[0] if len(y_pred) == 1 else y_pred, training=True)
    return [tf.identity(g) for g in tape.gradient(loss, outs[: len(layers)]) if g is not None]


def gradient_work(grads):
    """The rows of the gradient floor: one `reduce_sum` over every activation gradient, and the native kernel (the
    partials a step computes of a gradient, with and without its histogram, and an activation's full partials)."""
    if not grads:
        return []

    @tf.function
    def one_pass():
        return tf.add_n([tf.reduce_sum(g) for g in grads])

    def kernel(gradient, histogram=False):
        @tf.function
        def run():
            out = []
            for g in grads:
                sums, maxes, hist = native.run_op(g, histogram, near_zero=1e-3, gradient=gradient)
                out.append(tf.reduce_sum(sums) + tf.cast(tf.reduce_sum(maxes), tf.float64) + tf.reduce_sum(hist))
            return tf.add_n(out)

        return run

    # "gradient mode" is what a step runs (`Kernel.gradient_partials`); "all partials" is an activation's full set.
    return [
        ("gradients: one pass", one_pass),
        ("gradients: native, all partials", kernel(False)),
        ("gradients: native", kernel(True)),
        ("gradients: native + hist.", kernel(True, True)),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["cnn", "mobilenetv2"], default="cnn")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--gradients", action="store_true", help="also the floor of every activation gradient")
    args = parser.parse_args(argv)
    build, batch, data = MODELS[args.model]
    model = build()
    x, y = data(batch * args.steps, np.random.default_rng(0))

    times = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.t = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.t)

    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=[Timer()])
    step = statistics.median(times[3:])

    layers = [layer for _, layer in walk(model)]
    taps = keras.Model(model.inputs, [layer.output for layer in layers])
    acts = [tf.constant(a) for a in taps.predict(x[:batch], verbose=0)]
    grads = activation_gradients(model, layers, x[:batch], y[:batch]) if args.gradients else []
    bounds = [saturation_bounds(layer) for layer in layers]
    values = sum(int(np.prod(a.shape)) for a in acts)

    @tf.function
    def one_pass():
        return tf.add_n([tf.reduce_sum(a) for a in acts])

    @tf.function
    def extremes():
        out = []
        for a in acts:
            xu = graph.by_unit(graph.as_rows(a), stats.num_units(a))
            out += [tf.reduce_max(tf.reduce_max(xu, axis=0)), tf.reduce_min(tf.reduce_min(xu, axis=0))]
        return tf.add_n(out)

    def statistics_of(sample_size):
        @tf.function
        def run():
            out = []
            for a, b in zip(acts, bounds):
                units = stats.num_units(a)
                fn = graph.traced_sums_and_maxes(
                    near_zero=1e-3,
                    bounds=b,
                    saturation_margin=0.01,
                    sample_size=sample_size,
                    has_units=units is not None,
                )
                x2d = graph.as_rows(a)
                sums, maxes = fn(x2d, graph.by_unit(x2d, units))
                out.append(tf.reduce_sum(sums) + tf.cast(tf.reduce_sum(maxes), tf.float64))
            return tf.add_n(out)

        return run

    def native_of(sample_size, histogram=False):
        @tf.function
        def run():
            out = []
            for a, b in zip(acts, bounds):
                sums, maxes, hist = native.run_op(
                    graph.as_rows(a),
                    histogram,
                    units=stats.num_units(a),
                    near_zero=1e-3,
                    bounds=b,
                    sample_size=sample_size,
                )
                out.append(tf.reduce_sum(sums) + tf.cast(tf.reduce_sum(maxes), tf.float64) + tf.reduce_sum(hist))
            return tf.add_n(out)

        return run

    print(
        f"{args.model}: {len(acts)} recorded activations, {values / 1e6:.1f} M values ({values * 4 / 2**20:.0f} MiB) "
        f"per batch of {batch}; plain training step {1000 * step:.1f} ms (median of {len(times) - 3})"
    )
    if grads:
        grad_values = sum(int(np.prod(g.shape)) for g in grads)
        print(f"gradients: {len(grads)} activation gradients, {grad_values / 1e6:.1f} M values")
    print(f"{'work':32s} {'ms':>8s} {'1 + t/step':>10s}")
    for name, fn in [
        ("one pass (reduce_sum)", one_pass),
        ("extremes (max, min)", extremes),
        ("graph ops, whole batch", statistics_of(None)),
        ("graph ops, k=16", statistics_of(16)),
        ("native, whole batch", native_of(None)),
        ("native, k=16", native_of(16)),
        ("native + histogram", native_of(None, True)),
    ] + gradient_work(grads):
        t = median_seconds(fn, args.reps)
        print(f"{name:32s} {1000 * t:8.1f} {1 + t / step:10.3f}", flush=True)


if __name__ == "__main__":
    main()
