"""Incidents (issue 27): `constant_output`, `tfprobe.incidents` (root cause and fix), and the probe's live
incidents: alerts, `stop_on`, counts in Keras' logs. The find-the-bug runs are in test_examples_studies.py."""

from __future__ import annotations

import logging
import re

import keras
import numpy as np
import pandas as pd
import pytest
from helpers.examples import load_example
from helpers.incidents import assert_prefilter_changes_nothing

import tfprobe
from tfprobe import cli
from tfprobe.findings import FINDING_COLUMNS
from tfprobe.findings.incidents import group, incidents

# ------------------------------------------------------------------ grouping rules (no training)


def findings(*rows):
    """Findings from `(layer, kind, first_step[, severity[, stat]])` in run `r`."""
    out = []
    for row in rows:
        layer, kind, first = row[:3]
        severity = (
            row[3] if len(row) > 3 else ("error" if kind in ("nan_inf", "nan_weights", "dead_layer") else "warning")
        )
        stat = row[4] if len(row) > 4 else "std"
        out.append(("r", layer, stat, kind, severity, first, first + 10, 2, f"{kind} numbers"))
    return pd.DataFrame(out, columns=FINDING_COLUMNS)


def chain(*names, branches=()):
    """A `read_layers`-like frame: `names` a chain, `branches` extra `(name, inputs)`."""
    rows = [("r", n, i, "Dense", [None, 8], [names[i - 1]] if i else []) for i, n in enumerate(names)]
    rows += [("r", n, len(rows) + k, "Dense", [None, 8], list(ins)) for k, (n, ins) in enumerate(branches)]
    return pd.DataFrame(rows, columns=["run", "layer", "order", "class", "shape", "inputs"])


def roots(f, layers=None):
    inc, members = group(f, layers)
    return [(r.root_layer, r.root_kind, r.first_step) for r in inc.itertuples()], members


def test_same_window_same_kind_the_upstream_layer_is_the_root():
    got, members = roots(
        findings(("c", "saturation", 5), ("b", "saturation", 5), ("a", "saturation", 5)), chain("a", "b", "c")
    )
    assert got == [("a", "saturation", 5)] and set(members.incident) == {1}


def test_a_dead_layer_explains_dead_gradients_and_stalled_layers_behind_it():
    f = findings(
        ("h1", "dead_gradient", 5),
        ("h1", "stalled_layer", 5),
        ("h2", "dead_layer", 5),
        ("h3", "dead_layer", 5),
        ("h3", "stalled_layer", 5),
    )
    got, _ = roots(f, chain("h1", "h2", "h3"))
    assert got == [("h2", "dead_layer", 5)]  # not h1, though it is upstream: a dead gradient is an effect


def test_unrelated_problems_stay_separate_incidents():
    layers = chain("a", "b", branches=[("x", ["a"]), ("y", ["x"])])
    f = findings(("b", "dead_layer", 5), ("y", "saturation", 20), ("x", "dead_units", 30))
    got, _ = roots(f, layers)
    assert got == [("b", "dead_layer", 5), ("y", "saturation", 20), ("x", "dead_units", 30)]


def test_an_earlier_cause_explains_later_effects_anywhere():
    f = findings(
        ("a", "unstable_updates", 5),
        ("b", "unstable_updates", 5),
        ("b", "exploding_time", 15),
        ("a", "nan_weights", 20, "error", "weight_norm"),
        ("b", "nan_inf", 20),
    )
    inc, _ = group(f, chain("a", "b"))
    assert len(inc) == 1 and inc.root_kind[0] == "unstable_updates" and inc.severity[0] == "error"
    assert inc.error_step[0] == 20 and "learning rate" in inc.fix[0]
    assert (
        inc.summary[0].startswith("step 20: error")
        and "root cause: unstable updates at a from step 5" in inc.summary[0]
    )


def test_nan_at_the_input_side_precedes_nan_weights_and_names_the_data():
    f = findings(
        ("b", "nan_weights", 10, "error", "weight_norm"),
        ("a", "nan_weights", 10, "error", "weight_norm"),
        ("b", "nan_inf", 10, "error", "nan_count"),
        ("a", "nan_inf", 10, "error", "nan_count"),
    )
    inc, _ = group(f, chain("a", "b"))
    assert list(zip(inc.root_layer, inc.root_kind)) == [("a", "nan_inf")] and "input data" in inc.fix[0]


