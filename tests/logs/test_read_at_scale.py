"""Reading a large run in bounded memory: `LogData.stat_frame` is the long frame's pivot, `diagnose` finds
the same on it, and `tfprobe report` builds neither the long frame nor any per-point Python object."""

import math
import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pytest

from tfprobe import findings
from tfprobe.logs.reader import read
from tfprobe.logs.writer import WindowWriter

NAN, INF = math.nan, math.inf


def _stats(step, name):
    """Every kind of value the pivot must keep apart: NaN and Inf, a statistic missing at some steps,
    weight statistics recorded as NaN, a statistic that is NaN everywhere, a row with no value."""
    s = {"mean": 0.1 * step, "std": 1.0 + step, "zero_fraction": 0.995 if name == "dead" and step > 6 else 0.1,
         "nan_count": 3.0 if (name == "b" and step == 4) else 0.0, "inf_count": INF if step == 5 else 0.0,
         "saturation_fraction": NAN, "min": -1.0}
    if name == "a":
        s.update({"weight_norm": NAN if step == 7 else 2.0, "update_ratio": 1e-3, "grad_rms": 1e-2 * step})
    if step % 3 == 0:
        s.pop("std")
    if name == "b" and step == 2:
        s = {k: NAN for k in ("mean", "std", "zero_fraction", "nan_count", "inf_count")}
    return s


def _write(path, steps, names=("a", "b", "dead"), reference=None):
    w = WindowWriter(str(path))
    infos = {n: {"series": n, "layer": n, "class": "ReLU" if n == "dead" else "Dense", "order": i}
             for i, n in enumerate(names)}
    for step in steps:
        w.write_window(step, infos, {n: _stats(step, n) for n in names}, {})
        if reference and step in reference:
            w.write_window(step, infos, {n: {"effective_rank": 3.0} for n in names}, {})
    w.close()


@pytest.fixture
def logdir(tmp_path):
    _write(tmp_path / "r1", range(1, 11), reference=(5,))
    _write(tmp_path / "r1", range(8, 13))  # a restart into the same log_dir: the newest write wins
    _write(tmp_path / "r0", range(2, 30, 3), names=("z", "a"))
    return tmp_path


def test_stat_frame_is_the_pivot_diagnose_builds(logdir):
    with pytest.warns(RuntimeWarning, match="newest write wins"):
        data = read(logdir, progress=False)
        long, layers = data.scalars, data.layers
    expected = findings.context(long, layers).wide
    frame = findings.stat_frame(data)
    got = findings.context(frame, layers).wide
    assert "saturation_fraction" not in got.columns  # NaN everywhere: no column, as in the pivot
    assert got["nonfinite_weight_norm"].sum() == 1  # a NaN weight norm is kept apart from a missing one
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected.reset_index(drop=True))
    pd.testing.assert_frame_equal(findings.diagnose(frame, layers), findings.diagnose(long, layers))
    assert len(findings.diagnose(frame, layers))  # the log has faults to find


def test_latest_points_and_steps_without_the_long_frame(logdir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        data = read(logdir, progress=False)
        long = data.scalars
    latest = data.scalar_frame(last_only=True)
    expected = long.drop_duplicates(["run", "layer", "stat"], keep="last").reset_index(drop=True)
    pd.testing.assert_frame_equal(latest, expected)
    rep = data.scalar_frame(stats=("effective_rank",))
    pd.testing.assert_frame_equal(rep, long[long.stat == "effective_rank"].reset_index(drop=True))
    steps = data.run_steps(exclude=("effective_rank",))
    assert {r: s.tolist() for r, s in steps.items()} == {
        r: sorted(set(g.step)) for r, g in long[long.stat != "effective_rank"].groupby("run")}


def test_values_are_kept_as_written_and_widened_exactly(tmp_path):
    """float32 on disk stays float32 in memory until a frame is built, where it is widened exactly."""
    value = np.float32(0.1)  # not a float64 value: a float32 read as float64 would show it
    w = WindowWriter(str(tmp_path / "run"))
    info = {"x": {"series": "x", "layer": "x", "class": "Dense", "order": 0}}
    for step in (1, 2, 3):
        w.write_window(step, info, {"x": {"mean": float(value)}}, {})
    w.close()
    data = read(tmp_path, progress=False)
    blocks = list(data._col.blocks.values())
    assert [b.column(0).dtype for b in blocks] == [np.float32]  # 4 bytes a point
    assert data.scalars["value"].tolist() == [float(value)] * 3


def test_report_memory_is_a_fraction_of_the_long_frame(tmp_path):
    """The report's frames (latest points, the pivot `diagnose` reads) need a fraction of the long frame's
    memory: measured with tracemalloc (numpy and pandas allocations), not timed."""
    names = [f"layer_{i}" for i in range(60)]
    w = WindowWriter(str(tmp_path / "run"))
    infos = {n: {"series": n, "layer": n, "class": "Dense", "order": i} for i, n in enumerate(names)}
    rng = np.random.default_rng(0)
    for step in range(1, 301):
        w.write_window(step, infos, {n: dict(zip(findings.REQUIRED_STATS[:8], rng.random(8).tolist())) for n in names},
                       {})
    w.close()
    data = read(tmp_path, progress=False)
    tracemalloc.start()
    try:
        frame = findings.stat_frame(data)
        latest = data.scalar_frame(last_only=True)
        _, report_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        long = data.scalars
        _, long_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(frame) == 300 * 60 and len(latest) == 60 * 8 and len(long) == 300 * 60 * 8
    assert report_peak < 0.4 * long_peak, (report_peak, long_peak)
