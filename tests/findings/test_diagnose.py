"""`tfprobe.diagnose`: findings over the long frame, with hand-made statistics."""

from __future__ import annotations

import inspect

import pandas as pd
import pytest

import tfprobe
from tfprobe import findings as F


def frame(rows):
    """rows: (run, layer, step, {stat: value})."""
    out = [(run, step, 0.0, layer, stat, float(v)) for run, layer, step, stats in rows for stat, v in stats.items()]
    return pd.DataFrame(out, columns=["run", "step", "wall_time", "layer", "stat", "value"])


def graph(spec, run="r"):
    """A `read_layers`-like frame from `[(layer, class, inputs, bounds), ...]` in model order."""
    rows = [
        {"run": run, "layer": l, "order": i, "class": c, "inputs": ins, "bounds": b, "shape": [None, 10]}
        for i, (l, c, ins, b) in enumerate(spec)
    ]
    return pd.DataFrame(rows)


HEALTHY = {
    "std": 1.0,
    "zero_fraction": 0.3,
    "near_zero_fraction": 0.35,
    "nan_count": 0,
    "inf_count": 0,
    "dead_unit_fraction": 0.05,
    "saturation_fraction": 0.0,
}


def healthy_run(run="r", layers=("a", "b", "c"), steps=(10, 20, 30, 40)):
    return [(run, layer, step, dict(HEALTHY)) for layer in layers for step in steps]


def set_stats(rows, layer, steps=None, **stats):
    for r in rows:
        if layer in (None, r[1]) and (steps is None or r[2] in steps):
            r[3].update(stats)
    return rows


CHAIN = graph([("a", "Dense", [], None), ("b", "Dense", ["a"], None), ("c", "Dense", ["b"], None)])


def kinds(out):
    return out[["layer", "kind"]].values.tolist()


def test_healthy_run_has_no_findings():
    out = tfprobe.diagnose(frame(healthy_run()), CHAIN)
    assert list(out.columns) == F.FINDING_COLUMNS and out.empty


def test_checks_return_named_findings():
    """Each check returns `Finding`s (named tuples, fields = the frame's columns) that `diagnose` keeps as rows."""
    rows = set_stats(healthy_run(), "b", (20, 30), nan_count=5)
    found = F.CHECKS["nan_inf"](F.context(frame(rows), CHAIN))
    assert [type(f) for f in found] == [F.Finding] and list(F.Finding._fields) == F.FINDING_COLUMNS
    (f,) = found
    assert (f.layer, f.stat, f.kind, f.severity, f.first_step, f.last_step, f.windows) == (
        "b",
        "nan_count",
        "nan_inf",
        "error",
        20,
        30,
        2,
    )
    assert tfprobe.diagnose(frame(rows), CHAIN).iloc[0].tolist() == list(f)


def test_nan_and_inf_with_first_and_last_step():
    rows = set_stats(set_stats(healthy_run(), "b", (20, 30, 40), nan_count=5), "c", (30,), inf_count=1)
    out = tfprobe.diagnose(frame(rows))
    got = out[["layer", "stat", "kind", "severity", "first_step", "last_step", "windows"]].values.tolist()
    assert got == [["b", "nan_count", "nan_inf", "error", 20, 40, 3], ["c", "inf_count", "nan_inf", "error", 30, 30, 1]]
    assert "latest window (3 consecutive windows)" in out.loc[0, "message"] and "until step 30" in out.loc[1, "message"]


def test_dead_layer_suppresses_its_other_findings():
    rows = set_stats(healthy_run(), "b", zero_fraction=1.0, near_zero_fraction=1.0, dead_unit_fraction=1.0, std=0.0)
    out = tfprobe.diagnose(frame(rows), CHAIN)
    assert out[["layer", "kind", "stat"]].values.tolist() == [["b", "dead_layer", "zero_fraction"]]


def test_a_layer_is_judged_until_the_window_it_dies_in():
    # examples/find_the_bug.py's exploding_lr run: SGD overshoots, `b`'s std jumps 1e8x at step 20, then its
    # weights are NaN and its ReLU outputs 0. The explosion was hidden behind the later dead_layer.
    rows = set_stats(healthy_run(), "b", (20,), std=1e8)
    rows = set_stats(rows, "b", (30, 40), zero_fraction=1.0, near_zero_fraction=1.0, dead_unit_fraction=1.0, std=0.0)
    out = tfprobe.diagnose(frame(rows), CHAIN, transient_windows=0)
    got = out[["layer", "kind", "first_step", "last_step"]].values.tolist()
    assert ["b", "exploding_time", 20, 20] in got and ["b", "dead_layer", 30, 40] in got
    assert {k for _l, k, _f, _s in got} == {
        "exploding_time",
        "exploding_depth",
        "vanishing_depth",
        "std_drift",
        "dead_layer",
    }
    assert all(first <= 20 for layer, kind, first, _s in got if kind != "dead_layer")  # nothing judged once dead


