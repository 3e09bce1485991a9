"""Incidents: findings grouped by cause, one root cause each, with a suggested fix.

`diagnose` lists symptoms: a learning rate that is too high shows as unstable updates at every layer, then
exploding activations, then NaN weights. `incidents` groups them and names the cause.

Rules (per run, warnings and errors only: info findings are never part of an incident):

1. Findings are taken in time order (`first_step`). Within one window, causes come before effects by kind
   (`PRECEDENCE`: unstable updates, constant outputs, dead layers, saturation, NaN/Inf in outputs, NaN
   weights, exploding then vanishing activations, dead units, gradients, stalled layers), then upstream before
   downstream in the model graph (`read_layers`' `inputs`; the model order without it). NaN/Inf in the
   gradient only is taken output side first: it comes from the loss.
2. A finding joins the earliest incident one of whose findings `explains` it, else it starts a new incident
   whose root it is. A finding explains a later (or same-window) finding:
   - of its own kind that starts in the same window (one event, e.g. every sigmoid layer saturating), or
     downstream of it (it propagates);
   - by the causal table `CAUSES`: `kind -> (same layer, downstream, upstream, anywhere)` kinds. E.g. a
     dead layer or a constant output explains dead gradients and stalled layers upstream ("behind") of it
     and dead layers downstream; saturation explains vanishing gradients upstream; unstable updates (the
     learning rate, which every layer shares) and non-finite values (a NaN loss reaches every gradient and
     weight) explain anything after them anywhere.
3. An incident's severity is its most severe finding's; its fix is the root's (`fix`), with the reason in
   numbers from the root finding.

>>> import pandas as pd
>>> from tfprobe.findings import FINDING_COLUMNS
>>> f = pd.DataFrame([("r", "h1", "update_ratio", "unstable_updates", "warning", 5, 30, 6, "..."),
...                   ("r", "h2", "std", "exploding_time", "warning", 15, 15, 1, "..."),
...                   ("r", "h2", "weight_norm", "nan_weights", "error", 20, 30, 3, "...")],
...                  columns=FINDING_COLUMNS)
>>> inc, _ = group(f)
>>> inc[["incident", "severity", "root_layer", "root_kind", "first_step", "findings"]].values.tolist()
[[1, 'error', 'h1', 'unstable_updates', 5, 3]]
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from tfprobe.findings import KINDS, diagnose, is_normalization, severity_rank

INCIDENT_COLUMNS = [
    "incident",
    "run",
    "severity",
    "root_layer",
    "root_kind",
    "root_stat",
    "first_step",
    "last_step",
    "error_step",
    "layers",
    "kinds",
    "findings",
    "explains",
    "fix",
    "reason",
    "summary",
]
"""Columns of the frame `incidents` returns. `error_step`: the first step at which a finding of the incident is
an error (None if none is); `layers`: the layers its findings name, in model order; `kinds`: their kinds;
`findings`: how many; `explains`: `"kind@layer"` of each finding it groups; `summary`: the one-line alert."""

PRECEDENCE = [
    "unstable_updates",
    "constant_output",
    "dead_layer",
    "saturation",
    "nan_inf",
    "nan_weights",
    "exploding_time",
    "exploding_depth",
    "vanishing_time",
    "vanishing_depth",
    "dead_units",
    "exploding_gradient",
    "vanishing_gradient",
    "dead_gradient",
    "stalled_layer",
    "std_drift",
]
"""Kinds, causes before effects, for findings that start in the same window."""

_ALL = frozenset(KINDS) | {"constant_output"}
_NONFINITE = frozenset({"nan_inf", "nan_weights"})
_EXPLODING = frozenset({"exploding_time", "exploding_depth"})
_VANISHING = frozenset({"vanishing_time", "vanishing_depth"})
_BEHIND_DEAD = frozenset({"dead_gradient", "stalled_layer", "vanishing_gradient"})
_AFTER_DEAD = frozenset({"dead_layer", "dead_units", "constant_output", "stalled_layer", "dead_gradient"}) | _VANISHING

CAUSES = {
    # kind: (same layer, downstream, upstream, anywhere in the run)
    "unstable_updates": (_ALL, _ALL, _ALL, _ALL),
    "nan_inf": (_ALL, _ALL, _ALL, _ALL),
    "nan_weights": (_ALL, _ALL, _ALL, _ALL),
    "constant_output": (_ALL - _NONFINITE, _AFTER_DEAD | _EXPLODING, _BEHIND_DEAD, frozenset()),
    "dead_layer": (_ALL - _NONFINITE, _AFTER_DEAD, _BEHIND_DEAD, frozenset()),
    "saturation": (
        _BEHIND_DEAD | _VANISHING | {"dead_units"},
        {"saturation", "dead_units", "stalled_layer"} | _VANISHING,
        _BEHIND_DEAD,
        frozenset(),
    ),
    "exploding_time": (
        _ALL,
        _ALL,
        {"exploding_gradient", "vanishing_gradient", "dead_gradient", "stalled_layer"},
        _NONFINITE,
    ),
    "exploding_depth": (
        _ALL,
        _ALL,
        {"exploding_gradient", "vanishing_gradient", "dead_gradient", "stalled_layer"},
        _NONFINITE,
    ),
    "vanishing_time": (
        _VANISHING | _BEHIND_DEAD | {"dead_units", "dead_layer"},
        _VANISHING | {"dead_units", "dead_layer"},
        _BEHIND_DEAD,
        frozenset(),
    ),
    "vanishing_depth": (
        _VANISHING | _BEHIND_DEAD | {"dead_units", "dead_layer"},
        _VANISHING | {"dead_units", "dead_layer"},
        _BEHIND_DEAD,
        frozenset(),
    ),
    "dead_units": ({"stalled_layer"}, {"dead_units"}, frozenset(), frozenset()),
    "exploding_gradient": (
        {"unstable_updates", "stalled_layer"} | _NONFINITE,
        frozenset(),
        {"exploding_gradient", "unstable_updates"} | _NONFINITE,
        _NONFINITE,
    ),
    "vanishing_gradient": (_BEHIND_DEAD, frozenset(), _BEHIND_DEAD, frozenset()),
    "dead_gradient": (_BEHIND_DEAD, frozenset(), _BEHIND_DEAD, frozenset()),
    "stalled_layer": (frozenset(), frozenset(), frozenset(), {"stalled_layer"}),
    "std_drift": (frozenset(), frozenset(), frozenset(), frozenset()),
}
"""What each kind of finding explains: `kind -> (same layer, downstream, upstream, anywhere)` sets of kinds,
for findings that start in the same window or later."""

_GRAD_STATS = re.compile(r"^grad_")


class Graph:
    """The model graph of one run: which series reach which (forward), from `read_layers`' `inputs`; the
    model order where no series has known inputs (older logs)."""

    def __init__(self, layers: pd.DataFrame | None, run):
        self.order, self.cls, self.shape, inputs = {}, {}, {}, {}
        if layers is not None and len(layers):
            sub = layers[layers["run"] == run] if "run" in layers.columns else layers
            for row in sub.to_dict("records"):
                name = row["layer"]
                self.order[name] = int(row["order"]) if _number(row.get("order")) else len(self.order)
                self.cls[name] = str(row.get("class") or "")
                self.shape[name] = row.get("shape")
                ins = row.get("inputs")
                if isinstance(ins, (list, tuple, np.ndarray)):
                    inputs[name] = tuple(str(i) for i in ins)
        self.known = bool(inputs)
        self._inputs = inputs
        self._up = {}

    def ancestors(self, name):
        """Every series that feeds `name`, directly or not (computed on demand, without recursion: a chain
        of thousands of layers is fine; a cycle in malformed logs ends the walk)."""
        if name not in self._up:
            seen, stack = set(), list(self._inputs.get(name, ()))
            while stack:
                i = stack.pop()
                if i in seen:
                    continue
                seen.add(i)
                if i in self._up:
                    seen |= self._up[i]
                else:
                    stack.extend(self._inputs.get(i, ()))
            self._up[name] = seen
        return self._up[name]

    def upstream(self, a, b) -> bool:
        """Whether `a` feeds `b`, directly or not (the model order without the graph)."""
        if self.known:
            return a in self.ancestors(b)
        return self.order.get(a, math.inf) < self.order.get(b, math.inf)

    def position(self, layer):
        return self.order.get(layer, 10**9)

    def span(self, names):
        """`"a"`, or `"first..last"` in model order."""
        names = sorted(set(names), key=self.position)
        return names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"


def _number(x):
    return isinstance(x, (int, float, np.integer, np.floating)) and not (isinstance(x, float) and math.isnan(x))


def explains(a, b, graph: Graph) -> bool:
    """Whether finding `a` (a row with `layer, kind, first_step`) explains finding `b` (see the module rules)."""
    if b.first_step < a.first_step:
        return False
    same, down, up, anywhere = CAUSES.get(a.kind, (frozenset(),) * 4)
    if b.kind in anywhere:
        return True
    if a.kind == b.kind and a.first_step == b.first_step:
        return True
    if a.layer == b.layer:
        return b.kind in same or b.kind == a.kind
    if graph.upstream(a.layer, b.layer):
        return b.kind in down or b.kind == a.kind
    if graph.upstream(b.layer, a.layer):
        return b.kind in up or (b.kind == a.kind and _GRAD_STATS.match(str(getattr(a, "stat", ""))) is not None)
    return False


class _Explained:
    """`explains` of the findings `ordered` (one run's, in time order) in numpy: `first_group(i)` is the
    earliest group (0, 1, ... in creation order) holding a finding that explains finding `i`, -1 if none;
    `join(i, g)` puts `i` in group `g`. The same answers as `explains(a, ordered[i], graph)` over the
    members `a` of each group in turn, without a Python call per pair (a run with thousands of findings)."""

    def __init__(self, ordered, graph, matrix_up_to=2000):
        n = len(ordered)
        self.group = np.full(n, -1, np.int64)  # the group of each finding (every earlier one has one)
        kinds = list(dict.fromkeys(f.kind for f in ordered))
        layers = list(dict.fromkeys(f.layer for f in ordered))
        kind_of, layer_of = {k: i for i, k in enumerate(kinds)}, {x: i for i, x in enumerate(layers)}
        self.kind = np.array([kind_of[f.kind] for f in ordered], np.int64)
        self.layer = np.array([layer_of[f.layer] for f in ordered], np.int64)
        self.step = np.array([f.first_step for f in ordered])
        self.grad = np.array([_GRAD_STATS.match(str(getattr(f, "stat", ""))) is not None for f in ordered], bool)
        empty = (frozenset(),) * 4
        # [part, kind of a, kind of b]: b's kind in CAUSES[a's kind][part] (same layer, down, up, anywhere)
        self.causes = np.array(
            [[[b in CAUSES.get(a, empty)[part] for b in kinds] for a in kinds] for part in range(4)], bool
        ).reshape(4, len(kinds), len(kinds))
        # [a's layer, b's layer]: a feeds b (`graph.upstream`)
        if graph.known:
            self.up = np.zeros((len(layers), len(layers)), bool)
            for j, b in enumerate(layers):  # a set intersection per layer, not a Python test per pair
                self.up[[layer_of[a] for a in graph.ancestors(b).intersection(layer_of)], j] = True
        else:
            order = np.array([graph.order.get(x, math.inf) for x in layers], float)
            self.up = order[:, None] < order[None, :]
        self.up = self.up.reshape(len(layers), len(layers))

        # every pair at once while the matrix is small (tens of MB while built): each `first_group` a lookup
        everything = np.arange(n)
        self.matrix = self._explains(everything[:, None], everything[None, :]) if n <= matrix_up_to else None

    def _explains(self, a, b):
        """Whether finding `a` explains finding `b` (index arrays, broadcast)."""
        ak, al, bk, bl = self.kind[a], self.layer[a], self.kind[b], self.layer[b]
        step_a, step_b = self.step[a], self.step[b]
        same_kind, same_layer = ak == bk, al == bl
        a_up_b, b_up_a = self.up[al, bl], self.up[bl, al]
        return (step_a <= step_b) & (
            self.causes[3, ak, bk]
            | (same_kind & (step_a == step_b))
            | (same_layer & (self.causes[0, ak, bk] | same_kind))
            | (~same_layer & a_up_b & (self.causes[1, ak, bk] | same_kind))
            | (~same_layer & ~a_up_b & b_up_a & (self.causes[2, ak, bk] | (same_kind & self.grad[a])))
        )

    def first_group(self, i):
        if i == 0:
            return -1
        hit = self.matrix[:i, i] if self.matrix is not None else self._explains(np.arange(i), i)
        return int(self.group[:i][hit].min()) if hit.any() else -1

    def join(self, i, g):
        self.group[i] = g


_REACH = {kind: frozenset().union(*sets) | {kind} for kind, sets in CAUSES.items()}
"""The kinds a finding of each kind can explain at all (`explains`: its `CAUSES`, and its own kind)."""


def _assign(ordered, graph, pairs_below=1000, matrix_up_to=2000):
    """The group of each finding of `ordered` (one run's, in time order): the earliest group (0, 1, ... in
    creation order) holding a finding that explains it, else a new one. Below `pairs_below` findings (a live
    window) `explains` is asked of each earlier member whose kind can explain at all; above, `_Explained`
    answers the same in NumPy (every pair at once up to `matrix_up_to` findings)."""
    if len(ordered) >= pairs_below:
        explained, out, count = _Explained(ordered, graph, matrix_up_to), [], 0
        for i in range(len(ordered)):
            g = explained.first_group(i)
            if g < 0:
                g, count = count, count + 1
            explained.join(i, g)
            out.append(g)
        return out
    groups, out = [], []  # per group, {kind: [findings]}
    for f in ordered:
        g = next(
            (
                i
                for i, members in enumerate(groups)
                if any(
                    explains(a, f, graph)
                    for kind, of_kind in members.items()
                    if f.kind in _REACH.get(kind, (kind,))
                    for a in of_kind
                )
            ),
            len(groups),
        )
        if g == len(groups):
            groups.append({})
        groups[g].setdefault(f.kind, []).append(f)
        out.append(g)
    return out


def _sort_key(f, graph):
    rank = PRECEDENCE.index(f.kind) if f.kind in PRECEDENCE else len(PRECEDENCE)
    pos = graph.position(f.layer)
    if f.kind == "nan_inf" and _GRAD_STATS.match(str(f.stat)):  # NaN only in the gradient: from the loss
        rank, pos = PRECEDENCE.index("nan_weights") + 0.5, -pos
    return (f.first_step, rank, pos)


def group(findings: pd.DataFrame, layers: pd.DataFrame | None = None, graphs=None):
    """`(incidents, findings)`: the incidents of `findings` (a `diagnose` frame) and `findings` with an
    `incident` column (0 for info findings, which belong to none). See the module docstring. `graphs`:
    `{run: Graph}` already built from `layers` (the live evaluation keeps them)."""
    findings = findings.reset_index(drop=True)
    member = np.zeros(len(findings), dtype=np.int64)
    rows, next_id = [], 1
    for run in pd.unique(findings["run"]):
        graph = (graphs or {}).get(run) or Graph(layers, run)
        mine = findings[(findings["run"] == run) & (findings["severity"] != "info")]
        ordered = sorted(mine.itertuples(), key=lambda f: _sort_key(f, graph))
        groups = []  # [(id, [findings])]
        for f, g in zip(ordered, _assign(ordered, graph)):
            if g == len(groups):
                groups.append((next_id, []))
                next_id += 1
            groups[g][1].append(f)
            member[f.Index] = groups[g][0]
        rows += [_incident(i, run, fs, graph) for i, fs in groups]
    out = pd.DataFrame(rows, columns=INCIDENT_COLUMNS).astype({"error_step": "Int64"})
    if not out.empty:
        out = out.sort_values(["first_step", "incident"], kind="stable").reset_index(drop=True)
        renumber = {old: new for new, old in enumerate(out["incident"], 1)}
        out["incident"] = out["incident"].map(renumber)
        member = np.array([renumber.get(m, 0) for m in member], dtype=np.int64)
    return out, findings.assign(incident=member)


def _incident(number, run, fs, graph):
    root = fs[0]
    severity = max((f.severity for f in fs), key=severity_rank)
    errors = [f.first_step for f in fs if f.severity == "error"]
    names = sorted({f.layer for f in fs}, key=graph.position)
    kinds = sorted({f.kind for f in fs}, key=lambda k: PRECEDENCE.index(k) if k in PRECEDENCE else 99)
    fix, reason = suggest(root, graph)
    incident = dict(
        incident=number,
        run=run,
        severity=severity,
        root_layer=root.layer,
        root_kind=root.kind,
        root_stat=root.stat,
        first_step=int(root.first_step),
        last_step=int(max(f.last_step for f in fs)),
        error_step=int(min(errors)) if errors else None,
        layers=names,
        kinds=kinds,
        findings=len(fs),
        explains=[f"{f.kind}@{f.layer}" for f in fs],
        fix=fix,
        reason=reason,
    )
    incident["summary"] = summary(incident, fs, graph)
    return incident


def summary(incident, fs, graph, step=None):
    """The one-line alert: `step 20: error nan_weights in hidden1..logits, root cause: unstable updates at
    hidden1 from step 5 (learning rate too high?)`."""
    worst = max(fs, key=lambda f: (severity_rank(f.severity), -f.first_step))
    kind = worst.kind
    where = graph.span([f.layer for f in fs if f.kind == kind])
    step = worst.first_step if step is None else step
    head = f"step {step}: {incident['severity']} {kind} in {where}"
    root = f"{incident['root_kind'].replace('_', ' ')} at {incident['root_layer']} from step {incident['first_step']}"
    hint = HINTS.get(incident["root_kind"], "")
    tail = f" ({hint})" if hint else ""
    if kind == incident["root_kind"] and worst.first_step == incident["first_step"]:
        return f"{head} from step {incident['first_step']}{tail}"
    return f"{head}, root cause: {root}{tail}"


HINTS = {
    "unstable_updates": "learning rate too high?",
    "nan_inf": "non-finite values: check the data and the operations at the root layer",
    "nan_weights": "an update made the weights non-finite: learning rate too high?",
    "dead_layer": "dead activations: initialisation or learning rate?",
    "constant_output": "the output does not depend on the input",
    "saturation": "saturated activations: initialisation scale?",
    "exploding_time": "activations blow up: learning rate or initialisation?",
    "exploding_depth": "activations grow through the layer: initialisation scale?",
    "vanishing_time": "activations collapse",
    "vanishing_depth": "activations shrink through the layer: initialisation scale?",
    "dead_units": "dead units: initialisation or learning rate?",
    "exploding_gradient": "gradients blow up: clip them?",
    "vanishing_gradient": "the gradient vanishes on its way to the input",
    "dead_gradient": "no gradient reaches this layer",
    "stalled_layer": "learning rate too low, or the layer frozen?",
}
"""A few words on each root kind, for the one-line alert."""


def _numbers(message):
    return message.split("; from step")[0]


def _last_dim(shape):
    try:
        return int(list(shape)[-1])
    except (TypeError, ValueError, IndexError):
        return None


def suggest(root, graph: Graph):
    """`(fix, reason)` for an incident whose root finding is `root` (honest: what the numbers show, and the
    usual remedies for it)."""
    kind, layer, step = root.kind, root.layer, int(root.first_step)
    cls = graph.cls.get(layer, "")
    seen = _numbers(str(root.message))
    reason = f"{layer}: {seen} from step {step}"
    if kind in ("constant_output", "dead_layer") and is_normalization(cls) and _last_dim(graph.shape.get(layer)) == 1:
        return (
            f"{layer} ({cls}) normalises over an axis of size 1 (output shape {list(graph.shape[layer])}): "
            "(x - mean) / std is 0 there, so it outputs its offset whatever the input and nothing before it "
            "learns through it. Normalise over an axis with more than one value (e.g. the time axis), "
            "or remove the layer.",
            reason,
        )
    if kind == "unstable_updates":
        m = re.search(r"by ([0-9.e+-]+)% of their norm", seen)
        factor = ""
        if m:
            ratio = float(m.group(1)) / 100.0
            tenfold = 10 ** max(1, round(math.log10(ratio / 0.01))) if ratio > 0 else 10
            factor = f" about {tenfold:g}x"
        return (
            f"Lower the learning rate{factor} (updates of 0.1-1% of the weights' norm per step are usual), "
            "or clip gradients (clipnorm=1.0); use a warm-up if it only happens early.",
            reason,
        )
    if kind == "dead_layer":
        return (
            f"{layer} outputs zeros for every input: its pre-activations are negative (a bias driven "
            "negative, a bad initialisation or a too-high learning rate). Check its initialisation, use "
            "LeakyReLU/ELU/GELU, or lower the learning rate.",
            reason,
        )
    if kind == "constant_output":
        return (
            f"{layer}'s output does not depend on its input. Check what it computes over (an axis of size "
            "1, a zero kernel, a collapsed input) and the layers feeding it.",
            reason,
        )
    if kind == "saturation":
        return (
            f"{layer}'s activations sit at their bounds, where their derivative is ~0: use a smaller "
            "initialisation (Glorot/He), a non-saturating activation (ReLU family), or batch normalisation "
            "before the activation; normalise the inputs.",
            reason,
        )
    if kind == "nan_inf":
        if not graph.known or not graph.ancestors(layer):
            return (
                f"NaN/Inf appear first at {layer}, the first recorded layer: check the input data "
                "(np.isfinite(x).all()) and its preprocessing.",
                reason,
            )
        return (
            f"NaN/Inf appear first at {layer} from finite inputs: look for exp/log/sqrt/division there "
            "(add an epsilon, clip the input); lower the learning rate if values grew before.",
            reason,
        )
    if kind == "nan_weights":
        return (
            f"An update made {layer}'s weights non-finite: lower the learning rate, clip gradients, and "
            "check the loss for log(0) or a division by zero.",
            reason,
        )
    if kind in _EXPLODING:
        return (
            f"{layer}'s activations grow by orders of magnitude: lower the learning rate, check the "
            "initialisation scale, add normalisation (BatchNormalization/LayerNormalization).",
            reason,
        )
    if kind in _VANISHING:
        return (
            f"{layer}'s activations shrink towards zero: check the initialisation scale (He for ReLU, "
            "Glorot for tanh/sigmoid) and the inputs' scale; add normalisation.",
            reason,
        )
    if kind == "dead_units":
        return (
            f"Most units of {layer} never activate: use He initialisation, LeakyReLU, or a lower learning rate.",
            reason,
        )
    if kind == "exploding_gradient":
        return (
            "Clip gradients (clipnorm=1.0), lower the learning rate, add normalisation or residual connections.",
            reason,
        )
    if kind == "vanishing_gradient":
        return (
            "Use ReLU-family activations, He/Glorot initialisation, batch normalisation or residual "
            "connections so the gradient reaches the input side.",
            reason,
        )
    if kind == "dead_gradient":
        return (
            f"No gradient reaches {layer} from the loss: check what consumes its output (a branch "
            "multiplied by zero, a zero kernel, stop_gradient, an output not in the loss).",
            reason,
        )
    if kind == "stalled_layer":
        return (
            "The weights barely move: raise the learning rate (it may be 0 or far too low), or check "
            "whether the layer is meant to be frozen.",
            reason,
        )
    return ("Look at the root layer first.", reason)


def _frames(source, layers):
    if isinstance(source, pd.DataFrame):
        return source, layers
    from tfprobe.logs.reader import read

    data = read(source, progress=False)
    return data.scalars, data.layers if layers is None else layers


def incidents(
    source, layers: pd.DataFrame | None = None, *, findings: pd.DataFrame | None = None, **kwargs
) -> pd.DataFrame:
    """Findings grouped into incidents, each with one root cause and a suggested fix.

    Args:
      source: a log directory (read with `tfprobe.read_logdir`/`read_layers`), or the long frame of
        `tfprobe.read_logdir`.
      layers: with a frame `source`, the frame of `tfprobe.read_layers` (the graph the root cause is chosen
        with; without it, the model order).
      findings: the `diagnose` frame, if already computed.
      **kwargs: thresholds of `diagnose`.

    Returns:
      A DataFrame with columns `INCIDENT_COLUMNS`, one row per incident, by first step. The rules are in
      the module docstring of `tfprobe.findings.incidents`.
    """
    if not isinstance(source, (pd.DataFrame, str)) and not hasattr(source, "__fspath__"):  # os.PathLike
        raise TypeError(
            f"`source` must be a log directory or the frame of `tfprobe.read_logdir`. Received: source={source!r:.80}"
        )
    df, layers = _frames(source, layers)
    if findings is None:
        findings = diagnose(df, layers, **kwargs)
    return group(findings, layers)[0]


__all__ = ["incidents", "group", "explains", "suggest", "INCIDENT_COLUMNS", "CAUSES", "PRECEDENCE"]
