"""Backend of the tfprobe TensorBoard plugin: routes through werkzeug's test client over real
event files (the Python data provider), plain query functions called directly, the loader,
and real `tensorboard` servers under both loaders for sampling."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse

import numpy as np
import pytest
from helpers import synthetic
from helpers.plugin import PREFIX, get_json, make_client, make_provider
from helpers.tensorboard import http_get, tensorboard_server
from tensorboard import context as tb_context
from tensorboard import errors
from tensorboard.plugins import base_plugin

from tensorboard_plugin_tfprobe import loader as loader_module
from tensorboard_plugin_tfprobe import queries
from tfprobe import metadata
from tfprobe.logs.writer import WindowWriter


class CountingProvider:
    """Wraps a data provider and records the tags of every read_scalars call."""

    def __init__(self, inner):
        self._inner = inner
        self.scalar_reads = []

    def read_scalars(self, ctx, **kw):
        self.scalar_reads.append(sorted(kw["run_tag_filter"].tags or []))
        return self._inner.read_scalars(ctx, **kw)

    def __getattr__(self, name):
        return getattr(self._inner, name)


@pytest.fixture(scope="module")
def provider(synthetic_logdir):
    return make_provider(synthetic_logdir)


@pytest.fixture(scope="module")
def source(provider):
    return queries.Source(provider, tb_context.RequestContext(), "")


@pytest.fixture(scope="module")
def client(provider):
    return make_client(provider)


# ---------------------------------------------------------------- listing


def test_runs_lists_only_runs_with_tfprobe_data(client):
    body = get_json(client, "runs")
    names = [r["name"] for r in body["runs"]]
    assert names == sorted([synthetic.RUN_TRAIN, synthetic.RUN_EVAL, synthetic.RUN_XSS])  # omitted: RUN_OTHER
    train = next(r for r in body["runs"] if r["name"] == synthetic.RUN_TRAIN)
    assert train == {
        "name": synthetic.RUN_TRAIN,
        "layers": len(synthetic.TRAIN_LAYERS),
        "max_step": synthetic.STEPS[-1],
        "warnings": [],
    }
    assert body["stats"] == list(metadata.STATS)
    assert body["default_stat"] == "zero_fraction"


def test_layers_in_model_order_with_metadata(client):
    body = get_json(client, "layers", run=[synthetic.RUN_TRAIN, synthetic.RUN_EVAL])
    train = body["runs"][synthetic.RUN_TRAIN]["layers"]
    assert [l["name"] for l in train] == [name for name, *_ in synthetic.TRAIN_LAYERS]
    conv = train[0]
    assert conv["elements"] == 8 * 8 * 4 and conv["histogram"] is True and conv["class"] == "Conv2D"
    assert conv["stats"] == list(metadata.ACTIVATION_STATS)
    pool = train[1]
    assert pool["kind"] == "pooling" and set(metadata.POOLING_STATS) <= set(pool["stats"])
    assert [l["name"] for l in body["runs"][synthetic.RUN_EVAL]["layers"]] == [
        n for n, *_ in synthetic.TRAIN_LAYERS[:3]
    ]


def test_plugins_listing_and_entry(client):
    listing = client.get("/data/plugins_listing").get_json()
    assert listing[metadata.PLUGIN_NAME]["enabled"] is True
    assert listing[metadata.PLUGIN_NAME]["loading_mechanism"] == {
        "type": "IFRAME",
        "module_path": f"{PREFIX}/static/index.js",
    }


# ---------------------------------------------------------------- overview


def test_overview_one_column_per_step_when_it_fits(client):
    body = get_json(client, "overview", run=synthetic.RUN_TRAIN, columns=100)
    assert body["stat"] == "zero_fraction" and body["steps"] == synthetic.STEPS
    assert [row["name"] for row in body["layers"]] == [n for n, *_ in synthetic.TRAIN_LAYERS]
    dead = next(r for r in body["layers"] if r["name"] == "dead_relu")
    assert dead["values"] == [1.0] * len(synthetic.STEPS)
    conv = body["layers"][0]["values"]
    expected = [synthetic.stats_for("conv2d", "activation", s)["zero_fraction"] for s in synthetic.STEPS]
    np.testing.assert_allclose(conv, expected, rtol=1e-3)
    assert body["min"] == 0.0 and body["max"] == 1.0


def test_overview_max_and_min_bin_consecutive_windows(client):
    # 20 windows into 5 columns of 4 windows (20 <= 5 * OVERSAMPLE: every window is read)
    nan = get_json(client, "overview", run=synthetic.RUN_TRAIN, stat="nan_count", columns=5, agg="max")
    assert nan["steps"] == [40, 80, 120, 160, 200] and nan["windows_read"] == 20
    nan_row = next(r for r in nan["layers"] if r["name"] == "nan_layer")
    assert nan_row["values"] == [0.0, 0.0, 12.0, 12.0, 12.0]
    mean = get_json(client, "overview", run=synthetic.RUN_TRAIN, stat="mean", columns=5, agg="max")
    nan_mean = next(r for r in mean["layers"] if r["name"] == "nan_layer")
    # max ignores NaN unless the whole column is NaN; the JSON carries "NaN" strings
    assert nan_mean["values"][0] == pytest.approx(0.1 + 0.01 * 40 / 200, rel=5e-3)
    assert nan_mean["values"][2] == pytest.approx(0.1 + 0.01 * 90 / 200, rel=5e-3)
    assert nan_mean["values"][3:] == ["NaN", "NaN"]
    low = get_json(client, "overview", run=synthetic.RUN_TRAIN, stat="std", columns=5, agg="min")
    assert low["layers"][0]["values"][0] == pytest.approx(1.0 + 0.5 * 10 / 200, rel=5e-3)


def test_overview_last_samples_windows_when_they_do_not_fit(client):
    # 20 windows, 5 columns: a uniform sample of 5 logged windows, newest included, one column each
    body = get_json(client, "overview", run=synthetic.RUN_TRAIN, stat="zero_fraction", columns=5)
    assert len(body["steps"]) == 5 and body["steps"][-1] == 200 and body["windows_read"] == 5
    assert set(body["steps"]) <= set(synthetic.STEPS)
    conv = body["layers"][0]["values"]
    expected = [synthetic.stats_for("conv2d", "activation", s)["zero_fraction"] for s in body["steps"]]
    np.testing.assert_allclose(conv, expected, rtol=2e-3)
    for row in body["layers"]:  # the same windows for every layer: no gaps
        assert None not in row["values"]


def test_overview_reads_only_the_chosen_stat(provider):
    counting = CountingProvider(provider)
    src = queries.Source(counting, tb_context.RequestContext(), "")
    queries.overview(src, synthetic.RUN_TRAIN, "std", columns=10)
    assert counting.scalar_reads == [sorted(metadata.tag_for(n, "std") for n, *_ in synthetic.TRAIN_LAYERS)]


@pytest.mark.parametrize("agg", ["last", "max"])
def test_overview_reads_a_large_run_a_few_tags_at_a_time(provider, monkeypatch, agg):
    """At most `READ_BUDGET` points a data-provider read: the same answer in one read per tag."""
    from tensorboard_plugin_tfprobe.queries import common

    whole = queries.overview(
        queries.Source(provider, tb_context.RequestContext(), ""), synthetic.RUN_TRAIN, "std", columns=10, agg=agg
    )
    monkeypatch.setattr(common, "READ_BUDGET", 30 if agg == "max" else 10)  # 10 columns x 4 (OVERSAMPLE) for max
    counting = CountingProvider(provider)
    body = queries.overview(
        queries.Source(counting, tb_context.RequestContext(), ""), synthetic.RUN_TRAIN, "std", columns=10, agg=agg
    )
    assert json.dumps(body) == json.dumps(whole) and len(body["layers"]) == len(synthetic.TRAIN_LAYERS)  # NaN too
    assert sorted(map(tuple, counting.scalar_reads)) == sorted(
        (metadata.tag_for(n, "std"),) for n, *_ in synthetic.TRAIN_LAYERS
    )


def test_overview_pooling_stat_only_has_pooling_rows(source):
    body = queries.overview(source, synthetic.RUN_TRAIN, "mass_retention", columns=5)
    assert [r["name"] for r in body["layers"]] == ["max_pooling2d"]


def test_overview_filter_and_hide_leave_layers_out_before_reading(provider):
    counting = CountingProvider(provider)
    src = queries.Source(counting, tb_context.RequestContext(), "")
    body = queries.overview(src, synthetic.RUN_TRAIN, "std", columns=10, filter="CONV|dense|relu", hide=["dense"])
    assert [r["name"] for r in body["layers"]] == ["conv2d", "backbone/conv1", "dead_relu"]
    assert body["total_layers"] == len(synthetic.TRAIN_LAYERS)
    assert counting.scalar_reads == [
        sorted(metadata.tag_for(n, "std") for n in ("conv2d", "backbone/conv1", "dead_relu"))
    ]
    assert [(r["category"], r["block"]) for r in body["layers"]] == [
        ("convolution", "model"),
        ("convolution", "backbone"),
        ("activation", "model"),
    ]
    nothing = queries.overview(src, synthetic.RUN_TRAIN, "std", columns=10, filter="^zzz$")
    assert nothing["layers"] == [] and nothing["steps"] == [] and nothing["total_layers"] == len(synthetic.TRAIN_LAYERS)


def test_overview_filter_params_through_the_route(client):
    query = urllib.parse.urlencode({"run": synthetic.RUN_TRAIN, "hide": ["pooling", "other"]}, doseq=True)
    body = client.get(f"{PREFIX}/overview?{query}").get_json()
    assert "max_pooling2d" not in [r["name"] for r in body["layers"]] and "split:1" not in [
        r["name"] for r in body["layers"]
    ]
    assert len(body["layers"]) == len(synthetic.TRAIN_LAYERS) - 2


def test_runs_serve_the_category_table_and_layers_their_arrangement(client):
    from tensorboard_plugin_tfprobe import layout

    table = get_json(client, "runs")["categories"]
    assert [c["name"] for c in table] == list(layout.CATEGORIES)
    assert {c["name"]: tuple(c["classes"]) for c in table}["normalization"] == layout.CATEGORY_CLASSES["normalization"]
    train = get_json(client, "layers", run=synthetic.RUN_TRAIN)["runs"][synthetic.RUN_TRAIN]["layers"]
    assert [l["category"] for l in train] == [
        "convolution",
        "pooling",
        "convolution",
        "other",
        "dense",
        "activation",
        "dense",
        "dense",
    ]
    assert [l["block"] for l in train] == ["model", "model", "backbone"] + ["model"] * 5
    assert {l["depth"] for l in train} == {None}  # these logs carry no `inputs`


def test_layers_graph_depth_from_inputs(tmp_path):
    graph = {"stem": [], "conv": ["stem"], "bn": ["conv"], "add": ["stem", "bn"], "head": ["add"]}
    infos = {}
    for i, (name, sources) in enumerate(graph.items()):
        infos[name] = dict(synthetic.info_for(i, name, "Add" if name == "add" else "Dense"), inputs=sources)
    synthetic.write_windows(tmp_path / "res", infos, ((s, {n: {"mean": 0.5} for n in graph}, {}) for s in (1, 2)))
    body = get_json(make_client(make_provider(tmp_path)), "layers", run="res")
    layers = body["runs"]["res"]["layers"]
    assert {l["name"]: l["depth"] for l in layers} == {"stem": 0, "conv": 1, "bn": 2, "add": 3, "head": 4}
    assert {l["name"]: l["inputs"] for l in layers} == graph
    assert next(l for l in layers if l["name"] == "add")["category"] == "operation"


# ---------------------------------------------------------------- layer detail


@pytest.mark.parametrize("layer", ["backbone/conv1", "split:1", "shared#1"])
def test_scalars_special_layer_names(client, layer):
    body = get_json(client, "scalars", run=[synthetic.RUN_TRAIN], layer=layer, stat=["mean", "std"])
    assert body["layer"] == layer and body["runs"] == [synthetic.RUN_TRAIN]
    points = body["series"]["std"][synthetic.RUN_TRAIN]
    assert [p[0] for p in points] == synthetic.STEPS
    assert points[-1][1] == pytest.approx(1.5)


def test_scalars_overlay_runs_and_downsample(client):
    body = get_json(
        client, "scalars", run=[synthetic.RUN_TRAIN, synthetic.RUN_EVAL], layer="conv2d", stat="std", points=5
    )
    series = body["series"]["std"]
    assert set(series) == {synthetic.RUN_TRAIN, synthetic.RUN_EVAL}
    assert len(series[synthetic.RUN_EVAL]) == 5 and series[synthetic.RUN_EVAL][-1] == [200, 3.0]
    # a layer missing from one of the selected runs: that run is left out
    body = get_json(client, "scalars", run=[synthetic.RUN_TRAIN, synthetic.RUN_EVAL], layer="dense", stat="mean")
    assert body["runs"] == [synthetic.RUN_TRAIN]


def test_xss_layer_name_round_trips_as_data(client):
    body = get_json(client, "scalars", run=synthetic.RUN_XSS, layer=synthetic.XSS_LAYER, stat="mean")
    assert body["layer"] == synthetic.XSS_LAYER
    assert [p[0] for p in body["series"]["mean"][synthetic.RUN_XSS]] == [1, 2, 3]


def test_histogram_buckets_by_steps(client):
    body = get_json(client, "histogram", run=synthetic.RUN_TRAIN, layer="conv2d", columns=1000)
    assert body["steps"] == synthetic.STEPS
    lo = body["first_bucket"]
    counts = np.array(body["counts"])
    assert counts.shape == (len(synthetic.STEPS), len(body["buckets"]))
    full = np.zeros((len(synthetic.STEPS), metadata.NUM_BUCKETS), dtype=int)
    full[:, lo : lo + counts.shape[1]] = counts
    np.testing.assert_array_equal(full[3], synthetic.hist_for(synthetic.STEPS[3]))
    assert body["buckets"][metadata.HIST_ZERO_BUCKET - lo] == [0.0, 0.0]


def test_histogram_absent_is_empty(client):
    body = get_json(client, "histogram", run=synthetic.RUN_TRAIN, layer="split:1")
    assert body["steps"] == [] and body["counts"] == []
    body = get_json(client, "histogram", run=synthetic.RUN_TRAIN, layer="conv2d", quantity="gradient")
    assert body["quantity"] == "gradient" and body["steps"] == [] and body["counts"] == []


def test_gradient_histogram_next_to_the_activation_one(tmp_path):
    infos = {name: synthetic.info_for(i, name) for i, name in enumerate(("h", "out"))}
    writer = WindowWriter(str(tmp_path / "run"))
    grad = np.zeros(metadata.NUM_BUCKETS, np.int64)
    for step in (5, 10):
        grad[metadata.HIST_ZERO_BUCKET - 12 : metadata.HIST_ZERO_BUCKET - 9] = [step, 2 * step, 3]
        writer.write_window(
            step,
            infos,
            {n: {"mean": 1.0, "grad_rms": 0.1} for n in infos},
            {n: synthetic.hist_for(step) for n in infos},
            grad_histograms={"h": grad},
        )
    writer.close()
    client = make_client(make_provider(tmp_path))
    layers = {l["name"]: l for l in get_json(client, "layers", run="run")["runs"]["run"]["layers"]}
    assert [(l["histogram"], l["grad_histogram"]) for l in layers.values()] == [(True, True), (True, False)]
    body = get_json(client, "histogram", run="run", layer="h", quantity="gradient")
    assert body["quantity"] == "gradient" and body["steps"] == [5, 10]
    assert body["first_bucket"] == metadata.HIST_ZERO_BUCKET - 12 and body["counts"] == [[5, 10, 3], [10, 20, 3]]
    assert body["buckets"] == [list(metadata.histogram_buckets()[metadata.HIST_ZERO_BUCKET - 12 + k]) for k in range(3)]
    activation = get_json(client, "histogram", run="run", layer="h")  # the default: unchanged
    assert (
        activation["quantity"] == "activation"
        and activation["counts"][1][0] == synthetic.hist_for(10)[activation["first_bucket"]]
    )
    assert get_json(client, "histogram", run="run", layer="out", quantity="gradient")["steps"] == []


# ---------------------------------------------------------------- pooling


def test_pooling_series(client):
    body = get_json(client, "pooling", run=synthetic.RUN_TRAIN)
    assert [l["name"] for l in body["layers"]] == ["max_pooling2d"]
    mass = body["layers"][0]["stats"]["mass_retention"]
    assert [p[0] for p in mass] == synthetic.STEPS and mass[-1][1] == pytest.approx(0.4)
    assert body["layers"][0]["stats"]["size_ratio"][0][1] == 0.25


def test_funnel_at_a_step(client):
    body = get_json(client, "funnel", run=synthetic.RUN_TRAIN, step=105)
    assert body["step"] == 100 and body["steps"] == synthetic.STEPS
    rows = {r["name"]: r for r in body["layers"]}
    assert [r["name"] for r in body["layers"]] == [n for n, *_ in synthetic.TRAIN_LAYERS]
    assert rows["conv2d"]["elements"] == 256 and rows["max_pooling2d"]["elements"] == 64
    assert rows["max_pooling2d"]["mass_retention"] == pytest.approx(0.45)
    assert rows["conv2d"]["cumulative_mass"] == 1.0
    assert rows["dense"]["cumulative_mass"] == pytest.approx(0.45)
    latest = get_json(client, "funnel", run=synthetic.RUN_TRAIN)
    assert latest["step"] == synthetic.STEPS[-1]


def test_funnel_follows_the_model_graph(tmp_path):
    """A pooling layer on a side branch does not reduce the mass kept on the main path (`inputs`)."""

    def info(order, name, kind="activation", inputs=()):
        return {**synthetic.info_for(order, name, kind=kind, shape=[None, 8]), "inputs": list(inputs)}

    infos = {
        "stem": info(0, "stem"),
        "side_pool": info(1, "side_pool", "pooling", ["stem"]),
        "main": info(2, "main", inputs=["stem"]),
        "main_pool": info(3, "main_pool", "pooling", ["main"]),
        "merge": info(4, "merge", inputs=["main_pool", "side_pool"]),
    }
    stats = {n: {"mean": 1.0} for n in infos}
    stats["side_pool"].update(size_ratio=0.25, mass_retention=0.1, energy_retention=0.1)
    stats["main_pool"].update(size_ratio=0.25, mass_retention=0.5, energy_retention=0.5)
    synthetic.write_windows(tmp_path / "branched", infos, [(1, stats, {})])
    body = get_json(make_client(make_provider(tmp_path)), "funnel", run="branched")
    kept = {r["name"]: r["cumulative_mass"] for r in body["layers"]}
    assert kept == {"stem": 1.0, "side_pool": 0.1, "main": 1.0, "main_pool": 0.5, "merge": 0.5}


# ---------------------------------------------------------------- health


def test_health_uses_diagnose(client):
    body = get_json(client, "health", run=[synthetic.RUN_TRAIN, synthetic.RUN_EVAL])
    kinds = [(f["layer"], f["kind"], f["severity"], f["first_step"]) for f in body["findings"]]
    assert ("nan_layer", "nan_inf", "error", 100) in kinds
    assert ("dead_relu", "dead_layer", "error", 10) in kinds
    assert ("dense", "saturation") not in [k[:2] for k in kinds]  # the output softmax: confident, not saturated
    severities = [f["severity"] for f in body["findings"]]
    assert severities == sorted(severities, key=["error", "warning", "info"].index)
    stricter = get_json(client, "health", run=synthetic.RUN_TRAIN, dead_units_fraction=0.05)
    assert "dead_units" in [f["kind"] for f in stricter["findings"]]
    assert "dead_units" not in [f["kind"] for f in body["findings"]]


def _health_stats(step, name):
    """Every kind of value the statistics frame must keep apart (as `diagnose` pivots the long frame): NaN and
    Inf, a statistic missing at some steps, a NaN `update_ratio` with and without a broken weight norm, a
    statistic that is NaN everywhere, a window with no value; a dead layer and an exploding one."""
    s = {
        "mean": 0.1 * step,
        "std": (1e4 if name == "boom" and step > 5 else 1.0) + step,
        "min": -1.0,
        "zero_fraction": 0.995 if name == "dead" and step > 6 else 0.1,
        "near_zero_fraction": 0.2,
        "nan_count": 3.0 if (name == "b" and step == 4) else 0.0,
        "inf_count": np.inf if step == 5 else 0.0,
        "saturation_fraction": np.nan,
        "dead_unit_fraction": 0.0,
    }
    if name in ("a", "b", "boom"):  # NaN update ratios: `a` no optimizer updated, `b`'s weights break, `boom`'s
        s.update(
            {
                "weight_norm": np.nan if name == "b" and step >= 7 else 2.0,  # update applied a gradient
                "update_ratio": np.nan
                if (step in (3, 7, 8) and name != "boom") or (name, step) == ("boom", 4)
                else 1e-3,
                "weight_grad_norm": 0.0 if name == "a" else 0.5,
                "grad_rms": 1e-2 * step,
            }
        )
    if step % 3 == 0:
        s.pop("std")
    if name == "b" and step == 2:
        s = {k: np.nan for k in ("mean", "std", "zero_fraction", "nan_count", "inf_count")}
    return s


def test_health_reads_what_diagnose_reads_a_few_series_at_a_time(tmp_path):
    """`/health` builds what `diagnose` pivots out of `read_logdir`'s long frame (the same frame, the same
    findings), reading at most `budget` points a data-provider read (one series a read when it is small)."""
    import pandas as pd

    import tfprobe
    from tfprobe import findings

    names = ("a", "b", "dead", "boom")
    for run, steps in (("r1", range(1, 13)), ("r0", range(2, 30, 3))):
        infos = {
            n: {
                **synthetic.info_for(i, n, "ReLU" if n == "dead" else "Dense", shape=[None, 8]),
                "inputs": [names[i - 1]] if i else [],
            }
            for i, n in enumerate(names)
        }
        synthetic.write_windows(
            tmp_path / run, infos, ((s, {n: _health_stats(s, n) for n in names}, {}) for s in steps)
        )
    long, layers = tfprobe.read_logdir(tmp_path, progress=False), tfprobe.read_layers(tmp_path, progress=False)
    expected = findings.context(long, layers).wide.reset_index(drop=True)
    flagged = expected.loc[expected["nonfinite_update_ratio"] > 0, "layer"].tolist()
    assert flagged == ["b"] * 4 + ["boom"]  # `b`: its weights break at step 7; `boom`: a gradient was applied
    provider = CountingProvider(make_provider(tmp_path))
    src = queries.Source(provider, tb_context.RequestContext(), "")
    found = queries.list_series(src, ["r0", "r1"])
    tags = {
        run: sum(len([s for s in findings.REQUIRED_STATS if s in info["stats"]]) for info in series.values())
        for run, series in found.items()
    }
    for budget in (1, 700, 10**6):  # one tag a read, 7 tags a read, a run a read
        provider.scalar_reads.clear()
        frame, layer_frame = queries.diagnose_frames(src, found, points=100, budget=budget)
        per_read = max(1, budget // 100)
        assert len(provider.scalar_reads) == sum(-(-n // per_read) for n in tags.values()), budget
        assert max(map(len, provider.scalar_reads)) == min(per_read, max(tags.values())), budget
        pd.testing.assert_frame_equal(findings.context(frame, layer_frame).wide.reset_index(drop=True), expected)
    found_by_route = get_json(make_client(provider), "health", run=["r0", "r1"], points=100)["findings"]
    oracle = tfprobe.diagnose(long, layers)
    assert len(oracle) and {"dead_layer", "nan_inf", "nan_weights"} <= set(oracle["kind"])
    assert found_by_route == json.loads(oracle.to_json(orient="records"))


def _other_valid_value(name, default):
    """A value of threshold `name` other than its default that `tfprobe.findings.thresholds` accepts."""
    from tfprobe import findings

    for value in (default * 0.5, default * 2, default + 1):
        try:
            if findings.thresholds(**{name: value})[name] != default:
                return value
        except ValueError:
            pass
    raise AssertionError(f"no valid value other than the default found for threshold {name!r}")


def test_health_accepts_every_threshold_of_diagnose(client):
    """Every threshold `diagnose` accepts (its own table, `findings.thresholds()`) is a query argument of
    `/health` and `/incidents`: a valid value is applied (and echoed), a bad one is a 400 naming it."""
    from tfprobe import findings

    defaults = findings.thresholds()
    assert len(defaults) >= 11 and get_json(client, "health", run=synthetic.RUN_TRAIN)["thresholds"] == defaults
    for name, default in defaults.items():
        value = _other_valid_value(name, default)
        body = get_json(client, "health", run=synthetic.RUN_TRAIN, **{name: value})
        assert body["thresholds"] == findings.thresholds(**{name: value}), name
        for route in ("health", "incidents"):
            r = client.get(f"{PREFIX}/{route}?{urllib.parse.urlencode({'run': synthetic.RUN_TRAIN, name: 'x'})}")
            assert r.status_code == 400 and f"`{name}`" in r.get_data(as_text=True), (route, name)
    r = client.get(f"{PREFIX}/health?run={synthetic.RUN_TRAIN}&min_update_ratio=0.5&max_update_ratio=0.2")
    assert r.status_code == 400 and "min_update_ratio" in r.get_data(as_text=True)  # checked across thresholds


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "route, params, code, needle",
    [
        ("overview", {"run": "nope"}, 404, "'nope'"),
        ("overview", {}, 400, "run"),
        ("overview", {"run": "train", "stat": "bogus"}, 400, "'bogus'"),
        ("overview", {"run": "eval", "stat": "saturation_fraction", "columns": 5}, 200, None),
        ("overview", {"run": "eval", "stat": "mass_retention", "columns": "x"}, 400, "columns"),
        ("overview", {"run": "xss", "stat": "mass_retention"}, 404, "'mass_retention'"),
        ("overview", {"run": "train", "agg": "median"}, 400, "'median'"),
        ("layers", {"run": "ghost"}, 404, "'ghost'"),
        ("layers", {}, 400, "run"),
        ("scalars", {"run": "train", "layer": "zzz", "stat": "mean"}, 404, "'zzz'"),
        ("scalars", {"run": "train", "layer": "conv2d", "stat": "nope"}, 400, "'nope'"),
        ("scalars", {"run": "train", "layer": "conv2d"}, 400, "stat"),
        ("scalars", {"run": "ghost", "layer": "conv2d", "stat": "mean"}, 404, "'ghost'"),
        ("scalars", {"run": "train", "layer": "conv2d", "stat": "mean", "points": 0}, 400, "points"),
        ("histogram", {"run": "train", "layer": "missing<b>"}, 404, "'missing<b>'"),
        ("histogram", {"run": "train", "layer": "conv2d", "quantity": "grad"}, 400, "quantity='grad'"),
        ("pooling", {"run": "ghost"}, 404, "'ghost'"),
        ("funnel", {"run": "train", "step": 5}, 404, "step 5"),
        ("funnel", {"run": "train", "step": "abc"}, 400, "step"),
        ("health", {"run": "ghost"}, 404, "'ghost'"),
        ("health", {"run": "train", "std_ratio": "0.5"}, 400, "std_ratio"),
        ("overview", {"run": "train", "filter": "conv("}, 400, "filter='conv('"),
        ("overview", {"run": "train", "hide": "norms"}, 400, "hide='norms'"),
    ],
)
def test_errors_name_the_culprit(client, route, params, code, needle):
    r = client.get(f"{PREFIX}/{route}?{urllib.parse.urlencode(params)}")
    assert r.status_code == code, r.get_data(as_text=True)
    if needle:
        assert needle in r.get_data(as_text=True)
        assert r.headers["Content-Type"].startswith("text/plain")  # never HTML


# A valid request per route (200); the table below breaks one argument at a time.
_VALID = {
    "layers": {"run": "train"},
    "overview": {"run": "train"},
    "scalars": {"run": "train", "layer": "conv2d", "stat": "mean"},
    "histogram": {"run": "train", "layer": "conv2d"},
    "pooling": {"run": "train"},
    "funnel": {"run": "train"},
    "health": {"run": "train"},
}
_LAYER_ROUTES = ("scalars", "histogram")


def _argument_cases():
    for route in _VALID:
        yield route, "run", None, 400, "`run`"
        yield route, "run", "", 400, "`run`"
        yield route, "run", "ghost", 404, "'ghost'"
        if route in _LAYER_ROUTES:
            yield route, "layer", None, 400, "`layer`"
            yield route, "layer", "", 400, "`layer`"
            yield route, "layer", "zzz", 404, "'zzz'"


@pytest.mark.parametrize("route, arg, value, code, needle", list(_argument_cases()))
def test_every_route_answers_400_for_missing_and_404_for_unknown(client, route, arg, value, code, needle):
    assert client.get(f"{PREFIX}/{route}?{urllib.parse.urlencode(_VALID[route])}").status_code == 200
    params = dict(_VALID[route])
    if value is None:
        del params[arg]
    else:
        params[arg] = value
    r = client.get(f"{PREFIX}/{route}?{urllib.parse.urlencode(params)}")
    text = r.get_data(as_text=True)
    assert r.status_code == code, text
    assert needle in text and r.headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize("route", ["layers", "scalars", "health"])
def test_an_empty_run_among_repeated_runs_is_400(client, route):
    params = dict(_VALID[route], run=["train", ""])
    r = client.get(f"{PREFIX}/{route}?{urllib.parse.urlencode(params, doseq=True)}")
    assert r.status_code == 400 and "`run`" in r.get_data(as_text=True)


def test_query_functions_raise_tensorboard_errors(source):
    with pytest.raises(errors.NotFoundError, match="'ghost'"):
        queries.overview(source, "ghost")
    with pytest.raises(errors.InvalidArgumentError, match="'bogus'"):
        queries.check_stat("bogus")


# ---------------------------------------------------------------- static route


@pytest.mark.parametrize(
    "path, code",
    [
        ("static/index.js", 200),
        ("static/style.css", 200),
        ("static/ipc.js", 200),
        ("static/views/overview.js", 200),
        ("static/views/../state.js", 200),
        ("static/views/../../plugin.py", 404),
        ("static/", 404),
        ("static/nonexistent.js", 404),
        ("static/../plugin.py", 404),
        ("static/..%2fplugin.py", 404),
        ("static/%2e%2e/plugin.py", 404),
        ("static/../../tfprobe/metadata.py", 404),
        ("static//etc/passwd", 404),
        ("static/..%5cplugin.py", 404),
        ("static/%2fetc%2fpasswd", 404),
    ],
)
def test_static_route_traversal(client, path, code):
    r = client.get(f"{PREFIX}/{path}")
    assert r.status_code == code
    if code == 200:
        assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_static_content_types(client):
    assert client.get(f"{PREFIX}/static/index.js").headers["Content-Type"].startswith("text/javascript")
    assert client.get(f"{PREFIX}/static/style.css").headers["Content-Type"].startswith("text/css")
    assert client.get(f"{PREFIX}/static/views/layer.js").headers["Content-Type"].startswith("text/javascript")


def test_experiment_and_path_prefix(provider):
    c = make_client(provider)
    r = c.get(f"/experiment/abc{PREFIX}/runs")
    assert r.status_code == 200 and r.get_json()["runs"]
    c = make_client(provider, path_prefix="/tb")
    assert c.get(f"/tb{PREFIX}/overview?run={synthetic.RUN_TRAIN}").status_code == 200
    assert c.get(f"/tb{PREFIX}/static/index.js").status_code == 200


# ---------------------------------------------------------------- plain functions


def test_column_steps_and_bin_series():
    steps = np.arange(1, 101)
    cols = queries.column_steps(steps, 10)
    assert cols.tolist() == list(range(10, 101, 10))
    values = np.arange(100, dtype=float)
    assert queries.bin_series(steps, values, cols, "last")[0].tolist() == list(np.arange(9, 100, 10.0))
    assert queries.bin_series(steps, values, cols, "min")[0].tolist() == list(np.arange(0, 100, 10.0))
    # a series that misses some columns
    sparse, present = queries.bin_series([15, 95], [1.0, 2.0], cols, "max")
    assert np.isnan(sparse[0]) and sparse[1] == 1.0 and sparse[9] == 2.0 and np.isnan(sparse[5])
    assert present.tolist() == [False, True] + [False] * 7 + [True]
    # a logged NaN is present; max ignores it next to a finite value
    values, present = queries.bin_series([1, 2, 3], [np.nan, 1.0, np.nan], [2, 3], "max")
    assert values[0] == 1.0 and np.isnan(values[1]) and present.all()


def _column_pairs():
    """(windows, columns) pairs: every pair up to 130, the frontend's 600-column cap, and random ones."""
    rng = np.random.default_rng(1)
    pairs = [(n, c) for n in range(1, 131) for c in range(1, 131)]
    pairs += [(620, 600), (601, 600), (1199, 600), (2400, 600), (10_000, queries.MAX_COLUMNS)]
    pairs += [(int(n), int(c)) for n, c in zip(rng.integers(1, 20_000, 300), rng.integers(1, queries.MAX_COLUMNS, 300))]
    return pairs


