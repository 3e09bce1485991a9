"""The reader: every point, several runs, pivot, histograms, and no TensorFlow import."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import tfprobe
from tfprobe import metadata
from tfprobe.logs.writer import WindowWriter


def _write_run(path, steps, layers=("a", "b")):
    w = WindowWriter(str(path))
    infos = {name: {"series": name, "layer": name, "class": "Dense", "order": i} for i, name in enumerate(layers)}
    for step in steps:
        stats = {name: {"mean": step + i, "std": 1.0} for i, name in enumerate(layers)}
        hist = np.zeros(metadata.NUM_BUCKETS, np.int64)
        hist[metadata.HIST_ZERO_BUCKET] = step
        w.write_window(step, infos, stats, {"a": hist})
    w.close()
    return w


def test_every_point_of_several_runs(tmp_path):
    _write_run(tmp_path / "r1", range(1, 3001))
    _write_run(tmp_path / "sub" / "r2", [5, 10], layers=("z", "a"))
    df = tfprobe.read_logdir(tmp_path)
    assert list(df.columns) == ["run", "step", "wall_time", "layer", "stat", "value"]
    assert len(df[df.run == "r1"]) == 3000 * 2 * 2
    assert set(df.run) == {"r1", "sub/r2"}
    # model order, not alphabetical
    assert list(df[df.run == "sub/r2"].layer.unique()) == ["z", "a"]
    r1a = df[(df.run == "r1") & (df.layer == "a") & (df.stat == "mean")]
    assert r1a.step.tolist() == list(range(1, 3001)) and r1a.value.tolist() == [float(s) for s in range(1, 3001)]


def test_pivot_has_one_column_per_statistic(tmp_path):
    _write_run(tmp_path / "r1", [1, 2])
    wide = tfprobe.read_logdir(tmp_path, pivot=True)
    assert list(wide.columns) == ["run", "step", "wall_time", "layer", "mean", "std"]
    assert wide[["layer", "step", "mean"]].values.tolist() == [["a", 1, 1.0], ["a", 2, 2.0], ["b", 1, 2.0], ["b", 2, 3.0]]


def test_histograms_and_layers(tmp_path):
    _write_run(tmp_path / "r1", [1, 2])  # as every tfprobe before gradient histograms wrote them
    h = tfprobe.read_histograms(tmp_path)
    assert list(h.columns) == ["run", "step", "wall_time", "layer", "quantity", "bucket", "left", "right", "count"]
    assert h[["layer", "step", "quantity", "bucket", "left", "right", "count"]].values.tolist() == [
        ["a", 1, "activation", metadata.HIST_ZERO_BUCKET, 0.0, 0.0, 1],
        ["a", 2, "activation", metadata.HIST_ZERO_BUCKET, 0.0, 0.0, 2],
    ]
    assert tfprobe.read_histograms(tmp_path, quantity="gradient").empty
    assert tfprobe.read_histograms(tmp_path, quantity="all").equals(h)
    layers = tfprobe.read_layers(tmp_path)
    assert layers[["layer", "order", "class"]].values.tolist() == [["a", 0, "Dense"], ["b", 1, "Dense"]]


def test_gradient_histograms_have_their_own_quantity(tmp_path):
    w = WindowWriter(str(tmp_path))
    infos = {name: {"series": name, "layer": name, "order": i} for i, name in enumerate("ab")}
    for step in (1, 2):
        act, grad = np.zeros(metadata.NUM_BUCKETS, np.int64), np.zeros(metadata.NUM_BUCKETS, np.int64)
        act[metadata.HIST_ZERO_BUCKET + 3], grad[metadata.HIST_ZERO_BUCKET - 7] = step, 10 * step
        w.write_window(step, infos, {"a": {"mean": 1.0}, "b": {"mean": 2.0}}, {"a": act, "b": act},
                       grad_histograms={"b": grad})
    w.close()
    edges = metadata.histogram_buckets()
    rows = lambda frame: frame[["layer", "step", "quantity", "bucket", "count"]].values.tolist()  # noqa: E731
    up, down = metadata.HIST_ZERO_BUCKET + 3, metadata.HIST_ZERO_BUCKET - 7
    acts = [[name, step, "activation", up, step] for name in "ab" for step in (1, 2)]
    grads = [["b", step, "gradient", down, 10 * step] for step in (1, 2)]
    assert rows(tfprobe.read_histograms(tmp_path)) == acts  # the default: the activations, as before
    g = tfprobe.read_histograms(tmp_path, quantity="gradient")
    assert rows(g) == grads and g[["left", "right"]].values.tolist() == [list(edges[down])] * 2
    assert sorted(rows(tfprobe.read_histograms(tmp_path, quantity="all"))) == sorted(acts + grads)
    assert set(tfprobe.read_logdir(tmp_path)["stat"]) == {"mean"}  # histograms are no statistics
    assert tfprobe.read_layers(tmp_path)["layer"].tolist() == ["a", "b"]


def test_histogram_quantity_is_checked(tmp_path):
    with pytest.raises(ValueError, match="`quantity` must be one of 'activation', 'gradient', 'all'. "
                                         "Received: quantity='grad'"):
        tfprobe.read_histograms(tmp_path, quantity="grad")


def test_empty_logdir(tmp_path):
    assert tfprobe.read_logdir(tmp_path).empty
    assert tfprobe.read_logdir(tmp_path, pivot=True).empty
    assert tfprobe.read_histograms(tmp_path).empty


def test_truncated_file_is_read_up_to_the_last_complete_record(tmp_path):
    w = _write_run(tmp_path / "r1", [1, 2, 3])
    data = open(w.path, "rb").read()
    open(w.path, "wb").write(data[:-7])
    assert sorted(set(tfprobe.read_logdir(tmp_path).step)) == [1, 2]


def test_reader_does_not_import_tensorflow(tmp_path):
    _write_run(tmp_path / "r1", [1])
    code = f"import sys, tfprobe; tfprobe.read_logdir({str(tmp_path)!r}); tfprobe.read_histograms({str(tmp_path)!r}); print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_event_framing_crc_matches_tensorboards():
    """The C CRC32C used to frame records gives TensorBoard's (pure Python) masked CRC."""
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import (
        masked_crc32c as reference,
    )

    from tfprobe.logs.events import masked_crc32c

    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 8, 1000, 65537):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert masked_crc32c(data) == reference(data), n


