"""`tfprobe report` and `tfprobe export` (called in-process, plus the installed console script)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pandas as pd
import pytest
from helpers import synthetic

import tfprobe
from tfprobe import cli
from tfprobe.logs.writer import WindowWriter


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_report_table_and_findings_fit_80_columns(synthetic_logdir, capsys):
    code, out, _ = run_cli(capsys, "report", str(synthetic_logdir), "--all")
    assert code == 0
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert f"run '{synthetic.RUN_TRAIN}': {len(synthetic.TRAIN_LAYERS)} layers, latest window step 200" in out
    for name, *_ in synthetic.TRAIN_LAYERS:
        assert any(line.strip().startswith(name) for line in lines)
    dead = next(line for line in lines if line.strip().startswith("dead_relu"))
    assert dead.split()[1:] == ["0", "0", "100", "100", "0", "0"]
    nan = next(line for line in lines if line.strip().startswith("nan_layer"))
    assert nan.split()[1:3] == ["nan", "nan"] and nan.split()[-1] == "12"
    assert "Findings: 2 errors\n" in out  # the output softmax `dense` is confident, not saturated
    assert re.search(r"\n  ERROR   nan_inf +run train: nan_layer \(steps 100-200\)\n", out)  # several runs: named
    assert synthetic.RUN_OTHER not in out  # omitted: no tfprobe data


@pytest.fixture(scope="module")
def warning_logdir(tmp_path_factory):
    """One run whose only finding is a warning: a hidden sigmoid layer `dense` saturates."""
    root = tmp_path_factory.mktemp("warn")
    layers = [("dense", "Dense", "activation", [None, 10], [0.0, 1.0]), ("out", "Dense", "activation", [None, 4], None)]
    synthetic.write_run(root / "warn", layers, [10, 20, 30])
    return root


@pytest.mark.parametrize(
    "logdir, severity, code",
    [("errors", "error", 1), ("warning", "error", 0), ("warning", "warning", 1), ("warning", "info", 1)],
)
def test_fail_on(synthetic_logdir, warning_logdir, capsys, logdir, severity, code):
    path = synthetic_logdir if logdir == "errors" else warning_logdir
    got, out, _ = run_cli(capsys, "report", str(path), "--fail-on", severity)
    assert got == code
    if logdir == "warning":
        assert "Findings: 1 warning\n" in out
        assert ("Failing: 1 finding at or above" in out) == (code == 1)


def test_fail_on_passes_for_healthy_run(synthetic_logdir, capsys):
    code, out, _ = run_cli(capsys, "report", str(synthetic_logdir), "--run", synthetic.RUN_EVAL, "--fail-on", "warning")
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


def test_long_layer_names_keep_head_and_tail(tmp_path, capsys):
    name = "encoder/block_12/" + "very_long_layer_name_" * 4 + "conv"
    synthetic.write_run(tmp_path / "r", [(name, "Dense", "activation", [None, 4], None)], [1, 2])
    code, out, _ = run_cli(capsys, "report", str(tmp_path))
    assert code == 0 and max(map(len, out.splitlines())) <= 80
    row = next(line for line in out.splitlines() if "…" in line).split()[0]
    assert row.startswith("encoder/") and row.endswith("layer_name_conv") and len(row) == 31
    code, out, _ = run_cli(capsys, "report", str(tmp_path), "--wide")
    assert code == 0 and name in out.split()


def convnext_names():
    """Names like keras.applications.ConvNeXtTiny's (138 of them)."""
    names = ["convnext_tiny_stem_conv", "convnext_tiny_stem_layernorm"]
    for stage, depth in enumerate((3, 3, 9, 3)):
        if stage:
            names += [f"convnext_tiny_downsampling_layernorm_{stage}", f"convnext_tiny_downsampling_conv_{stage}"]
        for block in range(depth):
            names += [
                f"convnext_tiny_stage_{stage}_block_{block}_{part}"
                for part in (
                    "depthwise_conv",
                    "layernorm",
                    "pointwise_conv_1",
                    "gelu",
                    "pointwise_conv_2",
                    "layer_scale",
                    "identity",
                )
            ]
    return names + ["convnext_tiny_head_gap", "convnext_tiny_head_layernorm", "convnext_tiny_head_dense", "predictions"]


