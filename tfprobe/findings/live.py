"""Incidents while `fit` runs: `LiveIncidents` evaluates each new window on the host.

`LayerProbe` hands it each window's statistics right after writing them (the values it already has on the
host: no extra device work, nothing in the step). It keeps, per finding `(layer, kind, statistic)`, the
windows in which it held, and evaluates only the new window against the state: `diagnose` over at most
three windows (the run's first, for drift; the previous, for changes in one window; the new one), keeping the
findings that hold in the new window. Incidents are then grouped with `tfprobe.findings.incidents.group`,
the same rules as `tfprobe.incidents` after the run.

A finding that `diagnose` would call transient (it held only within the first `transient_windows` windows,
see `diagnose`) cannot be told apart from a lasting one before that many windows have been seen: it is
*confirmed* (alerted) only from window `transient_windows` on, if it still holds then, or at once for
non-finite values (`NEVER_TRANSIENT`), which are never transient. A lasting problem present from the first
window is thus alerted at the third window (with the default `transient_windows=2`), with its first step.
"""

from __future__ import annotations

import pandas as pd

from tfprobe.findings import (
    FINDING_COLUMNS,
    KINDS,
    NEVER_TRANSIENT,
    REQUIRED_STATS,
    diagnose,
    severity_rank,
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
            info = {"order": info.order, "class": info.class_name, "shape": info.shape, "bounds": info.bounds,
                    "inputs": info.inputs, "kind": info.kind}
        rows.append({"run": RUN, "layer": name, "order": info.get("order"), "class": info.get("class", ""),
                     "shape": _list(info.get("shape")), "bounds": _list(info.get("bounds")),
                     "inputs": _list(info.get("inputs")), "kind": info.get("kind", "activation")})
    return pd.DataFrame(rows, columns=["run", "layer", "order", "class", "shape", "bounds", "inputs", "kind"])


def _list(x):
    return None if x is None else list(x)


def window_frame(step, results) -> pd.DataFrame:
    """The long frame (`read_logdir`'s columns) of one window's `{series: {stat: value}}`."""
    rows = [(RUN, step, 0.0, name, stat, float(value))
            for name, stats in results.items() for stat, value in stats.items() if stat in REQUIRED_STATS]
    return pd.DataFrame(rows, columns=["run", "step", "wall_time", "layer", "stat", "value"])


class LiveIncidents:
    """The incidents of one run so far, updated one window at a time (see the module docstring)."""

    def __init__(self, **kwargs):
        self.t = thresholds(**kwargs)
        self._kwargs = kwargs
        self._first = None
        self._prev = None
        self._layers = None
        self._infos = {}
        self._spans = {}  # (layer, kind, stat) -> dict
        self.windows = 0
        self._announced = {}  # (root_layer, root_kind, first_step) -> severity rank announced
        self.incidents = group(pd.DataFrame(columns=FINDING_COLUMNS))[0]
        """The incidents so far (`tfprobe.incidents`' columns; run `live`)."""

    def update(self, step: int, results, infos):
        """Evaluates one window; returns the alerts it raises: `[(severity, line, incident row)]`, one per
        incident that is new or more severe than when it was last alerted (warnings and errors only)."""
        if self._layers is None or infos.keys() != self._infos.keys():
            self._layers = layers_frame(infos)
            self._infos = dict(infos)
        current = window_frame(int(step), results)
        if current.empty:
            return []
        index = self.windows
        self.windows += 1
        parts = [p for p in (self._first, self._prev) if p is not None] + [current]
        frame = pd.concat(parts, ignore_index=True).drop_duplicates(["step", "layer", "stat"], keep="last")
        found = diagnose(frame, self._layers, **self._kwargs)
        for f in found[found["last_step"] == step].itertuples(index=False):
            key = (f.layer, f.kind, f.stat)
            span = self._spans.setdefault(key, {"first_step": int(step), "windows": [], "streak": 0, "best": 0})
            span["streak"] = span["streak"] + 1 if span["windows"] and span["windows"][-1] == index - 1 else 1
            span["best"] = max(span["best"], span["streak"])
            span["windows"].append(index)
            span["last_step"], span["message"] = int(step), f.message.split("; from step")[0]
        if self._first is None:
            self._first = current
        self._prev = current
        self.incidents, fs = self._group()
        return self._alerts(step, fs)

    def findings(self) -> pd.DataFrame:
        """The findings so far, `diagnose`'s columns; severities as `diagnose` would give them now, except that
        a finding not yet confirmed (see the module docstring) is `info`."""
        n, now = self.t["transient_windows"], self.windows - 1
        rows = []
        for (layer, kind, stat), s in self._spans.items():
            severity = KINDS.get(kind, "warning")
            if kind not in NEVER_TRANSIENT and (now < n or s["windows"][-1] < n <= now):
                severity = "info"
            rows.append((RUN, layer, stat, kind, severity, s["first_step"], s["last_step"], s["best"],
                         f"{s['message']}; from step {s['first_step']}"))
        return pd.DataFrame(rows, columns=FINDING_COLUMNS).astype({"first_step": "int64", "last_step": "int64",
                                                                   "windows": "int64"})

    def _group(self):
        fs = self.findings()
        incidents, members = group(fs, self._layers)
        return incidents, members

    def _alerts(self, step, members):
        out = []
        graph = Graph(self._layers, RUN)
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
