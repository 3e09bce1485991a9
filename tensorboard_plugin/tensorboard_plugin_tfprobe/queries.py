"""The work behind the dashboard's routes: plain functions over TensorBoard's data provider.

Every function takes a `Source` (data provider, request context, experiment
id) and plain arguments, and returns a JSON-ready dict. Errors are
`tensorboard.errors.NotFoundError` (404: unknown run, layer, or a statistic
that was not recorded) and `InvalidArgumentError` (400: a malformed argument or
a name that is not a tfprobe statistic); both messages name the culprit.

Downsampling for the view (documented in `http_api.md`):

* `overview` shows at most `columns` columns. With `agg="last"` (default)
  the provider is asked for `columns` windows per layer: every window when
  they fit, otherwise its deterministic uniform sample that always includes
  the newest window (the same windows for every layer), one column each.
  With `agg="max"`/`"min"` it reads up to `columns * OVERSAMPLE` windows and
  bins consecutive windows into the columns, showing the largest or smallest
  value of each bin (NaN ignored unless all are NaN) so that short spikes
  stay visible. In both cases a column is labelled with its last step.
* line charts (`scalars`, `pooling`) and `histogram` ask the provider for at
  most `points` points per series (its deterministic uniform sample that keeps
  the newest point), like TensorBoard's own scalar dashboard.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from typing import NamedTuple

import numpy as np
from tensorboard import errors
from tensorboard.data import provider

from tensorboard_plugin_tfprobe import layout
from tfprobe import metadata
from tfprobe.logs import _decode

MAX_COLUMNS = 2000
MAX_POINTS = 10000
DEFAULT_COLUMNS = 500
DEFAULT_POINTS = 1000
OVERSAMPLE = 4
ALL_POINTS = 10**9  # read-time "downsample" meaning "everything ingestion kept"
DEFAULT_STAT = "zero_fraction"
AGGREGATIONS = ("last", "max", "min")
HEALTH_POINTS = 200
MAX_FILTER_LENGTH = 256
"""The longest `filter` accepted (characters)."""
FILTER_TIME_BUDGET = 0.5
"""Seconds one request may spend matching `filter` against layer names before it answers 400."""
MAX_INT_DIGITS = 20
"""The longest integer argument accepted (characters): `int()` of thousands of digits is slow or refused."""
_DECODE_ERRORS = (ValueError, TypeError, IndexError, KeyError, OverflowError, MemoryError)
"""What TensorBoard's data provider raises on a value it cannot decode (a foreign record)."""

logger = logging.getLogger(__name__)


class Source(NamedTuple):
    """Where to read: a `tensorboard.data.provider.DataProvider`, a `RequestContext`, an experiment id."""

    provider: object
    ctx: object
    experiment_id: str = ""
    logdir: str = ""  # TensorBoard's --logdir (empty if unknown): the plugin's own CRC scan reads its files

    def read_scalars(self, runs, tags, downsample):
        """`{run: {tag: [ScalarDatum]}}` of tfprobe statistics, in one data-provider call.

        The newest write of a step wins (`metadata.newest_write_wins`), also under
        `--load_fast=false`, whose multiplexer keeps a restarted run's old points
        and fails on a value that is not a scalar: then the tags are read one by
        one and those that fail are left out (logged once).
        """

        def read(runs, tags):
            return self.provider.read_scalars(
                self.ctx,
                experiment_id=self.experiment_id,
                plugin_name=metadata.PLUGIN_NAME,
                downsample=downsample,
                run_tag_filter=provider.RunTagFilter(runs=list(runs), tags=list(tags)),
            )

        try:
            data = read(runs, tags)
        except _DECODE_ERRORS:
            data = {}
            for run in runs:
                for tag in tags:
                    try:
                        data.setdefault(run, {}).update(read([run], [tag]).get(run, {}))
                    except _DECODE_ERRORS as e:
                        if (run, tag) not in _warned_series:
                            where = _locate_bad_value(self, run, tag)
                            _warn_series(run, tag, f"run {run!r}, tag {tag!r}{where}: a value is not a scalar ({e})")
        return {run: {tag: _newest_points(pts) for tag, pts in by_tag.items()} for run, by_tag in data.items()}


def _newest_points(points):
    steps = np.fromiter((p.step for p in points), np.int64, len(points))
    if len(steps) < 2 or (np.diff(steps) > 0).all():
        return points
    keep, _ = metadata.newest_write_wins(np.zeros(len(steps), np.int64), steps)
    return [p for p, k in zip(points, keep) if k]


# ---------------------------------------------------------------- helpers


def _finite_or_none(x):
    return float(x) if x is not None and math.isfinite(x) else None


def round_sig(values, digits=4):
    """Rounds floats to `digits` significant digits so their JSON stays short; keeps NaN/Inf."""
    v = np.asarray(values, dtype=np.float64)
    out = v.copy()
    ok = np.isfinite(v) & (v != 0)
    if ok.any():
        exp = digits - 1 - np.floor(np.log10(np.abs(v[ok])))
        exp = np.clip(exp, -300, 300).astype(np.int64)
        pos = exp >= 0
        vals = v[ok]
        res = np.empty_like(vals)
        # n / 10**k and n * 10**k with exact powers of ten give the nearest double
        # to the decimal, whose repr is the short one.
        p = np.power(10.0, np.minimum(exp[pos], 22))
        res[pos] = np.round(vals[pos] * p) / p
        q = np.power(10.0, np.minimum(-exp[~pos], 22))
        res[~pos] = np.round(vals[~pos] / q) * q
        out[ok] = res
    return out


def _json_list(values, digits=4):
    """A float array as a JSON-ready list: short floats; NaN/Inf stay (Respond sends "NaN"/"Infinity")."""
    return round_sig(values, digits).tolist()


def elements_per_example(shape):
    """Product of the dimensions after the batch dimension; None if one is unknown.

    >>> elements_per_example([None, 30, 30, 32]), elements_per_example([None, None, 8])
    (28800, None)
    """
    if not isinstance(shape, (list, tuple)) or not shape:
        return None
    n = 1
    for d in shape[1:]:
        if d is None:
            return None
        n *= int(d)
    return n