def test_column_binning_properties_over_many_sizes():
    rng = np.random.default_rng(2)
    for n, c in _column_pairs():
        steps = np.cumsum(rng.integers(1, 5, n))  # logged steps with uneven gaps
        cols = queries.column_steps(steps, c)
        assert len(cols) == min(n, c), (n, c)
        assert cols[-1] == steps[-1], (n, c)  # the last bin ends at the newest window
        assert np.isin(cols, steps).all() and (np.diff(cols) > 0).all(), (n, c)
        ends = np.searchsorted(steps, cols, side="right")  # exclusive end index of each bin
        sizes = np.diff(np.concatenate([[0], ends]))
        # contiguous, non-empty bins that hold every window exactly once, of (nearly) equal size
        assert sizes.sum() == n and sizes.min() >= 1 and sizes.max() - sizes.min() <= 1, (n, c)
        index = np.arange(n, dtype=float)
        for agg, expected in (("max", ends - 1), ("min", ends - sizes), ("last", ends - 1)):
            values, present = queries.bin_series(steps, index, cols, agg)
            assert present.all() and values.tolist() == expected.tolist(), (n, c, agg)


@pytest.mark.parametrize("windows, columns", [(111, 50), (620, 600)])
@pytest.mark.parametrize("agg", ["max", "min"])
def test_overview_max_min_at_awkward_window_counts(tmp_path, windows, columns, agg):
    writer = WindowWriter(str(tmp_path / "run"))
    infos = {"a": {"series": "a", "layer": "a", "class": "Dense", "order": 0}}
    for step in range(1, windows + 1):
        writer.write_window(step, infos, {"a": {"zero_fraction": step / windows}}, {})
    writer.close()
    client = make_client(make_provider(tmp_path))
    body = get_json(client, "overview", run="run", columns=columns, agg=agg)
    assert len(body["steps"]) == columns and body["steps"][-1] == windows and body["windows_read"] == windows
    values = body["layers"][0]["values"]
    # the last column holds windows steps[-2] + 1 .. windows (value = step / windows)
    expected = 1.0 if agg == "max" else (body["steps"][-2] + 1) / windows
    assert values[-1] == pytest.approx(expected, rel=1e-3)


