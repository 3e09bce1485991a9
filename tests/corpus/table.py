"""The results table of the corpus: `python -m corpus.table [--jit 0|1] [--examples a,b] [--out file.jsonl]`,
run from `tests/` with `PYTHONPATH` holding the repository and `tensorboard_plugin`. Prints one JSON line per
example x setting (and per example for `reference_data`), then the Markdown table."""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile

from corpus import harness


def row(r):
    return {
        "example": r.example,
        "setting": r.setting,
        "jit": r.jit,
        "fit_ok": r.fit_ok,
        "error": r.error,
        "steps": r.steps,
        "coverage": r.coverage,
        "missing": r.missing[:10],
        "extra": r.extra[:10],
        "incomplete": r.incomplete[:10],
        "windows": r.windows,
        "expected_windows": r.expected_windows,
        "history_diff": r.history_diff,
        "plain_diff": r.plain_diff,
        "warnings": r.warning_lines(),
        "alerts": r.incidents,
        "alert_counts": r.incident_counts,
        "report": r.report_code,
        "report_error": r.report_error,
        "dashboard_error": r.dashboard_error,
        "probe_warnings": r.probe_warnings[:3],
        "seconds": round(r.seconds, 1),
    }


def markdown(rows):
    lines = [
        "| example | setting | XLA | fit | windows | coverage | History rel. diff | warnings/errors | live alerts | report | dashboard |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r.get("setting") == "reference":
            continue
        fit = "ok" if r["fit_ok"] else "FAIL: " + r["error"][:90].replace("|", "/")
        if r.get("notrun"):
            fit = "not run"
        windows = "-"
        if r["fit_ok"] and r.get("windows") is not None:
            windows = "ok" if r["windows"] == r.get("expected_windows") else f"at steps {r['windows']}"
        cov = r["coverage"] if r["fit_ok"] else "-"
        if r["missing"] or r["extra"] or r["incomplete"]:
            cov += f" (missing {len(r['missing'])}, extra {len(r['extra'])}, incomplete {len(r['incomplete'])})"
        diff = (
            "-"
            if not r["fit_ok"] or r["history_diff"] is None
            else ("0" if r["history_diff"] == 0 else f"{r['history_diff']:.1e}")
        )
        if r.get("plain_diff") is not None and r["plain_diff"] == r["plain_diff"]:  # measured (not NaN)
            diff += f" (without the probe, run twice: {r['plain_diff']:.1e})"
        warn = (
            "-"
            if not r["fit_ok"]
            else (f"{len(r['warnings'])}: " + "; ".join(r["warnings"][:4]) if r["warnings"] else "0")
        )
        alerts = (
            "-"
            if not r["fit_ok"]
            else (f"{len(r['alerts'])}: " + "; ".join(r["alerts"][:4]) if r.get("alerts") else "0")
        )
        rep = "-" if r["report"] is None else str(r["report"])
        dash = "-" if not r["fit_ok"] else ("ok" if not r["dashboard_error"] else r["dashboard_error"][:60])
        lines.append(
            f"| {r['example']} | {r['setting']} | {'yes' if r['jit'] else 'no'} | {fit} | {windows} | {cov} | {diff} | "
            f"{warn} | {alerts} | {rep} | {dash} |"
        )
    refs = [r for r in rows if r.get("setting") == "reference"]
    if refs:
        lines += [
            "",
            "| example | reference_data / looks_examples | message | Grad-CAM maps |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r['example']} | {r['outcome']} | {r['message'][:150].replace('|', '/')} | "
            f"{(r.get('cam') or '-').strip().splitlines()[0][:80].replace('|', '/')} |"
            for r in refs
        ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--jit", choices=["0", "1", "both"], default="both")
    parser.add_argument("--examples", default=",".join(harness.EXAMPLES))
    parser.add_argument("--settings", default=",".join(harness.SETTINGS))
    parser.add_argument("--reference", action="store_true", help="also run reference_data / looks_examples")
    parser.add_argument("--out", default=None, help="append JSON lines here")
    parser.add_argument("--markdown", default=None, help="only print the table of this JSON-lines file")
    args = parser.parse_args(argv)
    if args.markdown:
        rows = [json.loads(line) for line in pathlib.Path(args.markdown).read_text().splitlines() if line.strip()]
        print(markdown(rows))
        return
    jits = {"0": [False], "1": [True], "both": [False, True]}[args.jit]
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="corpus-"))
    rows = []
    for name in args.examples.split(","):
        module = harness.load(name)
        for jit in jits:
            if jit and not module.SUPPORTS_XLA:
                continue
            for setting in args.settings.split(","):
                rows.append(row(harness.run_example(module, setting, jit, tmp)))
                emit(rows[-1], args.out)
        if args.reference:
            ref = harness.run_reference(module, tmp)
            rows.append(reference_row(ref))
            emit(rows[-1], args.out)
    print(markdown(rows))


def emit_result(result):
    """`tests/examples/test_corpus.py` calls this with each example x setting it trains: with `CORPUS_OUT=file.jsonl`
    set, a pytest run also writes the results table's rows (`python -m corpus.table --markdown file.jsonl`)."""
    import os

    if os.environ.get("CORPUS_OUT"):
        emit(row(result) if isinstance(result, harness.Result) else reference_row(result), os.environ["CORPUS_OUT"])


def reference_row(ref):
    return {
        "example": ref.example,
        "setting": "reference",
        "outcome": ref.outcome,
        "message": ref.message,
        "rows": ref.representation_rows,
        "cam": ref.cam,
    }


def emit(r, out):
    line = json.dumps(r, default=str)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
