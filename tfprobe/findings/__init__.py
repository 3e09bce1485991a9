"""Health findings over tfprobe statistics: NaN/Inf, NaN/Inf weights, dead layers and units, saturation,
exploding or vanishing activations, and (with `LayerProbe(gradients=True)`) vanishing, exploding or
dead gradients and stalled or unstable weight updates.

`diagnose(df, layers)` takes the long frame of `tfprobe.read_logdir` (columns
`run, step, wall_time, layer, stat, value`) and, optionally, the frame of
`tfprobe.read_layers`, and returns one row per finding. The dashboard's Health
view (through the data provider) and `tfprobe report` call this same function.

Each check is a small function `check(ctx) -> list of finding rows`,
registered in `CHECKS` (in the order they run) and testable alone with a
`Context` built by `context(df, layers)`.

>>> import pandas as pd
>>> df = pd.DataFrame({"run": "r", "step": [1, 2, 1, 2], "wall_time": 0.0,
...                    "layer": ["a", "a", "b", "b"], "stat": "nan_count",
...                    "value": [0.0, 3.0, 0.0, 0.0]})
>>> diagnose(df)[["layer", "kind", "severity", "first_step", "windows"]].values.tolist()
[['a', 'nan_inf', 'error', 2, 1]]
>>> [f[3] for f in CHECKS["nan_inf"](context(df))]
['nan_inf']
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
from typing import NamedTuple

import numpy as np
import pandas as pd

from tfprobe.layer_kinds import (  # what Keras classes mean: one table
    AFFINE_SCALING_CLASS,
    NORMALIZATION_CLASS,
    ROUTING_CLASS,
)

SEVERITIES = ("info", "warning", "error")
"""Severity names, least severe first."""


class Finding(NamedTuple):
    """One finding: a row of the frame `diagnose` returns (a tuple, so frames are built from a list of them)."""

    run: str
    layer: str
    stat: str
    kind: str
    severity: str
    first_step: int
    last_step: int
    windows: int
    """The longest streak of consecutive logged windows of the run in which the condition held."""
    message: str


FINDING_COLUMNS = list(Finding._fields)
"""Columns of the frame `diagnose` returns (the fields of `Finding`). `windows`: the longest streak of
consecutive logged windows of the run in which the condition held."""

KINDS = {
    "nan_inf": "error",
    "nan_weights": "error",
    "dead_layer": "error",
    "dead_units": "warning",
    "saturation": "warning",
    "exploding_depth": "warning",
    "vanishing_depth": "warning",
    "exploding_time": "warning",
    "vanishing_time": "warning",
    "std_drift": "info",
    "vanishing_gradient": "warning",
    "exploding_gradient": "warning",
    "dead_gradient": "warning",
    "stalled_layer": "warning",
    "unstable_updates": "warning",
    "constant_output": "warning",  # check_constant_output
}
"""Every finding kind and its severity (a transient finding is reported as info, see `diagnose`)."""

NEVER_TRANSIENT = ("nan_inf", "nan_weights")
"""Kinds that keep their severity however early they held: non-finite values are never a settling scale."""

WEIGHT_STATS = ("weight_norm", "update_ratio")
"""Weight statistics (`LayerProbe(gradients=True)`) that are non-finite only when the layer's weights are, or
an update made them so (norms in float64, `update_ratio` 0 for zero weights): `nan_weights`. Not
`weight_grad_norm`: it is NaN by design under a multi-replica strategy, and a non-finite gradient the
optimizer applies shows in `update_ratio` in the same window."""

REQUIRED_STATS = (
    "nan_count",
    "inf_count",
    "mean",
    "std",
    "zero_fraction",
    "near_zero_fraction",
    "dead_unit_fraction",
    "saturation_fraction",
    "grad_rms",
    "grad_max_abs",
    "grad_zero_fraction",
    "grad_nan_count",
    "grad_inf_count",
    "update_ratio",
    "weight_norm",
    "weight_grad_norm",
    "size_ratio",
    "min",  # constant_output
    "max",
    "hoyer_sparsity",
)
"""The statistics `diagnose` looks at (others are ignored)."""

_DEFAULTS = {
    "dead_layer_fraction": 0.99,
    "dead_units_fraction": 0.5,
    "saturation_fraction": 0.5,
    "std_ratio": 10.0,
    "min_std": 1e-6,
    "transient_windows": 2,
    "grad_ratio": 1000.0,
    "max_grad_abs": 1e6,
    "dead_gradient_fraction": 0.99,
    "min_update_ratio": 1e-5,
    "max_update_ratio": 0.1,
}


TINY_SHARE = 0.1
"""`dead_units` needs fewer than this share of values near zero but not zero (see `check_dead_units`)."""


def severity_rank(severity: str) -> int:
    """Position of `severity` in `SEVERITIES` (0 = info); raises ValueError for other names."""
    try:
        return SEVERITIES.index(severity)
    except (ValueError, TypeError):
        raise ValueError(
            f"`severity` must be one of {', '.join(SEVERITIES)}. Received: severity={severity!r}"
        ) from None


def thresholds(**overrides) -> dict:
    """The default thresholds of `diagnose`, updated with `overrides` (validated).

    >>> thresholds(std_ratio=4)["std_ratio"], thresholds()["transient_windows"]
    (4.0, 2)
    """
    check_thresholds(**overrides)
    out = dict(_DEFAULTS)
    out.update({k: (int(float(v)) if k == "transient_windows" else float(v)) for k, v in overrides.items()})
    if not out["min_update_ratio"] < out["max_update_ratio"]:
        raise ValueError(
            "`min_update_ratio` must be below `max_update_ratio`. "
            f"Received: min_update_ratio={out['min_update_ratio']!r}, max_update_ratio={out['max_update_ratio']!r}"
        )
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
        if name in ("std_ratio", "grad_ratio") and not v > 1.0:
            raise ValueError(f"`{name}` must be > 1. Received: {name}={value!r}")
        if name in ("max_grad_abs", "min_update_ratio", "max_update_ratio") and not (v > 0.0 and math.isfinite(v)):
            raise ValueError(f"`{name}` must be a finite number > 0. Received: {name}={value!r}")
        if name == "min_std" and not v >= 0.0:
            raise ValueError(f"`min_std` must be >= 0. Received: min_std={value!r}")
        if name == "transient_windows" and not (v >= 0 and v == int(v)):
            raise ValueError(f"`transient_windows` must be an integer >= 0. Received: transient_windows={value!r}")


# ------------------------------------------------------------------ context


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    return f"{v:.3g}"


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _bounds(b):
    """`(low, high)` with None for an open side, or None when the series is not bounded."""
    if _missing(b) or isinstance(b, str):
        return None
    try:
        low, high = list(b)
    except (TypeError, ValueError):
        return None
    low, high = (None if _missing(v) else float(v) for v in (low, high))
    return None if low is None and high is None else (low, high)


def _inputs(x):
    """A tuple of series names, or None when unknown (older logs)."""
    if _missing(x) or isinstance(x, str):
        return None
    try:
        return tuple(str(s) for s in x)
    except TypeError:
        return None


def is_normalization(cls: str) -> bool:
    """True for layer classes that set the scale of their output by design.

    >>> [is_normalization(c) for c in ("BatchNormalization", "LayerScale", "Rescaling", "Dense")]
    [True, True, True, False]
    """
    return bool(cls) and NORMALIZATION_CLASS.search(cls) is not None


def _check_frames(df, layers):
    if not isinstance(df, pd.DataFrame):
        raise TypeError(
            f"`df` must be a log directory or a pandas DataFrame from `tfprobe.read_logdir`. Received: df={df!r:.80}"
        )
    missing = {"run", "step", "layer", "stat", "value"} - set(df.columns)
    if missing:
        raise ValueError(f"`df` must be a long frame from `tfprobe.read_logdir`; missing columns: {sorted(missing)}")
    if layers is not None:
        if not isinstance(layers, pd.DataFrame):
            raise TypeError(
                f"`layers` must be None or a DataFrame from `tfprobe.read_layers`. Received: layers={layers!r:.80}"
            )
        missing = {"run", "layer", "order"} - set(layers.columns)
        if missing:
            raise ValueError(f"`layers` must be a frame from `tfprobe.read_layers`; missing columns: {sorted(missing)}")
    if not pd.api.types.is_numeric_dtype(df["value"]):
        bad = df["value"].map(lambda v: not (v is None or isinstance(v, (numbers.Real, np.number))))
        if bad.any():
            i = bad.idxmax()
            raise ValueError(f"`df['value']` must be numeric. Received: value={df.at[i, 'value']!r} (row {i!r})")
    if not pd.api.types.is_numeric_dtype(df["step"]):
        raise ValueError(f"`df['step']` must be integer steps. Received: step dtype {df['step'].dtype}")


def _series_table(wide, layers):
    """One row per (run, layer) of `wide`: order, class, bounds, shape, inputs, output flag."""
    starts = _stretch_starts(wide)  # the first row of each series is the first of a stretch: fewer rows to dedupe
    keys = wide[["run", "layer"]] if starts is None else wide[["run", "layer"]].iloc[starts]
    keys = keys.drop_duplicates().reset_index(drop=True)
    if layers is not None and len(layers):
        cols = [c for c in ("class", "bounds", "shape", "inputs") if c in layers.columns]
        info = layers.drop_duplicates(["run", "layer"])[["run", "layer", "order"] + cols]
        keys = keys.merge(info, on=["run", "layer"], how="left")
    for col, default in (("order", np.nan), ("class", ""), ("bounds", None), ("shape", None), ("inputs", None)):
        if col not in keys.columns:
            keys[col] = default
    first_seen = keys.groupby("run").cumcount() + 10**6  # after the layers the layers frame knows about
    keys["order"] = pd.to_numeric(keys["order"], errors="coerce").fillna(first_seen)
    keys["class"] = keys["class"].fillna("").astype(str)
    keys["bounds"] = keys["bounds"].map(_bounds)
    keys["inputs"] = keys["inputs"].map(_inputs)
    last = keys.groupby("run")["order"].transform("max")
    keys["is_output"] = keys["order"] == last
    keys["scaled"] = _scaled_by_design(keys)
    keys["renormalized"] = _renormalized(keys)
    keys["residual_branch"] = _residual_branch(keys)
    keys["one_sided"] = [one_sided(c, b) for c, b in zip(keys["class"], keys["bounds"])]
    keys["zeros_in_saturation"] = [one and b[0] is not None for one, b in zip(keys["one_sided"], keys["bounds"])]
    keys["terminal"] = _terminal(keys)
    keys["softmax_k"] = [
        softmax_width(c, b, sh) if out or term else 0
        for c, b, sh, out, term in zip(
            keys["class"], keys["bounds"], keys["shape"], keys["is_output"], keys["terminal"]
        )
    ]
    keys["size"] = [example_size(sh) for sh in keys["shape"]]
    keys["channels"] = [_channels(sh) for sh in keys["shape"]]
    keys["loss_scaled"] = _loss_scaled(keys)
    pooled = set()
    if "size_ratio" in wide.columns:  # retention statistics are recorded for pooling layers only
        pooled = set(map(tuple, wide.loc[wide["size_ratio"].notna(), ["run", "layer"]].to_numpy().tolist()))
    keys["pooling"] = [
        bool(POOLING_CLASS.search(c)) or (r, l) in pooled for r, l, c in zip(keys["run"], keys["layer"], keys["class"])
    ]
    return keys


POOLING_CLASS = re.compile(r"Pool", re.IGNORECASE)
"""Pooling layer classes in logs written before the retention statistics identified them."""


def example_size(shape):
    """Values per example of an output `shape` (its first axis the batch): the product of the other axes,
    an unknown axis (a sequence length) counted as 1; NaN when the shape is unknown.

    >>> example_size([None, 8, 8, 32]), example_size([None, None, 64]), example_size(None)
    (2048.0, 64.0, nan)
    """
    if _missing(shape) or isinstance(shape, str):
        return float("nan")
    try:
        dims = list(shape)[1:]
        return float(np.prod([1 if _missing(d) else int(d) for d in dims])) if dims else 1.0
    except (TypeError, ValueError):
        return float("nan")


def _channels(shape):
    """The last axis of an output `shape` (units, channels), NaN when unknown."""
    try:
        d = list(shape)[-1]
        return float(int(d)) if not _missing(d) and len(list(shape)) > 1 else float("nan")
    except (TypeError, ValueError, IndexError):
        return float("nan")


def _consumers(series):
    """`{(run, series): [consumer rows' indices]}` from the `inputs` of `series` (known graph only)."""
    out = {}
    for k, (r, ins) in enumerate(zip(series["run"], series["inputs"])):
        for i in dict.fromkeys(ins or ()):
            out.setdefault((r, i), []).append(k)
    return out


def _terminal(series):
    """Series that feed no recorded series, in runs whose graph is known: the model's outputs."""
    known = {r for r, ins in zip(series["run"], series["inputs"]) if ins is not None}
    consumers = _consumers(series)
    return [
        r in known and ins is not None and not consumers.get((r, l))
        for r, l, ins in zip(series["run"], series["layer"], series["inputs"])
    ]