def test_round_sig_keeps_short_json():
    out = queries.round_sig([0.30000001192092896, 123456.7, -1.234567e-7, 0.0, np.nan, np.inf])
    assert json.dumps(out[:4].tolist()) == "[0.3, 123500.0, -1.235e-07, 0.0]"
    assert np.isnan(out[4]) and np.isinf(out[5])


def test_elements_per_example():
    assert queries.elements_per_example([None, 30, 30, 32]) == 28800
    assert queries.elements_per_example([None, None, 8]) is None
    assert queries.elements_per_example(None) is None


def test_overview_scale(tmp_path):
    """100 layers x 1200 windows: overview binned server-side and small.

    Timing at full scale (500 layers x 10,000 windows, Rust data server) is measured
    by benchmarks/dashboard.py; the Python provider used here converts every point
    before downsampling and is much slower."""
    writer = WindowWriter(str(tmp_path / "big"))
    infos = {
        f"layer_{i:03d}": {"series": f"layer_{i:03d}", "layer": f"layer_{i:03d}", "class": "Dense", "order": i}
        for i in range(100)
    }
    rng = np.random.default_rng(0)
    for step in range(1, 1201):
        vals = rng.random(100)
        writer.write_window(step, infos, {n: {"zero_fraction": float(v)} for n, v in zip(infos, vals)}, {})
    writer.close()
    client = make_client(make_provider(tmp_path))
    r = client.get(f"{PREFIX}/overview?run=big&columns=250")
    body = r.get_json()
    assert len(body["layers"]) == 100 and len(body["steps"]) == 250 and body["steps"][-1] == 1200
    assert body["windows_read"] == 250
    maxed = client.get(f"{PREFIX}/overview?run=big&columns=250&agg=max").get_json()
    assert len(maxed["steps"]) == 250 and maxed["windows_read"] == 250 * queries.OVERSAMPLE
    assert len(r.get_data()) < 1_000_000
    # filters applied on the server: only the kept layers are read and sent
    counting = CountingProvider(make_provider(tmp_path))
    src = queries.Source(counting, tb_context.RequestContext(), "")
    kept = queries.overview(src, "big", columns=250, filter="layer_0[0-4]", hide=["normalization"])
    assert [row["name"] for row in kept["layers"]] == [f"layer_{i:03d}" for i in range(50)]
    assert len(counting.scalar_reads[-1]) == 50 and kept["total_layers"] == 100
    assert len(json.dumps(kept)) < len(r.get_data()) * 0.6