def test_nan_only_in_gradients_comes_from_the_loss_side():
    f = findings(*[(n, "nan_inf", 10, "error", "grad_nan_count") for n in ("a", "b", "c")])
    got, _ = roots(f, chain("a", "b", "c"))
    assert got == [("c", "nan_inf", 10)]


def test_info_findings_belong_to_no_incident_and_no_graph_means_model_order():
    f = findings(("b", "std_drift", 5, "info"), ("b", "saturation", 5), ("a", "saturation", 5))
    inc, members = group(f, chain("a", "b").drop(columns=["inputs"]))
    assert list(inc.root_layer) == ["a"] and list(members.incident) == [0, 1, 1]
    assert group(f.iloc[:1])[0].empty


def test_incidents_bad_source():
    with pytest.raises(TypeError, match="source"):
        incidents(42)


# ------------------------------------------------------------------ constant_output, from a real fit


def norm_net(features):
    """Conv1D(features) -> LayerNormalization over the last axis (of size `features`) -> attention -> head."""
    inp = keras.Input((12, 1))
    h = keras.layers.Conv1D(features, 1, name="embed")(inp)
    n = keras.layers.LayerNormalization(epsilon=1e-6, name="ln")(h)
    a = keras.layers.MultiHeadAttention(num_heads=1, key_dim=4, name="mha")(n, n)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(keras.layers.Add(name="res")([a, h]))
    model = keras.Model(inp, keras.layers.Dense(2, name="logits")(x))
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.mark.parametrize("features", [1, 4])
def test_layer_normalization_over_an_axis_of_size_one_is_a_constant_output(tmp_path, features, caplog):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(128, 12, 1)).astype("float32")
    y = (x.mean(axis=(1, 2)) > 0).astype("int32")
    probe = tfprobe.LayerProbe(tmp_path / "run", record_freq=1, log_freq=4, gradients=True)
    with caplog.at_level(logging.WARNING, logger="tfprobe"):
        norm_net(features).fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[probe])
    found = tfprobe.diagnose(tfprobe.read_logdir(tmp_path), tfprobe.read_layers(tmp_path))
    inc = tfprobe.incidents(tmp_path)
    if features == 1:
        constant = found[found.kind == "constant_output"]
        assert "ln" in set(constant.layer) and constant.first_step.min() <= 8
        assert list(zip(inc.root_layer, inc.root_kind)) == [("ln", "constant_output")]
        assert "axis of size 1" in inc.fix[0]
        assert any("constant_output in ln" in r.getMessage() for r in caplog.records)
        assert list(probe.incidents.root_layer) == ["ln"]
        assert_prefilter_changes_nothing(tmp_path)
    else:  # the healthy twin: nothing to report, nothing logged
        assert "constant_output" not in set(found.kind) and inc.empty
        assert not [r for r in caplog.records if r.name == "tfprobe"] and probe.incidents.empty


# ------------------------------------------------------------------ alerts and stop_on, from a real fit


@pytest.fixture(scope="module")
def bug():
    return load_example("find_the_bug")


def fit_digits(bug, logdir, deviation, epochs=2, **probe_kwargs):
    (x, y), _ = bug.load_data(0)
    keras.utils.set_random_seed(0)
    model = bug.build_model(**deviation)
    probe = tfprobe.LayerProbe(
        logdir, **{**dict(record_freq=1, log_freq=5, histogram_freq=0, gradients=True), **probe_kwargs}
    )
    csv = keras.callbacks.CSVLogger(str(logdir) + ".csv")
    history = model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[probe, csv])
    return model, probe, history, pd.read_csv(str(logdir) + ".csv")


def test_stop_on_error_stops_at_the_window_of_the_nan_weights(tmp_path, bug, caplog):
    with caplog.at_level(logging.WARNING, logger="tfprobe"):
        model, probe, history, csv = fit_digits(
            bug, tmp_path / "lr", dict(optimizer="sgd", learning_rate=1.0), epochs=4, stop_on="error"
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "tfprobe"]
    assert lines[0] == (
        "tfprobe: step 15: warning unstable_updates in hidden1..logits from step 5 (learning rate too high?)"
    )
    assert (
        lines[1].startswith("tfprobe: step 20: error ")
        and "root cause: unstable updates at hidden1 from step 5" in lines[1]
    )
    assert lines[2].startswith("tfprobe: stopping training at step 20 (stop_on='error')") and len(lines) == 3
    assert int(model.optimizer.iterations.numpy()) == 20  # stopped in the first epoch, at that window
    assert history.history["tfprobe_errors"] == [1] and history.history["tfprobe_warnings"] == [0]
    assert list(csv["tfprobe_errors"]) == [1]
    # every window written so far is readable, and the report names the same incident
    assert sorted(tfprobe.read_logdir(tmp_path).step.unique()) == [5, 10, 15, 20]
    (inc,) = tfprobe.incidents(tmp_path).itertuples()
    assert (inc.root_layer, inc.root_kind, inc.first_step) == ("hidden1", "unstable_updates", 5)
    assert list(probe.incidents.root_kind) == ["unstable_updates"]
    assert_prefilter_changes_nothing(tmp_path)