def require(name, value):
    """`value` if it is given and not empty, else a 400 naming the argument.

    >>> require("layer", "conv2d")
    'conv2d'
    >>> require("run", "")
    Traceback (most recent call last):
    ...
    tensorboard.errors.InvalidArgumentError: Invalid argument: `run` is required and must not be empty. Received: run=''
    """
    if value is None or value == "":
        raise errors.InvalidArgumentError(f"`{name}` is required and must not be empty. Received: {name}={value!r}")
    return value


def _check_int(name, value, low, high, default):
    if value is None or value == "":
        return default
    try:
        if len(str(value)) > MAX_INT_DIGITS:
            raise ValueError
        n = int(value)
    except (TypeError, ValueError):
        raise errors.InvalidArgumentError(
            f"`{name}` must be an integer of at most {MAX_INT_DIGITS} characters. Received: {name}={value!r:.60}"
        ) from None
    if not low <= n <= high:
        raise errors.InvalidArgumentError(f"`{name}` must be between {low} and {high}. Received: {name}={n}")
    return n


def check_stat(stat):
    """`stat` if it is a tfprobe statistic name, else a 400 naming it."""
    require("stat", stat)
    if stat not in metadata.STATS:
        raise errors.InvalidArgumentError(
            f"`stat` must be a tfprobe statistic ({', '.join(metadata.STATS)}). Received: stat={stat!r}"
        )
    return stat


def _check_runs(runs):
    """The distinct run names of a repeatable `run` argument; 400 if none is given or one is empty."""
    runs = list(runs or ())
    if not runs or not all(runs):
        raise errors.InvalidArgumentError(
            f"`run` is required: pass one or more non-empty run=NAME. Received: run={runs!r}"
        )
    return list(dict.fromkeys(runs))


# ---------------------------------------------------------------- listing


_warned_series = set()


def _listed(value):
    return list(value) if value is not None else None


def _warn_series(run, name, message, skipped="this series is skipped"):
    if (run, name) not in _warned_series and len(_warned_series) < 10000:
        _warned_series.add((run, name))
        logger.warning("tfprobe: %s; %s", message, skipped)


def _provider_read(src, what, run, tag, read, default):
    """`read()`, or `default` (logged once per run and tag) if the data provider cannot decode a value.

    TensorBoard's data providers decode tensors themselves: a foreign value under a tfprobe tag (3 bytes
    of float content, a declared shape of [2**24, 2**24]) makes them raise. The tag is left out of this
    answer instead of the route answering 500; `tfprobe.read_*` skip the bad values alone and name them.
    """
    try:
        return read()
    except _DECODE_ERRORS as e:
        if (run, tag) not in _warned_series:
            where = _locate_bad_value(src, run, tag)
            _warn_series(run, tag, f"run {run!r}, tag {tag!r}{where}: TensorBoard cannot decode a {what} value "
                                   f"({type(e).__name__}: {str(e)[:200]})", "this tag is left out")
        return default


def _locate_bad_value(src, run, tag, budget=1.0):
    """`", file F, step S: why"` of the first value of `tag` in `run`'s event files that tfprobe's typed
    decoding layer refuses (local log dirs only, at most `budget` s of reading); `""` if not found."""
    import warnings

    from tfprobe.logs import events

    directory = _run_directory(src, run)
    if directory is None:
        return ""
    decoders = {metadata.HIST_PLUGIN_NAME: _decode.histogram_counts, metadata.GRAD_HIST_PLUGIN_NAME:
                _decode.histogram_counts, metadata.PLUGIN_NAME: _decode.scalar_value,
                metadata.REPR_PLUGIN_NAME: _decode.scalar_value}
    deadline = time.monotonic() + budget
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if not events.is_event_file(name) or not os.path.isfile(path):
                continue
            decode = None
            for event in events.read_events(path):
                if time.monotonic() > deadline:
                    return ""
                for value in event.summary.value if event.HasField("summary") else ():
                    if value.tag != tag:
                        continue
                    if value.metadata.plugin_data.plugin_name:
                        decode = decoders.get(value.metadata.plugin_data.plugin_name)
                        if value.metadata.plugin_data.plugin_name == metadata.CKA_PLUGIN_NAME:
                            names = metadata.cka_layers(value.metadata.plugin_data.content) or []
                            decode = functools.partial(_cka_decode, n_layers=len(names))
                    try:
                        if decode is not None:
                            decode(value.tensor)
                    except _DECODE_ERRORS as e:
                        return f", file {path}, step {event.step}: {e}"
    return ""


def _cka_decode(tensor, n_layers):
    return _decode.cka_matrix(tensor, n_layers)


def _run_directory(src, run):
    """The local directory of `run` under `src.logdir`, or None (no local log dir, or outside it)."""
    from tfprobe.logs import _fs

    if not src.logdir or _fs.is_remote(src.logdir) or not os.path.isdir(src.logdir):
        return None
    root = os.path.normpath(src.logdir)
    directory = os.path.normpath(os.path.join(root, run))
    if os.path.commonpath([root, directory]) != root or not os.path.isdir(directory):
        return None
    return directory


def _checked_points(run, tag, points, check):
    """The points whose `check(point)` passes (it raises `metadata.FormatError` otherwise), newest write
    of each step first (see `_newest_points`); a bad point is logged once per run and tag, with its step."""
    good = []
    for p in points:
        try:
            check(p)
        except _DECODE_ERRORS as e:
            _warn_series(run, tag, f"run {run!r}, tag {tag!r}, step {p.step}: {e}", "such values are skipped")
            continue
        good.append(p)
    return _newest_points(good)


def _series_info(run, name, content):
    """The typed metadata of one series, or None (logged once) if it is not tfprobe's format."""
    try:
        return metadata.parse_content(content, name, run)
    except metadata.FormatError as e:
        _warn_series(run, name, e)
        return None