def test_plugin_doctests_are_collected():
    """Every plugin module with a doctest lies under a pytest testpath (they run with --doctest-modules)."""
    import configparser
    import os

    from tensorboard_plugin_tfprobe import plugin as plugin_module

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(repo, "setup.cfg"))
    testpaths = [os.path.join(repo, p) for p in cfg["tool:pytest"]["testpaths"].split()]
    package = os.path.dirname(os.path.abspath(plugin_module.__file__))
    with_doctests = [
        os.path.join(d, f)
        for d, _, files in os.walk(package)
        for f in sorted(files)
        if f.endswith(".py") and ">>> " in open(os.path.join(d, f)).read()
    ]
    assert len(with_doctests) >= 3  # plugin.py, queries/common.py, queries/overview.py, ...
    for path in with_doctests:
        assert any(os.path.commonpath([path, t]) == t for t in testpaths), (path, testpaths)


# ---------------------------------------------------------------- loader


class _Flags:
    def __init__(self, samples):
        self.samples_per_plugin = samples


def test_fix_flags_defaults_and_user_values_win():
    flags = _Flags({})
    loader_module.TfprobeLoader().fix_flags(flags)
    hist = loader_module.HIST_DEFAULT_SAMPLES
    assert flags.samples_per_plugin == {
        metadata.PLUGIN_NAME: 0,
        metadata.HIST_PLUGIN_NAME: hist,
        metadata.GRAD_HIST_PLUGIN_NAME: hist,
        metadata.REPR_PLUGIN_NAME: 0,
        metadata.CKA_PLUGIN_NAME: 0,
    }
    flags = _Flags({metadata.PLUGIN_NAME: 50, "scalars": 7})
    loader_module.TfprobeLoader().fix_flags(flags)
    assert flags.samples_per_plugin[metadata.PLUGIN_NAME] == 50 and flags.samples_per_plugin["scalars"] == 7