@pytest.mark.parametrize("with_layers", [False, True])
def test_every_layer_dead_reports_every_layer(with_layers):
    # was KeyError: 'run' (no usable std anywhere): `tfprobe report` and /health crashed on a dead network
    rows = healthy_run()
    for layer in "abc":
        set_stats(rows, layer, zero_fraction=1.0, near_zero_fraction=1.0, dead_unit_fraction=1.0, std=0.0)
    out = tfprobe.diagnose(frame(rows), CHAIN if with_layers else None)
    assert kinds(out) == [["a", "dead_layer"], ["b", "dead_layer"], ["c", "dead_layer"]]
    assert set(out["severity"]) == {"error"}


def test_dead_units_and_saturation_thresholds():
    rows = set_stats(set_stats(healthy_run(), "a", (30, 40), dead_unit_fraction=0.7), "c", saturation_fraction=0.6)
    out = tfprobe.diagnose(frame(rows))
    assert out[["layer", "kind", "first_step"]].values.tolist() == [["c", "saturation", 10], ["a", "dead_units", 30]]
    assert tfprobe.diagnose(frame(rows), dead_units_fraction=0.8, saturation_fraction=0.9).empty


# ---------------------------------------------------------------- graph-aware depth


def test_exploding_and_vanishing_against_the_inputs():
    rows = set_stats(healthy_run(), "b", (20, 30, 40), std=50.0)  # a->b grows 50x, b->c shrinks 50x
    out = tfprobe.diagnose(frame(rows), CHAIN)
    depth = out[out["kind"].str.endswith("depth")]
    assert depth[["layer", "kind", "first_step"]].values.tolist() == [
        ["b", "exploding_depth", 20],
        ["c", "vanishing_depth", 20],
    ]
    assert "largest input 'a'" in depth.iloc[0]["message"] and "50x" in depth.iloc[0]["message"]
    assert "smallest input 'b'" in depth.iloc[1]["message"]
    assert out[out["kind"] == "exploding_time"]["layer"].tolist() == ["b"]  # b also grew 50x over time


def test_parallel_branches_are_not_compared_with_each_other():
    # model order interleaves two branches of `a`: b (std 50, from a wide conv) then c (std 1)
    rows = set_stats(healthy_run(layers=("a", "b", "c", "add")), "b", std=8.0)
    set_stats(rows, "add", std=8.1)
    layers = graph(
        [
            ("a", "Conv2D", [], None),
            ("b", "Conv2D", ["a"], None),
            ("c", "Conv2D", ["a"], None),
            ("add", "Add", ["b", "c"], None),
        ]
    )
    assert tfprobe.diagnose(frame(rows), layers).empty  # in list order: c "shrinks 8x" from b; not connected
    set_stats(rows, "b", std=50.0)
    set_stats(rows, "add", std=50.0)
    out = tfprobe.diagnose(frame(rows), layers)
    assert kinds(out) == [["b", "exploding_depth"]]  # found where it begins, not at c, not at the addition


def test_residual_addition_is_judged_against_its_inputs():
    rows = set_stats(healthy_run(layers=("x", "f", "add")), "add", std=0.02)  # the branch cancels the skip
    layers = graph([("x", "Dense", [], None), ("f", "Dense", ["x"], None), ("add", "Add", ["x", "f"], None)])
    out = tfprobe.diagnose(frame(rows), layers)
    assert kinds(out) == [["add", "vanishing_depth"]]
    assert "smallest input" in out.iloc[0]["message"]


@pytest.mark.parametrize("layers", [None, CHAIN.drop(columns="inputs"), CHAIN.assign(inputs=None)])
def test_no_depth_finding_without_the_graph(layers):
    rows = set_stats(healthy_run(), "b", std=50.0)
    out = tfprobe.diagnose(frame(rows), layers)
    assert not out["kind"].str.endswith("depth").any()


def test_bounded_layers_are_not_judged_for_depth():
    rows = set_stats(healthy_run(), "c", std=0.01)  # e.g. softmax after logits
    bounded = graph([("a", "Dense", [], None), ("b", "Dense", ["a"], None), ("c", "Dense", ["b"], [0.0, 1.0])])
    assert kinds(tfprobe.diagnose(frame(rows), CHAIN)) == [["c", "vanishing_depth"]]
    assert tfprobe.diagnose(frame(rows), bounded).empty


