"""The reader: every point, several runs, pivot, histograms, and no TensorFlow import."""

import subprocess
import sys

import numpy as np

import tfprobe
from tfprobe import metadata
from tfprobe.writer import WindowWriter


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
    _write_run(tmp_path / "r1", [1, 2])
    h = tfprobe.read_histograms(tmp_path)
    assert h[["layer", "step", "bucket", "left", "right", "count"]].values.tolist() == [
        ["a", 1, metadata.HIST_ZERO_BUCKET, 0.0, 0.0, 1],
        ["a", 2, metadata.HIST_ZERO_BUCKET, 0.0, 0.0, 2],
    ]
    layers = tfprobe.read_layers(tmp_path)
    assert layers[["layer", "order", "class"]].values.tolist() == [["a", 0, "Dense"], ["b", 1, "Dense"]]


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
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference

    from tfprobe.events import masked_crc32c

    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 8, 1000, 65537):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert masked_crc32c(data) == reference(data), n
