"""Incidents while `fit` runs: `LiveIncidents` evaluates each new window on the host.

`LayerProbe` hands it each window's statistics right after writing them (the values it already has on the
host: no extra device work, nothing in the step). It keeps, per finding `(layer, kind, statistic)`, the
windows in which it held, and evaluates only the new window against the state: `diagnose` over at most
two windows (the previous, for changes in one window, and the new one), keeping the
findings that hold in the new window. Incidents are then grouped with `tfprobe.findings.incidents.group`,
the same rules as `tfprobe.incidents` after the run.

A finding that `diagnose` would call transient (it held only within the first `transient_windows` windows,
see `diagnose`) cannot be told apart from a lasting one before that many windows have been seen: it is
*confirmed* (alerted) only from window `transient_windows` on, if it still holds then, or at once for
non-finite values (`NEVER_TRANSIENT`), which are never transient. A lasting problem present from the first
window is thus alerted at the third window (with the default `transient_windows=2`), with its first step.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tfprobe.findings import (
    CHECKS,
    CONSTANT_HOYER,
    FINDING_COLUMNS,
    FLAGGED_STATS,
    KINDS,
    NEVER_TRANSIENT,
    REQUIRED_STATS,
    WEIGHT_STATS,
    Finding,
    _context,
    _downstream,
    _finish,
    _frame,
    _ordered,
    _series_table,
    severity_rank,
    stat_rows,
    thresholds,
)
from tfprobe.findings.incidents import Graph, group, summary

RUN = "live"


def layers_frame(infos) -> pd.DataFrame:
    """The `read_layers`-like frame of `{series: info}`, each info the series' metadata as written to disk
    (the recorder's dict, `tfprobe.metadata`'s content) or a `metadata.SeriesInfo`."""
    rows = []
    for name, info in infos.items():
        if not isinstance(info, dict):  # SeriesInfo
            info = {
                "order": info.order,
                "class": info.class_name,
                "shape": info.shape,
                "bounds": info.bounds,
                "inputs": info.inputs,
                "kind": info.kind,
            }
        rows.append(
            {
                "run": RUN,
                "layer": name,
                "order": info.get("order"),
                "class": info.get("class", ""),
                "shape": _list(info.get("shape")),
                "bounds": _list(info.get("bounds")),
                "inputs": _list(info.get("inputs")),
                "kind": info.get("kind", "activation"),
            }
        )
    columns = ["run", "layer", "order", "class", "shape", "bounds", "inputs", "kind"]
    frame = {c: _objects([r[c] for r in rows]) for c in columns}
    frame["order"] = np.asarray([r["order"] for r in rows], dtype=float)
    return pd.DataFrame(frame, columns=columns)


def _list(x):
    return None if x is None else list(x)


def _objects(values):
    """`values` as a NumPy object array (`tfprobe.findings._frame` keeps it so; `pd.DataFrame` would infer
    pandas' own strings from it, whose many small operations in the checks are several times slower)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def window_frame(step, results) -> pd.DataFrame:
    """The long frame (`read_logdir`'s columns) of one window's `{series: {stat: value}}`."""
    names, stats, values = [], [], []
    for name, row in results.items():
        for stat, value in row.items():
            if stat in _REQUIRED:
                names.append(name)
                stats.append(stat)
                values.append(float(value))
    n = len(values)
    return pd.DataFrame(
        {
            "run": _objects([RUN] * n),
            "step": np.full(n, int(step), dtype=np.int64),
            "wall_time": np.zeros(n),
            "layer": _objects(names),
            "stat": _objects(stats),
            "value": np.asarray(values, dtype=float),
        }
    )


_REQUIRED = frozenset(REQUIRED_STATS)


class Window:
    """One window's `{series: {stat: value}}` as arrays, converted once (the live evaluation reads each window
    twice: as the new window, then as the previous one): `values[i, j]` the value of statistic `stats[j]`
    (the `REQUIRED_STATS` recorded in the window, sorted) of series `names[i]`, NaN where it has none;
    `recorded[stat]` where a `FLAGGED_STATS` statistic has a value, NaN included."""

    def __init__(self, step, results):
        self.step = int(step)
        self.names = list(results)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.stats = sorted({k for row in results.values() for k in row if k in _REQUIRED})
        column = {stat: j for j, stat in enumerate(self.stats)}
        self.values = np.full((len(self.names), len(self.stats)), np.nan)
        for i, row in enumerate(results.values()):
            for stat, value in row.items():
                j = column.get(stat)
                if j is not None:
                    self.values[i, j] = float(value)
        self.recorded = {
            stat: np.fromiter((stat in row for row in results.values()), bool, len(self.names))
            for stat in FLAGGED_STATS
            if stat in column
        }

    def column(self, stat, at=None):
        """The values of `stat` (NaN where none), of every series or of the rows `at` (-1: NaN)."""
        if stat not in self.stats:
            return np.full(len(self.names) if at is None else len(at), np.nan)
        values = self.values[:, self.stats.index(stat)]
        if at is None:
            return values
        return np.where(at >= 0, values[at], np.nan) if len(values) else np.full(len(at), np.nan)


def wide_frame(windows, names) -> pd.DataFrame:
    """`context`'s wide frame (the pivot of `window_frame`s, with the `nonfinite_<stat>` flags) of `windows`,
    `[(step, {series: {stat: value}})]` (or `Window`s) in step order, for the series `names`, built with
    NumPy (`tfprobe.findings.stat_rows`): the same rows (sorted by layer, then step), columns and values as
    `context` makes of the long frame, without it (`tests/helpers/incidents.py` compares both)."""
    windows = [w if isinstance(w, Window) else Window(*w) for w in windows]
    names = sorted(names)
    stats = sorted({stat for w in windows for stat in w.stats})
    flagged = [stat for stat in FLAGGED_STATS if any(stat in w.recorded for w in windows)]
    k = len(windows)
    values = np.full((len(names) * k, len(stats)), np.nan)
    recorded = {stat: np.zeros(len(names) * k, bool) for stat in flagged}
    present = np.zeros(len(names) * k, bool)
    for j, w in enumerate(windows):
        at = np.fromiter((w.index.get(name, -1) for name in names), np.int64, len(names))
        mine = np.flatnonzero(at >= 0)
        rows = mine * k + j  # layer by layer, windows in step order
        present[rows] = True
        columns = [stats.index(stat) for stat in w.stats]
        values[np.ix_(rows, columns)] = w.values[at[mine]]
        for stat in flagged:
            if stat in w.recorded:
                recorded[stat][rows] = w.recorded[stat][at[mine]]
    rows = np.flatnonzero(present)
    return stat_rows(
        np.full(len(rows), RUN, dtype=object),
        np.repeat(np.asarray(names, dtype=object), k)[rows],
        np.tile(np.asarray([w.step for w in windows], np.int64), len(names))[rows],
        {stat: values[rows, j] for j, stat in enumerate(stats)},
        {stat: r[rows] for stat, r in recorded.items()},
        objects=True,
    )


LIVE_CHECKS = tuple(name for name in CHECKS if name != "std_drift")
"""The checks the live evaluation runs: all but `std_drift`, which is info and never part of an incident."""


MARGIN = 1.01
"""How far inside `diagnose`'s thresholds `suspects` looks: ratios by this factor, fractions at 99% (float
rounding between this test and the checks' pandas arithmetic)."""


def _finite(x):
    return x is not None and math.isfinite(x)


def _gradient_suspects(rms, order, consumers, t):
    """Layers whose `grad_rms` (`rms`: `{layer: grad_rms}`) is more than `grad_ratio / MARGIN` away from some
    `grad_rms` on their output side (every recorded gradient counted, so it is a superset of what
    `check_gradient_depth` compares)."""
    rms = {n: x for n, x in rms.items() if _finite(x) and x > 0}
    if not rms:
        return set()
    hi, lo, out = {}, {}, set()
    limit = t["grad_ratio"] / MARGIN
    for name in order:  # consumers first
        h = [v for c in consumers.get(name, ()) for v in (rms.get(c), hi.get(c)) if v is not None]
        l_ = [v for c in consumers.get(name, ()) for v in (rms.get(c), lo.get(c)) if v is not None]
        hi[name], lo[name] = (max(h) if h else None), (min(l_) if l_ else None)
        g = rms.get(name)
        if g is not None and (
            (hi[name] is not None and hi[name] / g > limit) or (lo[name] is not None and g / lo[name] > limit)
        ):
            out.add(name)
    return out


def suspects(results, previous, inputs, consumers, t, order=()):
    """The layers of a window that may have a finding: a cheap test of each check's trigger, conservative
    (`MARGIN` inside every threshold; where a check leaves values out, such as dead inputs or unusable
    gradients, the test either leaves out at least as many or, where that only widens a ratio, none).
    `diagnose` then runs on these layers, their inputs and consumers (what their checks read) and the output
    layer only; a window without suspects runs no `diagnose` at all. `results`, `previous`: the window's and
    the previous window's `{series: {stat: value}}` (or `Window`s); `order`: the layers consumers first
    (`tfprobe.findings._downstream`), for the gradient-depth test. NumPy over the layers, one array per test.

    >>> suspects({"a": {"std": 1.0}, "b": {"std": 50.0}}, {}, {"b": ("a",)}, {}, thresholds())
    {'b'}
    """
    new = results if isinstance(results, Window) else Window(0, results)
    old = previous if isinstance(previous, Window) else Window(0, previous or {})
    n, f, r = len(new.names), 0.99, MARGIN
    at = np.fromiter((old.index.get(name, -1) for name in new.names), np.int64, n)  # the previous window's rows
    now, before = new.column, (lambda stat: old.column(stat, at))

    def dead(column):
        return (column("zero_fraction") >= t["dead_layer_fraction"]) | (
            column("near_zero_fraction") >= t["dead_layer_fraction"]
        )

    def usable(column):  # `std` as the depth and time checks may use it, else NaN
        std = column("std")
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(std) & (std > t["min_std"]) & ~dead(column)
        return np.where(ok, std, np.nan)

    # this window's usable std: not dead in the previous window either, nor with non-finite weights there
    broken_before = np.zeros(n, bool)
    for stat in WEIGHT_STATS:
        if stat in old.recorded:
            broken_before |= np.where(at >= 0, old.recorded[stat][at], False) & ~np.isfinite(before(stat))
    std = np.where(dead(before) | broken_before, np.nan, usable(now))
    prior = usable(before)
    # the smallest and largest usable std among each layer's inputs
    edges = [(k, new.index[i]) for k, name in enumerate(new.names) for i in inputs.get(name, ()) if i in new.index]
    low, high = np.full(n, np.inf), np.full(n, -np.inf)
    if edges:
        layer, source = np.asarray(edges).T
        np.fmin.at(low, layer, std[source])
        np.fmax.at(high, layer, std[source])
    with_inputs = np.isfinite(low)
    ratio = t["std_ratio"] / r
    low_value, high_value, update = now("min"), now("max"), now("update_ratio")
    hoyer = now("hoyer_sparsity")
    with np.errstate(invalid="ignore", divide="ignore"):
        mask = (
            (now("nan_count") > 0)
            | (now("inf_count") > 0)
            | (now("grad_nan_count") > 0)
            | (now("grad_inf_count") > 0)
            | (now("zero_fraction") >= f * t["dead_layer_fraction"])
            | (now("near_zero_fraction") >= f * t["dead_layer_fraction"])
            | (now("dead_unit_fraction") > f * t["dead_units_fraction"])
            | (now("saturation_fraction") > f * t["saturation_fraction"])
            | (now("grad_max_abs") > t["max_grad_abs"] / r)
            | (now("grad_zero_fraction") >= f * t["dead_gradient_fraction"])
            | (np.isfinite(update) & ~((r * t["min_update_ratio"] <= update) & (update <= t["max_update_ratio"] / r)))
            | (np.isfinite(low_value) & (low_value == high_value))
            | (np.isfinite(hoyer) & (hoyer <= r * CONSTANT_HOYER))
            | (np.isfinite(std) & np.isfinite(prior) & ((std / prior > ratio) | (prior / std > ratio)))
            | (np.isfinite(std) & with_inputs & ((std / high > ratio) | (low / std > ratio)))
        )
        for stat in WEIGHT_STATS:
            if stat in new.recorded:
                mask |= new.recorded[stat] & ~np.isfinite(now(stat))
    out = _gradient_suspects(dict(zip(new.names, now("grad_rms").tolist())), order, consumers, t)
    return out | {new.names[k] for k in np.flatnonzero(mask)}


class LiveIncidents:
    """The incidents of one run so far, updated one window at a time (see the module docstring).
    `prefilter=False` judges every layer of every window (`suspects` is the default's shortcut)."""

    def __init__(self, prefilter=True, **kwargs):
        self.t = thresholds(**kwargs)
        self.prefilter = prefilter
        self._kwargs = kwargs
        self._prev_window = None  # the previous window's `Window`
        self._graph = None
        self._consumers = None
        self._layers = None
        self._infos = {}
        self._spans = {}  # (layer, kind, stat) -> dict
        self._names, self._pooled = set(), set()  # the series recorded so far, and those with retention statistics
        self._series = None  # (key, the series table of `diagnose`)
        self.windows = 0
        self._announced = {}  # (root_layer, root_kind, first_step) -> severity rank announced
        self.incidents = group(pd.DataFrame(columns=FINDING_COLUMNS))[0]
        """The incidents so far (`tfprobe.incidents`' columns; run `live`)."""

    def update(self, step: int, results, infos):
        """Evaluates one window; returns the alerts it raises: `[(severity, line, incident row)]`, one per
        incident that is new or more severe than when it was last alerted (warnings and errors only)."""
        if self._layers is None or infos.keys() != self._infos.keys():
            self._layers = layers_frame(infos)
            self._graph = Graph(self._layers, RUN)
            self._consumers = None
            self._series = None
            self._infos = dict(infos)
        results = {name: row for name, row in results.items() if any(k in _REQUIRED for k in row)}
        if not results:
            return []
        index = self.windows
        self.windows += 1
        window = Window(step, results)
        keep = self._keep(results, window) if self.prefilter else set(results)
        self._names |= set(results)
        self._pooled |= {n for n, r in results.items() if _finite(r.get("size_ratio"))}
        if keep:
            # the previous window (changes in one window) and the new one; the run's first window would only
            # add `std_drift`, which is info and never part of an incident
            windows = [window] if self._prev_window is None else [self._prev_window, window]
            for f in self._judge(wide_frame(windows, keep)):
                if f.last_step != step:
                    continue
                key = (f.layer, f.kind, f.stat)
                span = self._spans.setdefault(key, {"first_step": int(step), "windows": [], "streak": 0, "best": 0})
                span["streak"] = span["streak"] + 1 if span["windows"] and span["windows"][-1] == index - 1 else 1
                span["best"] = max(span["best"], span["streak"])
                span["windows"].append(index)
                span["last_step"], span["message"] = int(step), f.message.split("; from step")[0]
        self._prev_window = window
        if not self._spans:  # nothing found so far: no incident
            return []
        self.incidents, fs = self._group()
        return self._alerts(step, fs)

    def _diagnose(self, wide):
        """`diagnose` of the wide frame of a few windows (`wide_frame`), with the series table of the whole
        run (what `diagnose` computes from the layers frame and the series recorded so far: kept while they
        do not change) and `LIVE_CHECKS`."""
        ctx, found = self._judge(wide, frame=True)
        return _finish(ctx, found)

    def _judge(self, wide, frame=False):
        """The findings of `_diagnose`, as `Finding`s in its order (`frame`: `(context, findings in check
        order)`, what `_finish` takes)."""
        key = (frozenset(self._names), frozenset(self._pooled))
        if self._series is None or self._series[0] != key:
            names = sorted(self._names)
            table = pd.DataFrame(
                {
                    "run": _objects([RUN] * len(names)),
                    "layer": _objects(names),
                    "size_ratio": [1.0 if n in self._pooled else np.nan for n in names],
                }
            )
            series = _series_table(table, self._layers).astype({"run": object, "layer": object, "class": object})
            self._series = (key, series, {})  # the series table, and what the checks derive from it
        ctx = _context(wide, self._layers, self.t, series=self._series[1], memo=self._series[2])
        found = []
        if not ctx.wide.empty:
            for name in LIVE_CHECKS:
                found += CHECKS[name](ctx)
        return (ctx, found) if frame else _ordered(ctx, found)

    def _keep(self, results, window):
        """The layers `diagnose` reads this window: those `suspects` names, their inputs and consumers (with
        activation gradients, everything on their output side: the gradient-depth check compares with all of
        it), and the output layer (which exempts an output softmax from saturation)."""
        if self._consumers is None:
            self._inputs = dict(zip(self._layers["layer"], (tuple(i or ()) for i in self._layers["inputs"])))
            self._consumers = {}
            for name, ins in self._inputs.items():
                for i in ins:
                    self._consumers.setdefault(i, []).append(name)
            self._order = _downstream(self._inputs)[0]
            orders = self._layers["order"].to_numpy()
            self._output = self._layers["layer"].iloc[int(np.argmax(orders))] if len(orders) else None
        chosen = suspects(window, self._prev_window, self._inputs, self._consumers, self.t, self._order)
        keep = set(chosen)
        for name in chosen:
            keep.update(self._inputs.get(name, ()))
            keep.update(self._consumers.get(name, ()))
            if "grad_rms" in results.get(name, {}):  # the gradient-depth check reads the whole output side
                stack = list(self._consumers.get(name, ()))
                while stack:
                    c = stack.pop()
                    stack.extend(x for x in self._consumers.get(c, ()) if x not in keep)
                    keep.add(c)
        if keep and self._output is not None:
            keep.add(self._output)
        return keep

    def findings(self) -> pd.DataFrame:
        """The findings so far, `diagnose`'s columns; severities as `diagnose` would give them now, except that
        a finding not yet confirmed (see the module docstring) is `info`."""
        return pd.DataFrame(self._findings(), columns=FINDING_COLUMNS).astype(
            {"first_step": "int64", "last_step": "int64", "windows": "int64"}
        )

    def _findings(self):
        """The rows of `findings`, `Finding`s."""
        n, now = self.t["transient_windows"], self.windows - 1
        rows = []
        for (layer, kind, stat), s in self._spans.items():
            severity = KINDS.get(kind, "warning")
            if kind not in NEVER_TRANSIENT and (now < n or s["windows"][-1] < n <= now):
                severity = "info"
            rows.append(
                Finding(
                    run=RUN,
                    layer=layer,
                    stat=stat,
                    kind=kind,
                    severity=severity,
                    first_step=s["first_step"],
                    last_step=s["last_step"],
                    windows=s["best"],
                    message=f"{s['message']}; from step {s['first_step']}",
                )
            )
        return rows

    def _group(self):
        """`group` of the findings so far; their frame with NumPy object columns (the values `findings` has:
        `group` reads them row by row, faster so than in pandas' strings)."""
        rows = self._findings()
        ints = ("first_step", "last_step", "windows")
        fs = _frame(
            {
                c: np.asarray([r[k] for r in rows], np.int64) if c in ints else _objects([r[k] for r in rows])
                for k, c in enumerate(FINDING_COLUMNS)
            }
        )
        return group(fs, self._layers, graphs={RUN: self._graph})

    def _alerts(self, step, members):
        out = []
        graph = self._graph
        for inc in self.incidents.to_dict("records"):
            rank = severity_rank(inc["severity"])
            key = (inc["root_layer"], inc["root_kind"], inc["first_step"])
            if rank < 1 or self._announced.get(key, -1) >= rank:
                continue
            self._announced[key] = rank
            mine = list(members[members["incident"] == inc["incident"]].itertuples(index=False))
            out.append((inc["severity"], summary(inc, mine, graph, step=int(step)), inc))
        return out

    def counts(self) -> dict:
        """`{"tfprobe_warnings": n, "tfprobe_errors": n}`: the incidents so far by severity."""
        sev = list(self.incidents["severity"])
        return {"tfprobe_warnings": sev.count("warning"), "tfprobe_errors": sev.count("error")}