@pytest.mark.parametrize(
    "cls",
    [
        "BatchNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "UnitNormalization",
        "RMSNormalization",
        "LayerScale",
        "Rescaling",
    ],
)
def test_normalization_layers_change_scale_without_findings(cls):
    rows = set_stats(set_stats(healthy_run(layers=("a", "norm", "c", "head")), "a", std=200.0), "norm", std=0.01)
    layers = graph(
        [
            ("a", "Conv2D", [], None),
            ("norm", cls, ["a"], None),
            ("c", "Conv2D", ["norm"], None),
            ("head", "Dense", ["c"], None),
        ]
    )  # c is not the model's output, whose scale the loss sets
    assert kinds(tfprobe.diagnose(frame(rows), layers)) == [["c", "exploding_depth"]]  # c vs norm, not norm vs a
    as_dense = layers.assign(**{"class": ["Conv2D", "Dense", "Conv2D", "Dense"]})
    assert ["norm", "vanishing_depth"] in kinds(tfprobe.diagnose(frame(rows), as_dense))


def test_model_order_from_layers():
    rows = set_stats(healthy_run(), None, (40,), std=0.05)
    layers = pd.DataFrame({"run": "r", "layer": ["c", "b", "a"], "order": [0, 1, 2], "bounds": None})
    out = tfprobe.diagnose(frame(rows), layers)
    assert out["kind"].unique().tolist() == ["vanishing_time", "std_drift"]  # warnings before info
    sudden = out[out["kind"] == "vanishing_time"]
    assert sudden["layer"].tolist() == ["c", "b", "a"]  # model order from `layers`
    assert sudden["first_step"].tolist() == [40] * 3 and "after step 30" in sudden.iloc[0]["message"]


# ---------------------------------------------------------------- architecture-aware saturation


def saturation_case(cls, bounds, sat, zero=0.3, mean=0.5, position="hidden"):
    names = ("a", "act", "out") if position == "hidden" else ("a", "b", "act")
    rows = set_stats(healthy_run(layers=names), "act", saturation_fraction=sat, zero_fraction=zero, mean=mean)
    spec = [(n, "Dense", [names[i - 1]] if i else [], None) for i, n in enumerate(names)]
    spec[names.index("act")] = ("act", cls, [names[names.index("act") - 1]], bounds)
    return tfprobe.diagnose(frame(rows), graph(spec))


def test_one_sided_activation_saturates_only_at_its_upper_bound():
    # ReLU6 from a recorder that writes bounds [None, 6]: saturation_fraction counts the upper bound only
    out = saturation_case("ReLU", [None, 6.0], sat=0.7, zero=0.05)
    assert kinds(out) == [["act", "saturation"]] and "at the upper bound" in out.iloc[0]["message"]
    # older logs, bounds [0, 6]: the zeros (sparsity) are no saturation; the remaining share is
    assert saturation_case("ReLU", [0.0, 6.0], sat=0.65, zero=0.6).empty
    assert saturation_case("Activation", [0.0, 6.0], sat=0.65, zero=0.6).empty  # activation="relu6"
    assert kinds(saturation_case("ReLU", [0.0, 6.0], sat=0.65, zero=0.05)) == [["act", "saturation"]]
    # a two-sided bound keeps counting both ends
    assert kinds(saturation_case("Dense", [0.0, 1.0], sat=0.65, zero=0.6)) == [["act", "saturation"]]


def test_output_softmax_is_not_saturation_but_a_hidden_one_is():
    assert saturation_case("Softmax", [0.0, 1.0], sat=0.95, zero=0.0, position="output").empty
    assert saturation_case(
        "Dense", [0.0, 1.0], sat=0.95, zero=0.0, mean=0.1, position="output"
    ).empty  # Dense(softmax), 10 outputs
    assert kinds(saturation_case("Dense", [0.0, 1.0], sat=0.95, zero=0.0, mean=0.37, position="output")) == [
        ["act", "saturation"]
    ]  # sigmoid
    assert kinds(saturation_case("Softmax", [0.0, 1.0], sat=0.95, zero=0.0)) == [["act", "saturation"]]  # hidden


# ---------------------------------------------------------------- persistence


def test_windows_counts_the_longest_streak():
    rows = set_stats(healthy_run(steps=(10, 20, 30, 40, 50)), "b", (20, 30, 50), dead_unit_fraction=0.9)
    out = tfprobe.diagnose(frame(rows))
    assert out[["layer", "kind", "severity", "first_step", "last_step", "windows"]].values.tolist() == [
        ["b", "dead_units", "warning", 20, 50, 2]
    ]
    assert "(3 windows, at most 2 consecutive)" in out.iloc[0]["message"]