def list_series(src: Source, runs=None):
    """`{run: {series: info}}` for every run with tfprobe statistics, series in model order.

    `info` is the series' metadata (`metadata.parse_content`: `layer, class,
    kind, order, shape, bounds, inputs`) plus `name`, `stats` (recorded
    statistics, in `metadata.STATS` order), `elements` (per example),
    `histogram` and `grad_histogram` (bools: whether `histogram` has data for
    the activation, for its gradient) and `max_step`. A series whose metadata is not
    tfprobe's format is left out (and logged once). The dashboard's arrangement
    (`layout`): `category`, `block` and `depth`.
    """
    rtf = provider.RunTagFilter(runs=list(runs)) if runs else None
    listing = src.provider.list_scalars(
        src.ctx, experiment_id=src.experiment_id, plugin_name=metadata.PLUGIN_NAME, run_tag_filter=rtf
    )
    hists = {
        quantity: (src.provider.list_tensors(src.ctx, experiment_id=src.experiment_id, plugin_name=plugin,
                                             run_tag_filter=rtf) or {}, suffix)
        for quantity, (plugin, suffix) in metadata.HISTOGRAM_QUANTITIES.items()
    }
    out = {}
    for run, tags in (listing or {}).items():
        series = {}
        for tag, ts in tags.items():
            parsed = metadata.parse_tag(tag)
            if parsed is None:
                continue
            name, stat = parsed
            info = series.get(name)
            if info is None:
                parsed_info = _series_info(run, name, ts.plugin_content)
                if parsed_info is None:
                    continue
                info = series[name] = {
                    "name": name,
                    "layer": parsed_info.layer,
                    "class": parsed_info.class_name,
                    "kind": parsed_info.kind,
                    "order": parsed_info.order,
                    "shape": _listed(parsed_info.shape),
                    "bounds": _listed(parsed_info.bounds),
                    "inputs": _listed(parsed_info.inputs),
                    "stats": set(),
                    "max_step": ts.max_step,
                    "elements": elements_per_example(parsed_info.shape),
                }
            info["stats"].add(stat)
            info["max_step"] = max(info["max_step"], ts.max_step)
        hist_series = {
            quantity: {p[0] for p in map(metadata.parse_tag, listed.get(run, {})) if p and p[1] == suffix}
            for quantity, (listed, suffix) in hists.items()
        }
        for info in series.values():
            info["stats"] = [s for s in metadata.STATS if s in info["stats"]] + sorted(
                s for s in info["stats"] if s not in metadata.STATS
            )
            info["histogram"] = info["name"] in hist_series["activation"]
            info["grad_histogram"] = info["name"] in hist_series["gradient"]
        if series:
            out[run] = _arrange(dict(sorted(series.items(), key=lambda kv: (kv[1]["order"], kv[0]))))
    return out


def _arrange(series):
    """Adds `category`, `block` and `depth` (see `layout`) to each series of one run, in model order."""
    blocks = layout.assign_blocks(list(series))
    depths = layout.graph_depths(series)
    for (name, info), block in zip(series.items(), blocks):
        info["category"] = layout.category_of(info["class"], info["kind"])
        info["block"] = block
        info["depth"] = depths[name]
    return series


def _run_series(src, run):
    found = list_series(src, [run]).get(run)
    if not found:
        raise errors.NotFoundError(f"run {run!r} has no tfprobe data")
    return found


# ---------------------------------------------------------------- the plugin's own scan of the files

_scans = {}  # path -> _FileScan
_TFPROBE_SUFFIX = metadata.WINDOWS_SUFFIX  # each of tfprobe's file suffixes (`metadata.FILE_SUFFIXES`) starts so


class _FileScan(NamedTuple):
    size: int
    mtime_ns: int
    offset: int  # where the next record starts (the end of the last good one)
    problem: str | None  # the bad record met, if any: the file is not read further
    span: tuple | None  # (first, last) wall time of its summary records


def _scan_file(path, deadline):
    """`_FileScan` of one event file with tfprobe's CRC-checking reader, from where the last scan stopped
    (a file that grew is read on from there, an unchanged one not at all, a replaced one again). Past
    `deadline` (`time.monotonic()`) the scan stops between two records; the next call goes on from there."""
    import warnings

    from tfprobe.logs import events

    try:
        st = os.stat(path)
    except OSError:
        return None
    old = _scans.get(path)
    if old is not None and (old.size, old.mtime_ns) == (st.st_size, st.st_mtime_ns):
        return old
    grew = old is not None and old.problem is None and st.st_size >= old.size and st.st_size >= old.offset
    start, span = (old.offset, old.span) if grew else (0, None)
    problem, offset, size = None, start, st.st_size
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for offset, data in events.iter_records(path, start):
            head = _decode.split_event(data)
            if head is not None:
                span = (min(span[0], head[0]), max(span[1], head[0])) if span else (head[0], head[0])
            offset += 16 + len(data)
            if time.monotonic() > deadline:
                size = -1  # not done: the next scan goes on from `offset`
                break
    for w in caught:
        problem = str(w.message)
    scan = _FileScan(size, st.st_mtime_ns, offset, problem, span)
    if len(_scans) < 100000:
        _scans[path] = scan
    return scan


SCAN_TIME_BUDGET = 0.3
"""Seconds one request may spend scanning event files (`file_warnings`); a longer scan goes on at the next."""


def file_warnings(src: Source, run, deadline=None):
    """Warnings about the event files of `run` that TensorBoard cannot give: records whose checksum
    fails (TensorBoard's data server keeps them, possibly with a wrong value, where tfprobe's readers
    stop the file) and two tfprobe files of one kind written at the same time (two processes writing
    one run). Local log dirs only (`src.logdir`); empty otherwise."""
    from tfprobe.logs import events

    directory = _run_directory(src, run)
    if directory is None:
        return []
    out, spans = [], {}
    deadline = time.monotonic() + SCAN_TIME_BUDGET if deadline is None else deadline
    try:
        names = sorted(n for n in os.listdir(directory) if events.is_event_file(n))
    except OSError:
        return []
    for name in names:
        path = os.path.join(directory, name)
        scan = _scan_file(path, deadline) if os.path.isfile(path) else None
        if scan is None:
            continue
        if scan.problem:
            out.append(f"{scan.problem}. TensorBoard's data server may still show the values of such a record, "
                       "possibly wrong; tfprobe's readers do not")
        if _TFPROBE_SUFFIX in name and scan.span:
            spans[(run, name[name.rindex(_TFPROBE_SUFFIX):], path)] = list(scan.span)
    from tfprobe.logs.reader import concurrent_writers

    for _, group, a, b in concurrent_writers(spans)[:1]:
        out.append(f"run {run!r}: {os.path.basename(a)} and {os.path.basename(b)} ({group}) were written at the same "
                   "time: two processes are writing this run at once? Their points are mixed")
    return out


