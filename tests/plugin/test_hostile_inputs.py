"""Hostile input to the newer surfaces (issue 24): query strings no route may answer 500 to or take a second
over, foreign values under every plugin name tfprobe writes, restarts and concurrent writers, mistakable
reader arguments, remote and odd log dirs, and the records TensorBoard keeps although their checksum fails.

Readers skip a bad value with one warning naming file, tag and step; routes leave it out (logged once)."""

from __future__ import annotations

import json
import os
import struct
import time
import urllib.error
import urllib.parse
import warnings

import numpy as np
import pytest
from helpers.tensorboard import http_get, tensorboard_server
from tensorboard import context as tb_context
from tensorboard.backend import application
from tensorboard.backend.event_processing import data_provider as mdp
from tensorboard.backend.event_processing import plugin_event_multiplexer as pem
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins import base_plugin
from werkzeug.test import Client

import tfprobe
from tensorboard_plugin_tfprobe import queries
from tensorboard_plugin_tfprobe.plugin import TfprobePlugin
from tfprobe import cli, metadata
from tfprobe.logs import events
from tfprobe.logs.writer import WindowWriter

PREFIX = f"/data/plugin/{metadata.PLUGIN_NAME}"
SLOW_NAME = "a" * 24 + "_1"  # `(a+)+$` backtracks exponentially on it in Python's `re`
KERAS_NAME = "block_13_expand_relu_conv_pad_depthwise_bn_x"  # 44 characters: `(\w+)+!` never returns in `re`
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


def _tensor(dtype, shape, **values):
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape]
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims), **values)


def _value(tag, plugin, tensor, content=b"", data_class=summary_pb2.DATA_CLASS_TENSOR):
    md = summary_pb2.SummaryMetadata(data_class=data_class)
    md.plugin_data.plugin_name = plugin
    md.plugin_data.content = content
    return summary_pb2.Summary.Value(tag=tag, metadata=md, tensor=tensor)


def write_events(run_dir, steps_values, suffix=".extra"):
    """One event per `(step, [Summary.Value])`, in a file of its own; returns its path."""
    w = events.EventFileWriter(str(run_dir), suffix=suffix)
    for step, values in steps_values:
        ev = event_pb2.Event(step=step, wall_time=time.time())
        ev.summary.value.extend(values)
        w.write(ev)
    w.close()
    return w.path


def write_windows(run_dir, names, steps, value=0.25, hist=True):
    w = WindowWriter(str(run_dir))
    counts = np.zeros(metadata.NUM_BUCKETS, np.int64)
    counts[metadata.HIST_ZERO_BUCKET] = 5
    infos = {n: {"series": n, "layer": n, "class": "Dense", "order": i} for i, n in enumerate(names)}
    for step in steps:
        w.write_window(
            step,
            infos,
            {n: {"mean": value + step, "zero_fraction": 0.5} for n in names},
            {n: counts for n in names} if hist else {},
        )
    w.close()
    return w.path


def cka_value(names, tensor):
    content = json.dumps({"v": 1, "layers": names, "reference_size": 4}).encode()
    return _value(metadata.CKA_TAG, metadata.CKA_PLUGIN_NAME, tensor, content)


def good_cka(names, fill):
    n = len(names)
    return cka_value(names, _tensor(types_pb2.DT_FLOAT, [n, n], float_val=[fill] * (n * n)))


def repr_value(name, stat, x):
    content = json.dumps({"v": 1, "series": name, "layer": name, "class": "Dense", "order": 0}).encode()
    return _value(
        metadata.tag_for(name, stat),
        metadata.REPR_PLUGIN_NAME,
        _tensor(types_pb2.DT_FLOAT, [], float_val=[x]),
        content,
        summary_pb2.DATA_CLASS_SCALAR,
    )


def image_value(tag, strings):
    md_content = b""  # the images plugin's content is optional
    return _value(
        tag,
        "images",
        _tensor(types_pb2.DT_STRING, [len(strings)], string_val=strings),
        md_content,
        summary_pb2.DATA_CLASS_BLOB_SEQUENCE,
    )