def _loss_scaled(series):
    """Series whose scale the loss sets: the model's outputs (`terminal`), and the logits before a bounded
    output (a Dense followed by a softmax or sigmoid output layer)."""
    terminal = dict(zip(zip(series["run"], series["layer"]), series["terminal"]))
    bounded = dict(zip(zip(series["run"], series["layer"]), series["bounds"].map(lambda b: b is not None)))
    consumers = _consumers(series)
    rows = list(zip(series["run"], series["layer"]))
    out = []
    for key, term in zip(rows, series["terminal"]):
        feed = [rows[k] for k in consumers.get(key, ())]
        out.append(bool(term) or (bool(feed) and all(terminal[c] and bounded[c] for c in feed)))
    return out


def _renormalized(series):
    """Series whose every consumer (in the graph) is a normalisation layer: their scale is removed
    right after them (Conv -> BatchNormalization), so it does not matter."""
    consumers = {}
    for r, c, ins in zip(series["run"], series["class"], series["inputs"]):
        for i in ins or ():
            consumers.setdefault((r, i), []).append(is_normalization(c))
    return [bool(consumers.get((r, l))) and all(consumers[(r, l)]) for r, l in zip(series["run"], series["layer"])]


ADDITION_CLASSES = ("Add",)
"""Classes that sum their inputs: `keras.layers.Add`, and the op of `x + y` in a functional model."""


def _residual_branch(series):
    """Series whose every consumer (in the graph) is an addition (`ADDITION_CLASSES`): a residual branch,
    whose scale is set against the stream it is added to (a small-init branch, GPT-2's or Fixup's,
    starts 10-100x smaller than its input by design); the addition is judged instead."""
    consumers = {}
    for r, c, ins in zip(series["run"], series["class"], series["inputs"]):
        for i in ins or ():
            consumers.setdefault((r, i), []).append(c in ADDITION_CLASSES)
    return [bool(consumers.get((r, l))) and all(consumers[(r, l)]) for r, l in zip(series["run"], series["layer"])]


def _scaled_by_design(series):
    """Normalisation/scaling layers, and `Activation` layers fed only by them (ConvNeXt's `identity`
    after `LayerScale`): their scale is set by design, e.g. 1e-6 at initialisation."""
    scaling = {(r, l) for r, l, c in zip(series["run"], series["layer"], series["class"]) if is_normalization(c)}
    return [
        (r, l) in scaling or (c == "Activation" and bool(ins) and all((r, i) in scaling for i in ins))
        for r, l, c, ins in zip(series["run"], series["layer"], series["class"], series["inputs"])
    ]