def runs(src: Source):
    """The runs that hold tfprobe statistics, plus the statistic names the client can offer.

    Each run lists `warnings` about its files (`file_warnings`: failing checksums, concurrent writers).
    """
    all_series = list_series(src)
    deadline = time.monotonic() + SCAN_TIME_BUDGET
    return {
        "runs": [
            {
                "name": run,
                "layers": len(series),
                "max_step": max(s["max_step"] for s in series.values()),
                "warnings": file_warnings(src, run, deadline),
            }
            for run, series in sorted(all_series.items())
        ],
        "stats": list(metadata.STATS),
        "stat_descriptions": dict(metadata.STAT_DESCRIPTIONS),
        "default_stat": DEFAULT_STAT,
        "categories": [
            {"name": c, "description": layout.CATEGORY_DESCRIPTIONS[c], "classes": list(layout.CATEGORY_CLASSES.get(c, ()))}
            for c in layout.CATEGORIES
        ],
    }


def layers(src: Source, run_names):
    """Per requested run: its series (layers) in model order with their metadata."""
    run_names = _check_runs(run_names)
    found = list_series(src, run_names)
    missing = [r for r in run_names if r not in found]
    if missing:
        raise errors.NotFoundError(f"run {missing[0]!r} has no tfprobe data")
    return {
        "runs": {
            run: {
                "max_step": max(s["max_step"] for s in found[run].values()),
                "layers": list(found[run].values()),
            }
            for run in run_names
        }
    }


# ---------------------------------------------------------------- overview


def bin_series(steps, values, col_steps, agg="last"):
    """Values of one series in the columns that end at `col_steps` (sorted).

    Column j holds the points with `col_steps[j-1] < step <= col_steps[j]`.
    Returns `(values, present)`: `present[j]` is False for a column without
    points (its value is NaN); a present NaN is a logged NaN.

    >>> bin_series([1, 2, 3, 4], [1.0, 5.0, 2.0, 3.0], [2, 4])[0].tolist()
    [5.0, 3.0]
    >>> bin_series([1, 2, 3, 4], [1.0, 5.0, 2.0, 3.0], [2, 4, 6], "min")[0].tolist()
    [1.0, 2.0, nan]
    """
    steps = np.asarray(steps)
    values = np.asarray(values, dtype=np.float64)
    col_steps = np.asarray(col_steps)
    out = np.full(len(col_steps), np.nan)
    if not len(steps):
        return out, np.zeros(len(col_steps), dtype=bool)
    end = np.searchsorted(steps, col_steps, side="right")  # exclusive end index per column
    start = np.concatenate([[0], end[:-1]])
    present = end > start
    if agg == "last":
        out[present] = values[end[present] - 1]
        return out, present
    fn = np.fmax if agg == "max" else np.fmin
    idx = start[present]
    if len(idx):
        # reduceat over the present columns' starts: column i runs to the next start,
        # since the empty columns in between hold no points
        reduced = fn.reduceat(values, idx)
        last = np.flatnonzero(present)[-1]  # the last one must stop at its own end
        reduced[-1] = fn.reduce(values[start[last] : end[last]])
        out[present] = reduced
    return out, present


def column_steps(all_steps, columns):
    """At most `columns` column end steps: the logged steps themselves, or the last step of
    each of `columns` runs of consecutive logged steps of (nearly) equal length.

    >>> column_steps([10, 20, 30], 5).tolist(), column_steps(list(range(1, 11)), 3).tolist()
    ([10, 20, 30], [4, 7, 10])
    """
    all_steps = np.unique(np.asarray(all_steps, dtype=np.int64))
    n = len(all_steps)
    if n <= columns:
        return all_steps
    # Column j (1-based) ends at window ceil(j * n / columns), in integers: the float
    # form overshoots for some (n, columns), e.g. ceil(50 * (111 / 50)) == 112.
    # Since n > columns, the ends strictly increase (no empty column) and the last is n.
    ends = (np.arange(1, columns + 1, dtype=np.int64) * n + columns - 1) // columns - 1
    return all_steps[ends]


def _compile_filter(filter):
    """A `search(name)` function for `filter`: RE2 syntax, case-insensitive, linear time in the name."""
    import re2  # google-re2 (a dependency): Python's `re` backtracks, so a filter could stall the server
    if len(filter) > MAX_FILTER_LENGTH:
        raise errors.InvalidArgumentError(
            f"`filter` must be at most {MAX_FILTER_LENGTH} characters. Received: a filter of {len(filter)}"
        )
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False
    options.max_mem = 8 << 20  # bounds the compiled program (and the time to build it)
    try:
        regex = re2.compile(filter, options)
    except re2.error as e:
        message = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise errors.InvalidArgumentError(
            f"`filter` must be a valid regular expression in RE2 syntax ({message}). Received: filter={filter!r}"
        ) from None
    return lambda name: regex.search(name) is not None


