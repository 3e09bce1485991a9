"""Reads tfprobe event files into pandas DataFrames, without TensorFlow.

Every point on disk is returned: nothing is downsampled.

>>> import tempfile
>>> from tfprobe.writer import WindowWriter
>>> d = tempfile.mkdtemp()
>>> w = WindowWriter(d + "/run1")
>>> info = {"series": "relu", "layer": "relu", "class": "ReLU", "order": 0}
>>> _ = w.write_window(5, {"relu": info}, {"relu": {"mean": 0.25, "std": 1.0}}, {})
>>> w.close()
>>> read_logdir(d, pivot=True)[["run", "step", "layer", "mean", "std"]].values.tolist()
[['run1', 5, 'relu', 0.25, 1.0]]
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tensorboard.util import tensor_util

from tfprobe import metadata
from tfprobe.events import event_files, read_events

_LONG_COLUMNS = ["run", "step", "wall_time", "layer", "stat", "value"]
_HIST_COLUMNS = ["run", "step", "wall_time", "layer", "bucket", "left", "right", "count"]
_LAYER_COLUMNS = [
    "run", "layer", "order", "layer_path", "class", "kind", "output", "call", "shape", "bounds", "sample_size"
]


_SCALAR_PLUGINS = (metadata.PLUGIN_NAME, metadata.REPR_PLUGIN_NAME)
_CKA_COLUMNS = ["run", "step", "wall_time", "layer_a", "layer_b", "cka"]


def _scan(logdir, plugins=(metadata.PLUGIN_NAME, metadata.HIST_PLUGIN_NAME, metadata.REPR_PLUGIN_NAME)):
    """Yields `(run, event, value, plugin_name, content)` for every value of `plugins` under `logdir`."""
    runs = event_files(str(logdir))
    for run, paths in runs.items():
        for path in paths:
            for event in read_events(path):
                if not event.HasField("summary"):
                    continue
                for value in event.summary.value:
                    plugin = value.metadata.plugin_data.plugin_name
                    if plugin in plugins:
                        yield run, event, value, plugin, value.metadata.plugin_data.content


def _read(logdir):
    scalars, hists, layers = [], [], {}
    for run, event, value, plugin, content in _scan(logdir):
        parsed = metadata.parse_tag(value.tag)
        if parsed is None:
            continue
        series, stat = parsed
        # the training windows describe a series fully; a reference measure's content only stands in until then
        if content and ((run, series) not in layers or layers[(run, series)].get("_reference")):
            info = metadata.decode_content(content)
            layers[(run, series)] = {**info, "_reference": True} if plugin == metadata.REPR_PLUGIN_NAME else info
        array = tensor_util.make_ndarray(value.tensor)
        if plugin in _SCALAR_PLUGINS:
            scalars.append((run, event.step, event.wall_time, series, stat, float(array)))
        else:
            hists.append((run, event.step, event.wall_time, series, array))
    return scalars, hists, layers


def _layer_frame(layers):
    rows = []
    for (run, series), info in layers.items():
        rows.append(
            {
                "run": run,
                "layer": series,
                "order": info.get("order", -1),
                "layer_path": info.get("layer", series),
                "class": info.get("class", ""),
                "kind": info.get("kind", "activation"),
                "output": info.get("output", 0),
                "call": info.get("call", 0),
                "shape": info.get("shape"),
                "bounds": info.get("bounds"),
                "sample_size": info.get("sample_size"),
            }
        )
    frame = pd.DataFrame(rows, columns=_LAYER_COLUMNS)
    return frame.sort_values(["run", "order", "layer"], kind="stable").reset_index(drop=True)


def _order_key(layers):
    return {key: info.get("order", -1) for key, info in layers.items()}


def read_logdir(logdir, pivot: bool = False) -> pd.DataFrame:
    """Reads every tfprobe statistic under `logdir` (each sub-directory is a run).

    Args:
      logdir: a directory; runs are its sub-directories holding event files
        (`"."` for files directly in it), as in TensorBoard.
      pivot: if True, returns a wide frame with one column per statistic.
        Defaults to `False`.

    Returns:
      Long format: columns `run, step, wall_time, layer, stat, value`, one row
      per point, sorted by run, layer (model order), stat and step. `layer` is
      the series name (see `tfprobe.metadata`). The measures of the
      reference-set analysis (`metadata.REPRESENTATION_STATS`) are rows too,
      at their reference steps.
    """
    scalars, _, layers = _read(logdir)
    frame = pd.DataFrame(scalars, columns=_LONG_COLUMNS)
    frame["step"] = frame["step"].astype("int64")
    order = _order_key(layers)
    frame["_order"] = [order.get((r, s), -1) for r, s in zip(frame["run"], frame["layer"])]
    frame = frame.sort_values(["run", "_order", "layer", "stat", "step"], kind="stable")
    frame = frame.drop(columns="_order").reset_index(drop=True)
    if not pivot:
        return frame
    keys = ["run", "layer", "step"]
    grouped = frame.groupby(keys, sort=False)
    wide = frame.set_index(keys + ["stat"])["value"]
    wide = wide[~wide.index.duplicated(keep="last")].unstack("stat")
    wide.insert(0, "wall_time", grouped["wall_time"].max())
    wide = wide.reset_index()
    wide.columns.name = None
    order = _order_key(layers)
    wide["_order"] = [order.get((r, s), -1) for r, s in zip(wide["run"], wide["layer"])]
    wide = wide.sort_values(["run", "_order", "layer", "step"], kind="stable").drop(columns="_order")
    wide = wide.reset_index(drop=True)
    stat_columns = [s for s in metadata.STATS if s in wide.columns]
    other = [c for c in wide.columns if c not in stat_columns and c not in ("run", "step", "wall_time", "layer")]
    return wide[["run", "step", "wall_time", "layer"] + stat_columns + other]


def read_histograms(logdir) -> pd.DataFrame:
    """Reads every tfprobe histogram under `logdir`.

    Returns:
      Long format: columns `run, step, wall_time, layer, bucket, left, right,
      count`, one row per non-empty bucket per logged window. `left`/`right`
      are the bucket's value range (`metadata.histogram_buckets()`).
    """
    _, hists, layers = _read(logdir)
    edges = metadata.histogram_buckets()
    rows = []
    for run, step, wall_time, series, counts in hists:
        for bucket in np.flatnonzero(counts):
            left, right = edges[bucket] if bucket < len(edges) else (np.nan, np.nan)
            rows.append((run, step, wall_time, series, int(bucket), left, right, int(counts[bucket])))
    frame = pd.DataFrame(rows, columns=_HIST_COLUMNS)
    order = _order_key(layers)
    frame["_order"] = [order.get((r, s), -1) for r, s in zip(frame["run"], frame["layer"])]
    frame = frame.sort_values(["run", "_order", "layer", "step", "bucket"], kind="stable")
    return frame.drop(columns="_order").reset_index(drop=True)


def read_layers(logdir) -> pd.DataFrame:
    """One row per recorded series and run, in model order.

    Columns: `run, layer, order, layer_path, class, kind, output, call, shape,
    bounds, sample_size` (see `tfprobe.metadata`).
    """
    return _layer_frame(_read(logdir)[2])


def read_cka(logdir) -> pd.DataFrame:
    """Reads the layers x layers linear CKA matrices of every reference step (`LayerProbe(reference_data=...)`).

    Returns:
      Long format: columns `run, step, wall_time, layer_a, layer_b, cka`, one
      row per pair of recorded series (both orders and the diagonal) per
      reference step, in model order.
    """
    rows = []
    for run, event, value, _plugin, content in _scan(logdir, plugins=(metadata.CKA_PLUGIN_NAME,)):
        names = metadata.decode_content(content).get("layers")
        matrix = tensor_util.make_ndarray(value.tensor)
        if not isinstance(names, list) or matrix.shape != (len(names), len(names)):
            continue  # a matrix whose rows are not named cannot be read
        for i, a in enumerate(names):
            rows += [(run, event.step, event.wall_time, a, b, float(matrix[i, j])) for j, b in enumerate(names)]
    frame = pd.DataFrame(rows, columns=_CKA_COLUMNS)
    frame["step"] = frame["step"].astype("int64")
    return frame.sort_values(["run", "step"], kind="stable").reset_index(drop=True)