def test_early_transient_events_are_info_unless_they_persist():
    steps = (1, 2, 3, 4)
    rows = set_stats(healthy_run(steps=steps), "b", (1, 2), dead_unit_fraction=0.9)
    out = tfprobe.diagnose(frame(rows))
    assert out[["layer", "kind", "severity", "windows"]].values.tolist() == [["b", "dead_units", "info", 2]]
    assert "transient" in out.iloc[0]["message"]
    assert tfprobe.diagnose(frame(rows), transient_windows=1)["severity"].tolist() == ["warning"]
    persisting = set_stats(healthy_run(steps=steps), "b", (1, 2, 3), dead_unit_fraction=0.9)
    assert tfprobe.diagnose(frame(persisting))["severity"].tolist() == ["warning"]
    # nothing after the early windows yet: it cannot be called transient
    short = set_stats(healthy_run(steps=(1, 2)), "b", (1, 2), dead_unit_fraction=0.9)
    assert tfprobe.diagnose(frame(short))["severity"].tolist() == ["warning"]
    # NaN/Inf is never transient
    nan = set_stats(healthy_run(steps=steps), "b", (1,), nan_count=3)
    assert tfprobe.diagnose(frame(nan))["severity"].tolist() == ["error"]


def test_gradual_growth_is_info_only():
    rows = healthy_run(steps=(10, 20, 30, 40))
    for r in rows:
        if r[1] == "a":
            r[3]["std"] = 3.0 ** ((r[2] - 10) / 10)  # 1, 3, 9, 27: no sudden jump, 27x overall
    out = tfprobe.diagnose(frame(rows))
    got = out[["layer", "kind", "severity", "first_step"]].values.tolist()
    assert ["a", "std_drift", "info", 40] in got
    assert not any(k[1].endswith("_time") for k in got)
    assert "grew 27x since step 10" in out[out["kind"] == "std_drift"].iloc[0]["message"]


def test_severity_order_and_multiple_runs():
    rows = healthy_run("r1") + healthy_run("r2")
    for r in rows:
        if r[0] == "r2" and r[1] == "a":
            r[3]["nan_count"] = 1
        if r[0] == "r1" and r[1] == "c":
            r[3]["saturation_fraction"] = 0.9
    out = tfprobe.diagnose(frame(rows))
    assert out[["run", "severity"]].values.tolist() == [["r2", "error"], ["r1", "warning"]]


# ---------------------------------------------------------------- structure and bad input


def test_each_check_is_registered_small_and_runs_alone():
    assert list(F.CHECKS) == [
        "nan_inf",
        "nan_weights",
        "dead_layer",
        "dead_units",
        "saturation",
        "depth",
        "time",
        "std_drift",
        "gradient_depth",
        "huge_gradient",
        "dead_gradient",
        "updates",
        "constant_output",
    ]
    rows = set_stats(healthy_run(), "b", (30, 40), nan_count=2, std=50.0)
    ctx = F.context(frame(rows), CHAIN)
    produced = {name: {f[3] for f in check(ctx)} for name, check in F.CHECKS.items()}
    assert produced["nan_inf"] == {"nan_inf"} and produced["dead_layer"] == set()
    assert produced["depth"] == {"exploding_depth", "vanishing_depth"} and produced["time"] == {"exploding_time"}
    for fn in list(F.CHECKS.values()) + [F.diagnose, F.context, F._spans, F._series_table]:
        code_lines = len(inspect.getsource(fn).splitlines()) - len((fn.__doc__ or "").splitlines())
        assert code_lines <= 60, fn.__name__  # the logic is small; a documented threshold does not count


def test_tfprobe_diagnose_is_the_function_and_findings_the_module():
    import tfprobe.findings

    assert tfprobe.diagnose is tfprobe.findings.diagnose and callable(tfprobe.diagnose)


def test_thresholds_are_validated():
    with pytest.raises(TypeError, match="unknown threshold"):
        tfprobe.diagnose(frame(healthy_run()), dead_fraction=0.5)
    with pytest.raises(ValueError, match="std_ratio"):
        tfprobe.diagnose(frame(healthy_run()), std_ratio=1.0)
    for bad in (-1, 1.5, "x"):
        with pytest.raises(ValueError, match="transient_windows"):
            tfprobe.diagnose(frame(healthy_run()), transient_windows=bad)
    with pytest.raises(ValueError, match="missing columns"):
        tfprobe.diagnose(pd.DataFrame({"run": []}))
    with pytest.raises(ValueError, match="severity"):
        F.severity_rank("fatal")


