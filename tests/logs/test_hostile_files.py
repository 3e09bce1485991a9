"""Hostile files: damaged records, values that use tfprobe's plugin names but not its format,
and odd log directories. Readers keep every good point, skip the rest with one warning, and
never crash; the plugin's listing routes never answer 500."""

from __future__ import annotations

import json
import os
import struct
import warnings

import numpy as np
import pytest
from tensorboard import context as tb_context
from tensorboard.backend.event_processing import data_provider as mdp
from tensorboard.backend.event_processing import plugin_event_multiplexer as pem
from tensorboard.compat.proto import (
    event_pb2,
    summary_pb2,
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)

import tfprobe
from tensorboard_plugin_tfprobe import queries
from tfprobe import metadata
from tfprobe.logs import events
from tfprobe.logs.writer import WindowWriter

READERS = [tfprobe.read_logdir, tfprobe.read_histograms, tfprobe.read_layers]
GOOD = {"series": "good", "layer": "good", "class": "Dense", "order": 0}


def write_good(path, steps=(1, 2, 3), value=0.25):
    w = WindowWriter(str(path))
    hist = np.zeros(metadata.NUM_BUCKETS, np.int64)
    hist[metadata.HIST_ZERO_BUCKET] = 7
    for step in steps:
        w.write_window(step, {"good": GOOD}, {"good": {"mean": value + step, "std": 1.0}}, {"good": hist})
    w.close()
    return w.path


def record_offsets(path):
    return [offset for offset, _ in events.iter_records(path)]


def read_all(logdir):
    """The three frames, with the RuntimeWarnings raised while reading them (each reader separately)."""
    out, caught = [], []
    for reader in READERS:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            out.append(reader(logdir, progress=False))
        caught.append([str(x.message) for x in w if issubclass(x.category, RuntimeWarning)])
    return out, caught


# ---------------------------------------------------------------- damaged records


def flip_data_byte(path):
    """Flips a byte in the middle of the third record's data (the second window)."""
    offset = record_offsets(path)[2]
    return offset, offset + 12 + 40


def flip_float_byte(path):
    """Flips a byte inside the float of `mean` = 2.25 (step 2)."""
    data = open(path, "rb").read()
    at = data.index(struct.pack("<f", 2.25))
    offset = max(o for o in record_offsets(path) if o < at)
    return offset, at + 1


def flip_length_byte(path):
    """Flips the highest byte of the third record's length: a length of ~2**63 if read as is."""
    offset = record_offsets(path)[2]
    return offset, offset + 7


@pytest.mark.parametrize("flip", [flip_data_byte, flip_float_byte, flip_length_byte])
def test_a_flipped_byte_stops_that_file_with_one_warning(tmp_path, flip):
    path = write_good(tmp_path / "r1")
    write_good(tmp_path / "r2", steps=(1, 2, 3, 4))
    bad_offset, at = flip(path)
    data = bytearray(open(path, "rb").read())
    data[at] ^= 0x40
    open(path, "wb").write(bytes(data))
    (long, hists, layers), caught = read_all(tmp_path)
    for messages in caught:
        assert len(messages) == 1, messages
        assert path in messages[0] and f"byte offset {bad_offset}" in messages[0]
    r1 = long[(long.run == "r1") & (long.stat == "mean")]
    assert r1[["step", "value"]].values.tolist() == [[1, 1.25]]  # the record before is kept, nothing wrong after
    assert sorted(set(long[long.run == "r2"].step)) == [1, 2, 3, 4]  # other files untouched
    assert sorted(set(hists[hists.run == "r1"].step)) == [1]
    assert set(layers.run) == {"r1", "r2"}


def test_a_text_file_named_like_an_event_file(tmp_path):
    write_good(tmp_path / "run")
    bogus = tmp_path / "run" / "events.out.tfevents.x"
    bogus.write_text("this is not an event file\n" * 20)
    (long, hists, layers), caught = read_all(tmp_path)
    assert all(len(m) == 1 and str(bogus) in m[0] and "byte offset 0" in m[0] for m in caught), caught
    assert sorted(set(long.step)) == [1, 2, 3] and len(hists) == 3 and layers.layer.tolist() == ["good"]


def test_a_record_that_is_not_an_event_proto(tmp_path):
    path = write_good(tmp_path / "run")
    junk = b"\xff" * 10  # a valid frame around bytes that are no protobuf message
    with open(path, "ab") as f:
        f.write(events._frame(junk))
    offset = os.path.getsize(path) - len(junk) - 16
    (long, _, _), caught = read_all(tmp_path)
    assert all(len(m) == 1 and f"byte offset {offset}" in m[0] and "not an Event" in m[0] for m in caught)
    assert sorted(set(long.step)) == [1, 2, 3]


@pytest.mark.parametrize("cut", [1, 5, 13, 30])
def test_a_truncated_last_record_is_ignored_silently(tmp_path, cut):
    path = write_good(tmp_path / "run")
    data = open(path, "rb").read()
    open(path, "wb").write(data[:-cut])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sorted(set(tfprobe.read_logdir(tmp_path, progress=False).step)) == [1, 2]