def make_provider(logdir):
    guidance = {
        name: 0
        for name in (
            metadata.PLUGIN_NAME,
            metadata.HIST_PLUGIN_NAME,
            metadata.GRAD_HIST_PLUGIN_NAME,
            metadata.REPR_PLUGIN_NAME,
            metadata.CKA_PLUGIN_NAME,
            "images",
            "scalars",
        )
    }
    mux = pem.EventMultiplexer(tensor_size_guidance=guidance)
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    return mdp.MultiplexerDataProvider(mux, str(logdir))


def make_client(logdir):
    provider = make_provider(logdir)
    ctx = base_plugin.TBContext(logdir=str(logdir), data_provider=provider, sampling_hints={})
    return Client(application.TensorBoardWSGI([TfprobePlugin(ctx)], data_provider=provider))


def source(logdir):
    return queries.Source(make_provider(logdir), tb_context.RequestContext(), "", str(logdir))


def caught_warnings(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        result = fn(*args, **kwargs)
    return result, [str(x.message) for x in w if issubclass(x.category, RuntimeWarning)]


# ---------------------------------------------------------------- every route, hostile query strings


@pytest.fixture(scope="module")
def hostile_logdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile_routes")
    write_windows(d / "run", ["dense", SLOW_NAME, KERAS_NAME], [1, 2, 3])
    write_events(
        d / "run",
        [
            (
                2,
                [
                    good_cka(["dense"], 1.0),
                    repr_value("dense", "effective_rank", 2.0),
                    image_value("looks/example_00/input", [b"1", b"1", PNG]),
                ],
            )
        ],
        ".tfprobe-reference",
    )
    return d


@pytest.fixture(scope="module")
def hostile_client(hostile_logdir):
    return make_client(hostile_logdir)


HOSTILE_STRINGS = [
    "",
    " ",
    "0",
    "-1",
    "-" + "9" * 30,
    "9" * 5000,
    "1e9999",
    "nan",
    "inf",
    "0x10",
    "1.5",
    "\x00",
    "%",
    "\ud800",
    "é" * 3000,
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "a" * 100000,
    "[",
    "(",
    "{",
    "\\",
    r"(\w+)+!",
    "(a+)+$",
    "a{99999999999}",
    "(?P<x>a)(?P=x)",
    "(a)\\1",
    "((((((((((a*)*)*)*)*)*)*)*)*)*)*$",
    "looks/example_" + "9" * 5000 + "/input",
    "looks/example_00/input",
    "looks/example_²/input",
    "tfprobe/dense/mean",
    "run",
    "dense",
    "mean",
    "activation",
    "gradient",
    "max",
]
ROUTES = {  # route -> the parameters it reads (each is given every hostile value in turn)
    "runs": [],
    "layers": ["run"],
    "overview": ["run", "stat", "columns", "agg", "filter", "hide"],
    "scalars": ["run", "layer", "stat", "points"],
    "histogram": ["run", "layer", "columns", "quantity"],
    "pooling": ["run", "points"],
    "funnel": ["run", "step"],
    "representations": ["run"],
    "health": [
        "run",
        "points",
        "dead_layer_fraction",
        "dead_units_fraction",
        "saturation_fraction",
        "std_ratio",
        "min_std",
    ],
    "looks": ["run"],
    "looks_image": ["run", "tag", "step"],
}
BASE = {"run": "run", "layer": "dense", "stat": "mean", "tag": "looks/example_00/input"}


def _cases():
    for route, params in ROUTES.items():
        for param in params or [None]:
            yield route, param


@pytest.mark.parametrize("route, param", list(_cases()))
def test_no_route_answers_500_or_takes_a_second_on_any_query_string(hostile_client, route, param):
    values = HOSTILE_STRINGS if param else [None]
    slowest, statuses = 0.0, set()
    for value in values:
        args = {k: v for k, v in BASE.items() if k in ROUTES[route]}
        if param:
            args[param] = value
        query = urllib.parse.urlencode(args, doseq=True, errors="surrogatepass")
        start = time.perf_counter()
        r = hostile_client.get(f"{PREFIX}/{route}?{query}")
        elapsed = time.perf_counter() - start
        slowest = max(slowest, elapsed)
        assert r.status_code in (200, 400, 404), (
            route,
            param,
            value[:80] if value else value,
            r.status_code,
            r.get_data(as_text=True)[:300],
        )
        assert elapsed < 1.0, (route, param, value[:80] if value else value, elapsed)
        statuses.add(r.status_code)
    assert 500 not in statuses


@pytest.mark.parametrize("pattern, name", [("(a+)+$", SLOW_NAME), (r"(\w+)+!", KERAS_NAME)])
def test_a_backtracking_filter_answers_at_once(hostile_client, pattern, name):
    start = time.perf_counter()
    r = hostile_client.get(
        f"{PREFIX}/overview?" + urllib.parse.urlencode({"run": "run", "stat": "mean", "filter": pattern})
    )
    assert time.perf_counter() - start < 1.0
    assert r.status_code == 200
    names = [row["name"] for row in r.get_json()["layers"]]
    assert names == []  # neither matches (which is what makes a backtracking engine try every split)
    r = hostile_client.get(
        f"{PREFIX}/overview?" + urllib.parse.urlencode({"run": "run", "stat": "mean", "filter": "(a+)+_1$"})
    )
    assert [row["name"] for row in r.get_json()["layers"]] == [SLOW_NAME]


def test_filter_bounds_and_syntax_are_400_naming_the_argument(hostile_client):
    too_long = hostile_client.get(f"{PREFIX}/overview?run=run&stat=mean&filter=" + "a" * 300)
    assert too_long.status_code == 400 and "`filter` must be at most" in too_long.get_data(as_text=True)
    backref = hostile_client.get(f"{PREFIX}/overview?run=run&stat=mean&filter=" + urllib.parse.quote("(a)\\1"))
    assert backref.status_code == 400 and "RE2" in backref.get_data(as_text=True)
    digits = hostile_client.get(f"{PREFIX}/overview?run=run&stat=mean&columns=" + "9" * 5000)
    assert digits.status_code == 400 and "`columns` must be an integer" in digits.get_data(as_text=True)
    ok = hostile_client.get(f"{PREFIX}/overview?run=run&stat=mean&filter=^DENSE$")
    assert [row["name"] for row in ok.get_json()["layers"]] == ["dense"]  # still a case-insensitive regex


# ---------------------------------------------------------------- foreign values per plugin name

THREE_BYTES = _tensor(types_pb2.DT_FLOAT, [], tensor_content=b"abc")
SEVEN_BYTES_HIST = _tensor(types_pb2.DT_INT64, [metadata.NUM_BUCKETS], tensor_content=b"1234567")
BAD_CONTENT = json.dumps({"v": 1, "series": "bad", "layer": "bad", "class": "Dense", "order": 1}).encode()


def _bad_scalar(tag="tfprobe/bad/mean", plugin=metadata.PLUGIN_NAME, tensor=THREE_BYTES):
    return _value(tag, plugin, tensor, BAD_CONTENT, summary_pb2.DATA_CLASS_SCALAR)


FOREIGN_SERIES = {
    "3_byte_statistic": lambda: _bad_scalar(),
    "7_byte_histogram": lambda: _value(
        "tfprobe/bad/histogram", metadata.HIST_PLUGIN_NAME, SEVEN_BYTES_HIST, BAD_CONTENT
    ),
    "7_byte_gradient_histogram": lambda: _value(
        "tfprobe/bad/grad_histogram", metadata.GRAD_HIST_PLUGIN_NAME, SEVEN_BYTES_HIST, BAD_CONTENT
    ),
    "huge_declared_histogram": lambda: _value(
        "tfprobe/bad/histogram",
        metadata.HIST_PLUGIN_NAME,
        _tensor(types_pb2.DT_INT64, [2**24, 2**24], int64_val=[1]),
        BAD_CONTENT,
    ),
    "3_byte_reference_measure": lambda: _bad_scalar("tfprobe/bad/effective_rank", metadata.REPR_PLUGIN_NAME),
}


def _foreign_logdir(d, make):
    write_windows(d / "run", ["good"], [1, 2, 3])
    bad = write_events(d / "run", [(s, [make()]) for s in (1, 2, 3)])
    return bad


@pytest.mark.parametrize("case", sorted(FOREIGN_SERIES))
def test_readers_skip_a_foreign_value_with_one_warning_naming_file_tag_and_step(tmp_path, case):
    bad = _foreign_logdir(tmp_path, FOREIGN_SERIES[case])
    tag = FOREIGN_SERIES[case]().tag
    for reader in (
        tfprobe.read_logdir,
        tfprobe.read_layers,
        lambda d, **kw: tfprobe.read_histograms(d, quantity="all", **kw),
    ):
        frame, caught = caught_warnings(reader, tmp_path, progress=False)
        assert "good" in set(frame["layer"]) and "bad" not in set(frame["layer"])
        assert len(caught) == 1, caught
        assert bad in caught[0] and repr(tag) in caught[0] and "step 1" in caught[0], caught[0]


@pytest.mark.parametrize("case", sorted(FOREIGN_SERIES))
def test_report_and_routes_survive_a_foreign_value(tmp_path, case, capsys):
    _foreign_logdir(tmp_path, FOREIGN_SERIES[case])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert cli.main(["report", str(tmp_path)]) == 0
    assert "good" in capsys.readouterr().out
    client = make_client(tmp_path)
    for route, args in [
        ("overview", {"stat": "mean"}),
        ("scalars", {"layer": "bad", "stat": "mean"}),
        ("histogram", {"layer": "bad"}),
        ("histogram", {"layer": "bad", "quantity": "gradient"}),
        ("representations", {}),
        ("health", {}),
        ("layers", {}),
        ("runs", {}),
    ]:
        r = client.get(f"{PREFIX}/{route}?" + urllib.parse.urlencode({"run": "run", **args}))
        assert r.status_code in (200, 404), (route, r.status_code, r.get_data(as_text=True)[:300])


FOREIGN_CKA = {
    "string_matrix": lambda: cka_value(["a", "b"], _tensor(types_pb2.DT_STRING, [2, 2], string_val=[b"x"] * 4)),
    "3_bytes_of_floats": lambda: cka_value(["a", "b"], _tensor(types_pb2.DT_FLOAT, [2, 2], tensor_content=b"abc")),
    "huge_declared_shape": lambda: cka_value(["a", "b"], _tensor(types_pb2.DT_FLOAT, [2**24, 2**24], float_val=[1])),
    "shape_not_the_layers": lambda: cka_value(["a", "b"], _tensor(types_pb2.DT_FLOAT, [3], float_val=[1, 2, 3])),
}


@pytest.mark.parametrize("case", sorted(FOREIGN_CKA))
def test_a_foreign_cka_matrix_is_skipped_by_read_cka_and_the_representations_route(tmp_path, case):
    write_windows(tmp_path / "run", ["a", "b"], [1, 2, 3])
    path = write_events(
        tmp_path / "run",
        [(1, [good_cka(["a", "b"], 0.5)]), (2, [FOREIGN_CKA[case]()]), (3, [good_cka(["a", "b"], 0.75)])],
        ".tfprobe-reference",
    )
    frame, caught = caught_warnings(tfprobe.read_cka, tmp_path)
    assert sorted(set(frame.step)) == [1, 3] and set(frame.cka) == {0.5, 0.75}
    assert len(caught) == 1 and path in caught[0] and repr(metadata.CKA_TAG) in caught[0] and "step 2" in caught[0]
    body = queries.representations(source(tmp_path), ["run"])
    cka = body["runs"][0]["cka"]
    assert cka["layers"] == ["a", "b"]
    # the provider decodes the tag as a whole: a value it cannot decode leaves the tag out, one it decodes
    # into the wrong dtype or shape is skipped alone
    assert cka["steps"] in ([1, 3], [])
    r = make_client(tmp_path).get(f"{PREFIX}/representations?run=run")
    assert r.status_code == 200


def test_a_foreign_looks_image_and_a_huge_example_index(tmp_path):
    write_windows(tmp_path / "run", ["dense"], [1, 2])
    huge = "looks/example_" + "9" * 5000 + "/input"
    write_events(
        tmp_path / "run",
        [
            (
                1,
                [
                    image_value("looks/example_00/input", [b"just one string"]),
                    image_value("looks/example_01/input", [b"1", b"1", PNG]),
                    image_value(huge, [b"1", b"1", PNG]),
                ],
            )
        ],
        ".tfprobe-looks",
    )
    client = make_client(tmp_path)
    listing = client.get(f"{PREFIX}/looks?run=run")
    assert listing.status_code == 200
    images = {img["tag"]: img["steps"] for img in listing.get_json()["images"]}
    assert images == {"looks/example_00/input": [], "looks/example_01/input": [1]}
    bad = client.get(f"{PREFIX}/looks_image?" + urllib.parse.urlencode({"run": "run", "tag": "looks/example_00/input"}))
    assert bad.status_code == 404
    good = client.get(
        f"{PREFIX}/looks_image?" + urllib.parse.urlencode({"run": "run", "tag": "looks/example_01/input"})
    )
    assert good.status_code == 200 and good.data == PNG
    r = client.get(f"{PREFIX}/looks_image?" + urllib.parse.urlencode({"run": "run", "tag": huge}))
    assert r.status_code == 400 and "`tag` must be a looks image tag" in r.get_data(as_text=True)


def test_the_typed_layer_checks_before_allocating():
    from tfprobe.logs import _decode

    huge = _tensor(types_pb2.DT_FLOAT, [2**24, 2**24], float_val=[1])
    with pytest.raises(metadata.FormatError, match="declares more than"):
        _decode.cka_matrix(huge, 2**24)
    with pytest.raises(metadata.FormatError, match="3 bytes"):
        _decode.scalar_value(THREE_BYTES)
    with pytest.raises(metadata.FormatError, match="7 bytes"):
        _decode.histogram_counts(SEVEN_BYTES_HIST)
    with pytest.raises(metadata.FormatError, match="dtype"):
        _decode.cka_matrix(_tensor(types_pb2.DT_STRING, [2, 2], string_val=[b"x"] * 4), 2)
    assert _decode.cka_matrix(_tensor(types_pb2.DT_FLOAT, [1, 1], float_val=[0.5]), 1).tolist() == [[0.5]]


# ---------------------------------------------------------------- restarts and concurrent writers


def test_restart_newest_write_wins_in_read_cka_and_the_representations_route(tmp_path):
    write_windows(tmp_path / "run", ["a"], [1, 2, 3, 4])
    write_events(
        tmp_path / "run",
        [(s, [good_cka(["a"], 0.1 * s), repr_value("a", "effective_rank", s)]) for s in (2, 4)],
        ".tfprobe-reference",
    )
    time.sleep(0.01)
    write_events(
        tmp_path / "run",
        [(s, [good_cka(["a"], 0.5 + 0.1 * s), repr_value("a", "effective_rank", 10 + s)]) for s in (3,)],
        ".tfprobe-reference",
    )
    frame, caught = caught_warnings(tfprobe.read_cka, tmp_path)
    assert frame[["step", "cka"]].values.tolist() == [[2, pytest.approx(0.2)], [3, pytest.approx(0.8)]]
    assert any("newest write wins" in m for m in caught) and not any("same time" in m for m in caught)
    long, _ = caught_warnings(tfprobe.read_logdir, tmp_path, progress=False)
    assert long[long.stat == "effective_rank"][["step", "value"]].values.tolist() == [[2, 2.0], [3, 13.0]]
    body = queries.representations(source(tmp_path), ["run"])["runs"][0]
    assert body["cka"]["steps"] == [2, 3]
    assert body["measures"]["effective_rank"]["a"] == [[2, 2.0], [3, 13.0]]


def _prediction(example, x):
    return _value(
        metadata.looks_tag(example, "predicted_class"),
        "scalars",
        _tensor(types_pb2.DT_FLOAT, [], float_val=[x]),
        b"",
        summary_pb2.DATA_CLASS_SCALAR,
    )


def test_restart_newest_write_wins_in_the_looks_route(tmp_path):
    """The predictions of a restarted run keep the newest write of each step. (Its images too where the data
    provider keeps the newest write, as the data server does; the `--load_fast=false` provider keeps the
    first image of each step and says nothing of the rest, see docs/limitations.md.)"""
    write_windows(tmp_path / "run", ["a"], [1, 2, 3])
    tag = "looks/example_00/gradcam/conv"
    write_events(
        tmp_path / "run",
        [(s, [image_value(tag, [b"1", b"1", PNG]), _prediction(0, s)]) for s in (1, 2, 3)],
        ".tfprobe-looks",
    )
    time.sleep(0.01)
    write_events(tmp_path / "run", [(2, [image_value(tag, [b"1", b"1", PNG]), _prediction(0, 7)])], ".tfprobe-looks")
    body = make_client(tmp_path).get(f"{PREFIX}/looks?run=run").get_json()
    assert body["predictions"]["0"]["predicted_class"] == [[1, 1.0], [2, 7.0]]


def _interleaved(run_dir, steps):
    """Two `WindowWriter`s writing one run at once (two processes), windows alternating."""
    a, b = WindowWriter(str(run_dir)), WindowWriter(str(run_dir))
    info = {"x": {"series": "x", "layer": "x", "class": "Dense", "order": 0}}
    for step in steps:
        for w, v in ((a, 1.0), (b, 2.0)):
            w.write_window(step, info, {"x": {"mean": v}}, {})
            time.sleep(0.002)
    a.close()
    b.close()
    return a.path, b.path


def test_two_processes_writing_one_run_are_reported(tmp_path):
    _interleaved(tmp_path / "both", [1, 2, 3])
    write_windows(tmp_path / "restarted", ["x"], [1, 2, 3])
    time.sleep(0.01)
    write_windows(tmp_path / "restarted", ["x"], [2, 3])  # a restart: no false alarm
    _, caught = caught_warnings(tfprobe.read_logdir, tmp_path, progress=False)
    concurrent = [m for m in caught if "same time" in m]
    assert len(concurrent) == 1 and "run 'both'" in concurrent[0], caught
    runs = {r["name"]: r["warnings"] for r in queries.runs(source(tmp_path))["runs"]}
    assert runs["restarted"] == [] and len(runs["both"]) == 1 and "same time" in runs["both"][0]


# ---------------------------------------------------------------- mistakable arguments


def test_reader_options_are_keyword_only(tmp_path):
    write_windows(tmp_path / "run", ["x"], [1])
    with pytest.raises(TypeError, match="positional"):
        tfprobe.read_histograms(tmp_path, "gradient")
    with pytest.raises(TypeError, match="positional"):
        tfprobe.read_logdir(tmp_path, True)
    assert tfprobe.read_histograms(tmp_path, quantity="gradient").empty
    assert not tfprobe.read_histograms(tmp_path, quantity="activation").empty


# ---------------------------------------------------------------- remote and odd log dirs


def test_an_unknown_url_scheme_is_refused_and_not_written_locally(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for url in ("my-store://bucket/run", "mystore://bucket/run"):
        with pytest.raises(ValueError, match=r"`log_dir` uses the URL scheme .*Received: log_dir='" + url):
            tfprobe.LayerProbe(url)
        with pytest.raises(ValueError, match="`logdir` uses the URL scheme"):
            tfprobe.read_logdir(url)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("url", ["s3://tfprobe-no-such-bucket/run", "hdfs://tfprobe-no-such-host/run"])
def test_a_log_dir_that_cannot_be_opened_detaches_the_probe_and_fit_goes_on(url):
    import keras

    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(hidden))
    model.compile("sgd", "mse")
    x, y = np.ones((8, 4), "float32"), np.ones((8, 1), "float32")
    try:
        import tensorflow as tf

        tf.io.gfile.makedirs(url)
        pytest.skip(f"{url} can be written here")
    except Exception:  # noqa: BLE001 - expected: the store cannot be reached
        pass
    probe = tfprobe.LayerProbe(url, record_freq=1, log_freq=1, gradients=True)
    with pytest.warns(RuntimeWarning, match="`log_dir` cannot be written") as caught:
        history = model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[probe])
    assert len([w for w in caught if "cannot be written" in str(w.message)]) == 1  # one warning per `fit`
    assert len(history.history["loss"]) == 2
    assert "call" not in model.get_layer("hidden").__dict__  # nothing left patched
    assert "apply_gradients" not in model.optimizer.__dict__
    strict = tfprobe.LayerProbe(url, strict=True)
    with pytest.raises(ValueError, match="`log_dir` cannot be written"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[strict])
    assert "call" not in model.get_layer("hidden").__dict__