def test_healthy_run_is_silent_and_counts_zero(tmp_path, bug, caplog):
    with caplog.at_level(logging.DEBUG, logger="tfprobe"):
        model, probe, history, csv = fit_digits(bug, tmp_path / "ok", {}, stop_on="warning")
    assert not [r for r in caplog.records if r.name == "tfprobe"]
    assert probe.incidents.empty and int(model.optimizer.iterations.numpy()) == 46
    assert history.history["tfprobe_warnings"] == [0, 0] == list(csv["tfprobe_errors"])


@pytest.mark.parametrize("deviation", [{}, dict(bias={"hidden2": -10.0})], ids=["healthy", "dead_hidden2"])
def test_counts_are_in_every_epochs_logs_with_log_freq_longer_than_an_epoch(tmp_path, bug, deviation):
    """23 steps per epoch, a window every 30 steps: epochs 1 and 3 evaluate no window. The counts are in every
    epoch's logs all the same (0 until an incident is found), so History has one per epoch and CSVLogger,
    whose columns are fixed at the first epoch, has them; the dead layer's incident (confirmed at the third
    window, step 90) is counted from epoch 4 on."""
    _model, probe, history, csv = fit_digits(bug, tmp_path / "lf", deviation, epochs=4, log_freq=30, gradients=False)
    errors = [0, 0, 0, 1] if deviation else [0, 0, 0, 0]
    assert history.history["tfprobe_errors"] == errors == list(csv["tfprobe_errors"])
    assert history.history["tfprobe_warnings"] == [0, 0, 0, 0] == list(csv["tfprobe_warnings"])
    assert len(probe.incidents) == (1 if deviation else 0)
    # without alerts nor `stop_on` the probe adds nothing to the logs
    _model, _probe, history, csv = fit_digits(bug, tmp_path / "off", deviation, epochs=1, log_freq=30, alerts=False)
    assert not [k for k in history.history if k.startswith("tfprobe")] and "tfprobe_errors" not in csv.columns


def test_alerts_off_and_a_failing_evaluation_never_stop_fit(tmp_path, bug, caplog, monkeypatch):
    with caplog.at_level(logging.WARNING, logger="tfprobe"):
        fit_digits(bug, tmp_path / "quiet", dict(bias={"hidden2": -10.0}), epochs=1, alerts=False)
    assert not [r for r in caplog.records if r.name == "tfprobe"]

    from tfprobe.findings import live

    def broken(*_args):
        raise RuntimeError("boom")

    monkeypatch.setattr(live.LiveIncidents, "update", broken)
    with pytest.warns(RuntimeWarning, match="could not evaluate the incidents") as warned:
        model, *_ = fit_digits(bug, tmp_path / "broken", dict(bias={"hidden2": -10.0}), epochs=1)
    assert len([w for w in warned if "incidents" in str(w.message)]) == 1
    assert int(model.optimizer.iterations.numpy()) == 23


@pytest.mark.parametrize("kwargs, match", [(dict(stop_on="fatal"), "stop_on"), (dict(alerts="yes"), "alerts")])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tfprobe.LayerProbe(tmp_path, **kwargs)


# ------------------------------------------------------------------ tfprobe report


def test_report_prints_incidents_first_and_findings_with_all(tmp_path, bug, capsys):
    fit_digits(bug, tmp_path / "dying_relu", dict(bias={"hidden2": -10.0}), alerts=False)
    assert cli.main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Incidents: 1\n  ERROR   #1 dying_relu: root dead_layer at hidden2 (step 5)" in out
    assert "fix: hidden2 outputs zeros" in out and "--all lists them" in out and "dead_gradient  " not in out
    assert out.index("Incidents:") < out.index("Findings:")
    assert cli.main(["report", str(tmp_path), "--all"]) == 0
    out = capsys.readouterr().out
    # one run: finding lines do not repeat its name
    assert re.search(r"^  WARNING dead_gradient +hidden1 ", out, re.M) and max(map(len, out.splitlines())) <= 80