def test_broken_parts_never_raise(monkeypatch, caplog):
    loader = loader_module.TfprobeLoader()
    loader.fix_flags(object())  # no samples_per_plugin attribute: logged, not raised
    monkeypatch.setitem(sys.modules, "tensorboard_plugin_tfprobe.plugin", None)  # import fails
    assert loader.load(base_plugin.TBContext()) is None
    assert "failed to load" in caplog.text


def test_entry_point_module_is_import_light():
    code = (
        "import sys, tensorboard_plugin_tfprobe.loader as l; "
        "bad = [m for m in ('tensorflow', 'pandas', 'numpy', 'keras') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_entry_point_is_registered():
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="tensorboard_plugins") if ep.value.startswith("tensorboard_plugin_tfprobe")]
    assert len(eps) == 1 and eps[0].load() is loader_module.TfprobeLoader


# ---------------------------------------------------------------- real tensorboard, both loaders


@pytest.fixture(scope="module")
def long_run_logdir(tmp_path_factory):
    """10,000 windows of two series, more than either loader keeps by default."""
    root = tmp_path_factory.mktemp("long")
    writer = WindowWriter(str(root / "long"))
    infos = {n: {"series": n, "layer": n, "class": "Dense", "order": i} for i, n in enumerate(("a", "b"))}
    for step in range(1, 10_001):
        writer.write_window(step, infos, {"a": {"mean": step * 0.5}, "b": {"mean": 1.0}}, {})
    writer.close()
    return root


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--load_fast=true"], 10_000),
        (["--load_fast=false"], 10_000),
        (["--load_fast=true", f"--samples_per_plugin={metadata.PLUGIN_NAME}=300"], 300),
    ],
    ids=["fast", "python", "user-flag-wins"],
)
def test_every_point_reaches_the_plugin(long_run_logdir, args, expected):
    route = f"{PREFIX}/scalars?run=long&layer=a&stat=mean&points=10000"
    with tensorboard_server(long_run_logdir, *args) as tb:
        body = tb.wait_until(lambda runs: any(r["max_step"] == 10_000 for r in runs["runs"]))
        assert body["runs"][0]["name"] == "long"
        # ingestion may still be catching up: poll until the count stops changing
        last = tb.wait_until(lambda b: b["series"]["mean"]["long"][-1][0] == 10_000, route=route)
        time.sleep(1.5)
        final = json.loads(http_get(tb.base + route)[1])
        points = final["series"]["mean"]["long"]
        assert len(points) == expected and points[-1] == [10_000, 5000.0]
        assert len(last["series"]["mean"]["long"]) <= expected
