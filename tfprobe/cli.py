"""The `tfprobe` command line: `tfprobe report LOGDIR` and `tfprobe export LOGDIR OUT`.

    tfprobe report logs                    # latest window per layer, incidents (root cause + fix)
    tfprobe report logs --all              # ... and every finding the incidents group
    tfprobe report logs --fail-on warning  # exit 1 if a warning or error is found (CI)
    tfprobe report logs --wide             # full layer names (wider than 80 columns)
    tfprobe export logs stats.csv          # every point, long format
    tfprobe export logs stats.parquet --wide

Exit codes: 0 success; 1 `--fail-on` matched a finding; 2 usage error, missing
logdir or no tfprobe data.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import textwrap
import warnings

WIDTH = 80
_COLUMNS = (  # (header, stat, scale, width)
    ("mean", "mean", 1.0, 8),
    ("std", "std", 1.0, 8),
    ("zero%", "zero_fraction", 100.0, 6),
    ("dead%", "dead_unit_fraction", 100.0, 6),
    ("sat%", "saturation_fraction", 100.0, 6),
    ("nan+inf", None, 1.0, 7),
)


_REPR_COLUMNS = (  # (header, stat, width): the latest reference step (LayerProbe(reference_data=...))
    ("eff.rank", "effective_rank", 8),
    ("st.rank", "stable_rank", 7),
    ("probe", "probe_accuracy", 6),
    ("info(b)", "label_information", 7),
    ("drift", "cka_drift", 6),
)


class _Fail(Exception):
    pass


def _fmt(value, width):
    if value is None:
        return "-".rjust(width)
    if math.isnan(value):
        return "nan".rjust(width)
    if math.isinf(value):
        return ("inf" if value > 0 else "-inf").rjust(width)
    for text in (f"{value:.4g}", f"{value:.3g}", f"{value:.2g}", f"{value:.1e}"):
        if len(text) <= width:
            return text.rjust(width)
    return text[:width].rjust(width)


def _ellipsize(text, width):
    return text if len(text) <= width else text[: width - 1] + "…"


def plural(n, word):
    """`"1 warning"`, `"65 warnings"`.

    >>> plural(1, "warning"), plural(65, "error"), plural(0, "layer")
    ('1 warning', '65 errors', '0 layers')
    """
    return f"{n} {word}" + ("" if n == 1 else "s")


def middle_ellipsis(text, width, head=None):
    """`text` cut to `width` characters by replacing its middle with `…`, keeping `head` leading characters
    (default a third) and the rest of the width from its end, where layer names differ most.

    >>> middle_ellipsis("convnext_tiny_stage_2_block_3_depthwise_conv", 24)
    'convnex…3_depthwise_conv'
    """
    if len(text) <= width:
        return text
    head = (width - 1) // 3 if head is None else head
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


_SEPARATORS = "_/.-:"


def common_prefix(names):
    """The longest common prefix of `names` ending at a separator (`_ / . - :`), or `""`.

    >>> common_prefix(["net_stage_1_conv", "net_stage_2_conv"]), common_prefix(["a_x", "b_x"])
    ('net_stage_', '')
    """
    if len(names) < 2:
        return ""
    prefix = os.path.commonprefix(list(names))
    cut = max(prefix.rfind(c) for c in _SEPARATORS)
    return prefix[: cut + 1]


_CALL = re.compile(r"#\d+$")


def split_call(name):
    """`(base, suffix)`: a series name without and with its call suffix (`#1` for a layer's second call).

    >>> split_call("generator/dense_3#1"), split_call("dense")
    (('generator/dense_3', '#1'), ('dense', ''))
    """
    m = _CALL.search(name)
    return (name[: m.start()], m.group()) if m else (name, "")


MIN_KEPT = 4
"""A factored-out prefix leaves at least this many characters of every layer name it shortens."""


def _factored_prefix(bases):
    """The common prefix of `bases` (ending at a separator), shortened to an earlier separator until every
    name keeps at least `MIN_KEPT` characters after it ("generator/conv2d_transpose_1" keeps
    "transpose_1", not "1")."""
    prefix = common_prefix(bases)
    while prefix and any(len(b) - len(prefix) < MIN_KEPT for b in bases):
        cut = max(prefix[:-1].rfind(c) for c in _SEPARATORS)
        prefix = prefix[: cut + 1] if cut >= 0 else ""
    return prefix


def short_labels(names, width):
    """`(prefix, labels)`: labels of at most `width` characters, distinct when the names are.

    The common prefix (ending at a separator) of the names that do not fit is factored out: their
    labels start with `…` instead; it leaves at least `MIN_KEPT` characters of each name. Labels still too
    long get a middle ellipsis; a call suffix (`#1`: a layer called twice per step) is always kept whole,
    after the shortened layer name. For names whose labels would collide, the split between kept head and
    tail is moved until they differ. Names that no split tells apart (they differ only deep in the middle)
    end in `~1`, `~2`, ...: use `--wide` for them.

    >>> short_labels(["net_block_10_conv", "net_block_11_conv", "head"], 9)
    ('net_block_', ['…10_conv', '…11_conv', 'head'])
    >>> short_labels(["a_block_10_conv", "b_block_11_conv"], 9)
    ('', ['a_…0_conv', 'b_…1_conv'])
    >>> short_labels(["generator/conv2d_transpose_1", "generator/conv2d_transpose_1#1"], 16)
    ('generator/conv2d_', ['…transpose_1', '…transpose_1#1'])
    """
    names = list(names)
    prefix = _factored_prefix([split_call(n)[0] for n in names if len(n) > width])

    def label(name, head=None):
        base, call = split_call(name)
        room = width - len(call)
        if prefix and base.startswith(prefix) and len(name) > width:
            return "…" + middle_ellipsis(base[len(prefix) :], room - 1, head) + call
        return middle_ellipsis(base, room, head) + call

    labels = {n: label(n) for n in names}
    by_label = {}
    for n, text in labels.items():
        by_label.setdefault(text, []).append(n)
    heads = sorted(range(1, width - 2), key=lambda h: (abs(h - (width - 1) // 3), h))
    for text, group in by_label.items():
        if len(group) < 2:
            continue
        taken = set(labels.values()) - {text}
        for h in heads:
            cand = {n: label(n, h) for n in group}
            if len(set(cand.values())) == len(group) and not taken & set(cand.values()):
                labels.update(cand)
                break
        else:
            labels.update({n: text[: width - 1 - len(str(k))] + f"~{k}" for k, n in enumerate(group, 1)})
    used = any(labels[n].startswith("…") for n in names)
    return (prefix if used else ""), [labels[n] for n in names]


def _open_logdir(logdir):
    """Checks `logdir` as the readers do (local paths and every URL scheme they read); `_Fail` with one line."""
    from tfprobe.logs.events import check_logdir

    try:
        return check_logdir(logdir)
    except (FileNotFoundError, NotADirectoryError):
        raise _Fail(f"tfprobe: no such directory: {logdir}") from None
    except (OSError, ValueError, TypeError) as e:  # an unknown URL scheme, a remote store that cannot be reached
        raise _Fail(f"tfprobe: cannot read {logdir}: {_one_line(e)}") from None


def _one_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _load(logdir):
    """The `LogData` of `logdir` (one scan), or `_Fail` if it has no tfprobe statistics."""
    from tfprobe.logs.reader import read

    _open_logdir(logdir)
    data = read(logdir)
    if not data.has_scalars():
        raise _Fail(f"tfprobe: no tfprobe data under {logdir} (attach tfprobe.LayerProbe(log_dir=...) to model.fit)")
    return data


def _unique(column):
    """The distinct values of a frame column in order of appearance (vectorised: columns hold millions of rows)."""
    import pandas as pd

    return list(pd.unique(column))


def layer_table(df, run, width=WIDTH, wide=False):
    """Lines of the per-layer table of `run`'s latest window, at most `width` columns wide
    (full layer names when `wide`), the latest step, and `{layer: label}` of the rows."""
    sub = df[df["run"] == run]
    latest = sub.drop_duplicates(["layer", "stat"], keep="last")  # the reader sorts each series by step
    values = {(l, s): v for l, s, v in zip(latest["layer"], latest["stat"], latest["value"])}
    steps = latest.groupby("layer")["step"].max()
    layers = _unique(sub["layer"])  # model order (read_logdir sorts by it)
    numbers = sum(w + 1 for _h, _s, _k, w in _COLUMNS)
    name_w = max(12, width - numbers - 2)
    prefix, labels = "", layers
    if wide:
        name_w = max([name_w] + [len(n) for n in layers])
    else:
        prefix, labels = short_labels(layers, name_w)
    lines = ["  " + "layer".ljust(name_w) + "".join(" " + h.rjust(w) for h, _s, _k, w in _COLUMNS)]
    if prefix:
        note = f"(a leading … stands for {prefix!r}; --wide shows full names)"
        wrapped = textwrap.wrap(note, width, initial_indent="  ", subsequent_indent="   ", break_long_words=False)
        if any(len(line) > width for line in wrapped):  # a prefix longer than a line: cut it across lines
            wrapped = textwrap.wrap(note, width, initial_indent="  ", subsequent_indent="   ")
        lines[:0] = wrapped
    for layer, label in zip(layers, labels):
        cells = []
        for _h, stat, scale, w in _COLUMNS:
            if stat is None:
                nan, inf = values.get((layer, "nan_count")), values.get((layer, "inf_count"))
                v = None if nan is None and inf is None else (nan or 0.0) + (inf or 0.0)
            else:
                v = values.get((layer, stat))
                v = None if v is None else v * scale
            cells.append(" " + _fmt(v, w))
        lines.append("  " + label.ljust(name_w) + "".join(cells))
    return lines, int(steps.max()) if len(steps) else None, dict(zip(layers, labels))


def _finding_lines(f, width, wide, label, show_run=True):
    """A finding's lines; its layer shown with the table's `label` (middle-ellipsised further if needed,
    its call suffix kept), the run named only when the report has several."""
    from tfprobe.findings import KINDS

    steps = f"steps {f.first_step}-{f.last_step}" if f.first_step != f.last_step else f"step {f.first_step}"
    kind_w = max(len(k) for k in KINDS) + 1
    head = f"  {f.severity.upper():<8}{f.kind:<{kind_w}}" + (f"run {f.run}: " if show_run else "")
    tail = f" ({steps})"
    if wide:
        layer = f.layer
    else:
        base, call = split_call(label)
        layer = middle_ellipsis(base, max(12, width - len(head) - len(tail) - len(call))) + call
    lines = [head + layer + tail if wide else _ellipsize(head + layer + tail, width)]
    return lines + ["          " + line for line in textwrap.wrap(f.message, width - 10)]


def representation_table(rep, run, width=WIDTH):
    """Lines of the per-layer representation measures of `run`'s latest reference step (empty if it has none)."""
    sub = rep[rep["run"] == run]
    if sub.empty:
        return []
    step = int(sub["step"].max())
    latest = sub[sub["step"] == step]
    values = {(layer, stat): v for layer, stat, v in zip(latest["layer"], latest["stat"], latest["value"])}
    name_w = max(12, width - sum(w + 1 for _h, _s, w in _REPR_COLUMNS) - 2)
    lines = [
        f"  representations at reference step {step} ({sub['step'].nunique()} reference steps):",
        "  " + "layer".ljust(name_w) + "".join(" " + h.rjust(w) for h, _s, w in _REPR_COLUMNS),
    ]
    for layer in _unique(latest["layer"]):
        cells = "".join(" " + _fmt(values.get((layer, stat)), w) for _h, stat, w in _REPR_COLUMNS)
        lines.append("  " + _ellipsize(layer, name_w).ljust(name_w) + cells)
    return lines


def incident_lines(inc, width=WIDTH, wide=False, label=None):
    """The lines of one incident (a row of `tfprobe.incidents`): its root (the layer shown with the table's
    `label`, middle-ellipsised further if needed), its alert line, what it explains, why, and the fix."""
    head = f"  {inc.severity.upper():<8}#{inc.incident} {inc.run}: root {inc.root_kind} at "
    tail = f" (step {inc.first_step})"
    layer = inc.root_layer if wide else middle_ellipsis(label or inc.root_layer, max(12, width - len(head) - len(tail)))
    lines = [head + layer + tail if wide else _ellipsize(head + layer + tail, width)]
    more = f"explains {plural(inc.findings, 'finding')}: " + ", ".join(inc.kinds) + " in " + ", ".join(inc.layers)
    for text in (inc.summary, more, "why: " + inc.reason, "fix: " + inc.fix):
        lines += ["          " + line for line in textwrap.wrap(text, width - 10)]
    return lines


def report(logdir, fail_on=None, runs=None, out=None, width=WIDTH, wide=False, all_findings=False):
    """Prints the report; returns the exit code."""
    from tfprobe.findings import SEVERITIES, diagnose, severity_rank
    from tfprobe.findings.incidents import group

    out = out or sys.stdout
    data = _load(logdir)
    from tfprobe.findings import stat_frame
    from tfprobe.metadata import REPRESENTATION_STATS

    # the latest point of each series and statistic, the reference measures and what `diagnose` reads:
    # never the long frame of every point (a 500-layer run of 10,000 windows has 65 M)
    latest, layers = data.scalar_frame(exclude=REPRESENTATION_STATS, last_only=True), data.layers
    rep = data.scalar_frame(stats=REPRESENTATION_STATS)
    all_runs = _unique(data.scalar_frame(last_only=True)["run"])
    health = stat_frame(data)
    if runs:
        unknown = [r for r in runs if r not in all_runs]
        if unknown:
            raise _Fail(f"tfprobe: run {unknown[0]!r} has no tfprobe data; runs: {', '.join(all_runs)}")
        latest, rep = latest[latest["run"].isin(runs)], rep[rep["run"].isin(runs)]
        layers, health = layers[layers["run"].isin(runs)], health[health["run"].isin(runs)]
    windows = data.run_steps(exclude=REPRESENTATION_STATS)
    print(f"tfprobe report: {logdir}", file=out)
    labels = {}
    for run in _unique(latest["run"]):
        lines, step, labels[run] = layer_table(latest, run, width, wide)
        n_windows = len(windows.get(run, ()))
        n_layers = latest.loc[latest["run"] == run, "layer"].nunique()
        head = f"run {run!r}: {plural(n_layers, 'layer')}, latest window step {step} ({plural(n_windows, 'window')})"
        print("", file=out)
        print(head if wide else _ellipsize(head, width), file=out)
        for line in lines + representation_table(rep, run, width):
            print(line, file=out)
    findings = diagnose(health, layers)
    incidents, _ = group(findings, layers)
    print("", file=out)
    print(f"Incidents: {len(incidents) or 'none'}", file=out)
    for inc in incidents.itertuples(index=False):
        for line in incident_lines(inc, width, wide, labels.get(inc.run, {}).get(inc.root_layer)):
            print(line, file=out)
    counts = findings["severity"].value_counts()
    summary = ", ".join(plural(counts[s], s) for s in reversed(SEVERITIES) if s in counts) or "none"
    print("", file=out)
    print(f"Findings: {summary}", file=out)
    several = len(labels) > 1
    if not (all_findings or findings.empty):
        print("  (grouped into the incidents above; --all lists them)", file=out)
    for f in findings.itertuples(index=False) if all_findings else ():
        for line in _finding_lines(f, width, wide, labels.get(f.run, {}).get(f.layer, f.layer), several):
            print(line, file=out)
    if fail_on is not None:
        threshold = severity_rank(fail_on)
        worst = [s for s in findings["severity"] if severity_rank(s) >= threshold]
        if worst:
            print(f"\nFailing: {plural(len(worst), 'finding')} at or above {fail_on!r}", file=out)
            return 1
    return 0


def _check_output_path(path):
    """Raises `_Fail` with one line when `path` cannot be a new or replaced file."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise _Fail(
            f"tfprobe: cannot write {path}: it is a directory (give a file name ending in .csv, .parquet or .pq)"
        )
    if not os.path.isdir(parent):
        what = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise _Fail(f"tfprobe: cannot write {path}: the directory {os.path.dirname(path) or parent} {what}")


def export(logdir, path, wide=False, histograms=False, out=None, quantity=None):
    """Writes every point to `path` (.csv, .parquet or .pq); returns the exit code.

    With `histograms`, `quantity` picks them as `read_histograms` does (default `"activation"`).
    """
    from tfprobe.logs.reader import read_histograms, read_logdir

    out = out or sys.stdout
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".csv", ".parquet", ".pq"):
        raise _Fail(f"tfprobe: cannot tell the format of {path!r}; use a .csv, .parquet or .pq file name")
    _open_logdir(logdir)
    if quantity is not None and not histograms:
        raise _Fail(f"tfprobe: --quantity {quantity} picks histograms; add --histograms")
    _check_output_path(path)
    df = read_histograms(logdir, quantity=quantity or "activation") if histograms else read_logdir(logdir, pivot=wide)
    if df.empty:
        raise _Fail(f"tfprobe: no tfprobe data under {logdir}")
    try:
        if ext == ".csv":
            df.to_csv(path, index=False)
        else:
            df.to_parquet(path, index=False)
    except ImportError as e:
        raise _Fail(f"tfprobe: writing Parquet needs pyarrow or fastparquet ({e})") from None
    except OSError as e:
        raise _Fail(f"tfprobe: cannot write {path}: {e.strerror or e}") from None
    print(f"wrote {plural(len(df), 'row')} to {path}", file=out)
    return 0


def build_parser():
    from tfprobe.findings import SEVERITIES
    from tfprobe.logs.reader import HISTOGRAM_QUANTITIES

    parser = argparse.ArgumentParser(
        prog="tfprobe", description="Inspect tfprobe logs (per-layer activation statistics)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="per-layer table of the latest window, and health findings")
    rep.add_argument("logdir", help="TensorBoard log directory (each sub-directory with event files is a run)")
    rep.add_argument(
        "--fail-on",
        choices=SEVERITIES,
        default=None,
        help="exit with status 1 if a finding of this severity or worse exists (for CI)",
    )
    rep.add_argument("--run", action="append", default=None, help="only this run (repeatable)")
    rep.add_argument("--wide", action="store_true", help="full layer names, even when wider than 80 columns")
    rep.add_argument(
        "--all",
        action="store_true",
        dest="all_findings",
        help="also list every finding (the incidents group them by root cause)",
    )
    exp = sub.add_parser("export", help="write every point to CSV or Parquet (by file extension)")
    exp.add_argument("logdir")
    exp.add_argument("out", help="output file: .csv, .parquet or .pq")
    exp.add_argument("--wide", action="store_true", help="one column per statistic instead of long format")
    exp.add_argument("--histograms", action="store_true", help="export the histograms instead of the statistics")
    exp.add_argument(
        "--quantity",
        choices=HISTOGRAM_QUANTITIES,
        default=None,
        help="with --histograms: the layers' outputs (activation, the default), their gradients, or all",
    )
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings on the command line: one line, `tfprobe: warning: ...`, without the Python source line that
    raised it (a reader warning raised in a cached property showed as `functools.py:1001 ...`)."""
    text = textwrap.fill(
        " ".join(str(message).split()), WIDTH, initial_indent="tfprobe: warning: ", subsequent_indent="  "
    )
    print(text, file=file or sys.stderr)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            if args.command == "report":
                return report(args.logdir, args.fail_on, args.run, wide=args.wide, all_findings=args.all_findings)
            return export(args.logdir, args.out, wide=args.wide, histograms=args.histograms, quantity=args.quantity)
    except _Fail as e:
        print(str(e), file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `tfprobe report logs | head`
        return 0
    except Exception as e:  # e.g. a remote store failing mid-read: one line, no traceback
        if type(e).__module__.startswith("tensorflow") or isinstance(e, OSError):
            print(f"tfprobe: cannot read {args.logdir}: {_one_line(e)}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