def layer_selector(filter=None, hide=()):
    """A predicate on series info: its name matches `filter` and its category is not in `hide`.

    `filter` is a regular expression in RE2 syntax (Python's without backreferences and lookaround),
    searched case-insensitively in the name (TensorBoard's tag filter), at most `MAX_FILTER_LENGTH`
    characters; RE2 matches in time linear in the name, so no filter can stall the server, and a request
    that still spends more than `FILTER_TIME_BUDGET` s matching answers 400. `hide` lists
    `layout.CATEGORIES` to leave out. Bad values are a 400 naming them.

    >>> keep = layer_selector("^conv", ["normalization"])
    >>> keep({"name": "conv1_bn", "category": "normalization"}), keep({"name": "Conv1", "category": "convolution"})
    (False, True)
    >>> layer_selector("conv(")
    Traceback (most recent call last):
    ...
    tensorboard.errors.InvalidArgumentError: Invalid argument: `filter` must be a valid regular expression in RE2 syntax (missing ): conv(). Received: filter='conv('
    """
    search = _compile_filter(filter) if filter else None
    hide = set(hide or ())
    unknown = sorted(hide - set(layout.CATEGORIES))
    if unknown:
        raise errors.InvalidArgumentError(
            f"`hide` must name layer categories ({', '.join(layout.CATEGORIES)}). Received: hide={unknown[0]!r:.100}"
        )
    deadline = time.monotonic() + FILTER_TIME_BUDGET

    def keep(info):
        if info["category"] in hide:
            return False
        if search is None:
            return True
        if time.monotonic() > deadline:
            raise errors.InvalidArgumentError(
                f"`filter` took more than {FILTER_TIME_BUDGET} s to match the layer names; simplify it. "
                f"Received: filter={filter!r:.100}"
            )
        return search(info["name"])

    return keep


def overview(src: Source, run, stat=DEFAULT_STAT, columns=DEFAULT_COLUMNS, agg="last", filter=None, hide=()):
    """The heat-map data of one run for one statistic: rows = layers in model order, columns = steps.

    `filter` and `hide` (see `layer_selector`) leave layers out before anything is read.
    """
    require("run", run)
    check_stat(stat)
    columns = _check_int("columns", columns, 1, MAX_COLUMNS, DEFAULT_COLUMNS)
    if agg not in AGGREGATIONS:
        raise errors.InvalidArgumentError(f"`agg` must be one of {', '.join(AGGREGATIONS)}. Received: agg={agg!r}")
    keep = layer_selector(filter, hide)
    series = _run_series(src, run)
    recorded = [n for n, info in series.items() if stat in info["stats"]]
    if not recorded:
        raise errors.NotFoundError(f"statistic {stat!r} was not recorded in run {run!r}")
    names = [n for n in recorded if keep(series[n])]
    tags = {metadata.tag_for(n, stat): n for n in names}
    data = {}
    if tags:
        data = src.read_scalars([run], list(tags), columns if agg == "last" else columns * OVERSAMPLE).get(run, {})
    arrays = {}
    for tag, points in data.items():
        n = tags.get(tag)
        if n is None:
            continue
        steps = np.fromiter((p.step for p in points), dtype=np.int64, count=len(points))
        values = np.fromiter((p.value for p in points), dtype=np.float64, count=len(points))
        arrays[n] = (steps, values)
    all_steps = np.concatenate([s for s, _ in arrays.values()]) if arrays else np.zeros(0, np.int64)
    cols = column_steps(all_steps, columns)
    matrix = np.full((len(names), len(cols)), np.nan)
    present = np.zeros((len(names), len(cols)), dtype=bool)
    for i, n in enumerate(names):
        if n in arrays:
            matrix[i], present[i] = bin_series(*arrays[n], cols, agg)
    finite = matrix[np.isfinite(matrix)]
    rows = []
    for i, n in enumerate(names):
        info = series[n]
        rows.append(
            {
                "name": n,
                "class": info["class"],
                "kind": info["kind"],
                "category": info["category"],
                "block": info["block"],
                # null: no logged window in the column; "NaN"/"Infinity": a logged non-finite value
                "values": [v if p else None for v, p in zip(_json_list(matrix[i], 3), present[i].tolist())],
            }
        )
    return {
        "run": run,
        "stat": stat,
        "agg": agg,
        "steps": cols.tolist(),
        "windows_read": int(len(np.unique(all_steps))),
        "total_layers": len(recorded),  # before `filter`/`hide`
        "min": _finite_or_none(finite.min()) if finite.size else None,
        "max": _finite_or_none(finite.max()) if finite.size else None,
        "layers": rows,
    }


# ---------------------------------------------------------------- layer detail


def _find_layer(found, run_names, layer):
    present = [r for r in run_names if layer in found.get(r, {})]
    if not present:
        where = run_names[0] if len(run_names) == 1 else ", ".join(map(repr, run_names))
        raise errors.NotFoundError(f"layer {layer!r} not found in run {where!r}" if len(run_names) == 1
                                   else f"layer {layer!r} not found in runs {where}")
    return present


def _pairs(points):
    steps = [p.step for p in points]
    return [list(sv) for sv in zip(steps, _json_list([p.value for p in points]))]


def scalars(src: Source, run_names, layer, stats, points=DEFAULT_POINTS):
    """Time series of `stats` of one layer in each run: `{stat: {run: [[step, value], ...]}}`."""
    run_names = _check_runs(run_names)
    require("layer", layer)
    if not stats:
        raise errors.InvalidArgumentError(f"`stat` is required: pass one or more stat=NAME. Received: stat={stats!r}")
    stats = [check_stat(s) for s in dict.fromkeys(stats)]
    points = _check_int("points", points, 1, MAX_POINTS, DEFAULT_POINTS)
    found = list_series(src, run_names)
    for r in run_names:
        if r not in found:
            raise errors.NotFoundError(f"run {r!r} has no tfprobe data")
    present = _find_layer(found, run_names, layer)
    data = src.read_scalars(present, [metadata.tag_for(layer, s) for s in stats], points)
    out = {s: {} for s in stats}
    for run in present:
        for s in stats:
            pts = data.get(run, {}).get(metadata.tag_for(layer, s))
            if pts is not None:
                out[s][run] = _pairs(pts)
    return {
        "layer": layer,
        "runs": present,
        "info": {r: found[r][layer] for r in present},
        "series": out,
    }