@pytest.mark.parametrize("command", ["report", "export"])
@pytest.mark.parametrize("url", ["my-store://bucket/run", "s3://tfprobe-no-such-bucket/run", "file:///no/such/dir"])
def test_the_cli_answers_every_scheme_in_one_line(tmp_path, capsys, command, url):
    argv = [command, url] + ([str(tmp_path / "out.csv")] if command == "export" else [])
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tfprobe: ") and "Traceback" not in err, err


def test_the_cli_exports_a_file_url_it_can_report(tmp_path, capsys):
    write_windows(tmp_path / "logs" / "run", ["x"], [1, 2])
    url = (tmp_path / "logs").as_uri()
    assert cli.main(["report", url]) == 0
    assert cli.main(["export", url, str(tmp_path / "out.csv")]) == 0
    assert "wrote" in capsys.readouterr().out


# ---------------------------------------------------------------- what TensorBoard keeps and tfprobe flags


def test_records_whose_checksum_fails_are_flagged_per_run(tmp_path):
    path = write_windows(tmp_path / "damaged", ["x"], [1, 2, 3], value=0.25, hist=False)
    write_windows(tmp_path / "healthy", ["x"], [1, 2, 3], hist=False)
    data = bytearray(open(path, "rb").read())
    at = data.index(struct.pack("<f", 2.25))
    data[at + 1] ^= 0x40  # the value changes, the data CRC fails
    open(path, "wb").write(bytes(data))
    src = source(tmp_path)
    # TensorBoard's data server (`--load_fast=true`, the default) keeps such a record and shows its changed
    # value; the plugin cannot tell from the data provider, so it scans the files itself
    runs = {r["name"]: r["warnings"] for r in queries.runs(src)["runs"]}
    assert runs["healthy"] == []
    assert len(runs["damaged"]) == 1 and path in runs["damaged"][0] and "CRC" in runs["damaged"][0]
    health = queries.health(src, ["damaged", "healthy"])
    assert list(health["file_warnings"]) == ["damaged"]
    long, _ = caught_warnings(tfprobe.read_logdir, tmp_path, progress=False)
    assert long[(long.run == "damaged") & (long.stat == "mean")].step.tolist() == [1]
    # through the route, and a second request reads the unchanged file from the cache
    client = make_client(tmp_path)
    for _ in range(2):
        body = client.get(f"{PREFIX}/runs").get_json()
        assert [len(r["warnings"]) for r in body["runs"]] == [1, 0]


