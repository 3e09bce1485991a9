"""Health findings over tfprobe statistics: NaN/Inf, dead layers and units, saturation,
exploding or vanishing activations.

`diagnose(df)` takes the long frame of `tfprobe.read_logdir` (columns `run,
step, wall_time, layer, stat, value`) and returns one row per finding. The
dashboard's Health view (through the data provider) and `tfprobe report` call
this same function.

>>> import pandas as pd
>>> df = pd.DataFrame({"run": "r", "step": [1, 2, 1, 2], "wall_time": 0.0,
...                    "layer": ["a", "a", "b", "b"], "stat": "nan_count",
...                    "value": [0.0, 3.0, 0.0, 0.0]})
>>> diagnose(df)[["layer", "kind", "severity", "first_step"]].values.tolist()
[['a', 'nan_inf', 'error', 2]]
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

SEVERITIES = ("info", "warning", "error")
"""Severity names, least severe first."""

FINDING_COLUMNS = ["run", "layer", "stat", "kind", "severity", "first_step", "last_step", "message"]

KINDS = {
    "nan_inf": "error",
    "dead_layer": "error",
    "dead_units": "warning",
    "saturation": "warning",
    "exploding_depth": "warning",
    "vanishing_depth": "warning",
    "exploding_time": "warning",
    "vanishing_time": "warning",
    "std_drift": "info",
}
"""Every finding kind and its severity."""

REQUIRED_STATS = (
    "nan_count",
    "inf_count",
    "std",
    "zero_fraction",
    "near_zero_fraction",
    "dead_unit_fraction",
    "saturation_fraction",
)
"""The statistics `diagnose` looks at (others are ignored)."""

_DEFAULTS = {
    "dead_layer_fraction": 0.99,
    "dead_units_fraction": 0.5,
    "saturation_fraction": 0.5,
    "std_ratio": 10.0,
    "min_std": 1e-6,
}


def severity_rank(severity: str) -> int:
    """Position of `severity` in `SEVERITIES` (0 = info); raises ValueError for other names."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        raise ValueError(f"`severity` must be one of {', '.join(SEVERITIES)}. Received: severity={severity!r}") from None


def thresholds(**overrides) -> dict:
    """The default thresholds of `diagnose`, updated with `overrides` (validated)."""
    check_thresholds(**overrides)
    out = dict(_DEFAULTS)
    out.update({k: float(v) for k, v in overrides.items()})
    return out


def check_thresholds(**kwargs):
    """Raises TypeError for an unknown threshold name and ValueError for a bad value."""
    for name, value in kwargs.items():
        if name not in _DEFAULTS:
            raise TypeError(f"unknown threshold `{name}`; thresholds are: {', '.join(_DEFAULTS)}")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"`{name}` must be a number. Received: {name}={value!r}") from None
        if name.endswith("_fraction") and not 0.0 < v <= 1.0:
            raise ValueError(f"`{name}` must be in (0, 1]. Received: {name}={value!r}")
        if name == "std_ratio" and not v > 1.0:
            raise ValueError(f"`std_ratio` must be > 1. Received: std_ratio={value!r}")
        if name == "min_std" and not v >= 0.0:
            raise ValueError(f"`min_std` must be >= 0. Received: min_std={value!r}")


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    return f"{v:.3g}"


def _model_order(df, layers):
    """`{(run, layer): order}` from the layers frame, else from first appearance in `df`."""
    order = {}
    if layers is not None and len(layers):
        for run, layer, o in zip(layers["run"], layers["layer"], layers["order"]):
            order[(run, layer)] = o
    seen = {}
    for run, layer in df[["run", "layer"]].drop_duplicates().itertuples(index=False):
        if (run, layer) not in order:
            n = seen.get(run, 0)
            seen[run] = n + 1
            order[(run, layer)] = 10**6 + n  # after the layers the layers frame knows about
    return order


def _bounded(layers):
    if layers is None or "bounds" not in getattr(layers, "columns", ()):
        return set()
    return {(r, l) for r, l, b in zip(layers["run"], layers["layer"], layers["bounds"]) if b is not None and not (isinstance(b, float) and math.isnan(b))}


def _spans(rows, kind, stat, message, extreme="max"):
    """One finding per (run, layer) from `rows` (run, layer, step, value, latest_step)."""
    out = []
    if rows.empty:
        return out
    for (run, layer), g in rows.groupby(["run", "layer"], sort=False):
        first, last = int(g["step"].min()), int(g["step"].max())
        vals = g["value"].to_numpy(dtype=float)
        finite = vals[np.isfinite(vals)]
        worst = (finite.max() if extreme == "max" else finite.min()) if finite.size else float("nan")
        latest = bool(last == g["latest_step"].iloc[0])
        extra = g["extra"].iloc[int(np.argmax(vals == worst))] if "extra" in g and finite.size else None
        text = message(worst, extra)
        text += f"; from step {first} " + ("to the latest window" if latest else f"until step {last}")
        out.append((run, layer, stat, kind, KINDS[kind], first, last, text))
    return out


