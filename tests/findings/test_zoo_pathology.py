"""The pathology zoo: small models, each with one planted fault, recorded for 4 steps.

Each fault must be found at the planted layer(s), from the first window, and nothing may be found
at the healthy layers of the same model. Depth findings need the graph (`inputs`): where the recorder
does not write it yet, `zoo.with_graph` fills it in from the Keras graph; `test_recorder_writes_the_graph`
is a strict xfail until the recorder writes it itself (then it fails as XPASS: remove the marker).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers.models import planted
from helpers.zoo import keras_inputs, record_and_diagnose, run_pathology, synthetic

import tfprobe

keras = pytest.importorskip("keras")
L = keras.layers


def dying_relu():
    return planted(
        L.Dense(32, activation="relu", bias_initializer=keras.initializers.Constant(-100.0), name="dying"),
        head_bias="ones",
    )


def saturated_sigmoids():
    big = keras.initializers.RandomNormal(stddev=4.0, seed=1)
    return planted(*[L.Dense(32, activation="sigmoid", kernel_initializer=big, name=f"sig{i}") for i in (1, 2, 3)])


def relu6_at_six():
    return planted(
        L.Dense(32, bias_initializer=keras.initializers.Constant(20.0), name="pre"), L.ReLU(6.0, name="relu6")
    )


def partly_dead():
    def bias(shape, dtype=None):
        return np.r_[np.full(20, -100.0), np.zeros(shape[0] - 20)].astype("float32")

    return planted(L.Dense(32, activation="relu", bias_initializer=bias, name="partly_dead"))


def nan_layer():
    inp = keras.Input((16,))
    h = L.Dense(32, activation="relu", name="hidden")(inp)
    nan = L.Lambda(lambda x: keras.ops.log(x - 100.0), name="nan_maker")(h)  # a side output outside the loss
    return keras.Model(inp, {"out": L.Dense(4, name="out")(h), "nan_maker": nan})


def exploding_linear():
    big = keras.initializers.RandomNormal(stddev=3.0, seed=1)
    return planted(*[L.Dense(64, kernel_initializer=big, name=f"lin{i}") for i in (1, 2, 3)], width=64)


def vanishing_linear():
    return planted(
        L.Dense(64, kernel_initializer=keras.initializers.RandomNormal(stddev=0.005, seed=1), name="shrink"), width=64
    )


def exploding_residual_branch():
    inp = keras.Input((16,))
    x = L.Dense(64, activation="relu", name="hidden")(inp)
    branch = L.Dense(64, kernel_initializer=keras.initializers.RandomNormal(stddev=3.0, seed=1), name="branch")(x)
    return keras.Model(inp, L.Dense(4, name="out")(L.Add(name="add")([x, branch])))


CASES = [
    pytest.param(dying_relu, {"dying": "dead_layer"}, id="dying_relu"),
    pytest.param(
        saturated_sigmoids,
        {"sig1": "saturation", "sig2": "saturation", "sig3": "saturation"},
        id="saturated_sigmoid_stack",
    ),
    pytest.param(relu6_at_six, {"relu6": "saturation"}, id="relu6_saturates_at_6"),
    pytest.param(partly_dead, {"partly_dead": "dead_units"}, id="dead_units_in_a_layer"),
    pytest.param(nan_layer, {"nan_maker": "nan_inf"}, id="nan_layer"),
    pytest.param(exploding_linear, {f"lin{i}": "exploding_depth" for i in (1, 2, 3)}, id="exploding_linear_stack"),
    pytest.param(vanishing_linear, {"shrink": "vanishing_depth"}, id="vanishing_layer"),
    pytest.param(exploding_residual_branch, {"branch": "exploding_depth"}, id="exploding_residual_branch"),
]


@pytest.mark.parametrize("build, planted", CASES)
def test_planted_fault_is_found_where_it_is_and_nowhere_else(tmp_path, build, planted):
    findings, _ = run_pathology(build, tmp_path / "run")
    got = {(layer, kind) for layer, kind in zip(findings["layer"], findings["kind"])}
    assert set(planted.items()) <= got, findings[["layer", "kind", "message"]].to_string()
    assert set(findings["layer"]) <= set(planted), findings[
        ["layer", "kind", "message"]
    ].to_string()  # healthy layers: nothing
    planted_rows = findings[[(l, k) in planted.items() for l, k in zip(findings["layer"], findings["kind"])]]
    assert (planted_rows["first_step"] <= 2).all()  # present from step 1: found within one window
    assert (planted_rows["severity"] != "info").all()


@pytest.mark.parametrize("build, planted", [c for c in CASES if "depth" in str(c.values[1])])
def test_depth_faults_are_not_found_without_the_graph(tmp_path, build, planted):
    """Logs written before `inputs` existed: no depth comparison with a neighbour in a list."""
    _, layers = run_pathology(build, tmp_path / "run", graph=False)
    findings = tfprobe.diagnose(tfprobe.read_logdir(tmp_path / "run"), layers.drop(columns="inputs"))
    assert not findings["kind"].str.endswith("_depth").any()


def test_recorder_writes_the_graph(tmp_path):
    keras.utils.set_random_seed(0)
    model = exploding_residual_branch()
    _, layers = record_and_diagnose(model, tmp_path / "run", *synthetic(32, (16,)), graph=False)
    expected = keras_inputs(model)
    assert {l: list(i) for l, i in zip(layers["layer"], layers["inputs"])} == {l: expected[l] for l in layers["layer"]}