def _stretch_starts(wide):
    """The first row of each stretch of consecutive rows of `wide` with one `(run, layer)` (a pivot holds a
    series' rows together: a few hundred stretches for millions of rows), or None when there is a missing run
    or layer, or too many stretches for this to be worth it. Compares neighbours: no hashing of every row."""
    n = len(wide)
    if n == 0 or wide["run"].isna().any() or wide["layer"].isna().any():
        return None
    change = np.ones(n, bool)
    for column in ("run", "layer"):
        values = wide[column].array
        change[1:] |= np.asarray(values[1:] != values[:-1], bool)
    starts = np.flatnonzero(change)
    return starts if len(starts) <= max(1000, n // 8) else None


def _positions(series):
    """`{(run, layer): row}` of the series table, empty if a pair appears twice."""
    where = {k: i for i, k in enumerate(zip(series["run"], series["layer"]))}
    return where if len(where) == len(series) else {}


def _take(wide, at, **columns) -> pd.DataFrame:
    """The rows `at` (positions) of `wide`'s `run, layer, step, window, last_window`, with `columns` (arrays
    of those rows' values) added: what `Context.rows` and the std checks hand to `_spans`."""
    names = ["run", "layer", "step", "window", "last_window"]
    if len(at) > 100_000:  # a large run's rows: one selection, no column rebuilt (memory)
        sub = wide.iloc[at, [wide.columns.get_loc(c) for c in names]]
        for name, values in columns.items():
            sub[name] = values
        return sub
    return _frame({c: _take_column(wide[c], at) for c in names} | columns, wide.index[at])


def _take_column(column, at):
    """The values at positions `at` of `column`: a NumPy array, or the column's own extension array (a large
    run's `str` columns stay compact instead of becoming one Python string per row)."""
    values = column.array
    return values.to_numpy()[at] if isinstance(values.dtype, np.dtype) else values.take(at)


def _frame(columns, index=None) -> pd.DataFrame:
    """A DataFrame of `{name: array}`, object arrays kept as they are: pandas 3 would infer its own (pyarrow)
    strings from them, a conversion that costs more than the checks' small frames themselves."""
    return pd.DataFrame(
        {
            k: pd.Series(v, index=index, dtype=object, copy=False)
            if isinstance(v, np.ndarray) and v.dtype == object
            else v
            for k, v in columns.items()
        },
        index=index,
    )


@dataclasses.dataclass
class Context:
    """What every check reads.

    `wide`: one row per (run, layer, step) with one column per statistic, plus
    `window` (0-based index of the step among the run's logged steps),
    `last_window` (the run's), `nonfinite_<stat>` for the `WEIGHT_STATS` (1.0 where the recorded value
    is NaN or Inf, 0.0 where finite: the pivot keeps no NaN) and `alive` (False from the first window in which
    the layer is dead on, and after the first in which its weights are not finite; the windows before are
    judged like any other). `series`: one row per (run, layer) with `order, class, bounds, shape, inputs,
    is_output, scaled, renormalized, one_sided, zeros_in_saturation, softmax_k`. `t`: the thresholds.
    `memo`: what the checks derive from `series` alone (`static`), kept across contexts of one series table
    by the live evaluation, which judges each window with the same table.
    """

    wide: pd.DataFrame
    series: pd.DataFrame
    t: dict
    memo: dict = dataclasses.field(default_factory=dict)

    def static(self, name, compute):
        """`compute(series)`, computed once per series table (`memo`)."""
        if name not in self.memo:
            self.memo[name] = compute(self.series)
        return self.memo[name]

    def info(self, column):
        """`column` of `series`, aligned with the rows of `wide`."""
        pos = self._series_rows()
        if (pos >= 0).all():
            return pd.Series(self.series[column].to_numpy()[pos], index=self.wide.index)
        keys = pd.MultiIndex.from_frame(self.wide[["run", "layer"]])  # a series the table does not know: NaN
        values = self.series.set_index(["run", "layer"])[column].reindex(keys)
        return pd.Series(values.to_numpy(), index=self.wide.index)

    def _series_rows(self):
        """Per row of `wide`, the position of its `(run, layer)` in `series` (-1 if absent), computed once."""
        cached = self.__dict__.get("_rows")
        if cached is None or len(cached) != len(self.wide):
            where = self.static("positions", _positions)  # empty if a (run, layer) appears twice
            starts = _stretch_starts(self.wide)
            if starts is not None:  # one lookup per stretch of rows of one series
                keys = zip(self.wide["run"].to_numpy()[starts], self.wide["layer"].to_numpy()[starts])
                at = np.fromiter((where.get(k, -1) for k in keys), np.int64, len(starts))
                cached = np.repeat(at, np.diff(np.r_[starts, len(self.wide)]))
            else:
                keys = pd.MultiIndex.from_frame(self.wide[["run", "layer"]])
                table = pd.MultiIndex.from_frame(self.series[["run", "layer"]])
                cached = table.get_indexer(keys) if table.is_unique else np.full(len(keys), -1)
            self.__dict__["_rows"] = cached
        return cached

    def _codes(self):
        """`(run code, series code)` of each row of `wide` (integers that group as its `run` and `(run, layer)`
        columns do), or None when a row has no run or layer, or one the series table does not know."""
        n, cached = self.__dict__.get("_codes_cache", (None, None))
        if n != len(self.wide):
            pos = self._series_rows()
            ok = len(self.wide) and (pos >= 0).all()
            ok = ok and not (self.wide["run"].isna().any() or self.wide["layer"].isna().any())
            cached = (pd.factorize(self.series["run"])[0][pos], pos) if ok else None
            self.__dict__["_codes_cache"] = (len(self.wide), cached)
        return cached

    def of_layers(self, pairs):
        """True for the rows of `wide` whose `(run, layer)` is in `pairs`."""
        pairs = set(pairs)
        if not pairs:
            return pd.Series(False, index=self.wide.index)
        if self._codes() is not None:  # per series, then per row
            known = np.array([key in pairs for key in zip(self.series["run"], self.series["layer"])] or [False])
            return pd.Series(known[self._series_rows()], index=self.wide.index)
        keys = zip(self.wide["run"].to_numpy(), self.wide["layer"].to_numpy())
        return pd.Series(np.fromiter((k in pairs for k in keys), bool, len(self.wide)), index=self.wide.index)

    def nonfinite_weights(self):
        """Rows of `wide` in which the layer's weights are NaN or Inf (`weight_norm`), or the window's
        updates made them so (`update_ratio`)."""
        mask = pd.Series(False, index=self.wide.index)
        for stat in WEIGHT_STATS:
            if f"nonfinite_{stat}" in self.wide.columns:
                mask |= self.wide[f"nonfinite_{stat}"] > 0
        return mask

    def dead_mask(self, stat):
        """Rows of `wide` where `stat` (`zero_fraction` or `near_zero_fraction`) says the layer is dead.
        Near-zero values do not make a layer scaled by design (`series["scaled"]`) dead: only exact zeros do."""
        if stat not in self.wide.columns:
            return pd.Series(False, index=self.wide.index)
        mask = self.wide[stat] >= self.t["dead_layer_fraction"]
        if stat == "near_zero_fraction":
            mask &= ~self.info("scaled").astype(bool)
        return mask.fillna(False).astype(bool)

    def rows(self, mask, value, extra=None):
        """The `run, layer, step, window, last_window, value[, extra]` rows of `wide` where `mask` holds.
        (A boolean `mask` aligned with `wide`, the checks' case, is taken by position with NumPy: the checks
        call this a dozen times per `diagnose`, most often with no row, at every live window.)"""
        w = self.wide
        value = w[value] if isinstance(value, str) else value
        if (
            all(isinstance(x, pd.Series) and x.index.equals(w.index) for x in (mask, value, extra) if x is not None)
            and mask.dtype == bool
        ):
            at = np.flatnonzero(mask.to_numpy())
            if not len(at):  # no row: no finding (`_spans`)
                return w.iloc[:0]
            columns = {"value": value.to_numpy()[at]}
            if extra is not None:
                columns["extra"] = extra.to_numpy()[at]
            sub = _take(w, at, **columns)
            codes = self._codes()
            if codes is not None:
                # the position in `series` of each row's (run, layer), for `_spans` (not a column: checks and
                # tests see the frame they always saw; a frame derived from this one does not carry it)
                object.__setattr__(sub, "_tfprobe_series", codes[1][at])
            return sub
        sub = self.wide.loc[mask, ["run", "layer", "step", "window", "last_window"]].copy()
        sub["value"] = value[mask]
        if extra is not None:
            sub["extra"] = extra[mask]
        return sub


def context(df: pd.DataFrame, layers: pd.DataFrame | None = None, **kwargs) -> Context:
    """Validates the arguments of `diagnose` and builds the `Context` its checks read."""
    t = thresholds(**kwargs)
    if isinstance(df, pd.DataFrame) and "stat" not in df.columns and {"run", "layer", "step"} <= set(df.columns):
        empty = pd.DataFrame({"run": [], "step": np.zeros(0, np.int64), "layer": [], "stat": [], "value": np.zeros(0)})
        _check_frames(empty, layers)  # the layers only
        return _context(df, layers, t)  # already pivoted: `stat_frame`
    _check_frames(df, layers)
    df = df[df["stat"].isin(REQUIRED_STATS)]
    df = df.assign(value=pd.to_numeric(df["value"], errors="coerce").astype(float))
    flags = _nonfinite_flags(df)
    if not flags.empty:
        df = pd.concat([df, flags], ignore_index=True)
    if df.empty:
        wide = pd.DataFrame(columns=["run", "layer", "step"])
    else:
        wide = df.pivot_table(index=["run", "layer", "step"], columns="stat", values="value", aggfunc="last", sort=True)
        wide = wide.reset_index()
        wide.columns.name = None
    return _context(wide, layers, t)


def stat_frame(data) -> pd.DataFrame:
    """What `diagnose` reads of `data` (`tfprobe.read(logdir)`), without its long frame: `diagnose(stat_frame(data),
    layers)` finds what `diagnose(data.scalars, layers)` finds, in a fraction of the memory on a large run."""
    return data.stat_frame(REQUIRED_STATS, nonfinite=WEIGHT_STATS)


def series_stat_frame(series) -> pd.DataFrame:
    """What `diagnose` reads, built one series at a time from arrays: `series` yields
    `((run, layer), {stat: (steps, values)})`, each statistic's steps increasing, one point per step
    (statistics outside `REQUIRED_STATS` are ignored). The frame is the one `context` pivots out of the long
    frame of the same points (`REQUIRED_STATS` as columns, `nonfinite_<stat>` for the `WEIGHT_STATS` by
    `_nonfinite_flags`, rows and columns without a value left out, sorted by run, layer and step), without
    that long frame: the plugin's `/health` reads a large run through TensorBoard's data provider so."""
    blocks = []
    for (run, layer), by_stat in series:
        by_stat = {
            s: (np.asarray(st, np.int64), np.asarray(v, np.float64))
            for s, (st, v) in by_stat.items()
            if s in REQUIRED_STATS
        }
        if not by_stat:
            continue
        steps = np.unique(np.concatenate([st for st, _ in by_stat.values()]))
        columns, recorded = {}, {}
        for stat, (st, v) in by_stat.items():
            at = np.searchsorted(steps, st)
            columns[stat] = np.full(len(steps), np.nan)
            columns[stat][at] = v
            if stat in FLAGGED_STATS:
                recorded[stat] = np.zeros(len(steps), bool)
                recorded[stat][at] = True
        blocks.append((run, layer, steps, columns, recorded))
    blocks.sort(key=lambda b: (b[0], b[1]))
    sizes = [len(b[2]) for b in blocks]

    def joined(k, stat, fill, dtype):
        return np.concatenate([b[k][stat] if stat in b[k] else np.full(n, fill, dtype) for b, n in zip(blocks, sizes)])

    stats = sorted({stat for b in blocks for stat in b[3]})
    return stat_rows(
        np.repeat(np.array([b[0] for b in blocks], object), sizes),
        np.repeat(np.array([b[1] for b in blocks], object), sizes),
        np.concatenate([b[2] for b in blocks] or [np.zeros(0, np.int64)]),
        {stat: joined(3, stat, np.nan, float) for stat in stats},
        {stat: joined(4, stat, False, bool) for stat in stats if stat in FLAGGED_STATS},
    )


FLAGGED_STATS = (*WEIGHT_STATS, "weight_grad_norm")
"""The statistics `_nonfinite_flags` reads: a recorded NaN among them is not the same as no value."""


def stat_rows(runs, layers, steps, values, recorded, objects=False) -> pd.DataFrame:
    """The frame `context` pivots out of a long frame, from the same points already in rows: `runs, layers,
    steps` (arrays, one row per `(run, layer, step)`, sorted by run, layer and step), `values`
    `{stat: float array}` (NaN where a statistic has no point) and `recorded` `{stat: bool array}` (where it
    has one, NaN included) for the `FLAGGED_STATS` among them. Adds `nonfinite_<stat>` for the `WEIGHT_STATS`
    (`_nonfinite_flags`) and leaves out the rows and columns without a value, as the pivot does. Serves both
    `series_stat_frame` (the plugin: a run read series by series) and the live evaluation
    (`tfprobe.findings.live.wide_frame`: a few windows of dicts). `objects`: run and layer as NumPy object
    columns (faster in the checks' small frames) instead of pandas' strings."""
    n = len(steps)
    columns = {stat: np.asarray(v, float) for stat, v in values.items() if stat in REQUIRED_STATS}
    parts = [(stat, np.flatnonzero(recorded[stat])) for stat in FLAGGED_STATS if stat in recorded]
    if any(stat in WEIGHT_STATS and len(at) for stat, at in parts):
        at = np.concatenate([at for _, at in parts])
        long = pd.DataFrame(
            {
                "run": runs[at],
                "layer": layers[at],
                "step": steps[at],
                "stat": np.repeat([stat for stat, _ in parts], [len(at) for _, at in parts]),
                "value": np.concatenate([columns[stat][at] for stat, at in parts]),
                "row": at,
            }
        )
        for stat, g in _nonfinite_flags(long).groupby("stat", sort=True):
            columns[stat] = np.full(n, np.nan)
            columns[stat][g["row"].to_numpy()] = g["value"].to_numpy(float)
    names = sorted(c for c, v in columns.items() if not np.isnan(v).all())
    keep = ~np.all([np.isnan(columns[c]) for c in names], axis=0) if names else np.zeros(n, bool)
    out = {"run": runs[keep], "layer": layers[keep], "step": np.asarray(steps, np.int64)[keep]}
    out.update((c, columns[c][keep]) for c in names)
    if objects:
        return _frame(out, pd.RangeIndex(int(keep.sum())))
    return pd.DataFrame(out, columns=["run", "layer", "step", *names])


def _context(wide, layers, t, series=None, memo=None):
    """The `Context` of `wide` (the pivot of the long frame's `REQUIRED_STATS`, with `nonfinite_<stat>`).
    `series`: the series table (`_series_table`) when the caller keeps it (the live evaluation: one per run),
    and `memo` what the checks derived from it before (`Context.static`)."""
    if wide.empty:
        wide = pd.DataFrame(columns=["run", "layer", "step", "window", "last_window", "alive"])
    else:
        wide = wide.copy(deep=False)
    ctx = Context(wide, _series_table(wide, layers) if series is None else series, t, {} if memo is None else memo)
    if not wide.empty:
        codes = ctx._codes()  # integers that group the rows as their run, and their run and layer, do
        if codes is None:
            run, layer = wide["run"].to_numpy(), wide["layer"].to_numpy()
            codes = pd.factorize(run)[0], _pair_codes(run, layer)
        wide["window"], wide["last_window"] = _windows(codes[0], wide["step"].to_numpy())
        groups = _Groups(np.asarray(codes[1], np.int64))
        dead = ctx.dead_mask("zero_fraction") | ctx.dead_mask("near_zero_fraction")
        # `wide` is sorted by step within each layer: a layer is judged up to the window in which it died
        # (a learning rate that blows the activations up, then leaves the ReLUs dead, is an explosion first),
        # or in which its weights turned non-finite (that window's outputs still come from finite weights too)
        after_nan = groups.shift(ctx.nonfinite_weights().to_numpy(bool), False)
        wide["alive"] = pd.Series(~groups.cumany(dead.to_numpy(bool) | after_nan), index=wide.index)
    return ctx


def _windows(codes, steps):
    """`(window, last_window)` of each row: the 0-based rank of its step among its run's distinct steps,
    and the run's largest (`groupby("run")["step"].rank(method="dense") - 1` and its maximum per run);
    `codes`: one integer per run."""
    order = np.lexsort((steps, codes))
    r, s = codes[order], steps[order]
    new_run = np.r_[True, r[1:] != r[:-1]]
    rank = np.cumsum(new_run | np.r_[True, s[1:] != s[:-1]])
    run_of = np.cumsum(new_run) - 1
    window_sorted = rank - rank[new_run][run_of]
    last = np.maximum.reduceat(window_sorted, np.flatnonzero(new_run))[run_of]
    window, last_window = np.empty(len(order), np.int64), np.empty(len(order), np.int64)
    window[order], last_window[order] = window_sorted, last
    return window, last_window


def _pair_codes(a, b):
    """One integer per distinct `(a, b)` pair of two equally long arrays."""
    ca = pd.factorize(a)[0].astype(np.int64)
    cb, uniques = pd.factorize(b)
    return ca * max(len(uniques), 1) + cb


class _Groups:
    """Rows grouped by `codes`, each group's rows in their order (what `groupby(...).shift()` and
    `.cummax()` see), with NumPy."""

    def __init__(self, codes):
        self.order = np.argsort(codes, kind="stable")
        c = codes[self.order]
        self.first = np.r_[True, c[1:] != c[:-1]] if len(c) else np.zeros(0, bool)

    def shift(self, values, fill):
        """Each row's previous row's value in its group (`fill` for a group's first row)."""
        ordered = values[self.order]
        shifted = np.r_[ordered[:1], ordered[:-1]]
        shifted[self.first] = fill
        out = np.empty_like(shifted)
        out[self.order] = shifted
        return out

    def cumany(self, flags):
        """True from the first row of its group on which `flags` holds (`cummax` of booleans)."""
        counts = np.cumsum(flags[self.order], dtype=np.int64)
        before = (counts - flags[self.order])[self.first]  # the count before each group's first row
        group = np.cumsum(self.first) - 1
        out = np.empty(len(counts), bool)
        out[self.order] = counts - before[group] > 0
        return out


def _nonfinite_flags(df):
    """`nonfinite_<stat>` rows for the `WEIGHT_STATS` rows of `df`: 1.0 where the value is NaN or Inf, else 0.0.
    The pivot of `context` keeps the last non-NaN value, so a recorded NaN would be lost (or look like a
    layer without weights) before any check saw it."""
    w = df[df["stat"].isin(WEIGHT_STATS)]
    bad = ~np.isfinite(w["value"].to_numpy(float))
    ratio_nan = (w["stat"] == "update_ratio").to_numpy() & np.isnan(w["value"].to_numpy(float))
    if ratio_nan.any():
        bad &= ~(ratio_nan & ~_nan_update_confirmed(df, w))
    return w.assign(stat="nonfinite_" + w["stat"], value=bad.astype(float))


def _nan_update_confirmed(df, w):
    """For each row of `w` (weight statistics of `df`): is a NaN `update_ratio` there an update that broke
    the weights? Yes when the layer's `weight_norm` is not finite in that window or a later one, when a
    gradient was applied (`weight_grad_norm` finite and > 0), or when no `weight_norm` is recorded to tell.
    Otherwise it is a layer no optimizer updated (no update figures: NaN, as the recorder may write them),
    which is no finding."""
    keys = ["run", "layer"]
    norm = df[df["stat"] == "weight_norm"]
    broken = norm[~np.isfinite(norm["value"].to_numpy(float))].groupby(keys)["step"].max()
    has_norm = set(map(tuple, norm[keys].drop_duplicates().to_numpy().tolist()))
    grad = df[df["stat"] == "weight_grad_norm"]
    applied = set(
        map(
            tuple,
            grad.loc[np.isfinite(grad["value"].to_numpy(float)) & (grad["value"] > 0), ["run", "layer", "step"]]
            .to_numpy()
            .tolist(),
        )
    )
    last_broken = broken.to_dict()
    out = []
    for r, l, st in zip(w["run"], w["layer"], w["step"]):
        out.append((r, l) not in has_norm or last_broken.get((r, l), -math.inf) >= st or (r, l, st) in applied)
    return np.array(out, bool)


# ------------------------------------------------------------------ spans


def _streak(windows) -> int:
    """Longest run of consecutive integers in sorted `windows` (1 for fewer than two)."""
    if len(windows) < 64:  # a live window's few: without NumPy's cost per call
        best = run = 1
        for a, b in zip(windows[:-1], windows[1:]):
            run = run + 1 if b == a + 1 else 1
            best = max(best, run)
        return best
    windows = np.asarray(windows)
    breaks = np.flatnonzero(windows[1:] != windows[:-1] + 1)  # a run ends before each break
    return int(np.diff(np.r_[-1, breaks, len(windows) - 1]).max())


def _span_groups(ctx, rows):
    """`(codes, names, order)` of `rows` for `_spans`: per row, the index in `names` of its `(run, layer)` (in
    order of first appearance), and the order of the rows by that, then step (a slice when already so)."""
    known = rows.__dict__.get("_tfprobe_series")  # from `ctx.rows`: each row's position in `ctx.series`
    if known is not None and len(known) == len(rows):
        codes, at = pd.factorize(known)
        names = list(zip(ctx.series["run"].to_numpy()[at], ctx.series["layer"].to_numpy()[at]))
    else:
        run_codes, runs = pd.factorize(rows["run"].to_numpy())
        layer_codes, layers = pd.factorize(rows["layer"].to_numpy())
        codes, pairs = pd.factorize(run_codes * len(layers) + layer_codes)
        names = [(runs[p // len(layers)], layers[p % len(layers)]) for p in pairs]
    steps = rows["step"].to_numpy()
    in_order = (codes[1:] > codes[:-1]) | ((codes[1:] == codes[:-1]) & (steps[1:] >= steps[:-1]))
    return codes, names, slice(None) if in_order.all() else np.lexsort((steps, codes))


def _spans(ctx, rows, kind, stat, message, extreme="max"):
    """One finding row per (run, layer) from `ctx.rows(...)`: first/last step, streak, severity.
    (NumPy over the rows, grouped in order of first appearance: no pandas per layer.)"""
    out = []
    if rows.empty:
        return out
    codes, names, order = _span_groups(ctx, rows)
    codes = codes[order]
    steps_all, windows_all = rows["step"].to_numpy()[order], rows["window"].to_numpy()[order]
    last_windows = rows["last_window"].to_numpy()[order]
    values = rows["value"].to_numpy(dtype=float)[order]
    finite_all = np.isfinite(values)
    # Python lists: the groups are a window or two each at a live window, where NumPy's per-call cost would
    # dominate; a large run's rows (millions) stay arrays, each group made a list on its own
    as_lists = len(rows) <= 100_000
    if as_lists:
        windows_all, values, finite_all = windows_all.tolist(), values.tolist(), finite_all.tolist()
    extras = rows["extra"].to_numpy()[order] if "extra" in rows else None
    bounds = np.flatnonzero(np.diff(codes)) + 1
    for lo, hi in zip(np.r_[0, bounds].tolist(), np.r_[bounds, len(codes)].tolist()):
        run, layer = names[codes[lo]]
        first, last = int(steps_all[lo]), int(steps_all[hi - 1])
        windows, vals, finite = windows_all[lo:hi], values[lo:hi], finite_all[lo:hi]
        if not as_lists:
            windows, vals, finite = windows.tolist(), vals.tolist(), finite.tolist()
        streak, held, last_window = _streak(windows), len(windows), int(last_windows[lo])
        finite = [v for v, ok in zip(vals, finite) if ok]
        worst = (max(finite) if extreme == "max" else min(finite)) if finite else float("nan")
        extra = extras[lo + vals.index(worst)] if extras is not None and finite else None
        text = message(worst, extra)
        text += f"; from step {first} " + (
            "to the latest window" if windows[-1] == last_window else f"until step {last}"
        )
        if held == 1:
            text += " (1 window)"
        else:
            text += (
                f" ({held} consecutive windows)"
                if streak == held
                else f" ({held} windows, at most {streak} consecutive)"
            )
        severity = KINDS[kind]
        n = ctx.t["transient_windows"]
        if kind not in NEVER_TRANSIENT and windows[-1] < n <= last_window:
            severity = "info"
            text += f"; transient: only within the first {n} windows after initialisation"
        out.append(
            Finding(
                run=run,
                layer=layer,
                stat=stat,
                kind=kind,
                severity=severity,
                first_step=first,
                last_step=last,
                windows=streak,
                message=text,
            )
        )
    return out


# ------------------------------------------------------------------ checks

CHECKS = {}
"""Registered checks, `name -> check(ctx) -> list of finding rows` (`Finding`s), run in order."""


def register(name):
    """Decorator adding a check to `CHECKS`."""

    def add(fn):
        CHECKS[name] = fn
        return fn

    return add


@register("nan_inf")
def check_nan_inf(ctx):
    """NaN or Inf values in a layer's output (`nan_count`/`inf_count` > 0) or in its activation gradient
    (`grad_nan_count`/`grad_inf_count` > 0): always an error."""
    out = []
    for stat, what, where in (
        ("nan_count", "NaN", "output"),
        ("inf_count", "Inf", "output"),
        ("grad_nan_count", "NaN", "gradient dL/da"),
        ("grad_inf_count", "Inf", "gradient dL/da"),
    ):
        if stat in ctx.wide.columns:
            rows = ctx.rows(ctx.wide[stat] > 0, stat)
            out += _spans(
                ctx,
                rows,
                "nan_inf",
                stat,
                lambda v, _e, w=what, at=where: f"{w} values in the {at} (up to {_fmt(v)} per window)",
            )
    return out


@register("nan_weights")
def check_nan_weights(ctx):
    """NaN or Inf in a layer's trainable weights: `weight_norm` (the weights before a recorded update) or
    `update_ratio` (an update of the window made them so) not finite. Always an error; reported with the
    statistic `weight_norm`. Its outputs are not judged after that window (`alive`), and it is no `dead_layer`
    while its weights are not finite: a NaN kernel under a ReLU that TensorFlow fuses into its matrix product
    (`_FusedMatMul`, in a traced step) gives exact zeros, not NaN.
    `weight_grad_norm` is not judged (see `WEIGHT_STATS`)."""
    broken = ctx.nonfinite_weights()
    if not broken.any():
        return []
    norm = _column(ctx, "weight_norm")
    return _spans(
        ctx,
        ctx.rows(broken, norm),
        "nan_weights",
        "weight_norm",
        lambda _v, _e: "NaN or Inf in the trainable weights (their norm or the update ratio is not finite)",
    )


@register("dead_layer")
def check_dead_layer(ctx):
    """`zero_fraction` (else `near_zero_fraction`) at least `dead_layer_fraction`, in windows in which the
    layer's weights are finite (else that is `nan_weights`). From the first window in which a layer is dead
    on, it gets no other finding except NaN/Inf (`nan_inf`, `nan_weights`)."""
    out, seen = [], set()
    broken = ctx.nonfinite_weights()
    for stat in ("zero_fraction", "near_zero_fraction"):
        if stat not in ctx.wide.columns:
            continue
        mask = ctx.dead_mask(stat) & ~broken
        if not mask.any():
            continue
        if seen:
            mask &= ~ctx.of_layers(seen)
        what = "zero" if stat == "zero_fraction" else "near zero"
        spans = _spans(
            ctx,
            ctx.rows(mask, stat),
            "dead_layer",
            stat,
            lambda v, _e, w=what: f"dead layer: {_fmt(100 * v)}% of the outputs are {w}",
        )
        seen.update((f[0], f[1]) for f in spans)
        out += spans
    return out


@register("dead_units")
def check_dead_units(ctx):
    """`dead_unit_fraction` above `dead_units_fraction` (units within `near_zero` of 0 for every example),
    only where `near_zero` is small against the layer's values: fewer than `TINY_SHARE` of them are near
    zero without being zero. Otherwise "dead" units are a small scale (VGG16's `fc1` at initialisation,
    ConvNeXt's `LayerScale`), which the std checks judge."""
    w = ctx.wide
    if "dead_unit_fraction" not in w.columns:
        return []
    limit = ctx.t["dead_units_fraction"]
    mask = (w["dead_unit_fraction"] > limit) & w["alive"]
    if {"zero_fraction", "near_zero_fraction"} <= set(w.columns):
        mask &= ~(w["near_zero_fraction"] - w["zero_fraction"] >= TINY_SHARE)
    return _spans(
        ctx,
        ctx.rows(mask, "dead_unit_fraction"),
        "dead_units",
        "dead_unit_fraction",
        lambda v, _e: f"{_fmt(100 * v)}% of the units are dead (threshold {_fmt(100 * limit)}%)",
    )


def one_sided(cls: str, bounds) -> bool:
    """True for an activation bounded above only in effect (ReLU6, `ReLU(max_value)`): its zeros are sparsity.

    `bounds = [None, high]` (written by recorders that know it) or, in older logs, `[0, high]` on class
    `ReLU` or `[0, 6]` (the `relu6` activation).

    >>> one_sided("Activation", (None, 6.0)), one_sided("ReLU", (0.0, 6.0)), one_sided("Dense", (0.0, 1.0))
    (True, True, False)
    """
    if bounds is None:
        return False
    low, high = bounds
    return low is None or (low == 0.0 and (cls == "ReLU" or high == 6.0))


def softmax_width(cls, bounds, shape) -> int:
    """How a softmax output layer is recognised: -1 for class `Softmax` (always one); `K` for bounds
    `[0, 1]` over `K > 1` outputs: a softmax when its mean is `1/K` (every row sums to 1), which a
    sigmoid's is not; 0 for anything else.

    >>> softmax_width("Softmax", (0.0, 1.0), None), softmax_width("Dense", (0.0, 1.0), [None, 10]), softmax_width("Dense", None, [None, 10])
    (-1, 10, 0)
    """
    if cls == "Softmax":
        return -1
    try:
        k = int(list(shape)[-1])
    except (TypeError, ValueError, IndexError):
        return 0
    return k if bounds == (0.0, 1.0) and k > 1 else 0


@register("saturation")
def check_saturation(ctx):
    """`saturation_fraction` above the threshold, at the upper bound only for one-sided activations, and
    never at the model's output softmax (a confident classifier is one-hot)."""
    w = ctx.wide
    if "saturation_fraction" not in w.columns:
        return []
    mean = w["mean"] if "mean" in w.columns else pd.Series(np.nan, index=w.index)
    sat = w["saturation_fraction"].astype(float).copy()
    one = ctx.info("one_sided").astype(bool)
    old = ctx.info("zeros_in_saturation").astype(bool)
    if old.any() and "zero_fraction" in w.columns:
        # older logs count the zeros of ReLU6 at the lower bound: keep the upper-bound share only
        sat = sat.where(~old, (sat - w["zero_fraction"]).clip(lower=0.0))
    limit = ctx.t["saturation_fraction"]
    mask = (sat > limit) & w["alive"]
    if not mask.any():
        return []
    k = ctx.info("softmax_k").astype(float)
    softmax_out = (k == -1) | ((k > 1) & ((mean * k - 1.0).abs() < 1e-3))
    mask &= ~softmax_out
    where = one.map({True: "at the upper bound ", False: ""})
    return _spans(
        ctx,
        ctx.rows(mask, sat, where),
        "saturation",
        "saturation_fraction",
        lambda v, e: f"{_fmt(100 * v)}% of the outputs are saturated {e or ''}(threshold {_fmt(100 * limit)}%)",
    )


def _usable_std(ctx):
    """Rows of `wide` with a comparable `std` (finite, above `min_std`, layer alive): run, layer, step, std."""
    w = ctx.wide
    if "std" not in w.columns:
        return w.iloc[:0][["run", "layer", "step", "window", "last_window"]].assign(
            std=pd.Series(dtype=float), mean=pd.Series(dtype=float)
        )
    std = w["std"].to_numpy(float)
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(std) & (std > ctx.t["min_std"]) & w["alive"].to_numpy(bool)
    mean = w["mean"].to_numpy(float) if "mean" in w.columns else np.full(len(w), np.nan)
    at = np.flatnonzero(usable)
    return _take(w, at, std=std[at], mean=mean[at])


UNIT_MEAN, UNIT_STD = 0.2, 1.5
"""An output whose `|mean|` is at most `UNIT_MEAN` and whose `std` is within a factor `UNIT_STD` of 1 is at
unit scale, what a normalisation makes (`looks_normalized`): never `exploding_depth`/`vanishing_depth`."""


LOSS_SCALE = 100.0
"""The largest `std` the loss can ask of a model's output or logits (`loss_scaled`): beyond it a softmax or
sigmoid is saturated in float32 (`exp(100)` overflows), so growth to there is `exploding_depth` again."""


def looks_normalized(mean, std):
    """True where the statistics say the output is normalised (mean ~0, std ~1), whatever the layer's class:
    a subclassed block whose last operation is a LayerNormalization is judged by what it outputs.

    >>> looks_normalized(pd.Series([0.01, 0.01, 1.0]), pd.Series([1.02, 12.0, 1.0])).tolist()
    [True, False, False]
    """
    return (np.abs(mean) <= UNIT_MEAN) & (std <= UNIT_STD) & (std >= 1.0 / UNIT_STD)


def expected_shrink(channels_in, channels_out, size_in, size_out, pooling):
    """How much a healthy layer may shrink the std by design (1 when nothing explains a shrink):

    - a pooling layer averaging `n = size_in / size_out` values per output: up to `sqrt(n)` (the average of
      `n` independent values), so it is judged by how much of its input's variation it retains, not by the
      std ratio (a squeeze-and-excite `GlobalAveragePooling2D` over 56 x 56 positions: up to 56x);
    - a weighted layer widening from `channels_in` to `channels_out` units with Glorot's initialisation
      (Keras' default, variance `2 / (fan_in + fan_out)`): its std gain is `sqrt(2 fan_in / (fan_in + fan_out))`,
      so up to `sqrt((channels_in + channels_out) / (2 channels_in))` (a VAE decoder's `Dense` from 2 to
      3136 units: 28x).

    >>> round(expected_shrink(2, 3136, 2, 3136, False), 1), expected_shrink(64, 64, 64, 64, False), expected_shrink(32, 32, 1024 * 32, 32, True)
    (28.0, 1.0, 32.0)
    """
    out = 1.0
    if pooling and size_in > size_out > 0:
        out = max(out, math.sqrt(size_in / size_out))
    if channels_out > channels_in > 0:
        out = max(out, math.sqrt((channels_in + channels_out) / (2.0 * channels_in)))
    return out


def _input_edges(s):
    """`{(run, layer): [(input, allowed)]}` of the layers the depth check judges (known inputs; not bounded,
    normalising or renormalised), `allowed` the shrink their shapes explain (`expected_shrink`)."""
    judged = [
        b is None and not is_normalization(c) and not renorm and i
        for c, b, i, renorm in zip(s["class"], s["bounds"], s["inputs"], s["renormalized"])
    ]
    info = {(r, l): (ch, sz) for r, l, ch, sz in zip(s["run"], s["layer"], s["channels"], s["size"])}
    by_key = {}
    for r, l, ins, ok, ch, sz, pool in zip(
        s["run"], s["layer"], s["inputs"], judged, s["channels"], s["size"], s["pooling"]
    ):
        if ok:
            for i in ins:
                ch_in, sz_in = info.get((r, i), (float("nan"), float("nan")))
                by_key.setdefault((r, l), []).append((i, expected_shrink(ch_in, ch, sz_in, sz, pool)))
    return by_key


def _input_extremes(ctx, std):
    """Per row of `std` (`_usable_std`) with known inputs: the largest input scale (`max_input`, `max_std`:
    the input's root mean square, `sqrt(mean**2 + std**2)`: a weighted sum of inputs with a mean passes that
    mean on as spread, as a classifier's logits do) and the smallest input std (`min_input`, `min_std`, and
    `allowed`: the shrink the layer's shapes explain, `expected_shrink`). `(positions of those rows in
    std, {column: array})`, None without edges or rows."""
    by_key = ctx.static("input_edges", _input_edges)
    if not by_key or std.empty:
        return None
    # plain Python over the rows (no merge, sort and group per call: this runs at every live window): the largest
    # input rms (ties: the last input in the layer's list) and the smallest std / allowed (ties: the first)
    runs, layers, steps = std["run"].to_numpy(), std["layer"].to_numpy(), std["step"].to_numpy()
    scale = {
        (r, l, st): (sd, 0.0 if mn != mn else mn)
        for r, l, st, sd, mn in zip(runs, layers, steps, std["std"].to_numpy(float), std["mean"].to_numpy(float))
    }
    picked, columns = [], ([], [], [], [], [])
    for k, (r, l, st) in enumerate(zip(runs, layers, steps)):
        hi = lo = None
        for i, allowed in by_key.get((r, l), ()):
            v = scale.get((r, i, st))
            if v is None:
                continue
            rms, low = math.sqrt(v[0] * v[0] + v[1] * v[1]), v[0] / allowed
            if hi is None or rms >= hi[1]:
                hi = (i, rms)
            if lo is None or low < lo[3]:
                lo = (i, v[0], allowed, low)
        if hi is not None:
            picked.append(k)
            for column, value in zip(columns, (lo[0], lo[1], lo[2], hi[0], hi[1])):
                column.append(value)
    names = ("min_input", "min_std", "allowed", "max_input", "max_std")
    return np.asarray(picked, dtype=np.int64), {
        name: _array(column, float if name in ("min_std", "allowed", "max_std") else object)
        for name, column in zip(names, columns)
    }


def _array(values, dtype):
    """`values` (a list) as a 1-d array of `dtype`; tuples stay objects, one per element."""
    if dtype is not object:
        return np.asarray(values, dtype=dtype)
    out = np.empty(len(values), dtype=object)
    for k, v in enumerate(values):
        out[k] = v
    return out


def _pairs_where(s, mask):
    """The `(run, layer)` pairs of the series table `s` where `mask` (a column of `s`) holds."""
    return set(zip(s.loc[mask, "run"], s.loc[mask, "layer"]))


@register("depth")
def check_depth(ctx):
    """`std` of a layer against the layers that feed it in the model graph (the `inputs` column of
    `layers`): `exploding_depth` when it exceeds the largest input scale (root mean square) by more than
    `std_ratio`, `vanishing_depth` when it is below the smallest input `std` by more than `std_ratio` times
    what the layer's shapes explain (`expected_shrink`: averaging, widening). Residual additions are judged
    against their inputs the same way. Not judged: bounded activations (their range is fixed),
    normalisation and scaling layers (`is_normalization`), outputs at unit scale (`looks_normalized`: a
    block ending in a normalisation), layers that feed only normalisation layers (their scale is removed
    right after: Conv -> BatchNormalization), `vanishing_depth` of a residual branch (a layer whose every
    consumer is an addition: judged at the addition), `exploding_depth` of an addition (a sum cannot exceed
    its terms: it means an input is not recorded), and every layer whose inputs are unknown (older logs, or a
    `layers` frame without `inputs`): no depth finding is made without the graph. The model's outputs and
    the logits before a bounded output (`loss_scaled`) are not judged `exploding_depth` below a std of
    `LOSS_SCALE`: the loss sets their scale (a classifier's logits grow as it grows confident)."""
    std = _usable_std(ctx)
    got = _input_extremes(ctx, std)
    if got is None or not len(got[0]):
        return []
    at, m = got
    m["std"], m["mean"] = std["std"].to_numpy(float)[at], std["mean"].to_numpy(float)[at]
    keep = ~looks_normalized(m["mean"], m["std"])  # a NaN mean (not recorded) says nothing
    loss_scaled = ctx.static("loss_scaled", lambda s: _pairs_where(s, s["loss_scaled"]))
    keys = list(zip(std["run"].to_numpy()[at], std["layer"].to_numpy()[at]))
    free = ~_isin(keys, loss_scaled) | (m["std"] > LOSS_SCALE)
    # a sum cannot exceed its terms' summed scale: an addition far above its largest recorded input has an
    # input that is not recorded (the model's input as the skip of the first residual block)
    adds = ctx.static("additions", lambda s: _pairs_where(s, s["class"].isin(ADDITION_CLASSES)))
    branches = ctx.static("residual_branches", lambda s: _pairs_where(s, s["residual_branch"]))
    free &= ~_isin(keys, adds)
    branch = _isin(keys, branches)  # judged at the addition
    out = []
    with np.errstate(divide="ignore", invalid="ignore"):
        kinds = (
            ("exploding_depth", m["std"] / m["max_std"], m["max_input"], keep & free),
            ("vanishing_depth", m["min_std"] / m["std"], m["min_input"], keep & ~branch),
        )
    for kind, ratio, other, mask in kinds:
        allowed = m["allowed"] if kind == "vanishing_depth" else np.ones(len(ratio))
        mask = mask & (ratio > ctx.t["std_ratio"] * allowed)
        if not mask.any():
            continue
        extra = _array(list(zip(other[mask], allowed[mask])), object)
        rows = _take(std, at[mask], value=ratio[mask], extra=extra)
        verb, which = ("grows", "largest") if kind == "exploding_depth" else ("shrinks", "smallest")
        out += _spans(
            ctx,
            rows,
            kind,
            "std",
            lambda v, e, verb=verb, which=which: (
                f"std {verb} {_fmt(v)}x from its {which} input {e[0]!r} to this layer"
                + (f" (its shapes explain {_fmt(e[1])}x)" if e[1] > 1.0 else "")
            ),
        )
    return out


def _isin(keys, pairs):
    """`[k in pairs for k in keys]` as a boolean array."""
    return np.fromiter((k in pairs for k in keys), bool, len(keys))


@register("time")
def check_time(ctx):
    """`std` of a layer from one logged window to its next: `exploding_time`/`vanishing_time` when it
    changes by more than `std_ratio`."""
    w = _usable_std(ctx)
    groups = _Groups(_pair_codes(w["run"].to_numpy(), w["layer"].to_numpy()))
    std = w["std"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = std / groups.shift(std, np.nan)
    prev_step = groups.shift(w["step"].to_numpy(float), np.nan)
    at = np.arange(len(w))
    out = []
    for kind, mask in (
        ("exploding_time", ratio > ctx.t["std_ratio"]),
        ("vanishing_time", ratio < 1.0 / ctx.t["std_ratio"]),
    ):
        if not mask.any():
            continue
        rows = _take(w, at[mask], value=ratio[mask], extra=prev_step[mask])
        verb, extreme = ("jumped up", "max") if kind == "exploding_time" else ("dropped", "min")
        out += _spans(
            ctx,
            rows,
            kind,
            "std",
            lambda v, e, verb=verb: f"std {verb} {_fmt(v if v >= 1 else 1 / v)}x in one window (after step {int(e)})",
            extreme,
        )
    return out


@register("std_drift")
def check_drift(ctx):
    """`std` changed by more than `std_ratio` since the layer's first usable window (info: activations
    often grow from their initial scale during training)."""
    w = _usable_std(ctx)
    by_layer = w.groupby(["run", "layer"])
    ratio = w["std"] / by_layer["std"].transform("first")
    base_step = by_layer["step"].transform("first")
    drift = (ratio > ctx.t["std_ratio"]) | (ratio < 1.0 / ctx.t["std_ratio"])
    extra = [
        f"{'grew' if r > 1 else 'shrank'} {_fmt(max(r, 1 / r))}x since step {b}"
        for r, b in zip(ratio[drift], base_step[drift])
    ]
    rows = w.loc[drift, ["run", "layer", "step", "window", "last_window"]].assign(
        value=np.maximum(ratio, 1 / ratio)[drift], extra=extra
    )
    return _spans(ctx, rows, "std_drift", "std", lambda v, e: f"std {e}")


# ------------------------------------------------------------------ gradients


def _column(ctx, stat):
    """`wide[stat]` as floats, all NaN when the statistic was not recorded."""
    if stat not in ctx.wide.columns:
        return pd.Series(np.nan, index=ctx.wide.index)
    return ctx.wide[stat].astype(float)


def _gradient_flows(ctx):
    """Rows of `wide` whose activation gradient can be compared: `grad_rms` finite and > 0, the gradient
    not dead (`grad_zero_fraction` below `dead_gradient_fraction`), the layer alive and not `renormalized`:
    a layer whose every consumer is a normalisation layer gets a gradient as small (large) as its output
    is large (small), since the normalisation divides by that scale (Conv -> BatchNormalization)."""
    rms, zeros = _column(ctx, "grad_rms"), _column(ctx, "grad_zero_fraction")
    usable = np.isfinite(rms) & (rms > 0) & ~(zeros >= ctx.t["dead_gradient_fraction"])
    return usable & ctx.wide["alive"].astype(bool) & ~ctx.info("renormalized").astype(bool)


def _downstream(inputs):
    """`(order, consumers)`: the series of one run with known inputs, consumers before the series they
    consume (the gradient's order, output side first), and each series' consumers. Series on a cycle
    (malformed logs) are left out.

    >>> _downstream({"a": (), "b": ("a",), "c": ("a", "b")})
    (['c', 'b', 'a'], {'a': ['b', 'c'], 'b': ['c'], 'c': []})
    >>> _downstream({"a": (), "sq": ("a", "a")})[0]  # Multiply()([a, a])
    ['sq', 'a']
    """
    consumers = {name: [] for name in inputs}
    for name, ins in inputs.items():
        for i in dict.fromkeys(ins):
            if i in consumers:
                consumers[i].append(name)
    pending = {name: len(c) for name, c in consumers.items()}
    ready = [name for name in inputs if pending[name] == 0]
    order = []
    while ready:
        name = ready.pop()
        order.append(name)
        for i in dict.fromkeys(inputs[name]):
            if i in pending:
                pending[i] -= 1
                if pending[i] == 0:
                    ready.append(i)
    return order, consumers


def _gradient_extremes(ctx):
    """Per (run, layer, step) with a comparable gradient and one downstream: the largest and smallest
    comparable `grad_rms` among the layers it feeds, directly or not (the output side of the graph),
    with their names. Layers of unknown inputs take no part: no comparison without the graph."""
    if "grad_rms" not in ctx.wide.columns:
        return None
    flows = _gradient_flows(ctx)
    g = ctx.wide.loc[flows, ["run", "layer", "step", "grad_rms"]]
    sizes = ctx.info("size").astype(float)[flows]
    by_norm = set()
    for run, s in ctx.series.groupby("run", sort=False):
        if s["size"].notna().all():  # every shape known: per-example norms, else per-value rms
            by_norm.add(run)
    norm = g["run"].isin(by_norm)
    g = g.assign(grad_rms=np.where(norm, g["grad_rms"] * np.sqrt(sizes.where(norm, 1.0)), g["grad_rms"]))
    frames = []
    for run, s in ctx.series.groupby("run", sort=False):
        inputs = {l: ins for l, ins in zip(s["layer"], s["inputs"]) if ins is not None}
        grid = g[g["run"] == run].pivot_table(index="step", columns="layer", values="grad_rms", aggfunc="last")
        if not inputs or grid.empty:
            continue
        order, consumers = _downstream(inputs)
        grid = grid.reindex(columns=order)
        values, n = grid.to_numpy(float).T, len(grid)  # values[k]: layer order[k]'s gradients, step by step
        column = {name: k for k, name in enumerate(order)}
        size = dict(zip(s["layer"], s["size"])) if run in by_norm else {}
        # an average over n values hands each 1/n of the gradient: 1/sqrt(n) of its norm, by design; a max
        # pooling (`ROUTING_CLASS`) hands each window's gradient whole to one value: the norm is kept
        averaging = {
            name: bool(pool) and not ROUTING_CLASS.search(str(cls))
            for name, pool, cls in zip(s["layer"], s["pooling"], s["class"])
        }
        hi, lo = {}, {}  # layer -> (values [steps], names [steps]) over its downstream
        for name in order:
            parts = []
            for c in consumers[name]:
                a = (
                    math.sqrt(size[name] / size[c])
                    if averaging.get(c) and size.get(c) and size.get(name, 0) > size[c]
                    else 1.0
                )
                parts += [
                    (values[column[c]] / a, np.full(n, c, object)),
                    (hi[c][0] / a, hi[c][1]),
                    (lo[c][0] / a, lo[c][1]),
                ]
            hi[name], lo[name] = _extreme(parts, np.fmax, n), _extreme(parts, np.fmin, n)
        # one frame per run (not per layer: thousands of small frames cost more than the walk)
        frames.append(
            pd.DataFrame(
                {
                    "run": np.full(n * len(order), run, object),
                    "layer": np.repeat(np.asarray(order, object), n),
                    "step": np.tile(grid.index.to_numpy(), len(order)),
                    "grad_rms": values.reshape(-1),
                    "by_norm": run in by_norm,
                    "hi": np.concatenate([hi[name][0] for name in order]),
                    "hi_layer": np.concatenate([hi[name][1] for name in order]),
                    "lo": np.concatenate([lo[name][0] for name in order]),
                    "lo_layer": np.concatenate([lo[name][1] for name in order]),
                }
            )
        )
    if not frames:
        return None
    m = pd.concat(frames, ignore_index=True).dropna(subset=["grad_rms", "hi"])
    return m.merge(ctx.wide[["run", "layer", "step", "window", "last_window"]], on=["run", "layer", "step"])


def _extreme(parts, pick, n):
    """Elementwise `pick` (np.fmax/np.fmin) over `(values, names)` pairs of length `n`, NaN ignored, with
    the name kept; NaN where no part has a value."""
    best, names = np.full(n, np.nan), np.full(n, None, object)
    for values, who in parts:
        better = ~np.isnan(values) & (np.isnan(best) | (pick(best, values) != best))
        best[better], names[better] = values[better], who[better]
    return best, names


@register("gradient_depth")
def check_gradient_depth(ctx):
    """The activation gradient along the graph, from the output side to the input side: `vanishing_gradient`
    where the gradient is below the largest gradient of the layers the layer feeds (directly or not) by more
    than `grad_ratio`, `exploding_gradient` where it is above the smallest by more than `grad_ratio`. Only
    comparable gradients take part (`_gradient_flows`); no finding without the graph (`inputs`).

    The gradients compared are norms per example, `grad_rms * sqrt(values per example)` (when every
    series' shape is known, else `grad_rms`): a layer that preserves its output's variance (He, LeCun
    initialisation) preserves the gradient's norm, not its rms, which falls as the tensors widen toward the
    input (a GAN generator's 32x32x128 feature maps fed to its discriminator's 1-unit output: 360x in rms
    for the same norm). Through a pooling layer averaging `n` values per output, a fall of `sqrt(n)` in norm
    is by design and discounted (as `expected_shrink` does for activations); a max pooling hands each
    window's gradient to one value and keeps its norm: nothing to discount. Layers called several times
    per step (`layer#1` series) have their own series and are compared along the edges of their own call;
    a gradient that enters a model through another model's output (a GAN generator through its
    discriminator) is compared the same way."""
    m = _gradient_extremes(ctx)
    if m is None or m.empty:
        return []
    out = []
    for kind, ratio, other in (
        ("vanishing_gradient", m["hi"] / m["grad_rms"], m["hi_layer"]),
        ("exploding_gradient", m["grad_rms"] / m["lo"], m["lo_layer"]),
    ):
        mask = ratio > ctx.t["grad_ratio"]
        extra = list(zip(other[mask], m.loc[mask, "by_norm"]))
        rows = m.loc[mask, ["run", "layer", "step", "window", "last_window"]].assign(value=ratio[mask], extra=extra)
        verb = "falls" if kind == "vanishing_gradient" else "grows"
        out += _spans(
            ctx,
            rows,
            kind,
            "grad_rms",
            lambda v, e, verb=verb: (
                f"gradient {'norm per example' if e[1] else 'rms'} {verb} {_fmt(v)}x "
                f"from {e[0]!r} (on the output side) to this layer"
            ),
        )
    return out


@register("huge_gradient")
def check_huge_gradient(ctx):
    """`grad_max_abs` above `max_grad_abs` (the largest finite |dL/da|): `exploding_gradient` without the graph."""
    if "grad_max_abs" not in ctx.wide.columns:
        return []
    big = _column(ctx, "grad_max_abs")
    mask = (big > ctx.t["max_grad_abs"]).fillna(False)
    limit = ctx.t["max_grad_abs"]
    return _spans(
        ctx,
        ctx.rows(mask, big),
        "exploding_gradient",
        "grad_max_abs",
        lambda v, _e: f"gradient values up to {_fmt(v)} (threshold {_fmt(limit)})",
    )


def _routed(ctx):
    """`(run, layer)` pairs whose every consumer in the graph is a `ROUTING_CLASS` layer."""
    s = ctx.series
    consumers = {}
    for r, c, ins in zip(s["run"], s["class"], s["inputs"]):
        for i in ins or ():
            consumers.setdefault((r, i), []).append(bool(ROUTING_CLASS.search(c)))
    return {key for key, routing in consumers.items() if all(routing)}


@register("dead_gradient")
def check_dead_gradient(ctx):
    """`grad_zero_fraction` at least `dead_gradient_fraction` while the layer's output is not dead: nothing
    reaches the layer from the loss (a branch multiplied by zero, a zero kernel downstream, dead ReLUs after it).
    Not judged: layers feeding only max pooling, slicing or cropping (`ROUTING_CLASS`): a global max pooling
    over a 16x16 map passes the gradient to 1 value in 256. Explained, as `info`, where the graph shows the
    output does not reach the loss (`_off_the_loss`: an output without a loss, or with loss weight 0)."""
    zeros = _column(ctx, "grad_zero_fraction")
    zero = (zeros >= ctx.t["dead_gradient_fraction"]).fillna(False)
    mask = zero & ctx.wide["alive"].astype(bool)
    if not mask.any():
        return []
    mask &= ~ctx.of_layers(_routed(ctx))
    explained = _off_the_loss(ctx, zero) & mask
    dead = _spans(
        ctx,
        ctx.rows(mask & ~explained, zeros),
        "dead_gradient",
        "grad_zero_fraction",
        lambda v, _e: f"{_fmt(100 * v)}% of the gradient dL/da is exactly zero while the output is not",
    )
    off = _spans(
        ctx,
        ctx.rows(explained, zeros),
        "dead_gradient",
        "grad_zero_fraction",
        lambda v, _e: (
            f"{_fmt(100 * v)}% of the gradient dL/da is exactly zero: this output does not reach the "
            "loss (every layer it feeds has a zero gradient too, or it feeds none: an output without a "
            "loss or with loss weight 0)"
        ),
    )
    return dead + [f[:4] + ("info",) + f[5:] for f in off]


def _off_the_loss(ctx, zero):
    """Rows of `wide` whose zero gradient is explained by the graph: at that step, no layer the series feeds
    (directly or not) has a gradient that is not zero (a gradient not recorded counts as not zero). A model
    output without a loss, and the layers feeding only it, are such. False without the graph."""
    out = pd.Series(False, index=ctx.wide.index)
    w = ctx.wide
    for run, s in ctx.series.groupby("run", sort=False):
        inputs = {l: ins for l, ins in zip(s["layer"], s["inputs"]) if ins is not None}
        if not inputs:
            continue
        order, consumers = _downstream(inputs)
        in_run = (w["run"] == run).to_numpy()
        zero_set = {}
        for layer, step in zip(w.loc[in_run & zero.to_numpy(), "layer"], w.loc[in_run & zero.to_numpy(), "step"]):
            zero_set.setdefault(step, set()).add(layer)
        explained = set()
        for step, zs in zero_set.items():
            reach = {}
            for name in order:  # consumers first
                reach[name] = any(c not in zs or reach[c] for c in consumers[name])
            explained |= {(name, step) for name in zs if name in reach and not reach[name]}
        if explained:
            rows = list(zip(w.loc[in_run, "layer"], w.loc[in_run, "step"]))
            out[in_run] = [k in explained for k in rows]
    return out


@register("updates")
def check_updates(ctx):
    """`update_ratio` (`||w_after - w_before|| / ||w_before||`, only recorded for layers with trainable
    weights) below `min_update_ratio`: `stalled_layer` (a learning rate of 0 included); above
    `max_update_ratio`: `unstable_updates`. Weights no optimizer updates (a frozen model, a distillation
    teacher, a GAN discriminator during the generator's update) get no verdict: their gradient norm given to
    the optimizer is 0 (`weight_grad_norm == 0`), or their update figures are missing or NaN."""
    if "update_ratio" not in ctx.wide.columns:
        return []
    ratio = _column(ctx, "update_ratio")
    low, high = ctx.t["min_update_ratio"], ctx.t["max_update_ratio"]
    untouched = (_column(ctx, "weight_grad_norm") == 0.0).fillna(
        False
    )  # no gradient applied: no optimizer updates them
    stalled = _spans(
        ctx,
        ctx.rows((ratio < low).fillna(False) & ~untouched, ratio),
        "stalled_layer",
        "update_ratio",
        lambda v, _e: f"the weights barely move: update ratio {_fmt(v)} per step (threshold {_fmt(low)})",
        "min",
    )
    unstable = _spans(
        ctx,
        ctx.rows((ratio > high).fillna(False), ratio),
        "unstable_updates",
        "update_ratio",
        lambda v, _e: (
            f"each update changes the weights by {_fmt(100 * v)}% of their norm (threshold {_fmt(100 * high)}%)"
        ),
    )
    return stalled + unstable


# ------------------------------------------------------------------ diagnose


def _finish(ctx, findings):
    out = pd.DataFrame(_ordered(ctx, findings), columns=FINDING_COLUMNS)
    return out.astype({"first_step": "int64", "last_step": "int64", "windows": "int64"})


def _ordered(ctx, findings):
    """`findings` (`Finding`s) in `diagnose`'s order: most severe first, then by first step, run and model
    order, NaN weights before the other kinds at the same layer (they make NaN outputs and gradients: the
    cause first), then by kind; in check order otherwise (a stable sort)."""
    if not findings:
        return []
    order = ctx.static("order", lambda s: dict(zip(zip(s["run"], s["layer"]), s["order"])))
    return sorted(
        findings,
        key=lambda f: (
            -severity_rank(f[4]),
            f[5],
            f[0],
            order.get((f[0], f[1]), 10**9),
            f[3] != "nan_weights",
            f[3],
        ),
    )


def diagnose(df, layers: pd.DataFrame | None = None, **kwargs) -> pd.DataFrame:
    """Finds numerical-health problems in tfprobe statistics.

    Args:
      df: a log directory, or the long frame of `tfprobe.read_logdir` (columns
        `run, step, layer, stat, value`; it carries the layers frame in
        `df.attrs`, used when `layers` is None). Only `REQUIRED_STATS` are
        used. Without a layers frame (or its `inputs`), the checks that need
        it (`NEEDS`) cannot run: `diagnose` warns once, naming them.
        Or `stat_frame(tfprobe.read(logdir))`: the same, already pivoted, in
        a fraction of the memory (what `tfprobe report` passes).
      layers: optional frame from `tfprobe.read_layers(logdir)` (columns
        `run, layer, order`, and optionally `class, bounds, shape, inputs`).
        It gives the model order, the layer classes and activation bounds
        that the architecture-aware rules use, and the graph (`inputs`: the
        series that feed each series). Without `inputs` (older logs, or no
        `layers`) no depth finding is made: a layer is never compared with
        its neighbour in a list.
      dead_layer_fraction: a layer is dead in a window when its `zero_fraction`
        (or `near_zero_fraction`) is at least this. Defaults to `0.99`.
      dead_units_fraction: report dead units when `dead_unit_fraction`
        exceeds this. Defaults to `0.5`.
      saturation_fraction: report saturation when `saturation_fraction`
        exceeds this. Defaults to `0.5`.
      std_ratio: report exploding (vanishing) activations when `std` exceeds
        the largest input's (is below the smallest input's) by more than this
        factor at the same step (`*_depth`), or changes by more than this
        factor from one logged window of a layer to the next (`*_time`); a
        gradual change by more than this factor since the layer's first
        logged window is `std_drift` (info). Defaults to `10.0`.
      min_std: standard deviations at or below this are treated as zero and
        not compared. Defaults to `1e-6`.
      grad_ratio: `vanishing_gradient`/`exploding_gradient` when `grad_rms` is
        below 1/this (above this) of the layers it feeds (`check_gradient_depth`;
        `LayerProbe(gradients=True)`, as every gradient threshold). Defaults to `1000.0`.
      max_grad_abs: `exploding_gradient` when `grad_max_abs` exceeds this
        (`check_huge_gradient`). Defaults to `1e6`.
      dead_gradient_fraction: `dead_gradient` when `grad_zero_fraction` is at
        least this (`check_dead_gradient`). Defaults to `0.99`.
      min_update_ratio: `stalled_layer` when `update_ratio` is below this
        (`check_updates`). Defaults to `1e-5`.
      max_update_ratio: `unstable_updates` when `update_ratio` exceeds this
        (`check_updates`). Defaults to `0.1`.
      transient_windows: a finding that held only within the first this many
        logged windows of its run, and no longer in a later window, is a
        transient early-training event, reported as `info` (NaN/Inf excepted).
        Defaults to `2`.

    Non-finite values are errors (`nan_inf`, `nan_weights`).

    Returns:
      A DataFrame with columns `FINDING_COLUMNS` (`run, layer, stat, kind,
      severity, first_step, last_step, windows, message`), most severe first,
      then by first step and model order. `kind` is one of `KINDS`;
      `first_step`/`last_step` bound the windows in which the condition held;
      `windows` is the longest streak of consecutive windows in which it held.

    Raises:
      TypeError: for an unknown threshold name, or `df`/`layers` not frames.
      ValueError: for a bad threshold value, missing columns, non-numeric values.
    """
    df, layers = _inputs_of(df, layers)
    ctx = context(df, layers, **kwargs)
    findings = []
    if not ctx.wide.empty:
        _warn_missing_input(ctx, layers)
        for check in CHECKS.values():
            findings += check(ctx)
    return _finish(ctx, findings)


def _inputs_of(df, layers):
    """`(long frame, layers frame or None)` from the arguments of `diagnose`: a log directory is read; a
    frame of `read_logdir` gives the layers frame it carries when `layers` is None."""
    if isinstance(df, (str, os.PathLike)):
        from tfprobe.logs.reader import read

        data = read(df)
        df, layers = data.scalars, (data.layers if layers is None else layers)
    if layers is None and isinstance(df, pd.DataFrame):
        from tfprobe.logs.reader import layers_of

        layers = layers_of(df)
    return df, layers


NEEDS = {"graph": ("depth", "gradient_depth"), "layers": ("saturation", "dead_layer", "dead_gradient")}
"""What checks lack without the layers frame: `graph` (its `inputs`) and `layers` (classes, bounds, shapes:
a softmax output is not saturation, a normalisation's near-zero outputs are not a dead layer, a max pooling
passes the gradient to few values)."""


def _warn_missing_input(ctx, layers):
    """One warning naming the checks that cannot run (or run without the layer classes) for lack of input."""
    import warnings

    how = (
        "pass the log directory (`tfprobe.diagnose(logdir)`), a frame of `tfprobe.read_logdir` (it carries the "
        "layer graph in `df.attrs`), or `layers=tfprobe.read_layers(logdir)`"
    )
    if layers is None or not len(layers):
        warnings.warn(
            f"tfprobe.diagnose: no layers frame: checks {', '.join(map(repr, NEEDS['graph']))} cannot run "
            f"and {', '.join(map(repr, NEEDS['layers']))} run without the layer classes and bounds; {how}",
            RuntimeWarning,
            stacklevel=3,
        )
    elif ctx.series["inputs"].isna().all():
        warnings.warn(
            f"tfprobe.diagnose: the layers frame has no graph (no `inputs`: logs written before tfprobe "
            f"recorded it, or a frame without that column): checks {', '.join(map(repr, NEEDS['graph']))} "
            "cannot run",
            RuntimeWarning,
            stacklevel=3,
        )


# ---------------------------------------------------------------- constant_output
# The `constant_output` check: a layer whose output does not depend on its input.
#
# A layer that outputs the same value for every example carries no information about its input: nothing
# on the input side of it can learn through it (the gradient it hands back is exactly zero, `dead_gradient`
# and `stalled_layer` behind it). The classic case is a `LayerNormalization` over an axis of size 1 (the
# official Keras time-series Transformer example normalises `(batch, 500, 1)` inputs over their last axis):
# `(x - mean(x)) / std(x)` is 0 for every value, so the layer outputs its `beta`, whatever the input.
#
# What tfprobe records is enough to see it without any extra device work:
#
# - *one value in the window*: the window's `min` equals its `max` (float32, exact) and the values are not
#   all zero (that is a `dead_layer`): every example, unit, position and recorded step gave the same value;
# - *one value per example*, for normalisation layers that normalise each example by its own statistics
#   (`is_normalization`, not `AFFINE_SCALING_CLASS`: where it happens by construction; `Rescaling`,
#   `BatchNormalization` and the like are affine per example, constant only where their input is, and
#   MobileNetV3Small's `Rescaling(1/127.5, offset=-1)` of inputs in [0, 1) outputs -1 +- 0.8%, not a constant):
#   every example's values have one magnitude (`hoyer_sparsity`, which is 0 exactly then, at most
#   `CONSTANT_HOYER`) and one sign (`min` and `max` of the window on the same side of 0, no zeros). A layer
#   normalising over an axis of size 1 is this while its `beta` still moves between steps of the window.
#   Needs more than one value per example (`hoyer_sparsity` is absent otherwise). Not judged on other
#   layers: a near-uniform output is not a constant one (an untrained softmax over 10 classes gives 0.1 +-
#   0.1% for every class, `hoyer_sparsity` below 1e-5, `tests/findings/test_zoo_healthy.py`'s recurrent model).
#
# Both need the layer alive (finite weights, not dead) and finite values (`nan_count`, `inf_count` 0).
# A constant output is reported where it starts: not at a layer whose every recorded input is dead or
# constant in the same window (a Dense after a dead ReLU layer outputs its bias: an effect of the dead layer).
# A frozen Dense with a zero kernel is reported: its constant output is why nothing before it learns.
# Layers scaled by design to tiny values (`LayerScale` at 1e-6 init) are not constant: their values differ.

CONSTANT_HOYER = 1e-4
"""`hoyer_sparsity` at or below which every example's values have one magnitude (it is 0 exactly then,
up to float64 rounding of the sums; a dense Gaussian output has about 0.2)."""


def constant_rows(ctx):
    """`(mask, how)`: rows of `ctx.wide` where the layer's output is constant, and per row `"window"` (one
    value in the whole window) or `"example"` (one value per example, sign and magnitude)."""
    w = ctx.wide
    lo, hi = _column(ctx, "min"), _column(ctx, "max")
    zeros, hoyer = _column(ctx, "zero_fraction"), _column(ctx, "hoyer_sparsity")
    finite = (_column(ctx, "nan_count").fillna(0) == 0) & (_column(ctx, "inf_count").fillna(0) == 0)
    finite &= np.isfinite(lo) & np.isfinite(hi)
    ok = finite & w["alive"].astype(bool) & ~ctx.nonfinite_weights() & (zeros.fillna(0.0) < 1.0)
    one_value = ok & (lo == hi) & (hi != 0)
    one_sign = (lo > 0) | (hi < 0)
    per_example = ok & ~one_value & one_sign & (hoyer <= CONSTANT_HOYER)
    if per_example.any():
        per_example &= _per_series(
            ctx, "class", lambda c: is_normalization(str(c)) and not AFFINE_SCALING_CLASS.search(str(c))
        ).astype(bool)
    how = np.where(one_value, "window", "example")
    constant = (one_value | per_example).fillna(False).astype(bool)
    if not constant.any():
        return constant, how
    dead = (zeros.fillna(0.0) >= ctx.t["dead_layer_fraction"]) | ~w["alive"].astype(bool)
    return constant & ~_inherited(ctx, constant | dead), how


def _per_series(ctx, column, fn):
    """`fn(value)` of `column` of `ctx.series`, aligned with the rows of `ctx.wide` (`fn` called once per
    series, not per row; a row whose series the table does not know gets `fn(NaN)`, as `ctx.info` gives)."""
    pos = ctx._series_rows()
    if (pos >= 0).all():
        values = np.array([fn(v) for v in ctx.series[column]] or [False], object)
        return pd.Series(values[pos], index=ctx.wide.index)
    return ctx.info(column).map(fn)


def _inherited(ctx, flat):
    """Rows of `ctx.wide` whose layer has recorded inputs, every one of them `flat` (dead or constant) at the
    same step: their constancy comes from upstream."""
    w = ctx.wide
    pos = ctx._series_rows()
    if (pos >= 0).all():
        return _inherited_by_position(ctx, flat, pos)
    keys = list(zip(w["run"], w["layer"], w["step"]))
    flat_at = dict(zip(keys, flat.to_numpy()))
    inputs = {(r, l): ins for r, l, ins in zip(ctx.series["run"], ctx.series["layer"], ctx.series["inputs"])}
    out = []
    for run, layer, step in keys:
        ins = [i for i in (inputs.get((run, layer)) or ()) if (run, i, step) in flat_at]
        out.append(bool(ins) and all(flat_at[(run, i, step)] for i in ins))
    return pd.Series(out, index=w.index, dtype=bool)


def _inherited_by_position(ctx, flat, pos):
    """`_inherited` in numpy, for a `ctx.wide` whose every row's series is in `ctx.series` (row `r`'s series at
    `pos[r]`): each row's inputs are looked up as `(input series, step)` among the rows' own keys."""
    w, series = ctx.wide, ctx.series
    n = len(w)
    where = {(r, l): i for i, (r, l) in enumerate(zip(series["run"], series["layer"]))}
    feeds = [  # per series: the positions of its inputs that are series of its run
        [where[(r, i)] for i in (ins or ()) if (r, i) in where] for r, ins in zip(series["run"], series["inputs"])
    ]
    counts = np.array([len(f) for f in feeds] or [0], np.int64)
    if n == 0 or not counts.any():
        return pd.Series(np.zeros(n, bool), index=w.index, dtype=bool)
    step_codes, _ = pd.factorize(w["step"].to_numpy())
    n_steps = int(step_codes.max()) + 1
    keys = pos.astype(np.int64) * n_steps + step_codes  # (series, step): unique per row of the pivot
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    rows = np.repeat(np.arange(n), counts[pos])  # one entry per row and input
    feed = np.concatenate([np.array(f, np.int64) for f in feeds if f])  # the inputs, series by series
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    offset = np.arange(len(rows)) - np.repeat(np.cumsum(counts[pos]) - counts[pos], counts[pos])
    wanted = feed[starts[pos[rows]] + offset] * n_steps + step_codes[rows]
    at = np.searchsorted(sorted_keys, wanted)
    found = at < n
    found[found] = sorted_keys[at[found]] == wanted[found]
    flat = np.asarray(flat, bool)
    recorded = np.bincount(rows[found], minlength=n)
    flat_inputs = np.bincount(rows[found], weights=flat[order[at[found]]], minlength=n)
    return pd.Series((recorded > 0) & (flat_inputs == recorded), index=w.index, dtype=bool)


@register("constant_output")
def check_constant_output(ctx):
    """A layer whose output is constant across examples (see the module docstring): `constant_output`."""
    mask, how = constant_rows(ctx)
    if not mask.any():
        return []
    value = _column(ctx, "mean")
    rows = ctx.rows(mask, value, extra=pd.Series(how, index=ctx.wide.index))

    def message(v, e):
        if e == "window":
            return f"the output is one value ({_fmt(v)}) for every example: it does not depend on the input"
        return (
            f"every example's output is one value repeated (mean {_fmt(v)}): it does not depend on the "
            "input beyond one number per example"
        )

    return _spans(ctx, rows, "constant_output", "std", message)
