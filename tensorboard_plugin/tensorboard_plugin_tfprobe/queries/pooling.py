"""The Pooling view: the pooling statistics over time (`pooling`) and the depth funnel (`funnel`)."""

from __future__ import annotations

import math

import numpy as np
from tensorboard import errors

from tensorboard_plugin_tfprobe.queries.common import (
    ALL_POINTS,
    DEFAULT_POINTS,
    MAX_POINTS,
    Source,
    _check_int,
    _pairs,
    _run_series,
    require,
    round_sig,
)
from tfprobe import metadata


def pooling(src: Source, run, points=DEFAULT_POINTS):
    """Every pooling series of one run with its pooling statistics over time."""
    require("run", run)
    points = _check_int("points", points, 1, MAX_POINTS, DEFAULT_POINTS)
    series = _run_series(src, run)
    pools = [info for info in series.values() if info["kind"] == "pooling"]
    tags = [metadata.tag_for(p["name"], s) for p in pools for s in metadata.POOLING_STATS if s in p["stats"]]
    data = {}
    if tags:
        data = src.read_scalars([run], tags, points).get(run, {})
    out = []
    for p in pools:
        stats = {}
        for s in metadata.POOLING_STATS:
            pts = data.get(metadata.tag_for(p["name"], s))
            if pts is not None:
                stats[s] = _pairs(pts)
        out.append({"name": p["name"], "class": p["class"], "order": p["order"], "shape": p["shape"], "stats": stats})
    return {"run": run, "stats": list(metadata.POOLING_STATS), "layers": out}


def funnel(src: Source, run, step=None):
    """Per layer in model order at one step: elements per example, and at pooling layers the
    share of mass and energy that survives; `cumulative_mass` is the product of the mass retentions
    along the model graph (`inputs`), the best-kept path where branches merge.

    `step` picks the newest logged window at or before it; default the newest window.
    """
    require("run", run)
    step = _check_int("step", step, -(2**62), 2**62, None)
    series = _run_series(src, run)
    pools = [n for n, info in series.items() if info["kind"] == "pooling"]
    wanted = ("size_ratio", "mass_retention", "energy_retention")
    tags = [metadata.tag_for(n, s) for n in pools for s in wanted]
    data = {}
    if tags:
        data = src.read_scalars([run], tags, ALL_POINTS).get(run, {})
    steps = sorted({p.step for pts in data.values() for p in pts})
    if step is None:
        chosen = steps[-1] if steps else None
    else:
        before = [s for s in steps if s <= step]
        chosen = before[-1] if before else None
        if steps and chosen is None:
            raise errors.NotFoundError(f"no window of run {run!r} at or before step {step}")

    def value_at(name, stat):
        pts = data.get(metadata.tag_for(name, stat))
        if not pts or chosen is None:
            return None
        idx = np.searchsorted([p.step for p in pts], chosen, side="right") - 1
        return float(round_sig([pts[idx].value])[0]) if idx >= 0 else None

    rows, cumulative, previous = [], {}, 1.0
    for n, info in series.items():
        row = {"name": n, "class": info["class"], "kind": info["kind"], "elements": info["elements"]}
        inputs = [i for i in info.get("inputs") or () if i in cumulative]
        # Along the model graph: the best-kept path into this layer (the previous layer in model order for
        # logs written before `inputs` was recorded).
        kept = max((cumulative[i] for i in inputs), default=1.0) if info.get("inputs") is not None else previous
        if info["kind"] == "pooling":
            for s in wanted:
                row[s] = value_at(n, s)
            if row["mass_retention"] is not None and math.isfinite(row["mass_retention"]):
                kept *= row["mass_retention"]
        cumulative[n] = previous = kept
        row["cumulative_mass"] = float(round_sig([kept])[0])
        rows.append(row)
    return {"run": run, "step": chosen, "steps": steps, "layers": rows}