# ---------------------------------------------------------------- decoding without make_ndarray


def _write_values(path, values, step=1):
    """One event holding `values`: `(tag, plugin, TensorProto)`; metadata content for each tag."""
    from tensorboard.compat.proto import event_pb2, summary_pb2

    from tfprobe.logs.events import EventFileWriter

    w = EventFileWriter(str(path))
    ev = event_pb2.Event(step=step, wall_time=2.0)
    for tag, plugin, tensor in values:
        md = summary_pb2.SummaryMetadata(data_class=1 if plugin == metadata.PLUGIN_NAME else 2)
        md.plugin_data.plugin_name = plugin
        md.plugin_data.content = b'{"v": 1}'
        ev.summary.value.add(tag=tag, metadata=md, tensor=tensor)
    w.write(ev)
    w.close()


def test_scalars_and_histograms_in_every_tensor_encoding(tmp_path):
    """float/double/half scalars and int64/int32 histograms, as `*_val` or packed `tensor_content`,
    read as `tensor_util.make_ndarray` reads them."""
    from tensorboard.util import tensor_util

    counts = np.arange(metadata.NUM_BUCKETS)
    scalars = {
        "f32": tensor_util.make_tensor_proto(np.float32(0.1)),
        "f64": tensor_util.make_tensor_proto(np.float64(0.1)),
        "f16": tensor_util.make_tensor_proto(np.float16(0.1)),
        "f32_content": tensor_util.make_tensor_proto(np.float32(-3.5)),
        "f64_content": tensor_util.make_tensor_proto(np.float64(1e300)),
    }
    scalars["f32_content"].tensor_content = np.float32(-3.5).tobytes()
    del scalars["f32_content"].float_val[:]
    scalars["f64_content"].tensor_content = np.float64(1e300).tobytes()
    del scalars["f64_content"].double_val[:]
    hists = {
        "h64": tensor_util.make_tensor_proto(counts.astype(np.int64)),  # packed tensor_content
        "h32": tensor_util.make_tensor_proto(counts.astype(np.int32)),
    }
    values = [(metadata.tag_for(k, "mean"), metadata.PLUGIN_NAME, t) for k, t in scalars.items()]
    values += [(metadata.tag_for(k, "histogram"), metadata.HIST_PLUGIN_NAME, t) for k, t in hists.items()]
    _write_values(tmp_path, values)
    df = tfprobe.read_logdir(tmp_path)
    got = dict(zip(df.layer, df.value))
    assert got == {k: float(tensor_util.make_ndarray(t)) for k, t in scalars.items()}
    h = tfprobe.read_histograms(tmp_path)
    for name in hists:
        assert h[h.layer == name]["count"].tolist() == counts[1:].tolist()


