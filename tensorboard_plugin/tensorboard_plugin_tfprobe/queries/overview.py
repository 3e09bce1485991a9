"""The Overview view: the heat map of one statistic, layers by steps (`overview`), and its layer filter."""

from __future__ import annotations

import time

import numpy as np
from tensorboard import errors

from tensorboard_plugin_tfprobe import layout
from tensorboard_plugin_tfprobe.queries.common import (
    DEFAULT_COLUMNS,
    DEFAULT_STAT,
    MAX_COLUMNS,
    OVERSAMPLE,
    Source,
    _check_int,
    _finite_or_none,
    _json_list,
    _run_series,
    check_stat,
    read_arrays,
    require,
)
from tfprobe import metadata

AGGREGATIONS = ("last", "max", "min")
MAX_FILTER_LENGTH = 256
"""The longest `filter` accepted (characters)."""
FILTER_TIME_BUDGET = 0.5
"""Seconds one request may spend matching `filter` against layer names before it answers 400."""


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
    points = columns if agg == "last" else columns * OVERSAMPLE
    arrays = {tags[tag]: (steps, values) for tag, steps, values in read_arrays(src, run, list(tags), points)}
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
