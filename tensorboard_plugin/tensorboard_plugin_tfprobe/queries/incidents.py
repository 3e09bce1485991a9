"""The incidents of the Health view: `tfprobe.incidents` over the findings of `health` (`incidents`)."""

from __future__ import annotations

import math

import numpy as np

from tensorboard_plugin_tfprobe.queries.common import HEALTH_POINTS, Source
from tensorboard_plugin_tfprobe.queries.health import _diagnosed


def _plain(value):
    """A JSON-safe Python value: NumPy scalars and arrays unwrapped, NaN and pandas' NA as None."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if value is None or (not isinstance(value, str) and value != value):  # pandas.NA compares to NA
        return None
    try:
        import pandas as pd

        if value is pd.NA:
            return None
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    return value


def incidents(src: Source, run_names, points=HEALTH_POINTS, **thresholds):
    """`tfprobe.incidents` over the selected runs (the findings of `health`, grouped by root cause), and
    the findings with the incident each belongs to (`incident`, 0 for none)."""
    from tfprobe.findings.incidents import group

    run_names, points, findings, layer_frame = _diagnosed(src, run_names, points, thresholds)
    table, members = group(findings, layer_frame)
    return {
        "runs": run_names,
        "points": points,
        "incidents": [{k: _plain(v) for k, v in rec.items()} for rec in table.to_dict("records")],
        "findings": [{k: _plain(v) for k, v in rec.items()} for rec in members.to_dict("records")],
    }