@pytest.mark.parametrize("step", [0, -5, 2**40])
def test_steps_that_the_fast_path_does_not_cover(tmp_path, step):
    """Step 0 (omitted from the proto), negative and large steps read exactly."""
    _write_run(tmp_path, [step, step + 1])
    df = tfprobe.read_logdir(tmp_path)
    assert sorted(set(df.step)) == [step, step + 1]
    assert df[(df.layer == "a") & (df.stat == "mean")].value.tolist() == [float(np.float32(s)) for s in (step, step + 1)]


def test_a_tag_holding_the_fast_path_delimiter_is_read_exactly(tmp_path):
    from tfprobe.logs import _decode

    name = "x" + _decode._FAST_END.decode() + "y"
    w = WindowWriter(str(tmp_path))
    info = {"series": name, "layer": name, "order": 0}
    for step in (1, 2, 3):
        w.write_window(step, {name: info, "b": {"order": 1}}, {name: {"mean": step / 4}, "b": {"mean": -step}}, {})
    w.close()
    df = tfprobe.read_logdir(tmp_path)
    assert df[["layer", "step", "value"]].values.tolist() == [
        [name, 1, 0.25], [name, 2, 0.5], [name, 3, 0.75], ["b", 1, -1.0], ["b", 2, -2.0], ["b", 3, -3.0]
    ]


# ---------------------------------------------------------------- metadata


def test_inputs_are_written_and_read(tmp_path):
    w = WindowWriter(str(tmp_path / "new"))
    infos = {"a": {"order": 0, "inputs": []}, "b": {"order": 1, "inputs": ["a"]}}
    w.write_window(1, infos, {"a": {"mean": 1.0}, "b": {"mean": 2.0}}, {})
    w.close()
    _write_run(tmp_path / "old", [1])  # no `inputs` in the content: unknown
    layers = tfprobe.read_layers(tmp_path)
    assert list(layers.columns)[-1] == "inputs"
    assert layers[["run", "layer", "inputs"]].values.tolist() == [
        ["new", "a", []], ["new", "b", ["a"]], ["old", "a", None], ["old", "b", None]
    ]


def test_unknown_content_keys_are_kept_in_extra():
    info = metadata.parse_content(b'{"v": 1, "order": 3, "future_field": {"x": 1}}', "s")
    assert info.order == 3 and info.extra == {"future_field": {"x": 1}} and info.layer == "s"


# ---------------------------------------------------------------- one scan, progress


def test_read_gives_every_frame_from_one_scan(tmp_path, monkeypatch):
    from tfprobe.logs import reader

    _write_run(tmp_path / "r1", [1, 2, 3])
    scans = []
    collect = reader._collect
    monkeypatch.setattr(reader, "_collect", lambda *a, **k: scans.append(1) or collect(*a, **k))
    data = reader.read(tmp_path)
    frames = data.scalars, data.wide(), data.histograms, data.layers
    assert len(scans) == 1
    expected = (tfprobe.read_logdir(tmp_path), tfprobe.read_logdir(tmp_path, pivot=True),
                tfprobe.read_histograms(tmp_path), tfprobe.read_layers(tmp_path))
    for got, want in zip(frames, expected):
        assert got.equals(want)


