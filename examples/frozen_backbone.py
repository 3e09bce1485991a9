"""Frozen backbone: what each layer of a pretrained MobileNetV2 knows about a new task, and where the head helps.

Question: a `keras.applications.MobileNetV2` (alpha 0.35, 32x32 inputs,
`weights=None`) is pretrained for a few epochs on one synthetic task (task A:
the orientation of a sine grating, 0, 45, 90 or 135 degrees), then frozen
and used as the backbone of a classifier for another (task B: the
orientations between them, 22.5, 67.5, 112.5 or 157.5 degrees). Which
backbone layer knows most about task B, measured by a linear probe on its
(globally averaged) features, and does the trained head add to what the
backbone's last layer offers? Two runs under one log directory answer it:

* `pretrained`: the backbone pretrained on task A, frozen, a new head
  (GlobalAveragePooling2D, Dense 64 ReLU, Dense 4) trained on task B;
* `random`: the same with a randomly initialised frozen backbone whose
  batch-norm statistics were set on task-A images (the baseline: what the
  architecture alone gives a probe).

`LayerProbe(reference_data=...)` measures `probe_accuracy` and
`label_information` on 300 held-out task-B images for the block outputs of
the backbone and the head's layers (docs/guide/representations.md).

    python examples/frozen_backbone.py --logdir logs/backbone   # under 2 minutes on 2 busy CPU cores
    tensorboard --logdir logs/backbone                          # tfprobe tab: Representations

It prints a table of probe accuracy and label information (bits) per depth
for both runs (`tfprobe.read_logdir`, last reference step), the depth where
the pretrained backbone's probe accuracy peaks, the head's layers against
the backbone's last layer, the validation accuracies, and the health
findings (`tfprobe.diagnose`).
`main()` returns the same numbers. The images are drawn with NumPy from a
fixed seed; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pandas as pd

import tfprobe

SIZE = 32
TASK_A = (0.0, 45.0, 90.0, 135.0)  # grating orientations (degrees, +-10)
TASK_B = (22.5, 67.5, 112.5, 157.5)  # the orientations between them
HEAD = ("head_dense", "head_logits")


# ---------------------------------------------------------------- data


def make_gratings(n, task, seed=0):
    """`n` RGB sine gratings `(n, 32, 32, 3)` in [0, 1] with labels (classes in turn) of `task` "A" or "B".

    The label is the orientation class, `TASK_A` or `TASK_B` (+-10 degrees).
    Period uniform in 5-17 px, random phase, a random colour and its
    complement, noise of standard deviation 0.05.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE].astype("float32")
    labels = np.arange(n) % 4
    images = np.empty((n, SIZE, SIZE, 3), "float32")
    for i, label in enumerate(labels):
        angles = TASK_A if task == "A" else TASK_B
        theta, period = np.deg2rad(angles[label] + rng.uniform(-10, 10)), rng.uniform(5, 17)
        wave = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + rng.uniform(0, 2 * np.pi))
        low = rng.uniform(0, 1, 3)
        images[i] = low + (1 - 2 * low) * (wave[..., None] + 1) / 2 + rng.normal(0, 0.05, (SIZE, SIZE, 3))
    return np.clip(images, 0, 1), labels.astype("int32")


# ---------------------------------------------------------------- models


def backbone(seed):
    """MobileNetV2 (alpha 0.35, 32x32, no top, random weights), its batch-norm momentum lowered to 0.9.

    Keras' MobileNetV2 uses 0.999: after the few hundred steps of this
    example the moving statistics would still be mostly their initial
    values, and the frozen backbone (inference mode) would compute garbage.
    """
    keras.utils.set_random_seed(seed)
    base = keras.applications.MobileNetV2(
        input_shape=(SIZE, SIZE, 3), alpha=0.35, include_top=False, weights=None, name="backbone"
    )
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return base


def classifier(base, classes, learning_rate, hidden=64):
    """`base` (called in inference mode) -> global average pooling -> Dense(hidden, relu) -> Dense(classes)."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = base(inputs * 2.0 - 1.0, training=None if base.trainable else False)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = keras.layers.Dense(hidden, activation="relu", name=HEAD[0])(x)
    model = keras.Model(inputs, keras.layers.Dense(classes, name=HEAD[1])(x))
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def block_outputs(base):
    """The output layer of each block of MobileNetV2, input side first: stem, blocks 0-16, top."""
    names = {layer.name for layer in base.layers}
    blocks = ["expanded_conv_project_BN"] + [
        f"block_{i}_add" if f"block_{i}_add" in names else f"block_{i}_project_BN" for i in range(1, 17)
    ]
    return ["Conv1_relu", *blocks, "out_relu"]


# ---------------------------------------------------------------- the answer


def probe_table(logdir):
    """Probe accuracy and label information per recorded layer and run at each run's last reference step.

    Rows in model order (`depth` 0 = the first block output); columns
    `(stat, run)`.
    """
    df = tfprobe.read_logdir(logdir).query("stat in ['probe_accuracy', 'label_information']")
    df = df[df.step == df.groupby("run").step.transform("max")]
    table = df.pivot_table(index="layer", columns=["stat", "run"], values="value")
    order = tfprobe.read_layers(logdir).drop_duplicates("layer").set_index("layer").order
    table = table.loc[sorted(table.index, key=order.get)]
    table.index = [name.split("/")[-1] for name in table.index]
    table.insert(0, ("depth", ""), range(len(table)))
    return table


def summarise(table, accuracies):
    """The numbers of the answer from `probe_table`'s table and the validation accuracies."""
    probe = table["probe_accuracy"]
    body = probe.drop(index=list(HEAD))
    peak, last = body.pretrained.idxmax(), body.index[-1]
    answer = {
        "peak_layer": peak,
        "peak_depth": int(table.depth[peak]),
        "peak_accuracy": float(body.pretrained[peak]),
        "last_layer": last,
        "last_backbone_accuracy": float(body.pretrained[last]),
        "head_accuracy": {name: float(probe.pretrained[name]) for name in HEAD},
        "val_accuracy": accuracies,
    }
    if "random" in body:
        answer.update(
            random_peak_accuracy=float(body["random"].max()), random_last_accuracy=float(body["random"][last])
        )
    return answer