def test_convnext_names_are_distinct_within_80_columns(tmp_path, capsys):
    names = convnext_names()
    assert len(names) == 138 and len({n[:30] for n in names}) < 30  # cut at 30 characters + "…": unreadable
    writer = WindowWriter(str(tmp_path / "r"))
    infos = {n: synthetic.info_for(i, n, "Conv2D", "activation", [None, 4], None) for i, n in enumerate(names)}
    stats = {n: synthetic.stats_for(n, "activation", 1) for n in names}
    stats["convnext_tiny_stage_2_block_3_depthwise_conv"]["nan_count"] = 3.0  # a finding on that row
    writer.write_window(1, infos, stats, {}, wall_time=1.0)
    writer.close()
    code, out, _ = run_cli(capsys, "report", str(tmp_path), "--all")
    assert code == 0 and max(map(len, out.splitlines())) <= 80
    table = out.split("layer ", 1)[1].split("\n\nIncidents")[0].splitlines()[1:]
    labels = [line.split()[0] for line in table]
    assert len(labels) == 138 and len(set(labels)) == 138
    assert "…stage_2_block_3_depthwise_conv" in labels and "'convnext_tiny_'" in out
    assert "predictions" in labels and "convnext_tiny_head_gap" in labels  # short names stay whole
    incident = next(line for line in out.splitlines() if line.startswith("  ERROR   #1"))
    assert incident == "  ERROR   #1 r: root nan_inf at …stage_2_block_3_depthwise_conv (step 1)"
    finding = next(line for line in out.splitlines() if line.startswith("  ERROR   nan_inf"))
    assert re.match(r"  ERROR   nan_inf +…stage_2_block_3_depthwise_conv \(step 1\)", finding), (
        finding
    )  # one run: not named
    _, short = cli.short_labels(names, 31)
    assert len(set(short)) == len(names) and all(len(x) <= 31 for x in short)


def test_labels_of_names_differing_in_the_middle():
    names = [f"model/stage_{i}/block/very_long_sub_module_name/conv" for i in range(12)] + ["x"]
    prefix, labels = cli.short_labels(names, 20)
    assert prefix == "model/stage_" and len(set(labels)) == len(names) and max(map(len, labels)) <= 20
    deep = ["x_" + "a" * 30 + str(i) + "b" * 30 for i in range(3)] + ["y"]
    prefix, labels = cli.short_labels(deep, 12)
    assert len(set(labels)) == 4 and max(map(len, labels)) <= 12 and labels[-1] == "y"


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


def test_export_gradient_histograms(tmp_path, capsys):
    writer = WindowWriter(str(tmp_path / "logs" / "r"))
    hist = synthetic.hist_for(1)
    writer.write_window(
        1, {"h": synthetic.info_for(0, "h")}, {"h": {"mean": 1.0}}, {"h": hist}, grad_histograms={"h": 2 * hist}
    )
    writer.close()
    logs, out = str(tmp_path / "logs"), tmp_path / "h.csv"
    for quantity, want in ((None, {"activation"}), ("gradient", {"gradient"}), ("all", {"activation", "gradient"})):
        args = ["--quantity", quantity] if quantity else []
        assert run_cli(capsys, "export", logs, str(out), "--histograms", *args)[0] == 0
        got = pd.read_csv(out)
        assert set(got["quantity"]) == want
        for q in want:
            assert got.loc[got["quantity"] == q, "count"].sum() == hist.sum() * (2 if q == "gradient" else 1)
    code, _, err = run_cli(capsys, "export", logs, str(out), "--quantity", "gradient")
    assert code == 2 and err.strip() == "tfprobe: --quantity gradient picks histograms; add --histograms"


@pytest.mark.parametrize(
    "target, needle",
    [
        ("missing/dir/stats.csv", "does not exist"),
        ("dir.csv", "is a directory"),
        ("a_file/stats.csv", "is not a directory"),
    ],
)
def test_export_to_a_bad_path_is_one_line(synthetic_logdir, tmp_path, capsys, target, needle):
    (tmp_path / "dir.csv").mkdir()
    (tmp_path / "a_file").write_text("x")
    path = tmp_path / target
    code, out, err = run_cli(capsys, "export", str(synthetic_logdir), str(path))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert needle in err and str(path) in err and "Traceback" not in err


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_export_unwritable_path_is_one_line(synthetic_logdir, tmp_path, capsys, monkeypatch, ext):
    def refuse(*_a, **_k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pd.DataFrame, "to_csv" if ext == "csv" else "to_parquet", refuse)
    code, _, err = run_cli(capsys, "export", str(synthetic_logdir), str(tmp_path / f"s.{ext}"))
    assert code == 2 and err.strip() == f"tfprobe: cannot write {tmp_path / f's.{ext}'}: Permission denied"


def test_export_rejects_unknown_extension(synthetic_logdir, tmp_path, capsys):
    code, _, err = run_cli(capsys, "export", str(synthetic_logdir), str(tmp_path / "x.xlsx"))
    assert code == 2 and ".csv, .parquet or .pq" in err


def test_console_script_installed(synthetic_logdir):
    exe = shutil.which("tfprobe")
    assert exe, "console script `tfprobe` not installed (pip install -e .)"
    proc = subprocess.run([exe, "report", str(synthetic_logdir), "--fail-on", "error"], capture_output=True, text=True)
    assert proc.returncode == 1 and "Findings:" in proc.stdout