def diagnose(df: pd.DataFrame, layers: pd.DataFrame | None = None, **kwargs) -> pd.DataFrame:
    """Finds numerical-health problems in tfprobe statistics.

    Args:
      df: long frame as returned by `tfprobe.read_logdir(logdir)` (columns
        `run, step, layer, stat, value`; other columns are ignored). Only
        `REQUIRED_STATS` are used; missing statistics simply skip their checks.
      layers: optional frame from `tfprobe.read_layers(logdir)`. It gives the
        model order (otherwise the order of first appearance in `df`, which is
        model order for `read_logdir` output) and the `bounds` of bounded
        activations, which are left out of the depth comparison.
      dead_layer_fraction: a layer is dead in a window when its `zero_fraction`
        (or `near_zero_fraction`) is at least this. Defaults to `0.99`.
      dead_units_fraction: report dead units when `dead_unit_fraction`
        exceeds this. Defaults to `0.5`.
      saturation_fraction: report saturation when `saturation_fraction`
        exceeds this. Defaults to `0.5`.
      std_ratio: report exploding (vanishing) activations when `std` grows
        (shrinks) by more than this factor from one layer to the next in model
        order at the same step (`*_depth`, warning) or from one logged window
        of a layer to the next (`*_time`, warning); a gradual change by more
        than this factor since the layer's first logged window is `std_drift`
        (info: activations often grow from their initial scale during
        training). Defaults to `10.0`.
      min_std: standard deviations at or below this are treated as zero and
        not compared. Defaults to `1e-6`.

    Returns:
      A DataFrame with columns `run, layer, stat, kind, severity, first_step,
      last_step, message`, most severe first, then by first step and model
      order. `kind` is one of `KINDS` (`nan_inf`, `dead_layer`, `dead_units`,
      `saturation`, `exploding_depth`, `vanishing_depth`, `exploding_time`,
      `vanishing_time`); `first_step`/`last_step` bound the windows in which
      the condition held; `severity` is one of `SEVERITIES`.

    Raises:
      TypeError: for an unknown threshold name.
      ValueError: for a bad threshold value or a frame without the columns.
    """
    t = thresholds(**kwargs)
    missing = {"run", "step", "layer", "stat", "value"} - set(df.columns)
    if missing:
        raise ValueError(f"`df` must be a long frame from `tfprobe.read_logdir`; missing columns: {sorted(missing)}")
    df = df[df["stat"].isin(REQUIRED_STATS)]
    if df.empty:
        return pd.DataFrame([], columns=FINDING_COLUMNS).astype({"first_step": "int64", "last_step": "int64"})
    order = _model_order(df, layers)
    bounded = _bounded(layers)
    wide = df.pivot_table(index=["run", "layer", "step"], columns="stat", values="value", aggfunc="last", sort=True)
    wide = wide.reset_index()
    wide["latest_step"] = wide.groupby(["run", "layer"])["step"].transform("max")
    wide["order"] = [order.get(k, 10**9) for k in zip(wide["run"], wide["layer"])]
    cols = set(wide.columns)
    findings = []

    def rows(mask, stat, extra=None):
        sub = wide.loc[mask, ["run", "layer", "step", "latest_step"]].copy()
        sub["value"] = wide.loc[mask, stat]
        if extra is not None:
            sub["extra"] = extra[mask]
        return sub

    # NaN / Inf
    for stat, what in (("nan_count", "NaN"), ("inf_count", "Inf")):
        if stat in cols:
            mask = wide[stat] > 0
            findings += _spans(rows(mask, stat), "nan_inf", stat, lambda v, _e, w=what: f"{w} values in the output (up to {_fmt(v)} per window)")

    # dead layer
    dead = set()
    zero_stats = [s for s in ("zero_fraction", "near_zero_fraction") if s in cols]
    for stat in zero_stats:
        mask = wide[stat] >= t["dead_layer_fraction"]
        mask &= ~pd.Series([(r, l) in dead for r, l in zip(wide["run"], wide["layer"])], index=wide.index)
        spans = _spans(
            rows(mask, stat),
            "dead_layer",
            stat,
            lambda v, _e, s=stat: f"dead layer: {_fmt(100 * v)}% of the outputs are {'zero' if s == 'zero_fraction' else 'near zero'}",
        )
        dead.update((f[0], f[1]) for f in spans)
        findings += spans
    alive = ~pd.Series([(r, l) in dead for r, l in zip(wide["run"], wide["layer"])], index=wide.index)

    if "dead_unit_fraction" in cols:
        mask = (wide["dead_unit_fraction"] > t["dead_units_fraction"]) & alive
        findings += _spans(rows(mask, "dead_unit_fraction"), "dead_units", "dead_unit_fraction",
                           lambda v, _e: f"{_fmt(100 * v)}% of the units are dead (threshold {_fmt(100 * t['dead_units_fraction'])}%)")
    if "saturation_fraction" in cols:
        mask = (wide["saturation_fraction"] > t["saturation_fraction"]) & alive
        findings += _spans(rows(mask, "saturation_fraction"), "saturation", "saturation_fraction",
                           lambda v, _e: f"{_fmt(100 * v)}% of the outputs are saturated (threshold {_fmt(100 * t['saturation_fraction'])}%)")

    if "std" in cols:
        std = wide["std"].astype(float)
        usable = np.isfinite(std) & (std > t["min_std"]) & alive
        # across depth: previous layer in model order at the same step
        w = wide.loc[usable, ["run", "layer", "step", "order", "latest_step"]].copy()
        w["std"] = std[usable]
        w = w[[(r, l) not in bounded for r, l in zip(w["run"], w["layer"])]]
        w = w.sort_values(["run", "step", "order"], kind="stable")
        prev_std = w.groupby(["run", "step"])["std"].shift(1)
        prev_layer = w.groupby(["run", "step"])["layer"].shift(1)
        ratio = w["std"] / prev_std
        for kind, mask, extreme in (
            ("exploding_depth", ratio > t["std_ratio"], "max"),
            ("vanishing_depth", ratio < 1.0 / t["std_ratio"], "min"),
        ):
            sub = w.loc[mask, ["run", "layer", "step", "latest_step"]].copy()
            sub["value"] = ratio[mask]
            sub["extra"] = prev_layer[mask]
            verb = "grows" if kind.startswith("exploding") else "shrinks"
            findings += _spans(sub, kind, "std",
                               lambda v, e, verb=verb: f"std {verb} {_fmt(v if v >= 1 else 1 / v)}x from layer {e!r} to this layer",
                               extreme)
        # over time, sudden: from one logged window of the layer to the next
        w = wide.loc[usable, ["run", "layer", "step", "latest_step"]].copy()
        w["std"] = std[usable]
        by_layer = w.groupby(["run", "layer"])
        prev_std = by_layer["std"].shift(1)
        prev_step = by_layer["step"].shift(1)
        ratio = w["std"] / prev_std
        for kind, mask, extreme in (
            ("exploding_time", ratio > t["std_ratio"], "max"),
            ("vanishing_time", ratio < 1.0 / t["std_ratio"], "min"),
        ):
            sub = w.loc[mask, ["run", "layer", "step", "latest_step"]].copy()
            sub["value"] = ratio[mask]
            sub["extra"] = prev_step[mask].astype("int64")
            verb = "jumped up" if kind.startswith("exploding") else "dropped"
            findings += _spans(sub, kind, "std",
                               lambda v, e, verb=verb: f"std {verb} {_fmt(v if v >= 1 else 1 / v)}x in one window (after step {e})",
                               extreme)
        # over time, gradual: relative to the layer's first usable window (info only)
        base = by_layer["std"].transform("first")
        base_step = by_layer["step"].transform("first")
        ratio = w["std"] / base
        drift = (ratio > t["std_ratio"]) | (ratio < 1.0 / t["std_ratio"])
        sub = w.loc[drift, ["run", "layer", "step", "latest_step"]].copy()
        sub["value"] = np.maximum(ratio[drift], 1.0 / ratio[drift])
        sub["extra"] = [
            f"{'grew' if r > 1 else 'shrank'} {_fmt(max(r, 1 / r))}x since step {b}"
            for r, b in zip(ratio[drift], base_step[drift])
        ]
        findings += _spans(sub, "std_drift", "std", lambda v, e: f"std {e}")

    out = pd.DataFrame(findings, columns=FINDING_COLUMNS)
    if out.empty:
        return out.astype({"first_step": "int64", "last_step": "int64"})
    out["_sev"] = [-severity_rank(s) for s in out["severity"]]
    out["_order"] = [order.get(k, 10**9) for k in zip(out["run"], out["layer"])]
    out = out.sort_values(["_sev", "first_step", "run", "_order", "kind"], kind="stable")
    out = out.drop(columns=["_sev", "_order"]).reset_index(drop=True)
    return out.astype({"first_step": "int64", "last_step": "int64"})
