"""Gradient findings of `tfprobe.diagnose` (`LayerProbe(gradients=True)`): each planted with real `fit`
at a known layer and found there, nowhere else; healthy models trained a few Adam steps get none.

`python -m pytest -m slow tests/findings/test_gradient_findings.py` adds MobileNetV2 (alpha 0.35) to the healthy
models. Planted models run 4 steps of 16 examples, one window per step (`zoo.run_pathology`); unless a test is
about the learning rate, they train with `Adam(1e-4)`, whose steps (about `lr` per weight) leave the
planted fault as built and give every healthy layer an update ratio well inside `[1e-5, 1e-1]`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers.models import planted
from helpers.zoo import (
    application,
    conv1d_audio,
    mlp,
    not_info,
    recurrent_text,
    run_healthy,
    run_pathology,
    small_cnn,
    transformer_block,
)

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


def sigmoid_stack():
    return planted(*[L.Dense(32, activation="sigmoid", name=f"sig{i}") for i in range(1, 11)])


def scaled_gradient():
    return planted(
        L.Dense(32, activation="relu", name="pre"),
        ScaleGradient(1e-6, name="shrink"),
        L.Dense(32, activation="relu", name="post"),
    )


def large_init():
    big = keras.initializers.RandomNormal(stddev=3.0, seed=1)
    return planted(*[L.Dense(64, kernel_initializer=big, name=f"lin{i}") for i in (1, 2, 3, 4)], width=64)


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
    return planted(L.Dense(32, kernel_initializer=big, name="big"), L.LayerNormalization(name="norm"))


def tiny_bias():
    """A bias initialised at 1e-6 that Adam moves by ~lr per step: 1000x its norm."""
    return planted(Bias(1e-6, name="bias"), L.Dense(32, activation="relu", name="post"))


def adam(lr=1e-4):
    return keras.optimizers.Adam(lr)


CASES = [
    pytest.param(
        sigmoid_stack,
        {"hidden": "vanishing_gradient", "sig1": "vanishing_gradient", "sig2": "vanishing_gradient"},
        {"hidden"} | {f"sig{i}" for i in range(1, 11)},
        id="deep_sigmoid_stack",
    ),
    pytest.param(
        scaled_gradient,
        {"hidden": "vanishing_gradient", "pre": "vanishing_gradient"},
        {"hidden", "pre"},
        id="custom_gradient_scaled_by_1e-6",
    ),
    pytest.param(
        large_init,
        {"hidden": "exploding_gradient", "lin1": "exploding_gradient"},
        {"hidden", "lin1", "lin2", "lin3", "lin4"},
        id="large_init",
    ),
    # `gate`'s output is one value for every example (`constant_output`): the cause of `side`'s dead gradient
    pytest.param(
        zero_multiplied_branch,
        {"side": "dead_gradient", "gate": "constant_output"},
        {"side", "gate"},
        id="zero_multiplied_branch",
    ),
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
        return planted(L.Dense(32, activation="relu", trainable=False, name="frozen"), L.ReLU(name="act"))

    result, _ = run_pathology(build, tmp_path / "run", gradients=True)  # SGD(0.0)
    assert found(result) == {(l, "stalled_layer") for l in ("hidden", "out")}, result.to_string()
    assert result["message"].str.contains("update ratio 0 ").all()


def test_a_huge_learning_rate_is_unstable_at_every_trainable_layer(tmp_path):
    def build():
        return planted(L.Dense(32, name="dense"), L.ReLU(name="act"))

    result, _ = run_pathology(build, tmp_path / "run", gradients=True, optimizer=adam(1.0))
    unstable = result[result["kind"] == "unstable_updates"]
    assert set(unstable["layer"]) == {"hidden", "dense", "out"}, result.to_string()
    assert (unstable["first_step"] == 1).all()


def test_gradient_depth_needs_the_graph(tmp_path):
    _, layers = run_pathology(scaled_gradient, tmp_path / "run", gradients=True, optimizer=adam())
    df = tfprobe.read_logdir(tmp_path / "run")
    assert "vanishing_gradient" in set(tfprobe.diagnose(df, layers)["kind"])
    with pytest.warns(RuntimeWarning, match="'gradient_depth' cannot run"):
        without = tfprobe.diagnose(df, layers.drop(columns="inputs"))
    assert not {"vanishing_gradient", "exploding_gradient"} & set(without["kind"])
    assert "vanishing_gradient" in set(tfprobe.diagnose(df)["kind"])  # the frame carries the graph (`df.attrs`)
    bare = df.copy()
    bare.attrs.clear()
    with pytest.warns(RuntimeWarning, match="'gradient_depth' cannot run"):
        assert not {"vanishing_gradient", "exploding_gradient"} & set(tfprobe.diagnose(bare)["kind"])


# MobileNetV2 takes ~50 s on 2 shared cores (tracing 150 layers with their gradients): slow target.
HEALTHY = [
    small_cnn,
    mlp,
    recurrent_text,
    transformer_block,
    conv1d_audio,
    pytest.param(application("MobileNetV2", 32, alpha=0.35), marks=pytest.mark.slow, id="MobileNetV2"),
]


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


# ------------------------------------------------------------------ non-finite weights


class FirstNonFinite(keras.callbacks.Callback):
    """The oracle: `{layer: first step}` whose recorded window sees the layer's weights NaN or Inf: step 1
    for weights broken before `fit`, else the step whose update broke them (its `update_ratio` is NaN)."""

    def __init__(self):
        super().__init__()
        self.first = {}

    def check(self, step):
        for layer in self.model.layers:
            weights = layer.get_weights() if layer.trainable_weights else []
            if weights and layer.name not in self.first and not all(np.isfinite(w).all() for w in weights):
                self.first[layer.name] = step

    def on_train_begin(self, logs=None):
        self.check(1)

    def on_train_batch_end(self, batch, logs=None):
        self.check(batch + 1)


def nan_kernel():
    """`mid`'s kernel is NaN before `fit`; TensorFlow fuses its ReLU into the matrix product (`_FusedMatMul`),
    which on some CPUs (oneDNN on AVX-512) outputs exact zeros for NaN: without `nan_weights` it looked like a
    dead layer."""
    model = planted(L.Dense(32, activation="relu", name="mid"))
    kernel, bias = model.get_layer("mid").get_weights()
    model.get_layer("mid").set_weights([np.full_like(kernel, np.nan), bias])
    return model


def fit_to_nan(tmp_path, model, optimizer):
    """Eight steps of 16 examples, one window each; `(findings, oracle first steps)`."""
    x, y = np.random.default_rng(0).normal(size=(2, 128, 16)).astype("float32")
    model.compile(optimizer, "mse")
    oracle = FirstNonFinite()
    probe = tfprobe.LayerProbe(tmp_path, record_freq=1, log_freq=1, histogram_freq=0, kernel="graph", gradients=True)
    model.fit(x, y[:, :4], batch_size=16, epochs=1, verbose=0, shuffle=False, callbacks=[oracle, probe])
    return tfprobe.diagnose(tfprobe.read_logdir(tmp_path), tfprobe.read_layers(tmp_path)), oracle.first


def test_nan_kernel_is_nan_weights_not_a_dead_layer(tmp_path):
    keras.utils.set_random_seed(0)
    result, oracle = fit_to_nan(tmp_path, nan_kernel(), keras.optimizers.SGD(0.0))
    # the NaN gradient through `mid`'s kernel reaches `hidden`, whose update at step 1 turns it NaN too
    assert {"mid": 1, "hidden": 1}.items() <= oracle.items()
    nan = result[result["kind"] == "nan_weights"]
    assert dict(zip(nan["layer"], nan["first_step"])) == oracle, result.to_string()
    assert (nan["severity"] == "error").all() and (nan["stat"] == "weight_norm").all() and (nan["windows"] == 8).all()
    # Whether `mid`'s fused MatMul+ReLU outputs zeros or NaN for its NaN kernel depends on the CPU's kernels
    # (zeros with oneDNN on AVX-512, NaN elsewhere): the oracle run on this machine says which.
    if "out" not in oracle:
        # `out` is fed only zeros: its output is its bias, 0 (a genuinely dead layer, with finite weights)
        expected = {("mid", "nan_weights"), ("hidden", "nan_weights"), ("out", "dead_layer"), ("out", "stalled_layer")}
        assert found(result) - {("hidden", "nan_inf")} == expected, result.to_string()
        # errors in model order, a layer's NaN weights before the NaN gradient they cause
        assert result[["layer", "kind"]].values.tolist()[:4] == [
            ["hidden", "nan_weights"],
            ["hidden", "nan_inf"],
            ["mid", "nan_weights"],
            ["out", "dead_layer"],
        ]
    else:
        # `out` is fed NaN: its weights turn NaN at step 1 too, which is what is found there (not a dead layer)
        assert oracle == {"mid": 1, "hidden": 1, "out": 1}
        expected = {("mid", "nan_weights"), ("hidden", "nan_weights"), ("out", "nan_weights")}
        assert found(result) - {(layer, "nan_inf") for layer in oracle} == expected, result.to_string()
        assert result[["layer", "kind"]].values.tolist()[0] == ["hidden", "nan_weights"]


def test_a_learning_rate_that_turns_the_weights_nan_is_found_at_the_step_it_does(tmp_path):
    keras.utils.set_random_seed(0)
    model = planted(L.Dense(32, activation="relu", name="mid"))
    result, oracle = fit_to_nan(tmp_path, model, keras.optimizers.SGD(10.0, momentum=0.9))
    assert {"hidden", "mid"} <= set(oracle) and min(oracle.values()) > 1  # trained a few steps first
    nan = result[result["kind"] == "nan_weights"]
    assert dict(zip(nan["layer"], nan["first_step"])) == oracle, result.to_string()
    assert (nan["last_step"] == 8).all()
    dead = result[result["kind"] == "dead_layer"]  # a layer the explosion killed before: genuinely dead
    assert (dead["first_step"] < min(oracle.values())).all(), result.to_string()


# ------------------------------------------------------------------ rules on hand-made frames


def frame(values, steps=(1, 2, 3)):
    """Long frame from `{layer: {stat: value}}`, the same values at every step."""
    rows = [
        ("r", s, 0.0, layer, stat, v) for s in steps for layer, stats in values.items() for stat, v in stats.items()
    ]
    return pd.DataFrame(rows, columns=["run", "step", "wall_time", "layer", "stat", "value"])


def graph(inputs):
    return pd.DataFrame(
        {"run": "r", "layer": list(inputs), "order": range(len(inputs)), "inputs": list(inputs.values())}
    )


def test_dead_gradient_needs_a_live_output():
    df = frame(
        {"a": {"grad_zero_fraction": 1.0, "zero_fraction": 0.0}, "b": {"grad_zero_fraction": 1.0, "zero_fraction": 1.0}}
    )
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
    df = frame(
        {
            "a": {"grad_rms": 1e-4},
            "b": {"grad_rms": 2e-3},
            "c": {"grad_rms": 1e-9, "grad_zero_fraction": 1.0},
            "c2": {"grad_rms": 4e-2},
            "d": {"grad_rms": 0.8},
        }
    )
    result = tfprobe.diagnose(df, layers)
    assert found(result) == {("a", "vanishing_gradient"), ("c", "dead_gradient")}, result.to_string()
    message = result.set_index("kind").loc["vanishing_gradient", "message"]
    assert "8e+03x from 'd'" in message
    assert found(tfprobe.diagnose(df, layers, grad_ratio=1e4)) == {("c", "dead_gradient")}


def test_exploding_gradient_by_growth_or_by_size():
    layers = graph({"a": [], "b": ["a"]})
    df = frame({"a": {"grad_rms": 5.0, "grad_max_abs": 2e6}, "b": {"grad_rms": 1e-3, "grad_max_abs": 1e-2}})
    result = tfprobe.diagnose(df, layers)
    assert sorted(zip(result["stat"], result["kind"])) == [
        ("grad_max_abs", "exploding_gradient"),
        ("grad_rms", "exploding_gradient"),
    ]
    assert tfprobe.diagnose(df, layers, grad_ratio=1e4, max_grad_abs=1e7).empty


def test_non_finite_gradients_are_errors():
    result = tfprobe.diagnose(frame({"a": {"grad_nan_count": 3.0, "grad_inf_count": 0.0}}))
    assert result[["stat", "kind", "severity"]].values.tolist() == [["grad_nan_count", "nan_inf", "error"]]
    assert "gradient" in result["message"].iloc[0]


def test_update_ratio_thresholds():
    df = frame({"slow": {"update_ratio": 1e-6}, "ok": {"update_ratio": 1e-3}, "fast": {"update_ratio": 0.5}})
    assert found(tfprobe.diagnose(df)) == {("slow", "stalled_layer"), ("fast", "unstable_updates")}
    assert found(tfprobe.diagnose(df, min_update_ratio=1e-7, max_update_ratio=1.0)) == set()
    transient = tfprobe.diagnose(
        frame({"fast": {"update_ratio": 0.5}}, steps=(1,)).pipe(
            lambda d: pd.concat([d, frame({"fast": {"update_ratio": 1e-3}}, steps=(2, 3, 4))])
        )
    )
    assert transient["severity"].tolist() == ["info"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"grad_ratio": 1.0}, "`grad_ratio` must be > 1. Received: grad_ratio=1.0"),
        ({"max_grad_abs": 0}, "`max_grad_abs` must be a finite number > 0. Received: max_grad_abs=0"),
        ({"min_update_ratio": float("inf")}, "`min_update_ratio` must be a finite number > 0"),
        ({"max_update_ratio": "x"}, "`max_update_ratio` must be a number. Received: max_update_ratio='x'"),
        ({"dead_gradient_fraction": 1.5}, r"`dead_gradient_fraction` must be in \(0, 1\]"),
        ({"min_update_ratio": 0.5, "max_update_ratio": 0.1}, "`min_update_ratio` must be below `max_update_ratio`"),
    ],
)
def test_bad_gradient_thresholds(kwargs, match):
    with pytest.raises(ValueError, match=match):
        findings.thresholds(**kwargs)
    with pytest.raises(ValueError, match=match):
        tfprobe.diagnose(frame({"a": {"update_ratio": 1e-3}}), **kwargs)


def test_gradient_kinds_are_registered():
    assert GRADIENT_KINDS <= set(findings.KINDS)
    assert np.all([findings.KINDS[k] == "warning" for k in GRADIENT_KINDS])


def test_non_finite_weights_are_nan_weights_and_not_dead():
    df = frame(
        {
            "a": {"weight_norm": np.nan, "update_ratio": np.nan, "zero_fraction": 1.0},
            "b": {"weight_norm": np.inf, "update_ratio": 1e-3, "zero_fraction": 0.2},
            "relu": {"zero_fraction": 1.0},
        }
    )  # no weights: genuinely dead
    result = tfprobe.diagnose(df)
    assert found(result) == {("a", "nan_weights"), ("b", "nan_weights"), ("relu", "dead_layer")}, result.to_string()
    assert set(result.loc[result["kind"] == "nan_weights", "severity"]) == {"error"}


def test_an_update_that_turns_the_weights_nan_is_found_in_its_window():
    # the last update of window 2 makes the weights NaN: update_ratio NaN at 2, weight_norm NaN from 3 on;
    # the ReLU outputs zeros from 3 on; a nan_weights at window 1 only is still an error (never transient)
    window = [(2.0, 1e-3, 0.3, (1,)), (2.0, np.nan, 0.3, (2,)), (np.nan, np.nan, 1.0, (3, 4, 5))]
    df = pd.concat(
        [
            frame({"a": {"weight_norm": w, "update_ratio": u, "zero_fraction": z}}, steps=steps)
            for w, u, z, steps in window
        ]
    )
    result = tfprobe.diagnose(df)
    assert result[["kind", "first_step", "last_step", "windows"]].values.tolist() == [["nan_weights", 2, 5, 4]]
    early = tfprobe.diagnose(
        frame({"a": {"weight_norm": np.nan}}, steps=(1,)).pipe(
            lambda d: pd.concat([d, frame({"a": {"weight_norm": 1.0}}, steps=(2, 3, 4))])
        )
    )
    assert early[["kind", "severity"]].values.tolist() == [["nan_weights", "error"]]


def test_a_nan_weight_gradient_norm_alone_is_no_finding():
    # under MirroredStrategy `weight_grad_norm` is NaN by design (backward.WeightWatch); with `gradients=False`
    # no weight statistic is recorded at all
    df = frame({"a": {"weight_norm": 2.0, "weight_grad_norm": np.nan, "update_ratio": 1e-3, "zero_fraction": 0.2}})
    assert tfprobe.diagnose(df).empty
    assert tfprobe.diagnose(frame({"a": {"zero_fraction": 0.2, "std": 1.0}})).empty
