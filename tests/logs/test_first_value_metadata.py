"""Each writer puts a tag's metadata on its first value in a file only, through the one `FirstValueMetadata`."""

import json

from tfprobe import metadata
from tfprobe.logs.events import read_events
from tfprobe.logs.writer import FirstValueMetadata, WindowWriter
from tfprobe.reference.analysis import AnalysisWriter


def _values(path):
    """`[(step, tag, SummaryMetadata)]` of every value in one event file, in write order."""
    return [(e.step, v.tag, v.metadata) for e in read_events(path) for v in e.summary.value]


def test_window_writer_describes_each_tag_once_per_file(tmp_path):
    info = {"series": "dense", "layer": "dense", "class": "Dense", "order": 0}
    writer = WindowWriter(str(tmp_path))
    for step in (1, 2):
        writer.write_window(step, {"dense": info}, {"dense": {"mean": 0.5, "std": 1.0}},
                            {"dense": [0] * metadata.NUM_BUCKETS})
    writer.close()
    values = _values(writer.path)
    assert [(s, t) for s, t, _ in values] == [(s, metadata.tag_for("dense", k)) for s in (1, 2)
                                              for k in ("mean", "std", "histogram")]
    for step, tag, md in values:
        stat = metadata.parse_tag(tag)[1]
        plugin = metadata.HIST_PLUGIN_NAME if stat == "histogram" else metadata.PLUGIN_NAME
        assert (md.plugin_data.plugin_name, md.data_class > 0) == (plugin, True)
        if step == 1:
            assert md.plugin_data.content == metadata.encode_content(info, stat)
            assert json.loads(md.plugin_data.content)["v"] == metadata.FORMAT_VERSION
            assert md.summary_description == metadata.STAT_DESCRIPTIONS.get(stat, "")
        else:
            assert md.plugin_data.content == b"" and md.summary_description == ""


def test_analysis_writer_describes_scalars_once_and_matrices_always(tmp_path):
    writer = AnalysisWriter(str(tmp_path))
    info = {"series": "dense", "stat": "effective_rank"}
    for step in (3, 6):
        writer.write(step, scalars=[("tfprobe/dense/effective_rank", 2.0, info)],
                     tensors=[("tfprobe/cka_matrix", [[1.0]], metadata.CKA_PLUGIN_NAME, {"layers": ["dense"]})])
    writer.close()
    (path,) = [str(p) for p in tmp_path.iterdir() if p.name.endswith(metadata.REFERENCE_SUFFIX)]
    contents = [(s, t, md.plugin_data.content) for s, t, md in _values(path)]
    assert contents == [
        (3, "tfprobe/dense/effective_rank", metadata.encode_json(info)),
        (3, "tfprobe/cka_matrix", metadata.encode_json({"layers": ["dense"]})),
        (6, "tfprobe/dense/effective_rank", b""),
        (6, "tfprobe/cka_matrix", metadata.encode_json({"layers": ["dense"]})),
    ]


def test_clear_describes_every_tag_again():
    first = FirstValueMetadata()
    a = first("t", "scalars", metadata.DATA_CLASS_SCALAR, b"c", "d")
    b = first("t", "scalars", metadata.DATA_CLASS_SCALAR, b"c", "d")
    assert (a.plugin_data.content, b.plugin_data.content) == (b"c", b"")
    assert first("t", "scalars", metadata.DATA_CLASS_SCALAR, later=False) is None
    first.clear()
    assert first("t", "scalars", metadata.DATA_CLASS_SCALAR, lambda: b"again").plugin_data.content == b"again"