def test_a_real_tensorboard_server_flags_crc_failures_and_survives_hostile_filters(tmp_path):
    """Under the data server (the default loader), a record whose data checksum fails is still shown (with its
    changed value), and the plugin's own scan flags the run; a backtracking filter answers at once."""
    path = write_windows(tmp_path / "damaged", ["x", KERAS_NAME], [1, 2, 3], value=0.25, hist=False)
    write_windows(tmp_path / "healthy", ["x"], [1, 2, 3], hist=False)
    data = bytearray(open(path, "rb").read())
    data[data.index(struct.pack("<f", 2.25)) + 1] ^= 0x40
    open(path, "wb").write(bytes(data))
    with tensorboard_server(tmp_path, "--load_fast=true") as tb:
        body = tb.wait_until(lambda b: {r["name"] for r in b["runs"]} == {"damaged", "healthy"})
        warned = {r["name"]: r["warnings"] for r in body["runs"]}
        assert warned["healthy"] == [] and len(warned["damaged"]) == 1 and "CRC" in warned["damaged"][0]
        for pattern in (r"(\w+)+!", "(a+)+$", "a{99999999999}", "a" * 300):
            start = time.perf_counter()
            try:
                status, _ = http_get(
                    f"{tb.base}{PREFIX}/overview?"
                    + urllib.parse.urlencode({"run": "damaged", "stat": "mean", "filter": pattern})
                )
            except urllib.error.HTTPError as e:
                status = e.code
            assert status in (200, 400) and time.perf_counter() - start < 1.0, (pattern, status)
        shown = tb.wait_until(
            lambda b: len(b["series"]["mean"].get("damaged", [])) == 3,
            timeout=30,
            route=f"{PREFIX}/scalars?run=damaged&layer=x&stat=mean",
        )["series"]["mean"]["damaged"]
    long, _ = caught_warnings(tfprobe.read_logdir, tmp_path, progress=False)
    assert long[(long.run == "damaged") & (long.stat == "mean") & (long.layer == "x")].step.tolist() == [1]
    # what TensorBoard shows beyond the readers (written to the docs): the damaged record, its value changed
    assert [s for s, _ in shown] == [1, 2, 3] and shown[1][1] != 2.25


