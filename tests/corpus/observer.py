"""The observer effect on one corpus example, bitwise: `python -m corpus.observer --example speaker_recognition`,
run from `tests/` with `PYTHONPATH` holding the repository and `tensorboard_plugin`.

Trains the example's first `--steps` batches of `--batch` examples three times from the same initial weights
(copied, seeds fixed, `shuffle=False`): twice without the probe (the CPU's kernels must be deterministic for the
comparison to mean anything) and once with `LayerProbe(**harness.SETTINGS[--setting])`. Prints, per step, the
losses Keras logs and whether they and every weight are bitwise equal, with the largest difference of a weight
array relative to that array's largest magnitude. `--off a,b` turns Grappler optimizers off in all three runs
(`tf.config.optimizer.set_experimental_options`), `--grappler-off` all of Grappler, `--exclude REGEX` leaves
the layers whose name or class matches out of the probe's `layers=`. The CPU emulation of
docs/development.md (`ONEDNN_MAX_CPU_ISA=AVX2 TF_ENABLE_ONEDNN_OPTS=0`) is set in the environment."""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile

import numpy as np


def first_loss(logs):
    """The step's `loss`, or the first of its logs in name order (a GAN logs `d_loss` and `g_loss`)."""
    return logs["loss"] if "loss" in logs else logs[sorted(logs)[0]]


def run(example, steps, batch, setting="gradients", jit=False, off=(), grappler_off=False, exclude=None):
    """Per step: `{"step", "plain", "probe", "loss_equal", "weights_equal", "deterministic", "weight_diff"}`."""
    import keras
    import tensorflow as tf

    from corpus import harness
    from tfprobe.callback import LayerProbe

    options = {name: False for name in off}
    if grappler_off:
        options["disable_meta_optimizer"] = True
    if options:
        tf.config.optimizer.set_experimental_options(options)
    module = harness.load(example)
    keras.utils.set_random_seed(0)
    initial = [w.copy() for w in module.build(jit_compile=jit).model.get_weights()]
    n = steps * batch

    def one(with_probe):
        keras.utils.set_random_seed(0)
        built = module.build(jit_compile=jit)
        built.model.set_weights(initial)
        seen = []
        logged = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda _, logs: seen.append((float(first_loss(logs)), built.model.get_weights()))
        )
        callbacks = [logged]
        if with_probe:
            kwargs = dict(harness.SETTINGS[setting])
            if exclude:
                pattern = re.compile(exclude)
                kwargs["layers"] = lambda layer: (
                    not (pattern.fullmatch(layer.name) or pattern.fullmatch(type(layer).__name__))
                )
            callbacks.append(LayerProbe(tempfile.mkdtemp(), **kwargs))
        x = {k: v[:n] for k, v in built.x.items()} if isinstance(built.x, dict) else built.x[:n]
        y = None if built.y is None else built.y[:n]
        built.model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False, callbacks=callbacks)
        return seen

    def same(a, b):
        return a[0] == b[0] and all(np.array_equal(u, v, equal_nan=True) for u, v in zip(a[1], b[1]))

    plain, again, probed = one(False), one(False), one(True)
    out = []
    for i, (p, r, q) in enumerate(zip(plain, again, probed)):
        diff = max(float(np.max(np.abs(u - v)) / max(float(np.max(np.abs(u))), 1e-30)) for u, v in zip(p[1], q[1]))
        out.append(
            {
                "step": i + 1,
                "plain": p[0],
                "probe": q[0],
                "loss_equal": p[0] == q[0],
                "weights_equal": all(np.array_equal(u, v, equal_nan=True) for u, v in zip(p[1], q[1])),
                "deterministic": same(p, r),
                "weight_diff": diff,
            }
        )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", default="speaker_recognition")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--setting", default="gradients", choices=["default", "gradients"])
    parser.add_argument("--jit", action="store_true")
    parser.add_argument("--off", default="", help="Grappler optimizers to turn off, comma-separated")
    parser.add_argument("--grappler-off", action="store_true")
    parser.add_argument("--exclude", default=None, help="layers (name or class, regex) the probe leaves out")
    args = parser.parse_args(argv)
    rows = run(
        args.example,
        args.steps,
        args.batch,
        args.setting,
        args.jit,
        [name for name in args.off.split(",") if name],
        args.grappler_off,
        args.exclude,
    )
    for row in rows:
        print(json.dumps(row))
    env = {k: os.environ.get(k) for k in ("ONEDNN_MAX_CPU_ISA", "TF_ENABLE_ONEDNN_OPTS")}
    equal = all(r["loss_equal"] and r["weights_equal"] for r in rows)
    print(json.dumps({"env": env, "bitwise_equal": equal, "deterministic": all(r["deterministic"] for r in rows)}))


if __name__ == "__main__":
    main()