# ---------------------------------------------------------------- values not in tfprobe's format


def _tensor(dtype, shape, **values):
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape]
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims), **values)


def _content(**fields):
    return json.dumps({"v": 1, "series": "bad", "layer": "bad", "class": "Dense", "order": 1, **fields}).encode()


SCALAR = _tensor(types_pb2.DT_FLOAT, [], float_val=[0.5])
HOSTILE = {
    # id: (tag, plugin name, content, tensor)
    "vector_tensor": ("tfprobe/bad/mean", "tfprobe", _content(), _tensor(types_pb2.DT_FLOAT, [3], float_val=[1, 2, 3])),
    "string_tensor": ("tfprobe/bad/mean", "tfprobe", _content(), _tensor(types_pb2.DT_STRING, [], string_val=[b"x"])),
    "int_scalar": ("tfprobe/bad/mean", "tfprobe", _content(), _tensor(types_pb2.DT_INT64, [], int64_val=[3])),
    "scalar_under_hist": ("tfprobe/bad/histogram", "tfprobe_hist", _content(), SCALAR),
    "hist_wrong_length": (
        "tfprobe/bad/histogram", "tfprobe_hist", _content(), _tensor(types_pb2.DT_INT64, [4], int64_val=[1, 2, 3, 4])
    ),
    "scalar_under_grad_hist": ("tfprobe/bad/grad_histogram", "tfprobe_grad_hist", _content(), SCALAR),
    "grad_hist_wrong_length": ("tfprobe/bad/grad_histogram", "tfprobe_grad_hist", _content(),
                               _tensor(types_pb2.DT_INT64, [4], int64_val=[1, 2, 3, 4])),
    "not_a_tfprobe_tag": ("loss", "tfprobe", _content(), SCALAR),
    "order_is_a_string": ("tfprobe/bad/mean", "tfprobe", _content(order="1"), SCALAR),
    "order_is_null": ("tfprobe/bad/mean", "tfprobe", _content(order=None), SCALAR),
    "shape_not_integers": ("tfprobe/bad/mean", "tfprobe", _content(shape=[None, 2.5]), SCALAR),
    "inputs_not_names": ("tfprobe/bad/mean", "tfprobe", _content(inputs=[1, 2]), SCALAR),
    "content_not_json": ("tfprobe/bad/mean", "tfprobe", b"{not json", SCALAR),
    "content_a_list": ("tfprobe/bad/mean", "tfprobe", b"[1, 2]", SCALAR),
    "newer_major_version": ("tfprobe/bad/mean", "tfprobe", _content(v=metadata.FORMAT_VERSION + 1), SCALAR),
}


def write_hostile(run_dir, tag, plugin, content, tensor, steps=(1, 2, 3)):
    """A good series written by `WindowWriter`, and one hostile value per step in a second file."""
    write_good(run_dir, steps)
    w = events.EventFileWriter(str(run_dir), suffix=".hostile")
    for i, step in enumerate(steps):
        md = summary_pb2.SummaryMetadata(data_class=summary_pb2.DATA_CLASS_SCALAR)
        md.plugin_data.plugin_name = plugin
        if i == 0:
            md.plugin_data.content = content
        ev = event_pb2.Event(step=step, wall_time=1.0)
        ev.summary.value.add(tag=tag, metadata=md, tensor=tensor)
        w.write(ev)
    w.close()


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_values_not_in_tfprobe_format_skip_their_series_with_one_warning(tmp_path, case):
    tag = HOSTILE[case][0]
    write_hostile(tmp_path / "run", *HOSTILE[case])
    (long, hists, layers), caught = read_all(tmp_path)
    assert sorted(set(long.layer)) == ["good"] and sorted(set(long.step)) == [1, 2, 3]
    assert layers.layer.tolist() == ["good"] and hists.layer.unique().tolist() == ["good"]
    # one warning per (run, series), naming both, in the reader that meets the series
    expected = "'bad'" if tag != "loss" else "'loss'"
    assert any(len(m) == 1 and "'run'" in m[0] and expected in m[0] for m in caught), caught
    assert all(len(m) <= 1 for m in caught), caught
    if case == "newer_major_version":
        assert f"version {metadata.FORMAT_VERSION + 1}" in caught[0][0] and "upgrade tfprobe" in caught[0][0]


def make_provider(logdir):
    mux = pem.EventMultiplexer(tensor_size_guidance={metadata.PLUGIN_NAME: 0, metadata.HIST_PLUGIN_NAME: 0})
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    return mdp.MultiplexerDataProvider(mux, str(logdir))


@pytest.mark.parametrize("case", ["order_is_a_string", "order_is_null", "content_not_json", "newer_major_version",
                                  "shape_not_integers", "vector_tensor", "not_a_tfprobe_tag"])
def test_plugin_listing_skips_series_not_in_tfprobe_format(tmp_path, case):
    write_hostile(tmp_path / "run", *HOSTILE[case])
    src = queries.Source(make_provider(tmp_path), tb_context.RequestContext(), "")
    runs = queries.runs(src)["runs"]
    assert [r["name"] for r in runs] == ["run"]
    listed = [layer["name"] for layer in queries.layers(src, ["run"])["runs"]["run"]["layers"]]
    expected = ["good", "bad"] if case == "vector_tensor" else ["good"]  # listing does not read values
    assert listed == expected


