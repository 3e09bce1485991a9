"""The probe's live incidents replayed from written logs, against judging every layer of every window."""

from __future__ import annotations

import pandas as pd

import tfprobe


def replay(logdir, prefilter=True):
    """Feeds the windows written under `logdir` (one run) to a `LiveIncidents`, as the probe does."""
    from tfprobe.findings.live import LiveIncidents

    df, layers = tfprobe.read_logdir(logdir), tfprobe.read_layers(logdir)
    infos = {r["layer"]: r for r in layers.to_dict("records")}
    state = LiveIncidents(prefilter=prefilter)
    for step, g in df.groupby("step"):
        results = {}
        for layer, stat, value in zip(g.layer, g.stat, g.value):
            results.setdefault(layer, {})[stat] = value
        state.update(int(step), results, infos)
    return state


def assert_prefilter_changes_nothing(logdir):
    """The live shortcut (`suspects`) finds what judging every layer of every window finds."""
    quick, full = replay(logdir), replay(logdir, prefilter=False)
    key = ["layer", "kind", "stat"]
    a, b = (s.findings().sort_values(key).reset_index(drop=True) for s in (quick, full))
    pd.testing.assert_frame_equal(a, b)
    assert list(quick.incidents.root_layer) == list(full.incidents.root_layer)
