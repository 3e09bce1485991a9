"""`tfprobe.diagnose`: findings over the long frame, with hand-made statistics."""

from __future__ import annotations

import pandas as pd
import pytest

import importlib

import tfprobe

D = importlib.import_module("tfprobe.diagnose")  # the package attribute `tfprobe.diagnose` is the function


def frame(rows):
    """rows: (run, layer, step, {stat: value})."""
    out = [(run, step, 0.0, layer, stat, float(v)) for run, layer, step, stats in rows for stat, v in stats.items()]
    return pd.DataFrame(out, columns=["run", "step", "wall_time", "layer", "stat", "value"])


HEALTHY = {"std": 1.0, "zero_fraction": 0.3, "near_zero_fraction": 0.35, "nan_count": 0, "inf_count": 0,
           "dead_unit_fraction": 0.05, "saturation_fraction": 0.0}


def healthy_run(run="r", layers=("a", "b", "c"), steps=(10, 20, 30, 40)):
    return [(run, layer, step, dict(HEALTHY)) for layer in layers for step in steps]


def test_healthy_run_has_no_findings():
    out = tfprobe.diagnose(frame(healthy_run()))
    assert list(out.columns) == D.FINDING_COLUMNS and out.empty


def test_nan_and_inf_with_first_and_last_step():
    rows = healthy_run()
    for r in rows:
        if r[1] == "b" and r[2] >= 20:
            r[3]["nan_count"] = 5
        if r[1] == "c" and r[2] == 30:
            r[3]["inf_count"] = 1
    out = tfprobe.diagnose(frame(rows))
    got = out[["layer", "stat", "kind", "severity", "first_step", "last_step"]].values.tolist()
    assert got == [["b", "nan_count", "nan_inf", "error", 20, 40], ["c", "inf_count", "nan_inf", "error", 30, 30]]
    assert "latest window" in out.loc[0, "message"] and "until step 30" in out.loc[1, "message"]


def test_dead_layer_suppresses_its_other_findings():
    rows = healthy_run()
    for r in rows:
        if r[1] == "b":
            r[3].update(zero_fraction=1.0, near_zero_fraction=1.0, dead_unit_fraction=1.0, std=0.0)
    out = tfprobe.diagnose(frame(rows))
    assert out[["layer", "kind", "stat"]].values.tolist() == [["b", "dead_layer", "zero_fraction"]]


def test_dead_units_and_saturation_thresholds():
    rows = healthy_run()
    for r in rows:
        if r[1] == "a" and r[2] >= 30:
            r[3]["dead_unit_fraction"] = 0.7
        if r[1] == "c":
            r[3]["saturation_fraction"] = 0.6
    out = tfprobe.diagnose(frame(rows))
    assert out[["layer", "kind", "first_step"]].values.tolist() == [["c", "saturation", 10], ["a", "dead_units", 30]]
    assert tfprobe.diagnose(frame(rows), dead_units_fraction=0.8, saturation_fraction=0.9).empty


def test_exploding_and_vanishing_across_depth():
    rows = healthy_run()
    for r in rows:
        if r[1] == "b" and r[2] >= 20:
            r[3]["std"] = 50.0  # a->b grows 50x, b->c shrinks 50x
    out = tfprobe.diagnose(frame(rows))
    depth = out[out["kind"].str.endswith("depth")]
    assert depth[["layer", "kind", "first_step"]].values.tolist() == [
        ["b", "exploding_depth", 20],
        ["c", "vanishing_depth", 20],
    ]
    assert "from layer 'a'" in depth.iloc[0]["message"] and "50x" in depth.iloc[0]["message"]
    # b also grew 50x over time
    assert out[out["kind"] == "exploding_time"]["layer"].tolist() == ["b"]


def test_bounded_layers_are_left_out_of_depth_comparison():
    rows = healthy_run()
    for r in rows:
        if r[1] == "c":
            r[3]["std"] = 0.01  # e.g. softmax after logits
    layers = pd.DataFrame({"run": "r", "layer": ["a", "b", "c"], "order": [0, 1, 2], "bounds": [None, None, [0.0, 1.0]]})
    assert "vanishing_depth" in tfprobe.diagnose(frame(rows))["kind"].tolist()
    assert tfprobe.diagnose(frame(rows), layers).empty


def test_vanishing_over_time_and_model_order_from_layers():
    rows = healthy_run()
    for r in rows:
        if r[2] == 40:
            r[3]["std"] = 0.05
    layers = pd.DataFrame({"run": "r", "layer": ["c", "b", "a"], "order": [0, 1, 2], "bounds": None})
    out = tfprobe.diagnose(frame(rows), layers)
    assert out["kind"].unique().tolist() == ["vanishing_time", "std_drift"]  # warnings before info
    sudden = out[out["kind"] == "vanishing_time"]
    assert sudden["layer"].tolist() == ["c", "b", "a"]  # model order from `layers`
    assert sudden["first_step"].tolist() == [40] * 3 and "after step 30" in sudden.iloc[0]["message"]


def test_gradual_growth_is_info_only():
    rows = healthy_run(steps=(10, 20, 30, 40))
    for r in rows:
        if r[1] == "a":
            r[3]["std"] = 3.0 ** ((r[2] - 10) / 10)  # 1, 3, 9, 27: no sudden jump, 27x overall
    out = tfprobe.diagnose(frame(rows))
    kinds = out[["layer", "kind", "severity", "first_step"]].values.tolist()
    assert ["a", "std_drift", "info", 40] in kinds
    assert not any(k[1].endswith("_time") for k in kinds)
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


def test_thresholds_are_validated():
    with pytest.raises(TypeError, match="unknown threshold"):
        tfprobe.diagnose(frame(healthy_run()), dead_fraction=0.5)
    with pytest.raises(ValueError, match="std_ratio"):
        tfprobe.diagnose(frame(healthy_run()), std_ratio=1.0)
    with pytest.raises(ValueError, match="missing columns"):
        tfprobe.diagnose(pd.DataFrame({"run": []}))
    with pytest.raises(ValueError, match="severity"):
        D.severity_rank("fatal")


def test_works_on_read_logdir_output(synthetic_logdir):
    df = tfprobe.read_logdir(synthetic_logdir)
    out = tfprobe.diagnose(df, tfprobe.read_layers(synthetic_logdir))
    kinds = set(zip(out["layer"], out["kind"]))
    assert {("nan_layer", "nan_inf"), ("dead_relu", "dead_layer"), ("dense", "saturation")} <= kinds
    assert out.loc[out["kind"] == "nan_inf", "first_step"].tolist() == [100]
    assert out["severity"].iloc[0] == "error"
