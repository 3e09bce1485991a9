"""A live TensorBoard follows a run's training windows while reference steps are written next to them."""

from __future__ import annotations

import pytest
from helpers.tensorboard import tensorboard_server

from tfprobe.logs.writer import WindowWriter
from tfprobe.reference.analysis import AnalysisWriter

INFO = {"series": "d", "layer": "d", "class": "Dense", "order": 0}
WINDOWS = "/data/plugin/tfprobe/scalars?run=run&layer=d&stat=mean"
REFERENCE = "/data/plugin/tfprobe/representations?run=run"


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["--load_fast=true", "--load_fast=false"])
def test_windows_stay_live_next_to_the_reference_file(tmp_path, loader):
    run = tmp_path / "run"
    reference = AnalysisWriter(str(run)).open()  # as LayerProbe does: before the windows' file
    windows = WindowWriter(str(run))
    windows.write_window(1, {"d": INFO}, {"d": {"mean": 1.0}}, {})
    reference.write(1, [("tfprobe/d/effective_rank", 2.0, {**INFO, "stat": "effective_rank"})])
    with tensorboard_server(tmp_path, loader) as tb:
        tb.wait_until(lambda b: len(b.get("series", {}).get("mean", {}).get("run", [])) == 1, route=WINDOWS)
        windows.write_window(2, {"d": INFO}, {"d": {"mean": 2.0}}, {})
        reference.write(2, [("tfprobe/d/effective_rank", 3.0, {**INFO, "stat": "effective_rank"})])
        got = tb.wait_until(lambda b: len(b["series"]["mean"]["run"]) == 2, route=WINDOWS, timeout=30)
        assert got["series"]["mean"]["run"] == [[1, 1.0], [2, 2.0]]
        if loader == "--load_fast=true":  # the legacy loader shows them after a restart (README)
            tb.wait_until(lambda b: b["runs"][0]["steps"] == [1, 2], route=REFERENCE, timeout=30)
    windows.close()
    reference.close()
