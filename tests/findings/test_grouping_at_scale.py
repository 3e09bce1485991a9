"""The vectorised parts of `diagnose` and `group` against the plain rules they replace (random cases, no model)."""

import functools

import numpy as np
import pandas as pd
import pytest

from tfprobe import findings
from tfprobe.findings import FINDING_COLUMNS, KINDS, incidents
from tfprobe.findings.incidents import Graph, _sort_key, explains, group

KINDS_ = [*KINDS, "constant_output", "not_a_kind"]
STATS = ["std", "grad_rms", "mean", "grad_zero_fraction", "update_ratio"]


def _random_case(rng):
    names = [f"l{i}" for i in range(rng.integers(1, 9))]
    with_graph = rng.random() < 0.5
    layers = []
    for run in ("a", "b"):
        for i, name in enumerate(names):
            ins = [names[j] for j in rng.integers(0, len(names), rng.integers(0, 3))] if with_graph else None
            order = i if rng.random() < 0.9 else np.nan
            layers.append({"run": run, "layer": name, "order": order, "class": "Dense", "inputs": ins})
    rows = [
        (
            ("a", "b")[rng.integers(0, 2)],
            names[rng.integers(0, len(names))] if rng.random() < 0.95 else "unknown",
            STATS[rng.integers(0, len(STATS))],
            KINDS_[rng.integers(0, len(KINDS_))],
            ("info", "warning", "error")[rng.integers(0, 3)],
            int(rng.integers(0, 5)),
            9,
            1,
            "m",
        )
        for _ in range(rng.integers(1, 40))
    ]
    return pd.DataFrame(rows, columns=FINDING_COLUMNS), pd.DataFrame(layers) if rng.random() < 0.9 else None


def _pairwise_groups(f, layers):
    """The rule itself: a finding joins the earliest group one of whose findings `explains` it."""
    out = []
    for run in pd.unique(f["run"]):
        graph = Graph(layers, run)
        mine = f[(f["run"] == run) & (f["severity"] != "info")]
        groups = []
        for x in sorted(mine.itertuples(), key=lambda x: _sort_key(x, graph)):
            home = next((g for g in groups if any(explains(a, x, graph) for a in g)), None)
            if home is None:
                groups.append(home := [])
            home.append(x)
        out += [sorted(x.Index for x in g) for g in groups]
    return sorted(out)


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize(
    "way",
    [
        {"pairs_below": 10**9},  # a live window's few findings: `explains` per pair of kinds that can
        {"pairs_below": 0, "matrix_up_to": 10**9},  # every pair at once in NumPy
        {"pairs_below": 0, "matrix_up_to": 0},  # NumPy, one finding against the earlier ones at a time
    ],
    ids=["pairs", "matrix", "rows"],
)
def test_group_follows_the_pairwise_rule(seed, way, monkeypatch):
    monkeypatch.setattr(incidents, "_assign", functools.partial(incidents._assign, **way))
    rng = np.random.default_rng(seed)
    for _ in range(40):
        f, layers = _random_case(rng)
        _, members = group(f, layers)
        got = sorted(sorted(members.index[members["incident"] == i]) for i in set(members["incident"]) - {0})
        assert got == _pairwise_groups(f, layers)


def _inherited_rule(ctx, flat):
    w = ctx.wide
    flat_at = dict(zip(zip(w["run"], w["layer"], w["step"]), flat.to_numpy()))
    inputs = dict(zip(zip(ctx.series["run"], ctx.series["layer"]), ctx.series["inputs"]))
    out = []
    for run, layer, step in zip(w["run"], w["layer"], w["step"]):
        ins = [i for i in (inputs.get((run, layer)) or ()) if (run, i, step) in flat_at]
        out.append(bool(ins) and all(flat_at[(run, i, step)] for i in ins))
    return out


def test_inherited_follows_the_rule():
    """A row is inherited when every recorded input of its layer is flat at its step."""
    rng = np.random.default_rng(1)
    inherited = 0
    for _ in range(40):
        rows, layers = [], []
        for run in ("a", "b")[: rng.integers(1, 3)]:
            n = rng.integers(1, 7)
            for i in range(n):
                ins = None if rng.random() < 0.2 else [f"l{j}" for j in rng.integers(0, n + 2, rng.integers(0, 4))]
                layers.append({"run": run, "layer": f"l{i}", "order": i, "class": "Dense", "inputs": ins})
                for step in sorted(set(rng.integers(0, 8, rng.integers(1, 6)).tolist())):
                    rows.append({"run": run, "layer": f"l{i}", "step": step, "min": 0.0, "max": 1.0})
        wide = pd.DataFrame(rows).sort_values(["run", "layer", "step"]).reset_index(drop=True)
        ctx = findings._context(wide, pd.DataFrame(layers), findings.thresholds())
        flat = pd.Series(rng.random(len(wide)) < 0.5, index=wide.index)
        expected = _inherited_rule(ctx, flat)
        assert findings._inherited(ctx, flat).tolist() == expected
        inherited += sum(expected)
    assert inherited > 20  # the cases hold inherited rows


@pytest.mark.parametrize(
    "windows, streak", [([], 1), ([4], 1), ([1, 2, 3], 3), ([1, 2, 4, 5, 6, 9], 3), ([0, 2, 4], 1), ([3, 4, 7, 8], 2)]
)
def test_streak(windows, streak):
    assert findings._streak(np.array(windows, np.int64)) == streak
