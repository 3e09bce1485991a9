"""Writes logged windows to event files in tfprobe's format (see `tfprobe.metadata`).

>>> import tempfile
>>> from tfprobe import read_logdir
>>> d = tempfile.mkdtemp()
>>> w = WindowWriter(d)
>>> info = {"series": "dense", "layer": "dense", "class": "Dense", "order": 0}
>>> _ = w.write_window(10, {"dense": info}, {"dense": {"mean": 0.5}}, {})
>>> w.close()
>>> read_logdir(d)[["run", "step", "layer", "stat", "value"]].values.tolist()
[['.', 10, 'dense', 'mean', 0.5]]
"""

from __future__ import annotations

import time

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

from tfprobe import metadata
from tfprobe.logs.events import EventFileWriter


def _scalar_tensor(value: float):
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(),
        float_val=[float(value)],
    )


def _counts_tensor(counts):
    counts = np.asarray(counts, dtype=np.int64)
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_INT64,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(counts.size))]
        ),
        int64_val=counts.tolist(),
    )


def summary_metadata(plugin_name, data_class, content=b"", description="", display_name=""):
    """A `SummaryMetadata` (see `tfprobe.metadata` for tfprobe's plugin names and content)."""
    md = summary_pb2.SummaryMetadata(data_class=data_class)
    md.plugin_data.plugin_name = plugin_name
    if content:
        md.plugin_data.content = content
    if description:
        md.summary_description = description
    if display_name:
        md.display_name = display_name
    return md


class FirstValueMetadata:
    """The metadata of each value of one event file: in full with the first value of a tag only.

    TensorBoard and tfprobe's readers take a tag's metadata from its first value; repeating the content
    on every value would only grow the files. The one implementation used by tfprobe's writers
    (`WindowWriter`, `tfprobe.reference.analysis.AnalysisWriter`, `tfprobe.looks.LooksAnalysis`).

    >>> first = FirstValueMetadata()
    >>> md = first("tfprobe/dense/mean", "tfprobe", metadata.DATA_CLASS_SCALAR, lambda: b"{}", "the mean")
    >>> md.plugin_data.content, md.summary_description
    (b'{}', 'the mean')
    >>> again = first("tfprobe/dense/mean", "tfprobe", metadata.DATA_CLASS_SCALAR, lambda: b"{}", "the mean")
    >>> again.plugin_data.plugin_name, again.plugin_data.content, again.summary_description
    ('tfprobe', b'', '')
    >>> first("looks/example_00/probability", "scalars", metadata.DATA_CLASS_SCALAR, later=False) is not None
    True
    >>> first("looks/example_00/probability", "scalars", metadata.DATA_CLASS_SCALAR, later=False) is None
    True
    """

    def __init__(self):
        self._described = set()
        self._later = {}  # (plugin_name, data_class) -> the metadata of later values, shared (protobuf copies it)

    def __call__(self, tag, plugin_name, data_class, content=b"", description="", display_name="", later=True):
        """The `SummaryMetadata` of the next value of `tag` (to copy into the value, not to modify).

        The first value gets `content` (bytes, or a function that returns them: it is called only then),
        `description` and `display_name`; later values get only the plugin name and data class, or no
        metadata at all (None) with `later=False`.
        """
        if tag in self._described:
            if not later:
                return None
            md = self._later.get((plugin_name, data_class))
            if md is None:
                md = self._later[plugin_name, data_class] = summary_metadata(plugin_name, data_class)
            return md
        self._described.add(tag)
        return summary_metadata(
            plugin_name, data_class, content() if callable(content) else content, description, display_name
        )

    def clear(self):
        """Forgets every tag: the next value of each carries its metadata again (a new file)."""
        self._described.clear()


class WindowWriter:
    """Writes one `Event` per logged window; metadata goes with each tag's first value."""

    def __init__(self, logdir: str):
        self._file = EventFileWriter(logdir)
        self._metadata = FirstValueMetadata()
        self.bytes_written = 0
        self.windows_written = 0

    @property
    def path(self):
        return self._file.path

    def _series_metadata(self, tag, info, stat, plugin_name, data_class):
        return self._metadata(
            tag,
            plugin_name,
            data_class,
            lambda: metadata.encode_content(info, stat),
            metadata.STAT_DESCRIPTIONS.get(stat, ""),
        )

    def write_window(self, step, infos, stats, histograms, wall_time=None, grad_histograms=None):
        """Writes one window; returns the bytes written.

        Args:
          step: the global step that closed the window (must increase).
          infos: `{series: info dict}` (see `metadata`), used for the content.
          stats: `{series: {stat: float}}`. Non-finite values are written as is.
          histograms: `{series: counts}` with `metadata.NUM_BUCKETS` counts.
          grad_histograms: the same for the series' activation gradients (optional).
        """
        event = event_pb2.Event(step=int(step), wall_time=time.time() if wall_time is None else wall_time)
        for series, values in stats.items():
            for stat, value in values.items():
                if value is None:
                    continue
                tag = metadata.tag_for(series, stat)
                md = self._series_metadata(tag, infos[series], stat, metadata.PLUGIN_NAME, metadata.DATA_CLASS_SCALAR)
                event.summary.value.add(tag=tag, metadata=md, tensor=_scalar_tensor(value))
        for quantity, hists in (("activation", histograms), ("gradient", grad_histograms or {})):
            plugin_name, suffix = metadata.HISTOGRAM_QUANTITIES[quantity]
            for series, counts in hists.items():
                tag = metadata.tag_for(series, suffix)
                md = self._series_metadata(tag, infos[series], suffix, plugin_name, metadata.DATA_CLASS_TENSOR)
                event.summary.value.add(tag=tag, metadata=md, tensor=_counts_tensor(counts))
        n = self._file.write(event)
        self._file.flush()
        self.bytes_written += n
        self.windows_written += 1
        return n

    def close(self):
        self._file.close()
