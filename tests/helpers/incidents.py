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


def assert_live_checks_are_diagnose(logdir):
    """The live evaluation's own path (`wide_frame` from the dicts, the run's series table kept, `LIVE_CHECKS`)
    gives, for every pair of consecutive windows, the frame `context` pivots and the findings `diagnose` finds
    (but `std_drift`, info, which the live evaluation does not run)."""
    from tfprobe.findings import context
    from tfprobe.findings.live import RUN, LiveIncidents, wide_frame

    df, layers = tfprobe.read_logdir(logdir), tfprobe.read_layers(logdir)
    df, layers = df.assign(run=RUN), layers.assign(run=RUN)
    infos = {r["layer"]: r for r in layers.to_dict("records")}
    windows = []
    for step, g in df.groupby("step"):
        results = {}
        for layer, stat, value in zip(g.layer, g.stat, g.value):
            results.setdefault(layer, {})[stat] = value
        windows.append((int(step), results))
    state = LiveIncidents(prefilter=False)
    for pair in zip(windows, windows[1:]):
        state.update(*pair[0], infos)  # keeps the series table of the run so far
        names = set(pair[0][1]) | set(pair[1][1])
        wide = wide_frame(list(pair), names)
        long = df[df.step.isin([pair[0][0], pair[1][0]])]
        expected = context(long, layers).wide.drop(columns=["window", "last_window", "alive"])
        pd.testing.assert_frame_equal(wide.reset_index(drop=True), expected.reset_index(drop=True), check_dtype=False)
        got = state._diagnose(wide)
        want = tfprobe.diagnose(long, layers)
        pd.testing.assert_frame_equal(got.reset_index(drop=True), want[want.kind != "std_drift"].reset_index(drop=True))
    assert len(windows) >= 3


def assert_prefilter_changes_nothing(logdir):
    """The live shortcut (`suspects`) finds what judging every layer of every window finds."""
    assert_live_checks_are_diagnose(logdir)
    quick, full = replay(logdir), replay(logdir, prefilter=False)
    key = ["layer", "kind", "stat"]
    a, b = (s.findings().sort_values(key).reset_index(drop=True) for s in (quick, full))
    pd.testing.assert_frame_equal(a, b)
    assert list(quick.incidents.root_layer) == list(full.incidents.root_layer)