def test_the_typed_parser_is_the_only_one():
    """The reader and the plugin both parse content with `metadata.parse_content`."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    queries = os.path.join(root, "tensorboard_plugin/tensorboard_plugin_tfprobe/queries")
    sources = {"tfprobe/logs/reader.py": open(os.path.join(root, "tfprobe/logs/reader.py")).read(),
               "queries/": "".join(open(os.path.join(queries, f)).read() for f in os.listdir(queries) if f.endswith(".py"))}
    for rel, source in sources.items():
        assert "decode_content" not in source and "parse_content" in source, rel


# ---------------------------------------------------------------- log directories


def test_a_logdir_with_glob_characters_is_literal(tmp_path):
    logdir = tmp_path / "exp[1]*"
    write_good(logdir / "run")
    assert sorted(set(tfprobe.read_logdir(logdir).step)) == [1, 2, 3]


def test_a_symlink_loop_does_not_invent_runs(tmp_path):
    write_good(tmp_path / "run")
    os.symlink("..", tmp_path / "run" / "loop")
    assert set(tfprobe.read_logdir(tmp_path).run) == {"run"}
    assert events.event_files(tmp_path).keys() == {"run"}


def test_hidden_directories_are_runs_as_in_tensorboard(tmp_path):
    write_good(tmp_path / ".hidden")
    write_good(tmp_path / "run" / ".sub")
    assert set(tfprobe.read_logdir(tmp_path).run) == {".hidden", "run/.sub"}


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.__name__)
@pytest.mark.parametrize(
    "make, error",
    [
        (lambda p: None, TypeError),
        (lambda p: 3, TypeError),
        (lambda p: p / "missing", FileNotFoundError),
        (lambda p: (p / "file").write_text("x") and p / "file", NotADirectoryError),
    ],
    ids=["none", "int", "missing", "file"],
)
def test_bad_logdir_names_the_argument_and_value(tmp_path, reader, make, error):
    logdir = make(tmp_path)
    with pytest.raises(error, match=r"`logdir`.*Received: logdir=") as info:
        reader(logdir)
    assert repr(os.fspath(logdir) if logdir is not None and not isinstance(logdir, int) else logdir) in str(info.value)


# ---------------------------------------------------------------- restarts in the plugin


def test_plugin_restart_newest_write_wins_like_the_reader(tmp_path):
    """Under the Python multiplexer (`--load_fast=false`), which keeps a restarted run's old points,
    the plugin shows what the reader and TensorBoard's default data server show."""
    write_good(tmp_path / "run", steps=(1, 2, 3, 4, 5), value=10.0)
    write_good(tmp_path / "run", steps=(3, 4), value=20.0)
    src = queries.Source(make_provider(tmp_path), tb_context.RequestContext(), "")
    expected = [[1, 11.0], [2, 12.0], [3, 23.0], [4, 24.0]]
    assert queries.scalars(src, ["run"], "good", ["mean"])["series"]["mean"]["run"] == expected
    overview = queries.overview(src, "run", "mean")
    assert overview["steps"] == [1, 2, 3, 4] and overview["layers"][0]["values"] == [11.0, 12.0, 23.0, 24.0]
    with pytest.warns(RuntimeWarning, match="newest write wins"):
        long = tfprobe.read_logdir(tmp_path)
    assert long[long.stat == "mean"][["step", "value"]].values.tolist() == expected
    hist = queries.histogram(src, "run", "good")
    assert hist["steps"] == [1, 2, 3, 4]


def test_a_file_that_cannot_be_opened_is_skipped_with_one_warning(tmp_path, monkeypatch):
    from tfprobe.logs import _fs

    write_good(tmp_path / "run")
    locked = write_good(tmp_path / "run", steps=(4, 5))
    open_file = _fs.open_file

    def refuse(path, mode):
        if path == locked:
            raise PermissionError(13, "Permission denied", path)
        return open_file(path, mode)

    monkeypatch.setattr(_fs, "open_file", refuse)
    with pytest.warns(RuntimeWarning, match="cannot be read.*Permission denied") as caught:
        long = tfprobe.read_logdir(tmp_path)
    assert len(caught) == 1 and locked in str(caught[0].message)
    assert sorted(set(long.step)) == [1, 2, 3]


def test_plugin_reads_skip_a_series_whose_values_are_not_scalars(tmp_path):
    """The Python multiplexer raises on a non-scalar value of a scalar series: the plugin leaves that
    series out instead of failing the whole request."""
    write_hostile(tmp_path / "run", *HOSTILE["vector_tensor"])
    src = queries.Source(make_provider(tmp_path), tb_context.RequestContext(), "")
    overview = queries.overview(src, "run", "mean")
    assert [(row["name"], row["values"]) for row in overview["layers"]] == [
        ("good", [1.25, 2.25, 3.25]), ("bad", [None, None, None])
    ]
    assert queries.scalars(src, ["run"], "bad", ["mean"])["series"]["mean"] == {}
