"""The run picker: the runs with tfprobe data (`runs`) and their layers (`layers`)."""

from __future__ import annotations

import time

from tensorboard import errors

from tensorboard_plugin_tfprobe import layout
from tensorboard_plugin_tfprobe.queries.common import DEFAULT_STAT, Source, _check_runs, list_series
from tensorboard_plugin_tfprobe.queries.files import SCAN_TIME_BUDGET, file_warnings
from tfprobe import metadata


def runs(src: Source):
    """The runs that hold tfprobe statistics, plus the statistic names the client can offer.

    Each run lists `warnings` about its files (`file_warnings`: failing checksums, concurrent writers).
    """
    all_series = list_series(src)
    deadline = time.monotonic() + SCAN_TIME_BUDGET
    return {
        "runs": [
            {
                "name": run,
                "layers": len(series),
                "max_step": max(s["max_step"] for s in series.values()),
                "warnings": file_warnings(src, run, deadline),
            }
            for run, series in sorted(all_series.items())
        ],
        "stats": list(metadata.STATS),
        "stat_descriptions": dict(metadata.STAT_DESCRIPTIONS),
        "default_stat": DEFAULT_STAT,
        "categories": [
            {
                "name": c,
                "description": layout.CATEGORY_DESCRIPTIONS[c],
                "classes": list(layout.CATEGORY_CLASSES.get(c, ())),
            }
            for c in layout.CATEGORIES
        ],
    }


def layers(src: Source, run_names):
    """Per requested run: its series (layers) in model order with their metadata."""
    run_names = _check_runs(run_names)
    found = list_series(src, run_names)
    missing = [r for r in run_names if r not in found]
    if missing:
        raise errors.NotFoundError(f"run {missing[0]!r} has no tfprobe data")
    return {
        "runs": {
            run: {
                "max_step": max(s["max_step"] for s in found[run].values()),
                "layers": list(found[run].values()),
            }
            for run in run_names
        }
    }
