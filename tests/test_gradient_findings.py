"""Gradient findings of `tfprobe.diagnose` (`LayerProbe(gradients=True)`): each planted with real `fit`
at a known layer and found there, nowhere else; healthy models trained a few Adam steps get none.

`python -m pytest -m slow tests/test_gradient_findings.py` adds MobileNetV2 (alpha 0.35) to the healthy
models. Planted models run 4 steps of 16 examples, one window per step (`zoo.run_pathology`); unless a test is
about the learning rate, they train with `Adam(1e-4)`, whose steps (about `lr` per weight) leave the
planted fault as built and give every healthy layer an update ratio well inside `[1e-5, 1e-1]`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_zoo_healthy import application, conv1d_audio, recurrent_text, small_cnn, transformer_block
from zoo import not_info, run_healthy, run_pathology

import tfprobe
from tfprobe import findings

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
L = keras.layers

GRADIENT_KINDS = {"vanishing_gradient", "exploding_gradient", "dead_gradient", "stalled_layer", "unstable_updates"}


class ScaleGradient(L.Layer):
    """Identity forward; the gradient it hands back to its input is multiplied by `factor`."""

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        @tf.custom_gradient
        def scaled(t):
            return tf.identity(t), lambda g: g * self.factor

        return scaled(x)


class Bias(L.Layer):
    """`x + b` with a trainable `b` initialised to `value`."""

    def __init__(self, value, **kwargs):
        super().__init__(**kwargs)
        self.value = value

    def build(self, shape):
        self.b = self.add_weight(shape=shape[-1:], initializer=keras.initializers.Constant(self.value), name="b")

    def call(self, x):
        return x + self.b


def chain(*layers, width=32):
    """Input(16) -> `hidden` (Dense, ReLU) -> `layers` -> `out` (Dense 4)."""
    inp = keras.Input((16,))
    x = L.Dense(width, activation="relu", name="hidden")(inp)
    for layer in layers:
        x = layer(x)
    return keras.Model(inp, L.Dense(4, name="out")(x))


def sigmoid_stack():
    return chain(*[L.Dense(32, activation="sigmoid", name=f"sig{i}") for i in range(1, 11)])


def scaled_gradient():
    return chain(L.Dense(32, activation="relu", name="pre"), ScaleGradient(1e-6, name="shrink"),
                 L.Dense(32, activation="relu", name="post"))


def large_init():
    big = keras.initializers.RandomNormal(stddev=3.0, seed=1)
    return chain(*[L.Dense(64, kernel_initializer=big, name=f"lin{i}") for i in (1, 2, 3, 4)], width=64)


def zero_multiplied_branch():
    """`side` reaches the output only through `gate`, a frozen Dense with a zero kernel (and bias 1)."""
    inp = keras.Input((16,))
    h = L.Dense(32, activation="relu", name="hidden")(inp)
    side = L.Dense(8, activation="relu", name="side")(h)
    gate = L.Dense(4, kernel_initializer="zeros", bias_initializer="ones", trainable=False, name="gate")(side)
    return keras.Model(inp, L.Add(name="out")([L.Dense(4, name="main")(h), gate]))


def huge_weights_before_norm():
    """`big`'s scale is removed by the LayerNormalization after it: its gradient is as small as its
    weights are large, and each update moves it by ~1e-7 of its norm."""
    big = keras.initializers.RandomNormal(stddev=1e4, seed=1)
    return chain(L.Dense(32, kernel_initializer=big, name="big"), L.LayerNormalization(name="norm"))


def tiny_bias():
    """A bias initialised at 1e-6 that Adam moves by ~lr per step: 1000x its norm."""
    return chain(Bias(1e-6, name="bias"), L.Dense(32, activation="relu", name="post"))


def adam(lr=1e-4):
    return keras.optimizers.Adam(lr)


CASES = [
    pytest.param(sigmoid_stack, {"hidden": "vanishing_gradient", "sig1": "vanishing_gradient", "sig2": "vanishing_gradient"},
                 {"hidden"} | {f"sig{i}" for i in range(1, 11)}, id="deep_sigmoid_stack"),
    pytest.param(scaled_gradient, {"hidden": "vanishing_gradient", "pre": "vanishing_gradient"}, {"hidden", "pre"},
                 id="custom_gradient_scaled_by_1e-6"),
    pytest.param(large_init, {"hidden": "exploding_gradient", "lin1": "exploding_gradient"},
                 {"hidden", "lin1", "lin2", "lin3", "lin4"}, id="large_init"),
    pytest.param(zero_multiplied_branch, {"side": "dead_gradient"}, {"side"}, id="zero_multiplied_branch"),
    pytest.param(huge_weights_before_norm, {"big": "stalled_layer"}, {"big"}, id="huge_weights_stall"),
    pytest.param(tiny_bias, {"bias": "unstable_updates"}, {"bias"}, id="tiny_bias_unstable"),
]


def found(result):
    return {(layer, kind) for layer, kind in zip(result["layer"], result["kind"])}


@pytest.mark.parametrize("build, planted, allowed", CASES)
def test_planted_gradient_fault_is_found_where_it_is_and_nowhere_else(tmp_path, build, planted, allowed):
    result, _ = run_pathology(build, tmp_path / "run", gradients=True, optimizer=adam())
    table = result[["layer", "kind", "severity", "message"]].to_string()
    assert set(planted.items()) <= found(result), table
    assert set(result["layer"]) <= allowed, table  # the healthy layers of the same model: nothing
    rows = result[[(l, k) in planted.items() for l, k in zip(result["layer"], result["kind"])]]
    assert (rows["first_step"] == 1).all() and (rows["severity"] == "warning").all(), table
    assert (rows["windows"] == 4).all(), table  # held in every window: persistent


def test_learning_rate_zero_stalls_every_trainable_layer_and_not_a_frozen_one(tmp_path):
    def build():
        return chain(L.Dense(32, activation="relu", trainable=False, name="frozen"), L.ReLU(name="act"))

    result, _ = run_pathology(build, tmp_path / "run", gradients=True)  # SGD(0.0)
    assert found(result) == {(l, "stalled_layer") for l in ("hidden", "out")}, result.to_string()
    assert result["message"].str.contains("update ratio 0 ").all()


def test_a_huge_learning_rate_is_unstable_at_every_trainable_layer(tmp_path):
    def build():
        return chain(L.Dense(32, name="dense"), L.ReLU(name="act"))

    result, _ = run_pathology(build, tmp_path / "run", gradients=True, optimizer=adam(1.0))
    unstable = result[result["kind"] == "unstable_updates"]
    assert set(unstable["layer"]) == {"hidden", "dense", "out"}, result.to_string()
    assert (unstable["first_step"] == 1).all()


def test_gradient_depth_needs_the_graph(tmp_path):
    _, layers = run_pathology(scaled_gradient, tmp_path / "run", gradients=True, optimizer=adam())
    df = tfprobe.read_logdir(tmp_path / "run")
    assert "vanishing_gradient" in set(tfprobe.diagnose(df, layers)["kind"])
    assert not {"vanishing_gradient", "exploding_gradient"} & set(tfprobe.diagnose(df, layers.drop(columns="inputs"))["kind"])
    assert not {"vanishing_gradient", "exploding_gradient"} & set(tfprobe.diagnose(df)["kind"])


def mlp():
    inp = keras.Input((32,))
    x = L.Dense(64, activation="relu", name="h1")(inp)
    x = L.Dense(64, activation="relu", name="h2")(x)
    return keras.Model(inp, L.Dense(10, activation="softmax", name="predictions")(x)), (32,), None


# MobileNetV2 takes ~50 s on 2 shared cores (tracing 150 layers with their gradients): slow target.
HEALTHY = [small_cnn, mlp, recurrent_text, transformer_block, conv1d_audio,
           pytest.param(application("MobileNetV2", 32, alpha=0.35), marks=pytest.mark.slow, id="MobileNetV2")]


@pytest.mark.parametrize("build", HEALTHY, ids=lambda b: getattr(b, "__name__", None))
def test_healthy_model_with_gradients_has_no_warning(tmp_path, build):
    result, _ = run_healthy(build, tmp_path / "run", gradients=True, optimizer=adam(1e-3))
    df = tfprobe.read_logdir(tmp_path / "run")
    assert df["stat"].isin(["grad_rms", "update_ratio"]).any()  # the gradient checks had something to judge
    bad = not_info(result)
    assert bad.empty, bad[["layer", "kind", "severity", "message"]].to_string()


@pytest.mark.parametrize("build", [small_cnn, recurrent_text], ids=lambda b: b.__name__)
def test_healthy_model_with_gradients_under_sgd_has_no_warning(tmp_path, build):
    """The zoo's plain SGD 0.01: smaller steps than Adam's, still far from a stall."""
    result, _ = run_healthy(build, tmp_path / "run", gradients=True)
    bad = not_info(result)
    assert bad.empty, bad[["layer", "kind", "severity", "message"]].to_string()


# ------------------------------------------------------------------ rules on hand-made frames


def frame(values, steps=(1, 2, 3)):
    """Long frame from `{layer: {stat: value}}`, the same values at every step."""
    rows = [("r", s, 0.0, layer, stat, v) for s in steps for layer, stats in values.items() for stat, v in stats.items()]
    return pd.DataFrame(rows, columns=["run", "step", "wall_time", "layer", "stat", "value"])


def graph(inputs):
    return pd.DataFrame({"run": "r", "layer": list(inputs), "order": range(len(inputs)), "inputs": list(inputs.values())})


def test_dead_gradient_needs_a_live_output():
    df = frame({"a": {"grad_zero_fraction": 1.0, "zero_fraction": 0.0}, "b": {"grad_zero_fraction": 1.0, "zero_fraction": 1.0}})
    result = tfprobe.diagnose(df)
    assert found(result) == {("a", "dead_gradient"), ("b", "dead_layer")}


def test_dead_gradient_is_not_judged_before_a_max_pooling():
    # a global max pooling over 16x16 passes the gradient to 1 value in 256
    df = frame({"conv": {"grad_zero_fraction": 255 / 256, "zero_fraction": 0.0}, "pool": {"grad_zero_fraction": 0.0}})
    layers = graph({"conv": [], "pool": ["conv"]}).assign(**{"class": ["Conv2D", "GlobalMaxPooling2D"]})
    assert tfprobe.diagnose(df, layers).empty
    assert found(tfprobe.diagnose(df, layers.assign(**{"class": ["Conv2D", "Dense"]}))) == {("conv", "dead_gradient")}


def test_gradient_ratio_is_cumulative_along_the_graph_and_skips_dead_gradients():
    # each edge loses 20x (below grad_ratio 1000), a -> d loses 8000x; c's gradient is dead and not compared
    layers = graph({"a": [], "b": ["a"], "c": ["b"], "c2": ["b"], "d": ["c", "c2"]})
    df = frame({"a": {"grad_rms": 1e-4}, "b": {"grad_rms": 2e-3}, "c": {"grad_rms": 1e-9, "grad_zero_fraction": 1.0},
                "c2": {"grad_rms": 4e-2}, "d": {"grad_rms": 0.8}})
    result = tfprobe.diagnose(df, layers)
    assert found(result) == {("a", "vanishing_gradient"), ("c", "dead_gradient")}, result.to_string()
    message = result.set_index("kind").loc["vanishing_gradient", "message"]
    assert "8e+03x from 'd'" in message
    assert found(tfprobe.diagnose(df, layers, grad_ratio=1e4)) == {("c", "dead_gradient")}


def test_exploding_gradient_by_growth_or_by_size():
    layers = graph({"a": [], "b": ["a"]})
    df = frame({"a": {"grad_rms": 5.0, "grad_max_abs": 2e6}, "b": {"grad_rms": 1e-3, "grad_max_abs": 1e-2}})
    result = tfprobe.diagnose(df, layers)
    assert sorted(zip(result["stat"], result["kind"])) == [("grad_max_abs", "exploding_gradient"), ("grad_rms", "exploding_gradient")]
    assert tfprobe.diagnose(df, layers, grad_ratio=1e4, max_grad_abs=1e7).empty


def test_non_finite_gradients_are_errors():
    result = tfprobe.diagnose(frame({"a": {"grad_nan_count": 3.0, "grad_inf_count": 0.0}}))
    assert result[["stat", "kind", "severity"]].values.tolist() == [["grad_nan_count", "nan_inf", "error"]]
    assert "gradient" in result["message"].iloc[0]


def test_update_ratio_thresholds():
    df = frame({"slow": {"update_ratio": 1e-6}, "ok": {"update_ratio": 1e-3}, "fast": {"update_ratio": 0.5}})
    assert found(tfprobe.diagnose(df)) == {("slow", "stalled_layer"), ("fast", "unstable_updates")}
    assert found(tfprobe.diagnose(df, min_update_ratio=1e-7, max_update_ratio=1.0)) == set()
    transient = tfprobe.diagnose(frame({"fast": {"update_ratio": 0.5}}, steps=(1,)).pipe(
        lambda d: pd.concat([d, frame({"fast": {"update_ratio": 1e-3}}, steps=(2, 3, 4))])))
    assert transient["severity"].tolist() == ["info"]


@pytest.mark.parametrize("kwargs, match", [
    ({"grad_ratio": 1.0}, "`grad_ratio` must be > 1. Received: grad_ratio=1.0"),
    ({"max_grad_abs": 0}, "`max_grad_abs` must be a finite number > 0. Received: max_grad_abs=0"),
    ({"min_update_ratio": float("inf")}, "`min_update_ratio` must be a finite number > 0"),
    ({"max_update_ratio": "x"}, "`max_update_ratio` must be a number. Received: max_update_ratio='x'"),
    ({"dead_gradient_fraction": 1.5}, r"`dead_gradient_fraction` must be in \(0, 1\]"),
    ({"min_update_ratio": 0.5, "max_update_ratio": 0.1}, "`min_update_ratio` must be below `max_update_ratio`"),
])
def test_bad_gradient_thresholds(kwargs, match):
    with pytest.raises(ValueError, match=match):
        findings.thresholds(**kwargs)
    with pytest.raises(ValueError, match=match):
        tfprobe.diagnose(frame({"a": {"update_ratio": 1e-3}}), **kwargs)


def test_gradient_kinds_are_registered():
    assert GRADIENT_KINDS <= set(findings.KINDS)
    assert np.all([findings.KINDS[k] == "warning" for k in GRADIENT_KINDS])