# ---------------------------------------------------------------- training


def accuracy(model, x, y):
    """Accuracy of `model` on `(x, y)`, run eagerly in inference mode (no evaluation function to trace)."""
    return float(np.mean(model(x, training=False).numpy().argmax(axis=1) == y))


def pretrain(seed, n, epochs):
    """A MobileNetV2 backbone trained on task A (its own head, thrown away); returns it and its val accuracy."""
    base = backbone(seed)
    x, y = make_gratings(n, "A", seed=seed + 100)
    if not epochs:  # the baseline: random weights, batch-norm statistics of 640 task-A images
        norms = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
        for layer in norms:
            layer.momentum = 0.0  # one training-mode call sets the moving statistics to the batch's
        base(x[:640] * 2.0 - 1.0, training=True)
        for layer in norms:
            layer.momentum = 0.9
        return base, None
    model = classifier(base, len(TASK_A), 3e-3)
    split = int(0.85 * n)
    model.fit(x[:split], y[:split], batch_size=32, epochs=epochs, verbose=0)
    return base, accuracy(model, x[split:], y[split:])


def train_head(logdir, run, base, train, reference, epochs):
    """Freezes `base`, trains a new head on task B with a `LayerProbe`; returns the val accuracy."""
    base.trainable = False
    keras.utils.set_random_seed(0)
    model = classifier(base, len(TASK_B), 2e-3)
    probe = tfprobe.LayerProbe(
        os.path.join(logdir, run),
        layers=block_outputs(base) + list(HEAD),
        record_freq=5,
        log_freq=20,
        reference_data=reference,
        reference_freq=epochs,
    )
    model.fit(*train, batch_size=32, epochs=epochs, verbose=0, callbacks=[probe])
    return accuracy(model, *reference)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logdir", default="logs/backbone")
    parser.add_argument(
        "--fast", action="store_true", help="the CI variant: fewer images and epochs, no random-backbone baseline"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n_a, n_b, n_ref, epochs_a, epochs_b = (1600, 400, 200, 5, 2) if args.fast else (2000, 600, 300, 6, 4)
    start = time.monotonic()
    x, y = make_gratings(n_b + n_ref, "B", seed=args.seed)
    train, reference = (x[:n_b], y[:n_b]), (x[n_b:], y[n_b:])
    base, pretrain_accuracy = pretrain(args.seed, n_a, epochs_a)
    accuracies = {
        "task_a_pretraining": pretrain_accuracy,
        "pretrained": train_head(args.logdir, "pretrained", base, train, reference, epochs_b),
    }
    if not args.fast:
        base, _ = pretrain(args.seed + 1, n_a, 0)
        accuracies["random"] = train_head(args.logdir, "random", base, train, reference, epochs_b)
    table = probe_table(args.logdir)
    findings = tfprobe.diagnose(tfprobe.read_logdir(args.logdir), tfprobe.read_layers(args.logdir))
    answer = {
        "table": table,
        **summarise(table, accuracies),
        "findings": findings[findings.severity != "info"],
        "seconds": time.monotonic() - start,
    }
    report(answer)
    return answer


def report(answer):
    with pd.option_context("display.width", 120):
        print(answer["table"].round(3).to_string())
    print(
        f"\npretrained backbone: probe accuracy peaks at depth {answer['peak_depth']} ({answer['peak_layer']}): "
        f"{answer['peak_accuracy']:.3f}; its last layer: {answer['last_backbone_accuracy']:.3f}"
    )
    print("head: " + ", ".join(f"{k} {v:.3f}" for k, v in answer["head_accuracy"].items()))
    if "random_peak_accuracy" in answer:
        print(
            f"random backbone: peak {answer['random_peak_accuracy']:.3f}, "
            f"last layer {answer['random_last_accuracy']:.3f}"
        )
    print("val_accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in answer["val_accuracy"].items() if v is not None))
    findings = answer["findings"]
    print(f"findings (warning or error): {len(findings)}")
    if len(findings):
        print(findings[["run", "layer", "kind", "severity", "first_step"]].to_string(index=False))
    print(f"{answer['seconds']:.0f} s")


if __name__ == "__main__":
    main()
