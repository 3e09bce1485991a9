"""`tfprobe report` and `tfprobe export` (called in-process, plus the installed console script)."""

from __future__ import annotations

import shutil
import subprocess

import pandas as pd
import pytest

import tfprobe
from tfprobe import cli


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_report_table_and_findings_fit_80_columns(synthetic_logdir, capsys, helpers):
    code, out, _ = run_cli(capsys, "report", str(synthetic_logdir))
    assert code == 0
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert f"run '{helpers.RUN_TRAIN}': {len(helpers.TRAIN_LAYERS)} layers, latest window step 200" in out
    for name, *_ in helpers.TRAIN_LAYERS:
        assert any(line.strip().startswith(name) for line in lines)
    dead = next(line for line in lines if line.strip().startswith("dead_relu"))
    assert dead.split()[1:] == ["0", "0", "100", "100", "0", "0"]
    nan = next(line for line in lines if line.strip().startswith("nan_layer"))
    assert nan.split()[1:3] == ["nan", "nan"] and nan.split()[-1] == "12"
    assert "Findings: 2 error, 1 warning" in out
    assert "ERROR   nan_inf         train: nan_layer (steps 100-200)" in out
    assert helpers.RUN_OTHER not in out  # omitted: no tfprobe data


@pytest.mark.parametrize("severity, code", [("error", 1), ("warning", 1), ("info", 1)])
def test_fail_on(synthetic_logdir, capsys, severity, code):
    assert run_cli(capsys, "report", str(synthetic_logdir), "--fail-on", severity)[0] == code


def test_fail_on_passes_for_healthy_run(synthetic_logdir, capsys, helpers):
    code, out, _ = run_cli(capsys, "report", str(synthetic_logdir), "--run", helpers.RUN_EVAL, "--fail-on", "warning")
    assert code == 0 and "Findings: none" in out and "'train'" not in out


def test_report_errors(tmp_path, synthetic_logdir, capsys):
    code, _, err = run_cli(capsys, "report", str(tmp_path / "missing"))
    assert code == 2 and "no such directory" in err
    code, _, err = run_cli(capsys, "report", str(tmp_path))
    assert code == 2 and "LayerProbe" in err
    code, _, err = run_cli(capsys, "report", str(synthetic_logdir), "--run", "ghost")
    assert code == 2 and "'ghost'" in err
    with pytest.raises(SystemExit) as e:
        cli.main(["report", str(synthetic_logdir), "--fail-on", "fatal"])
    assert e.value.code == 2


def test_long_layer_names_are_truncated(tmp_path, capsys, helpers):
    name = "encoder/block_12/" + "very_long_layer_name_" * 4
    helpers.write_run(tmp_path / "r", [(name, "Dense", "activation", [None, 4], None)], [1, 2])
    code, out, _ = run_cli(capsys, "report", str(tmp_path))
    assert code == 0 and max(map(len, out.splitlines())) <= 80 and "encoder/block_12/very" in out


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_export_round_trip(synthetic_logdir, tmp_path, capsys, ext):
    out_path = tmp_path / f"stats.{ext}"
    code, out, _ = run_cli(capsys, "export", str(synthetic_logdir), str(out_path))
    assert code == 0 and "wrote" in out
    expected = tfprobe.read_logdir(synthetic_logdir)
    got = pd.read_csv(out_path) if ext == "csv" else pd.read_parquet(out_path)
    assert list(got.columns) == ["run", "step", "wall_time", "layer", "stat", "value"]
    assert len(got) == len(expected)
    assert set(got["layer"]) == set(expected["layer"])


def test_export_wide_and_histograms(synthetic_logdir, tmp_path, capsys):
    assert run_cli(capsys, "export", str(synthetic_logdir), str(tmp_path / "w.csv"), "--wide")[0] == 0
    wide = pd.read_csv(tmp_path / "w.csv")
    assert {"run", "step", "layer", "mean", "zero_fraction"} <= set(wide.columns)
    assert run_cli(capsys, "export", str(synthetic_logdir), str(tmp_path / "h.pq"), "--histograms")[0] == 0
    assert {"bucket", "count"} <= set(pd.read_parquet(tmp_path / "h.pq").columns)


def test_export_rejects_unknown_extension(synthetic_logdir, tmp_path, capsys):
    code, _, err = run_cli(capsys, "export", str(synthetic_logdir), str(tmp_path / "x.xlsx"))
    assert code == 2 and ".csv, .parquet or .pq" in err


def test_console_script_installed(synthetic_logdir):
    exe = shutil.which("tfprobe")
    assert exe, "console script `tfprobe` not installed (pip install -e .)"
    proc = subprocess.run([exe, "report", str(synthetic_logdir), "--fail-on", "error"], capture_output=True, text=True)
    assert proc.returncode == 1 and "Findings:" in proc.stdout