def histogram(src: Source, run, layer, columns=DEFAULT_POINTS, quantity=None):
    """The histogram of one layer over time: counts per bucket (rows) and logged step (columns).

    `quantity`: `"activation"` (default) for the layer's values, `"gradient"` for its activation gradient.
    """
    require("run", run)
    require("layer", layer)
    columns = _check_int("columns", columns, 1, MAX_COLUMNS, DEFAULT_POINTS)
    quantity = quantity or "activation"
    if quantity not in metadata.HISTOGRAM_QUANTITIES:
        raise errors.InvalidArgumentError(
            f"`quantity` must be one of {', '.join(metadata.HISTOGRAM_QUANTITIES)}. Received: quantity={quantity!r}"
        )
    plugin_name, suffix = metadata.HISTOGRAM_QUANTITIES[quantity]
    series = _run_series(src, run)
    _find_layer({run: series}, [run], layer)
    tag = metadata.tag_for(layer, suffix)
    data = _provider_read(src, "histogram", run, tag, lambda: src.provider.read_tensors(
        src.ctx,
        experiment_id=src.experiment_id,
        plugin_name=plugin_name,
        downsample=columns,
        run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag]),
    ), {})
    points = _checked_points(run, tag, data.get(run, {}).get(tag, []), lambda p: _decode.check_array(
        p.numpy, "iu", lambda dims: dims == [metadata.NUM_BUCKETS], f"a tfprobe histogram (shape [{metadata.NUM_BUCKETS}])"
    ))
    edges = metadata.histogram_buckets()
    if not points:
        return {"run": run, "layer": layer, "quantity": quantity, "steps": [], "buckets": [], "counts": []}
    counts = np.stack([np.asarray(p.numpy, dtype=np.int64) for p in points])
    used = np.flatnonzero(counts.sum(axis=0))
    lo, hi = (int(used[0]), int(used[-1]) + 1) if len(used) else (metadata.HIST_ZERO_BUCKET, metadata.HIST_ZERO_BUCKET + 1)
    return {
        "run": run,
        "layer": layer,
        "quantity": quantity,
        "steps": [int(p.step) for p in points],
        "first_bucket": lo,
        "buckets": [list(e) for e in edges[lo:hi]],
        "counts": counts[:, lo:hi].tolist(),
    }


# ---------------------------------------------------------------- pooling


def pooling(src: Source, run, points=DEFAULT_POINTS):
    """Every pooling series of one run with its pooling statistics over time."""
    require("run", run)
    points = _check_int("points", points, 1, MAX_POINTS, DEFAULT_POINTS)
    series = _run_series(src, run)
    pools = [info for info in series.values() if info["kind"] == "pooling"]
    tags = [metadata.tag_for(p["name"], s) for p in pools for s in metadata.POOLING_STATS if s in p["stats"]]
    data = {}
    if tags:
        data = src.read_scalars([run], tags, points).get(run, {})
    out = []
    for p in pools:
        stats = {}
        for s in metadata.POOLING_STATS:
            pts = data.get(metadata.tag_for(p["name"], s))
            if pts is not None:
                stats[s] = _pairs(pts)
        out.append({"name": p["name"], "class": p["class"], "order": p["order"], "shape": p["shape"], "stats": stats})
    return {"run": run, "stats": list(metadata.POOLING_STATS), "layers": out}


def funnel(src: Source, run, step=None):
    """Per layer in model order at one step: elements per example, and at pooling layers the
    share of mass and energy that survives; `cumulative_mass` is the product of the mass retentions
    along the model graph (`inputs`), the best-kept path where branches merge.

    `step` picks the newest logged window at or before it; default the newest window.
    """
    require("run", run)
    step = _check_int("step", step, -(2**62), 2**62, None)
    series = _run_series(src, run)
    pools = [n for n, info in series.items() if info["kind"] == "pooling"]
    wanted = ("size_ratio", "mass_retention", "energy_retention")
    tags = [metadata.tag_for(n, s) for n in pools for s in wanted]
    data = {}
    if tags:
        data = src.read_scalars([run], tags, ALL_POINTS).get(run, {})
    steps = sorted({p.step for pts in data.values() for p in pts})
    if step is None:
        chosen = steps[-1] if steps else None
    else:
        before = [s for s in steps if s <= step]
        chosen = before[-1] if before else None
        if steps and chosen is None:
            raise errors.NotFoundError(f"no window of run {run!r} at or before step {step}")

    def value_at(name, stat):
        pts = data.get(metadata.tag_for(name, stat))
        if not pts or chosen is None:
            return None
        idx = np.searchsorted([p.step for p in pts], chosen, side="right") - 1
        return float(round_sig([pts[idx].value])[0]) if idx >= 0 else None

    rows, cumulative, previous = [], {}, 1.0
    for n, info in series.items():
        row = {"name": n, "class": info["class"], "kind": info["kind"], "elements": info["elements"]}
        inputs = [i for i in info.get("inputs") or () if i in cumulative]
        # Along the model graph: the best-kept path into this layer (the previous layer in model order for
        # logs written before `inputs` was recorded).
        kept = max((cumulative[i] for i in inputs), default=1.0) if info.get("inputs") is not None else previous
        if info["kind"] == "pooling":
            for s in wanted:
                row[s] = value_at(n, s)
            if row["mass_retention"] is not None and math.isfinite(row["mass_retention"]):
                kept *= row["mass_retention"]
        cumulative[n] = previous = kept
        row["cumulative_mass"] = float(round_sig([kept])[0])
        rows.append(row)
    return {"run": run, "step": chosen, "steps": steps, "layers": rows}


# ---------------------------------------------------------------- health


def read_frames(src: Source, run_names, stats, points=HEALTH_POINTS):
    """Data-provider reads as the `tfprobe.read_logdir` long frame and the `read_layers` frame.

    At most `points` points per series (the provider's uniform sample with the newest point). The frames
    are built by the reader's own builders (`reader.long_frame`, `reader.layers_frame`).
    """
    from tfprobe.logs import reader  # pandas: imported on first use, not when TensorBoard starts

    found = list_series(src, run_names)
    rows, layer_rows = [], []
    tags = set()
    for run, series in found.items():
        for name, info in series.items():
            layer_rows.append(
                {
                    "run": run,
                    "layer": name,
                    "order": info["order"],
                    "layer_path": info["layer"],
                    "class": info["class"],
                    "kind": info["kind"],
                    "shape": info["shape"],
                    "bounds": info["bounds"],
                    "inputs": info.get("inputs"),
                }
            )
            tags.update(metadata.tag_for(name, s) for s in stats if s in info["stats"])
    data = {}
    if found and tags:
        data = src.read_scalars(list(found), sorted(tags), points)
    for run, by_tag in data.items():
        for tag, pts in by_tag.items():
            parsed = metadata.parse_tag(tag)
            if parsed is None:
                continue
            name, stat = parsed
            rows.extend((run, p.step, p.wall_time, name, stat, p.value) for p in pts)
    frame = reader.long_frame(*(list(column) for column in zip(*rows))) if rows else reader.long_frame(*[[]] * 6)
    return frame, reader.layers_frame(layer_rows)


