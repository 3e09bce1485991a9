"""The pathology corpus (issue 27): the problem types of AUTOTRAINER (ICSE 2021) and DeepDiagnosis (ICSE 2022),
each planted in a small Keras model on scikit-learn's digits, each with a healthy twin that differs in that
one respect. Per type: whether an incident is found, its root (layer, kind, first step), the step at which the
probe alerted during `fit`, the step at which the training loss first went non-finite (what a loss curve or
`TerminateOnNaN` sees), and the incidents of the healthy twin (false alarms: there must be none).

    python -m pytest -m slow tests/findings/test_pathology_corpus.py        # ~20 fits, a few minutes on 2 cores
    python tests/findings/test_pathology_corpus.py                          # prints the table (docs/_incoming/incidents.md)

Types that per-layer statistics cannot see are in the corpus too, marked `seen=False`, with the reason.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: helpers, corpus
from helpers.examples import load_example
from helpers.incidents import assert_prefilter_changes_nothing

EPOCHS = 3
LOG_FREQ = 5

# name: (broken model, healthy twin, expected root kinds (any of), seen, why not seen)
CORPUS = {
    "vanishing_gradient": (
        dict(depth=8, activation="sigmoid"),
        dict(depth=8, activation="relu"),
        {"vanishing_gradient", "saturation", "stalled_layer"},
        True,
        "",
    ),
    "exploding_gradient": (
        dict(depth=6, activation="linear", init_std=1.5),
        dict(depth=6, activation="linear"),
        {"exploding_gradient", "exploding_depth", "unstable_updates", "nan_inf", "nan_weights"},
        True,
        "",
    ),
    "dying_relu": (dict(bias={"hidden2": -10.0}), dict(), {"dead_layer"}, True, ""),
    "saturated_tanh": (dict(activation="tanh", init_std=5.0), dict(activation="tanh"), {"saturation"}, True, ""),
    "learning_rate_too_high": (
        dict(optimizer="sgd", learning_rate=1.0),
        dict(optimizer="sgd", learning_rate=0.01),
        {"unstable_updates"},
        True,
        "",
    ),
    "learning_rate_too_low": (dict(learning_rate=1e-8), dict(), {"stalled_layer"}, True, ""),
    "unchanged_weights": (dict(learning_rate=0.0), dict(), {"stalled_layer"}, True, ""),
    "exp_activation_overflow": (
        dict(activation="exponential", init_std=1.0, scale=10.0),
        dict(activation="relu", scale=10.0),
        {"nan_inf", "exploding_depth", "exploding_time", "nan_weights", "unstable_updates"},
        True,
        "",
    ),
    "unnormalised_inputs": (
        dict(scale=1000.0, normalise=False),
        dict(),
        set(),
        False,
        "the model's input is not a recorded series: the first layer's large outputs have nothing "
        "to be compared with, and Adam adapts its steps to the large gradients",
    ),
    "wrong_loss_activation": (
        dict(output_activation="softmax"),
        dict(),
        set(),
        False,
        "softmax outputs under a from_logits loss train, slowly: every statistic stays in range",
    ),
}


def build(
    bug,
    depth=3,
    activation="relu",
    init_std=None,
    bias=None,
    optimizer="adam",
    learning_rate=1e-3,
    output_activation=None,
    **_data,
):
    import keras

    bias = bias or {}
    init = keras.initializers.RandomNormal(stddev=init_std, seed=1) if init_std else "glorot_uniform"
    layers = [keras.Input((64,))]
    for i in range(1, depth + 1):
        name = f"hidden{i}"
        layers.append(
            keras.layers.Dense(
                64,
                activation=activation,
                kernel_initializer=init,
                name=name,
                bias_initializer=keras.initializers.Constant(bias.get(name, 0.0)),
            )
        )
    layers.append(keras.layers.Dense(10, activation=output_activation, name="logits"))
    model = keras.Sequential(layers)
    opt = (
        keras.optimizers.Adam(learning_rate)
        if optimizer == "adam"
        else keras.optimizers.SGD(learning_rate, momentum=0.9)
    )
    model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def data(bug, scale=1.0, normalise=True, **_model):
    from sklearn.datasets import load_digits

    if normalise:
        (x, y), _ = bug.load_data(0)
        return x * scale, y
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.data))
    return digits.data[order].astype("float32") * scale / 16.0, digits.target[order].astype("int32")


class Alerts(logging.Handler):
    def __init__(self):
        super().__init__()
        self.steps = []

    def emit(self, record):
        m = re.match(r"tfprobe: step (\d+): (warning|error)", record.getMessage())
        if m:
            self.steps.append(int(m.group(1)))


def run(logdir, spec):
    """Trains one model of the corpus; `(incidents, first alert step, first non-finite loss step)`."""
    import keras

    import tfprobe

    bug = load_example("find_the_bug")
    keras.utils.set_random_seed(0)
    model = build(bug, **spec)
    x, y = data(bug, **spec)
    losses = []
    watch = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: losses.append(logs["loss"]))
    probe = tfprobe.LayerProbe(logdir, record_freq=1, log_freq=LOG_FREQ, histogram_freq=0, gradients=True)
    handler = Alerts()
    logging.getLogger("tfprobe").addHandler(handler)
    try:
        model.fit(x, y, batch_size=64, epochs=EPOCHS, verbose=0, callbacks=[probe, watch])
    finally:
        logging.getLogger("tfprobe").removeHandler(handler)
    bad = [i + 1 for i, v in enumerate(losses) if not np.isfinite(v)]
    return tfprobe.incidents(logdir), (min(handler.steps) if handler.steps else None), (bad[0] if bad else None)


def evaluate(name, root):
    broken, twin, kinds, seen, why = CORPUS[name]
    inc, alert, nan_loss = run(os.path.join(root, name, "broken"), broken)
    twin_inc, twin_alert, _ = run(os.path.join(root, name, "twin"), twin)
    for which in ("broken", "twin"):  # the live shortcut misses nothing judging every layer would find
        assert_prefilter_changes_nothing(os.path.join(root, name, which))
    first = inc.iloc[0] if len(inc) else None
    return {
        "type": name,
        "seen": seen,
        "why": why,
        "detected": bool(len(inc)),
        "root": None if first is None else f"{first.root_kind}@{first.root_layer}",
        "root_kind": None if first is None else first.root_kind,
        "first_step": None if first is None else int(first.first_step),
        "incidents": len(inc),
        "alert_step": alert,
        "nan_loss_step": nan_loss,
        "expected": kinds,
        "false_alarms": len(twin_inc) + (twin_alert is not None),
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus(name, tmp_path):
    r = evaluate(name, str(tmp_path))
    assert r["false_alarms"] == 0, r  # the healthy twin: silent, after and during training
    if r["seen"]:
        assert r["detected"] and r["root_kind"] in r["expected"] and r["incidents"] == 1, r
        assert r["alert_step"] is not None, r
    else:
        assert not r["detected"], r


def main():
    root = tempfile.mkdtemp(prefix="tfprobe_corpus_")
    rows = [evaluate(name, root) for name in CORPUS]
    print(
        "| problem type | detected | incidents | root (kind@layer) | first step | alerted at | loss non-finite at | false alarms (twin) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['type']} | {'yes' if r['detected'] else 'no'} | {r['incidents']} | {r['root'] or '-'} | "
            f"{r['first_step'] or '-'} | {r['alert_step'] or '-'} | {r['nan_loss_step'] or '-'} | {r['false_alarms']} |"
        )
    for r in rows:
        if not r["seen"]:
            print(f"\nnot seen: {r['type']}: {r['why']}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