@pytest.mark.parametrize(
    "args, error, needles",
    [
        ((None,), TypeError, ["`df`", "df=None"]),
        ((42,), TypeError, ["`df`", "df=42"]),
        (("no/such/logs",), FileNotFoundError, ["`logdir`", "logdir='no/such/logs'"]),  # a path is a log directory
        ((frame(healthy_run()), pd.DataFrame({"run": ["r"], "layer": ["a"]})), ValueError, ["`layers`", "'order'"]),
        ((frame(healthy_run()), "logs"), TypeError, ["`layers`", "layers='logs'"]),
        ((frame(healthy_run()).assign(value="0.5"),), ValueError, ["`df['value']`", "value='0.5'"]),
    ],
)
def test_bad_frames_name_the_argument(args, error, needles):
    with pytest.raises(error) as e:
        tfprobe.diagnose(*args)
    for needle in needles:
        assert needle in str(e.value)


def test_works_on_read_logdir_output(synthetic_logdir):
    df = tfprobe.read_logdir(synthetic_logdir)
    out = tfprobe.diagnose(df, tfprobe.read_layers(synthetic_logdir))
    got = set(zip(out["layer"], out["kind"]))
    assert {("nan_layer", "nan_inf"), ("dead_relu", "dead_layer")} <= got
    assert ("dense", "saturation") not in got  # the output softmax (10 outputs, mean 0.1) is confident, not saturated
    assert out.loc[out["kind"] == "nan_inf", "first_step"].tolist() == [100]
    assert out["severity"].iloc[0] == "error"


def test_layers_scaled_by_design_are_not_dead_for_being_near_zero():
    # ConvNeXt: LayerScale (gamma 1e-6 at initialisation), then an `identity` Activation, then the addition
    tiny = dict(std=1e-6, zero_fraction=0.0, near_zero_fraction=1.0, dead_unit_fraction=1.0)
    rows = set_stats(
        set_stats(healthy_run(layers=("conv", "scale", "identity", "add")), "scale", **tiny), "identity", **tiny
    )
    layers = graph(
        [
            ("conv", "Conv2D", [], None),
            ("scale", "LayerScale", ["conv"], None),
            ("identity", "Activation", ["scale"], None),
            ("add", "Add", ["conv", "identity"], None),
        ]
    )
    assert tfprobe.diagnose(frame(rows), layers).empty
    # without the graph the identity's input is unknown: it stays a near-zero dead layer
    assert kinds(tfprobe.diagnose(frame(rows), layers.drop(columns="inputs"))) == [["identity", "dead_layer"]]
    # exact zeros are dead whatever the class
    set_stats(rows, "scale", zero_fraction=1.0)
    assert kinds(tfprobe.diagnose(frame(rows), layers)) == [["scale", "dead_layer"]]


def test_dead_units_need_near_zero_to_be_small_against_the_values():
    # VGG16's fc1 at 32x32: std 5e-4, half exact zeros (ReLU), 86% within near_zero=1e-3: a small scale
    rows = set_stats(healthy_run(), "b", std=5e-4, zero_fraction=0.5, near_zero_fraction=0.86, dead_unit_fraction=0.82)
    assert tfprobe.diagnose(frame(rows)).empty
    set_stats(rows, "b", std=1.0, near_zero_fraction=0.52)  # the same dead units at a normal scale
    assert kinds(tfprobe.diagnose(frame(rows))) == [["b", "dead_units"]]


def test_a_layer_feeding_only_a_normalization_is_not_judged_for_depth():
    # MobileNetV2 at initialisation: the depthwise conv shrinks 30x, the BatchNormalization after it restores
    rows = set_stats(healthy_run(layers=("relu", "depthwise", "bn")), "depthwise", std=0.03)
    layers = graph(
        [
            ("relu", "ReLU", [], None),
            ("depthwise", "DepthwiseConv2D", ["relu"], None),
            ("bn", "BatchNormalization", ["depthwise"], None),
        ]
    )
    assert tfprobe.diagnose(frame(rows), layers).empty
    also_used = pd.concat([layers, graph([("head", "Dense", ["depthwise"], None)])], ignore_index=True)
    rows += set_stats(healthy_run(layers=("head",)), "head", std=0.03)
    assert kinds(tfprobe.diagnose(frame(rows), also_used)) == [["depthwise", "vanishing_depth"]]