@pytest.mark.parametrize(
    "case, route, args",
    [
        ("7_byte_histogram", "histogram", {"layer": "bad"}),
        ("3_byte_statistic", "scalars", {"layer": "bad", "stat": "mean"}),
    ],
)
def test_a_route_logs_the_file_and_step_of_a_value_tensorboard_cannot_decode(tmp_path, caplog, case, route, args):
    bad = _foreign_logdir(tmp_path, FOREIGN_SERIES[case])
    if route == "histogram":  # a series needs a statistic to be listed
        write_events(tmp_path / "run", [(1, [_bad_scalar(tensor=_tensor(types_pb2.DT_FLOAT, [], float_val=[1]))])])
    queries._warned_series.clear()  # logged once per process and (run, tag): start afresh
    client = make_client(tmp_path)
    with caplog.at_level("WARNING", logger=queries.logger.name):
        for _ in range(2):
            r = client.get(f"{PREFIX}/{route}?" + urllib.parse.urlencode({"run": "run", **args}))
            assert r.status_code == 200
    logged = [rec.getMessage() for rec in caplog.records if rec.name == queries.logger.name]
    assert len(logged) == 1 and bad in logged[0] and "step 1" in logged[0] and "'run'" in logged[0], logged


def test_event_files_of_one_process_sort_in_write_order(tmp_path):
    """Readers and TensorBoard take a run's files in name order (the newest write wins by it): the 10th file
    of a process within one second must sort after the 9th."""
    paths = []
    for _ in range(12):
        w = events.EventFileWriter(str(tmp_path))
        w.close()
        paths.append(w.path)
    assert sorted(paths) == paths or len({os.path.basename(p).split(".")[3] for p in paths}) > 1  # a second passed
