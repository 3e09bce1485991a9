"""The NumPy shortcuts of `diagnose` and the incidents against the plain pandas / brute-force rules they
replace (issue 27's live cost): `_context`'s `window`, `last_window` and `alive`, and `group`'s grouping.
Random inputs, no training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tfprobe import findings as F
from tfprobe.findings import incidents as I


def pandas_context_columns(wide, t):
    """`window`, `last_window` and `alive` as `groupby` computes them (the rule `_context` implements)."""
    ctx = F.Context(wide.copy(), F._series_table(wide, None), t)
    w = ctx.wide
    w["window"] = w.groupby("run")["step"].rank(method="dense").astype("int64") - 1
    w["last_window"] = w.groupby("run")["window"].transform("max")
    by_layer = [w["run"], w["layer"]]
    dead = ctx.dead_mask("zero_fraction") | ctx.dead_mask("near_zero_fraction")
    after_nan = ctx.nonfinite_weights().astype(int).groupby(by_layer).shift(fill_value=0).astype(bool)
    w["alive"] = (dead | after_nan).astype(int).groupby(by_layer).cummax().eq(0)
    return w[["window", "last_window", "alive"]]


@pytest.mark.parametrize("seed", range(4))
def test_context_windows_and_alive_are_the_groupby_rule(seed):
    rng = np.random.default_rng(seed)
    t = F.thresholds()
    for trial in range(40):
        n = int(rng.integers(1, 50))
        wide = pd.DataFrame(
            {
                "run": rng.choice(["a", "b", "c"], n),
                "layer": rng.choice(["x", "y", "z", "w"], n),
                "step": rng.choice([5, 7, 10, 20, 40], n).astype(np.int64),
                "zero_fraction": rng.choice([0.0, 0.995, np.nan], n),
                "near_zero_fraction": rng.choice([0.0, 0.999, np.nan], n),
                "nonfinite_weight_norm": rng.choice([0.0, 1.0, np.nan], n, p=[0.7, 0.2, 0.1]),
            }
        )
        if trial % 2:  # rows in any order, as a caller may pass them
            wide = wide.sample(frac=1, random_state=trial).reset_index(drop=True)
        got = F._context(wide, None, t).wide[["window", "last_window", "alive"]]
        pd.testing.assert_frame_equal(got, pandas_context_columns(wide, t))


def brute_force_groups(findings, graph):
    """`group`'s rule 2 without shortcuts: each finding joins the first group any member of which explains it."""
    ordered = sorted(findings.itertuples(), key=lambda f: I._sort_key(f, graph))
    groups = []
    for f in ordered:
        home = next((g for g in groups if any(I.explains(a, f, graph) for a in g)), None)
        if home is None:
            home = []
            groups.append(home)
        home.append(f)
    return [sorted(f.Index for f in g) for g in groups]


@pytest.mark.parametrize("seed", range(3))
def test_group_asks_only_kinds_that_can_explain_and_groups_the_same(seed):
    rng = np.random.default_rng(seed)
    names = [f"l{i}" for i in range(12)]
    layers = pd.DataFrame(
        {
            "run": "r",
            "layer": names,
            "order": range(len(names)),
            "inputs": [[names[i - 1]] if i else [] for i in range(len(names))],
        }
    )
    graph = I.Graph(layers, "r")
    kinds = [k for k in I.PRECEDENCE if k != "std_drift"]
    for _ in range(30):
        n = int(rng.integers(1, 40))
        kind = rng.choice(kinds, n)
        f = pd.DataFrame(
            {
                "run": "r",
                "layer": rng.choice(names, n),
                "stat": rng.choice(["std", "grad_rms", "update_ratio"], n),
                "kind": kind,
                "severity": [F.KINDS.get(k, "warning") for k in kind],
                "first_step": rng.choice([5, 10, 15], n).astype(np.int64),
                "last_step": np.int64(20),
                "windows": np.int64(1),
                "message": "m",
            }
        ).drop_duplicates(["layer", "kind", "stat"], ignore_index=True)
        _, members = I.group(f, layers)
        want = brute_force_groups(f, graph)
        got = [sorted(g.index) for _, g in members.groupby("incident", sort=False)]
        assert sorted(got) == sorted(want)
