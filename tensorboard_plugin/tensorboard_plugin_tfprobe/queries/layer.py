"""The Layer view: one layer's statistics over time (`scalars`) and its histograms (`histogram`)."""

from __future__ import annotations

import numpy as np
from tensorboard import errors
from tensorboard.data import provider

from tensorboard_plugin_tfprobe.queries.common import (
    DEFAULT_POINTS,
    MAX_COLUMNS,
    MAX_POINTS,
    Source,
    _check_int,
    _check_runs,
    _checked_points,
    _pairs,
    _provider_read,
    _run_series,
    check_stat,
    list_series,
    require,
)
from tfprobe import metadata
from tfprobe.logs import _decode


def _find_layer(found, run_names, layer):
    present = [r for r in run_names if layer in found.get(r, {})]
    if not present:
        where = run_names[0] if len(run_names) == 1 else ", ".join(map(repr, run_names))
        raise errors.NotFoundError(
            f"layer {layer!r} not found in run {where!r}"
            if len(run_names) == 1
            else f"layer {layer!r} not found in runs {where}"
        )
    return present


def scalars(src: Source, run_names, layer, stats, points=DEFAULT_POINTS):
    """Time series of `stats` of one layer in each run: `{stat: {run: [[step, value], ...]}}`."""
    run_names = _check_runs(run_names)
    require("layer", layer)
    if not stats:
        raise errors.InvalidArgumentError(f"`stat` is required: pass one or more stat=NAME. Received: stat={stats!r}")
    stats = [check_stat(s) for s in dict.fromkeys(stats)]
    points = _check_int("points", points, 1, MAX_POINTS, DEFAULT_POINTS)
    found = list_series(src, run_names)
    for r in run_names:
        if r not in found:
            raise errors.NotFoundError(f"run {r!r} has no tfprobe data")
    present = _find_layer(found, run_names, layer)
    data = src.read_scalars(present, [metadata.tag_for(layer, s) for s in stats], points)
    out = {s: {} for s in stats}
    for run in present:
        for s in stats:
            pts = data.get(run, {}).get(metadata.tag_for(layer, s))
            if pts is not None:
                out[s][run] = _pairs(pts)
    return {
        "layer": layer,
        "runs": present,
        "info": {r: found[r][layer] for r in present},
        "series": out,
    }


def histogram(src: Source, run, layer, columns=DEFAULT_POINTS, quantity=None):
    """The histogram of one layer over time: counts per bucket (rows) and logged step (columns).

    `quantity`: `"activation"` (default) for the layer's values, `"gradient"` for its activation gradient.
    """
    require("run", run)
    require("layer", layer)
    columns = _check_int("columns", columns, 1, MAX_COLUMNS, DEFAULT_POINTS)
    quantity = quantity or "activation"
    if quantity not in metadata.HISTOGRAM_QUANTITIES:
        raise errors.InvalidArgumentError(
            f"`quantity` must be one of {', '.join(metadata.HISTOGRAM_QUANTITIES)}. Received: quantity={quantity!r}"
        )
    plugin_name, suffix = metadata.HISTOGRAM_QUANTITIES[quantity]
    series = _run_series(src, run)
    _find_layer({run: series}, [run], layer)
    tag = metadata.tag_for(layer, suffix)
    data = _provider_read(
        src,
        "histogram",
        run,
        tag,
        lambda: src.provider.read_tensors(
            src.ctx,
            experiment_id=src.experiment_id,
            plugin_name=plugin_name,
            downsample=columns,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag]),
        ),
        {},
    )
    points = _checked_points(
        run,
        tag,
        data.get(run, {}).get(tag, []),
        lambda p: _decode.check_array(
            p.numpy,
            "iu",
            lambda dims: dims == [metadata.NUM_BUCKETS],
            f"a tfprobe histogram (shape [{metadata.NUM_BUCKETS}])",
        ),
    )
    edges = metadata.histogram_buckets()
    if not points:
        return {"run": run, "layer": layer, "quantity": quantity, "steps": [], "buckets": [], "counts": []}
    counts = np.stack([np.asarray(p.numpy, dtype=np.int64) for p in points])
    used = np.flatnonzero(counts.sum(axis=0))
    lo, hi = (
        (int(used[0]), int(used[-1]) + 1) if len(used) else (metadata.HIST_ZERO_BUCKET, metadata.HIST_ZERO_BUCKET + 1)
    )
    return {
        "run": run,
        "layer": layer,
        "quantity": quantity,
        "steps": [int(p.step) for p in points],
        "first_bucket": lo,
        "buckets": [list(e) for e in edges[lo:hi]],
        "counts": counts[:, lo:hi].tolist(),
    }
