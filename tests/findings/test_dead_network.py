"""A network whose every recorded layer is dead: the case diagnosis exists for. `tfprobe.diagnose`
used to raise `KeyError: 'run'` (no layer has a usable `std`), so `tfprobe report` crashed and the
plugin's `/health` answered 500."""

from __future__ import annotations

import pytest
from helpers.plugin import get_json, make_client, make_provider

import tfprobe
from tfprobe import cli
from tfprobe.logs.writer import WindowWriter

LAYERS = ["dense", "relu"]
DEAD = {
    "mean": 0.0,
    "std": 0.0,
    "min": 0.0,
    "max": 0.0,
    "zero_fraction": 1.0,
    "near_zero_fraction": 1.0,
    "nan_count": 0.0,
    "inf_count": 0.0,
    "dead_unit_fraction": 1.0,
}


@pytest.fixture(scope="module")
def dead_logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("dead")
    writer = WindowWriter(str(root / "run"))
    infos = {
        name: {"series": name, "layer": name, "class": "Dense", "order": i, "shape": [None, 8]}
        for i, name in enumerate(LAYERS)
    }
    for step in (10, 20, 30):
        writer.write_window(step, infos, {name: dict(DEAD) for name in LAYERS}, {}, wall_time=float(step))
    writer.close()
    return root


def test_dead_network_is_diagnosed(dead_logdir):
    out = tfprobe.diagnose(tfprobe.read_logdir(dead_logdir), tfprobe.read_layers(dead_logdir))
    assert out[["layer", "kind", "severity", "windows"]].values.tolist() == [
        ["dense", "dead_layer", "error", 3],
        ["relu", "dead_layer", "error", 3],
    ]


def test_report_on_a_dead_network(dead_logdir, capsys):
    assert cli.main(["report", str(dead_logdir), "--fail-on", "error"]) == 1
    out = capsys.readouterr().out
    assert "Findings: 2 errors\n" in out and "Failing: 2 findings at or above 'error'" in out


def test_health_route_on_a_dead_network(dead_logdir):
    body = get_json(make_client(make_provider(dead_logdir)), "health", run="run")
    assert [(f["layer"], f["kind"]) for f in body["findings"]] == [("dense", "dead_layer"), ("relu", "dead_layer")]