def _diagnosed(src: Source, run_names, points, thresholds):
    """`(runs, points, findings, layers frame)`: the checked arguments of `health`/`incidents` and
    `tfprobe.diagnose` over the runs' statistics read through the data provider."""
    from tfprobe import findings as diagnose_module

    run_names = _check_runs(run_names)
    points = _check_int("points", points, 1, MAX_POINTS, HEALTH_POINTS)
    found = list_series(src, run_names)
    for r in run_names:
        if r not in found:
            raise errors.NotFoundError(f"run {r!r} has no tfprobe data")
    try:
        diagnose_module.check_thresholds(**thresholds)
    except (TypeError, ValueError) as e:
        raise errors.InvalidArgumentError(str(e)) from None
    frame, layer_frame = read_frames(src, run_names, diagnose_module.REQUIRED_STATS, points)
    return run_names, points, diagnose_module.diagnose(frame, layer_frame, **thresholds), layer_frame


def health(src: Source, run_names, points=HEALTH_POINTS, **thresholds):
    """`tfprobe.diagnose` over the selected runs, read through the data provider; most severe first."""
    from tfprobe import findings as diagnose_module

    deadline = time.monotonic() + SCAN_TIME_BUDGET
    run_names, points, findings, _ = _diagnosed(src, run_names, points, thresholds)
    records = []
    for rec in findings.to_dict("records"):
        records.append({k: (int(v) if k.endswith("_step") and v is not None else v) for k, v in rec.items()})
    return {
        "runs": run_names,
        "file_warnings": {run: w for run in run_names if (w := file_warnings(src, run, deadline))},
        "points": points,
        "thresholds": diagnose_module.thresholds(**thresholds),
        "findings": records,
    }


# ---------------------------------------------------------------- looks (images of `tfprobe.looks.LooksAnalysis`)

IMAGES_PLUGIN = "images"  # TensorBoard's own plugin names: the looks images and scalars are standard summaries
SCALARS_PLUGIN = "scalars"


def _looks_tags(listing, run, kinds):
    """`{tag: (example, kind, layer)}` of the looks tags of `run` in a data-provider listing."""
    found = {}
    for tag in (listing or {}).get(run, {}):
        parsed = metadata.parse_looks_tag(tag)
        if parsed is not None and parsed[1] in kinds:
            found[tag] = parsed
    return found


def looks(src: Source, run):
    """What `LooksAnalysis` wrote in `run`: its images (tag, example, kind, layer, steps) and predictions.

    A run with tfprobe statistics but no looks images gives empty lists; a run with neither, a 404.
    """
    require("run", run)
    rtf = provider.RunTagFilter(runs=[run])
    listing = src.provider.list_blob_sequences(
        src.ctx, experiment_id=src.experiment_id, plugin_name=IMAGES_PLUGIN, run_tag_filter=rtf
    )
    tags = _looks_tags(listing, run, metadata.LOOKS_IMAGE_KINDS)
    if not tags and run not in list_series(src, [run]):
        raise errors.NotFoundError(f"run {run!r} has no tfprobe data and no looks images")
    blobs = {tag: _looks_blobs(src, run, tag) for tag in tags}
    images = [{"tag": tag, "example": e, "kind": k, "layer": layer, "steps": sorted(d.step for d in blobs[tag])}
              for tag, (e, k, layer) in sorted(tags.items())]
    scalar_listing = src.provider.list_scalars(
        src.ctx, experiment_id=src.experiment_id, plugin_name=SCALARS_PLUGIN, run_tag_filter=rtf
    )
    scalar_tags = _looks_tags(scalar_listing, run, metadata.LOOKS_SCALAR_KINDS)
    points = _provider_read(src, "looks scalar", run, "looks/", lambda: src.provider.read_scalars(
        src.ctx, experiment_id=src.experiment_id, plugin_name=SCALARS_PLUGIN, downsample=ALL_POINTS,
        run_tag_filter=provider.RunTagFilter(runs=[run], tags=list(scalar_tags)),
    ), {}).get(run, {}) if scalar_tags else {}
    predictions = {}
    for tag, (example, kind, _) in scalar_tags.items():
        series = predictions.setdefault(str(example), {})
        series[kind] = [[d.step, _finite_or_none(d.value)] for d in _newest_points(points.get(tag, []))]
    return {
        "run": run,
        "examples": sorted({img["example"] for img in images}),
        "gradcam_layers": sorted({img["layer"] for img in images if img["kind"] == "gradcam"}),
        "feature_layers": sorted({img["layer"] for img in images if img["kind"] == "features"}),
        "steps": sorted({s for img in images if img["kind"] != "input" for s in img["steps"]}),
        "images": images,
        "predictions": predictions,
    }


def looks_image(src: Source, run, tag, step=None):
    """The PNG bytes of looks image `tag` of `run` at `step` (the newest at or before it; default the newest)."""
    require("run", run)
    require("tag", tag)
    parsed = metadata.parse_looks_tag(tag)
    if parsed is None or parsed[1] not in metadata.LOOKS_IMAGE_KINDS:
        raise errors.InvalidArgumentError(f"`tag` must be a looks image tag (looks/example_<i>/<kind>[/<layer>]). "
                                          f"Received: tag={tag!r}")
    step = _check_int("step", step, 0, 2**62, None)
    blobs = _looks_blobs(src, run, tag)
    if not blobs:
        raise errors.NotFoundError(f"run {run!r} has no image {tag!r}")
    chosen = [d for d in blobs if step is None or d.step <= step] or (blobs[:1] if parsed[1] == "input" else [])
    if not chosen:
        raise errors.NotFoundError(f"image {tag!r} of run {run!r} has no value at or before step {step}")
    datum = max(chosen, key=lambda d: d.step)  # `_newest_points`: one point per step, the newest write
    return src.provider.read_blob(src.ctx, blob_key=datum.values[2].blob_key)  # [width, height, png]


