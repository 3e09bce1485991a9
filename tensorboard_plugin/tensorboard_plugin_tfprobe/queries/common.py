"""What every route shares: the argument checks, the data-provider reads (`Source`), the series listing
and run lookup, and the once-per-series warnings about values TensorBoard cannot decode."""

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
HEALTH_POINTS = 200
MAX_INT_DIGITS = 20
"""The longest integer argument accepted (characters): `int()` of thousands of digits is slow or refused."""
READ_BUDGET = 500_000
"""The most points one data-provider read of a route asks for (`read_arrays`)."""
_DECODE_ERRORS = (ValueError, TypeError, IndexError, KeyError, OverflowError, MemoryError)
"""What TensorBoard's data provider raises on a value it cannot decode (a foreign record)."""

logger = logging.getLogger(__package__)  # "tensorboard_plugin_tfprobe.queries"


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


def read_arrays(src: Source, run, tags, points, budget=None):
    """`(tag, steps, values)` of each of `tags` of `run` with points (at most `points` each: the provider's
    uniform sample with the newest point), in the order of `tags`, as int64 and float64 arrays.

    TensorBoard's client decodes every point into a Python object of a few hundred bytes: the tags are read
    `budget // points` at a time (at least one; `budget` defaults to `READ_BUDGET` points), and each tag's
    objects are freed once they are arrays, so a route over a large run holds arrays, not objects.
    """
    per_read = max(1, (READ_BUDGET if budget is None else budget) // max(1, points))
    for i in range(0, len(tags), per_read):
        chunk = list(tags[i : i + per_read])
        data = src.read_scalars([run], chunk, points).get(run, {})
        for tag in chunk:
            pts = data.pop(tag, None)
            if pts is not None:
                yield (
                    tag,
                    np.fromiter((p.step for p in pts), np.int64, len(pts)),
                    np.fromiter((p.value for p in pts), np.float64, len(pts)),
                )


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
            _warn_series(
                run,
                tag,
                f"run {run!r}, tag {tag!r}{where}: TensorBoard cannot decode a {what} value "
                f"({type(e).__name__}: {str(e)[:200]})",
                "this tag is left out",
            )
        return default


def _locate_bad_value(src, run, tag, budget=1.0):
    """`", file F, step S: why"` of the first value of `tag` in `run`'s event files that tfprobe's typed
    decoding layer refuses (local log dirs only, at most `budget` s of reading); `""` if not found."""
    import warnings

    from tfprobe.logs import events

    directory = _run_directory(src, run)
    if directory is None:
        return ""
    decoders = {
        metadata.HIST_PLUGIN_NAME: _decode.histogram_counts,
        metadata.GRAD_HIST_PLUGIN_NAME: _decode.histogram_counts,
        metadata.PLUGIN_NAME: _decode.scalar_value,
        metadata.REPR_PLUGIN_NAME: _decode.scalar_value,
    }
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
        quantity: (
            src.provider.list_tensors(src.ctx, experiment_id=src.experiment_id, plugin_name=plugin, run_tag_filter=rtf)
            or {},
            suffix,
        )
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


def _pairs(points):
    steps = [p.step for p in points]
    return [list(sv) for sv in zip(steps, _json_list([p.value for p in points]))]
