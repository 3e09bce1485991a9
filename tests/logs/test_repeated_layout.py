"""Records that repeat the layout of the record before are compared with it, not split again
(`_decode.same_layout`): every value must still be the one the protobuf parse gives."""

import numpy as np
from tensorboard.util import tensor_util

import tfprobe
from tfprobe import metadata
from tfprobe.logs import _decode
from tfprobe.logs.events import iter_records, read_events
from tfprobe.logs.writer import WindowWriter


def _oracle(path):
    """`{(layer, stat, step): value}` of every scalar, parsed with the protobuf classes."""
    out = {}
    for name in sorted(path.iterdir()):
        for event in read_events(str(name)):
            for v in event.summary.value:
                parsed = metadata.parse_tag(v.tag)
                if parsed and v.metadata.plugin_data.plugin_name in ("", metadata.PLUGIN_NAME):
                    out[(parsed[0], parsed[1], event.step)] = float(tensor_util.make_ndarray(v.tensor))
    return out


def test_repeated_layouts_read_as_the_protobuf_parse(tmp_path):
    """Steps whose varint grows (127 -> 128, 16383 -> 16384), histograms after the scalars in some records
    only, a series that appears and one that disappears: the layout changes, then repeats."""
    rng = np.random.default_rng(0)
    steps = [1, 2, 126, 127, 128, 129, 16383, 16384, 16385, 2**35, 2**35 + 1]
    hist = np.zeros(metadata.NUM_BUCKETS, np.int64)
    hist[metadata.HIST_ZERO_BUCKET] = 7
    w = WindowWriter(str(tmp_path / "run"))
    for i, step in enumerate(steps):
        names = ["a", "bb"] + (["new"] if i >= 4 else []) + (["gone"] if i < 7 else [])
        infos = {n: {"series": n, "layer": n, "class": "Dense", "order": j} for j, n in enumerate(names)}
        stats = {n: {"mean": float(rng.normal()), "std": float(rng.random())} for n in names}
        w.write_window(step, infos, stats, {"a": hist} if i % 3 == 0 else {})
    w.close()
    df = tfprobe.read_logdir(tmp_path)
    got = {(layer, stat, step): value for layer, stat, step, value in zip(df.layer, df.stat, df.step, df.value)}
    assert got == _oracle(tmp_path / "run") and len(got) == 2 * (2 * 11 + 7 + 7)
    assert len(tfprobe.read_histograms(tmp_path).groupby("step")) == 4


def test_same_layout_refuses_another_layout(tmp_path):
    """Other bytes than the floats', a longer or a shorter record, or a fast value after it: None."""
    w = WindowWriter(str(tmp_path))
    infos = {n: {"series": n, "layer": n, "class": "Dense", "order": j} for j, n in enumerate("ab")}
    for step in (1, 2):
        w.write_window(step, infos, {"a": {"mean": 0.5 * step}, "b": {"mean": -2.0 * step}}, {})
    w.close()
    data = [d for _, d in iter_records(w.path)][-1]  # step 2: after the first window's metadata
    _, _, pos = _decode.split_event(data)
    skeleton, values, _, at = _decode.fast_scalars(data, pos, _decode.fast_end(data, pos))
    assert values.tolist() == [1.0, -4.0]
    assert _decode.same_layout(data, pos, skeleton, at).tolist() == [1.0, -4.0]
    other = data.replace(b"/a/", b"/c/")
    assert other != data and _decode.same_layout(other, pos, skeleton, at) is None
    assert _decode.same_layout(data[:-1], pos, skeleton, at) is None
    assert _decode.same_layout(data + data[pos:], pos, skeleton, at) is None  # another fast value follows