def _check_image(datum):
    if len(datum.values) != 3:
        raise metadata.FormatError(f"a looks image must be [width, height, png]; received {len(datum.values)} values")


def _looks_blobs(src: Source, run, tag):
    """The images of looks tag `tag` of `run`: `[width, height, png]` blob sequences only (others are logged
    once and skipped), the newest write of each step (a run restarted into its log dir)."""
    blobs = _provider_read(src, "looks image", run, tag, lambda: src.provider.read_blob_sequences(
        src.ctx, experiment_id=src.experiment_id, plugin_name=IMAGES_PLUGIN, downsample=ALL_POINTS,
        run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag]),
    ), {}).get(run, {}).get(tag) or []
    return _checked_points(run, tag, blobs, _check_image)


# ---------------------------------------------------------------- representations


def _representation_measures(src: Source, run):
    """`(layers in model order, {stat: {layer: [[step, value], ...]}})` of one run's reference steps."""
    rtf = provider.RunTagFilter(runs=[run])
    listing = src.provider.list_scalars(
        src.ctx, experiment_id=src.experiment_id, plugin_name=metadata.REPR_PLUGIN_NAME, run_tag_filter=rtf
    ).get(run, {})
    order, tags = {}, []
    for tag, ts in listing.items():
        parsed = metadata.parse_tag(tag)
        if parsed is None or parsed[1] not in metadata.REPRESENTATION_STATS:
            continue
        tags.append(tag)
        try:
            order.setdefault(parsed[0], metadata.parse_content(ts.plugin_content, parsed[0], run).order)
        except metadata.FormatError:
            order.setdefault(parsed[0], -1)
    layers = sorted(order, key=lambda name: (order[name], name))
    measures = {s: {} for s in metadata.REPRESENTATION_STATS}
    for tag in tags:  # one read per tag: a tag whose values TensorBoard cannot decode leaves only itself out
        pts = _provider_read(src, "representation measure", run, tag, lambda tag=tag: src.provider.read_scalars(
            src.ctx, experiment_id=src.experiment_id, plugin_name=metadata.REPR_PLUGIN_NAME,
            downsample=ALL_POINTS, run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag]),
        ), {}).get(run, {}).get(tag)
        if pts is not None:
            name, stat = metadata.parse_tag(tag)
            measures[stat][name] = _pairs(_newest_points(pts))
    return layers, measures


def _cka_matrices(src: Source, run):
    """`{layers, steps, matrices}`: the CKA matrix of every reference step whose shape matches its layer list."""
    rtf = provider.RunTagFilter(runs=[run], tags=[metadata.CKA_TAG])
    listing = src.provider.list_tensors(
        src.ctx, experiment_id=src.experiment_id, plugin_name=metadata.CKA_PLUGIN_NAME, run_tag_filter=rtf
    ).get(run, {})
    if metadata.CKA_TAG not in listing:
        return {"layers": [], "steps": [], "matrices": []}
    names = metadata.cka_layers(listing[metadata.CKA_TAG].plugin_content) or []
    points = _provider_read(src, "CKA matrix", run, metadata.CKA_TAG, lambda: src.provider.read_tensors(
        src.ctx, experiment_id=src.experiment_id, plugin_name=metadata.CKA_PLUGIN_NAME,
        downsample=ALL_POINTS, run_tag_filter=rtf,
    ), {}).get(run, {}).get(metadata.CKA_TAG, [])
    shape = [len(names), len(names)]
    points = _checked_points(run, metadata.CKA_TAG, points, lambda p: _decode.check_array(
        p.numpy, "fiu", lambda dims: dims == shape, f"a CKA matrix of {len(names)} layers (shape {shape})"))
    steps = [int(p.step) for p in points]
    matrices = [_json_list(np.asarray(p.numpy, dtype=np.float64), 3) for p in points]
    return {"layers": names, "steps": steps, "matrices": matrices}


def representations(src: Source, run_names):
    """Per run: the representation measures of every reference step and the CKA matrices (empty without them)."""
    run_names = _check_runs(run_names)
    found = list_series(src, run_names)
    out = []
    for run in run_names:
        if run not in found:
            raise errors.NotFoundError(f"run {run!r} has no tfprobe data")
        layers, measures = _representation_measures(src, run)
        steps = sorted({s for by_layer in measures.values() for pts in by_layer.values() for s, _ in pts})
        elements = {name: found[run].get(name, {}).get("elements") for name in layers}  # as in the depth funnel
        out.append({"run": run, "layers": layers, "elements": elements, "steps": steps, "measures": measures,
                    "cka": _cka_matrices(src, run)})
    return {"runs": out, "stats": list(metadata.REPRESENTATION_STATS),
            "descriptions": metadata.REPRESENTATION_DESCRIPTIONS}


# ---------------------------------------------------------------- incidents (`tfprobe.incidents`)


def _plain(value):
    """A JSON-safe Python value: NumPy scalars and arrays unwrapped, NaN and pandas' NA as None."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if value is None or (not isinstance(value, str) and value != value):  # pandas.NA compares to NA
        return None
    try:
        import pandas as pd

        if value is pd.NA:
            return None
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    return value


def incidents(src: Source, run_names, points=HEALTH_POINTS, **thresholds):
    """`tfprobe.incidents` over the selected runs (the findings of `health`, grouped by root cause), and
    the findings with the incident each belongs to (`incident`, 0 for none)."""
    from tfprobe.findings.incidents import group

    run_names, points, findings, layer_frame = _diagnosed(src, run_names, points, thresholds)
    table, members = group(findings, layer_frame)
    return {
        "runs": run_names,
        "points": points,
        "incidents": [{k: _plain(v) for k, v in rec.items()} for rec in table.to_dict("records")],
        "findings": [{k: _plain(v) for k, v in rec.items()} for rec in members.to_dict("records")],
    }