class _Terminal:
    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass

    def isatty(self):
        return True


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bar_on_a_terminal_unless_turned_off(tmp_path, monkeypatch, progress):
    from tfprobe.logs import reader

    _write_run(tmp_path / "r1", [1, 2])
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(reader, "_PROGRESS_DELAY", 0.0)
    tfprobe.read_logdir(tmp_path, progress=progress)
    assert ("tfprobe: reading" in terminal.text) is progress


# ---------------------------------------------------------------- restarts: the newest write wins


def _restarted(tmp_path):
    w = WindowWriter(str(tmp_path / "run"))
    info = {"a": {"order": 0}}
    hist = np.zeros(metadata.NUM_BUCKETS, np.int64)
    for step in (1, 2, 3, 4, 5):
        hist[metadata.HIST_ZERO_BUCKET] = 10 + step
        w.write_window(step, info, {"a": {"mean": 10.0 + step, "std": 1.0}}, {"a": hist})
    w.close()
    w = WindowWriter(str(tmp_path / "run"))  # the script runs again into the same log_dir
    for step in (3, 4):
        hist[metadata.HIST_ZERO_BUCKET] = 20 + step
        w.write_window(step, info, {"a": {"mean": 20.0 + step, "std": 2.0}}, {"a": hist})
    w.close()
    _write_run(tmp_path / "other", [1, 2])


def test_restart_the_newest_write_wins_with_one_warning_per_run(tmp_path):
    _restarted(tmp_path)
    with pytest.warns(RuntimeWarning, match="run 'run'.*newest write wins") as caught:
        long = tfprobe.read_logdir(tmp_path)
    assert len([w for w in caught if "newest write" in str(w.message)]) == 1
    mean = long[(long.run == "run") & (long.stat == "mean")]
    assert mean[["step", "value"]].values.tolist() == [[1, 11.0], [2, 12.0], [3, 23.0], [4, 24.0]]
    with pytest.warns(RuntimeWarning, match="newest write wins"):
        wide = tfprobe.read_logdir(tmp_path, pivot=True)
    run = wide[wide.run == "run"]
    assert run[["step", "mean", "std"]].values.tolist() == [[1, 11.0, 1.0], [2, 12.0, 1.0], [3, 23.0, 2.0],
                                                             [4, 24.0, 2.0]]
    with pytest.warns(RuntimeWarning, match="newest write wins"):
        h = tfprobe.read_histograms(tmp_path)
    assert h[h.run == "run"][["step", "count"]].values.tolist() == [[1, 11], [2, 12], [3, 23], [4, 24]]
    assert len(long[long.run == "other"]) == 2 * 2 * 2  # other runs untouched


def test_increasing_steps_across_files_raise_no_warning(tmp_path):
    _write_run(tmp_path, [1, 2])
    _write_run(tmp_path, [3, 4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sorted(set(tfprobe.read_logdir(tmp_path).step)) == [1, 2, 3, 4]


# ---------------------------------------------------------------- remote log dirs (tf.io.gfile)


def test_remote_logdir_through_tf_io_gfile():
    """A path with a scheme is written and read through `tf.io.gfile` (TensorFlow's `ram://` here)."""
    tf = pytest.importorskip("tensorflow")
    root = f"ram://tfprobe_test_{os.getpid()}"
    _write_run(root + "/r1", [1, 2])
    assert tf.io.gfile.isdir(root + "/r1")
    df = tfprobe.read_logdir(root)
    assert df[(df.layer == "a") & (df.stat == "mean")][["run", "step", "value"]].values.tolist() == [
        ["r1", 1, 1.0], ["r1", 2, 2.0]
    ]
    assert tfprobe.read_histograms(root)["count"].tolist() == [1, 2]
    assert tfprobe.read_layers(root).layer.tolist() == ["a", "b"]
    with pytest.raises(FileNotFoundError, match=r"Received: logdir='ram://"):
        tfprobe.read_logdir(root + "/missing")
