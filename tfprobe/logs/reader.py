"""Reads tfprobe event files into pandas DataFrames, without TensorFlow.

Every point on disk is returned: nothing is downsampled.

>>> import tempfile
>>> from tfprobe.logs.writer import WindowWriter
>>> d = tempfile.mkdtemp()
>>> w = WindowWriter(d + "/run1")
>>> info = {"series": "relu", "layer": "relu", "class": "ReLU", "order": 0}
>>> _ = w.write_window(5, {"relu": info}, {"relu": {"mean": 0.25, "std": 1.0}}, {})
>>> w.close()
>>> read_logdir(d, pivot=True)[["run", "step", "layer", "mean", "std"]].values.tolist()
[['run1', 5, 'relu', 0.25, 1.0]]
"""

from __future__ import annotations

import functools
import sys
import warnings

import numpy as np
import pandas as pd
from google.protobuf.message import DecodeError
from tensorboard.compat.proto import summary_pb2

from tfprobe import metadata
from tfprobe.logs import _decode, _fs
from tfprobe.logs.events import event_files, iter_records, parse_event

_LONG_COLUMNS = ["run", "step", "wall_time", "layer", "stat", "value"]
_HIST_COLUMNS = ["run", "step", "wall_time", "layer", "quantity", "bucket", "left", "right", "count"]
_LAYER_COLUMNS = [
    "run",
    "layer",
    "order",
    "layer_path",
    "class",
    "kind",
    "output",
    "call",
    "shape",
    "bounds",
    "sample_size",
    "inputs",
]
_IGNORED, _SCALAR, _HIST, _GRAD_HIST = 0, 1, 2, 3
_HIST_KINDS = {_HIST: "activation", _GRAD_HIST: "gradient"}  # key kind -> `quantity` (metadata.HISTOGRAM_QUANTITIES)
HISTOGRAM_QUANTITIES = (*metadata.HISTOGRAM_QUANTITIES, "all")
"""The values of `read_histograms(quantity=...)`."""
_PROGRESS_DELAY = 2.0  # seconds before a progress bar appears


_SCALAR_PLUGINS = (metadata.PLUGIN_NAME, metadata.REPR_PLUGIN_NAME)
_TFPROBE_PLUGINS = _SCALAR_PLUGINS + (metadata.HIST_PLUGIN_NAME, metadata.GRAD_HIST_PLUGIN_NAME)
_CKA_COLUMNS = ["run", "step", "wall_time", "layer_a", "layer_b", "cka"]


class _Keys:
    """The tags met under a logdir, classified by their first value, and the series metadata.

    A *key* is one `(run, tag)`; every point refers to its key by index.
    """

    def __init__(self):
        self.keys = []  # (run, series, stat, kind)
        self.tag_ids = {}  # run -> {tag bytes: key index}
        self.infos = {}  # (run, series) -> SeriesInfo
        self.stand_ins = set()  # (run, series) described only by a reference measure so far
        self.bad = set()  # (run, series) skipped: not tfprobe's format
        self.warned = set()
        self.reference_keys = set()  # key indices of the reference measures (`tfprobe_repr`)

    def _warn_once(self, key, message):
        if key not in self.warned:
            self.warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    def _mark_bad(self, run, series, error):
        if (run, series) not in self.bad:
            self.bad.add((run, series))
            where = f"run {run!r}, series {series!r}: "
            msg = str(error) if str(error).startswith(("run ", "series ")) else where + str(error)
            self._warn_once(("bad", run, series), f"{msg}; this series is skipped")

    def _register(self, run, tag: bytes, plugin: str, content: bytes):
        """Classifies a tag by its first value (its metadata), as TensorBoard does."""
        ids = self.tag_ids.setdefault(run, {})
        kind, series, stat = _IGNORED, None, None
        if plugin in _TFPROBE_PLUGINS:
            name = tag.decode("utf-8")
            parsed = metadata.parse_tag(name)
            if parsed is None:
                self._warn_once(
                    ("tag", run, name),
                    f"run {run!r}: tag {name!r} uses plugin name {plugin!r} but is not a tfprobe tag "
                    f"({metadata.TAG_PREFIX}<series>/<stat>); it is skipped",
                )
            else:
                series, stat = parsed
                kind = (
                    _SCALAR
                    if plugin in _SCALAR_PLUGINS
                    else _GRAD_HIST
                    if plugin == metadata.GRAD_HIST_PLUGIN_NAME
                    else _HIST
                )
                # The training windows describe a series fully; a reference measure's content stands in until then.
                stand_in = (run, series) in self.stand_ins
                if content and ((run, series) not in self.infos or (stand_in and plugin != metadata.REPR_PLUGIN_NAME)):
                    try:
                        self.infos[(run, series)] = metadata.parse_content(content, series, run)
                    except metadata.FormatError as e:
                        self._mark_bad(run, series, e)
                    if plugin == metadata.REPR_PLUGIN_NAME:
                        self.stand_ins.add((run, series))
                    else:
                        self.stand_ins.discard((run, series))
        ids[tag] = len(self.keys)
        if plugin == metadata.REPR_PLUGIN_NAME:
            self.reference_keys.add(len(self.keys))
        self.keys.append((run, series, stat, kind))
        return ids[tag]


class _Block:
    """The scalar points of the records that hold the same keys (a fast layout's skeleton, or one
    general record's tags): one row of values per record, stacked every `CHUNK` records, so a point
    costs its value only (float32 as written, float64 if a record holds wider values)."""

    CHUNK = 256
    __slots__ = ("ids", "recs", "rows", "chunks", "_recs", "_matrix")

    def __init__(self, ids):
        self.ids = ids
        self.recs, self.rows, self.chunks, self._recs, self._matrix = [], [], [], None, None

    def add(self, rec, values):
        self.recs.append(rec)
        self.rows.append(values)
        self._recs = None
        if len(self.rows) == self.CHUNK:
            self._flush()

    def _flush(self):
        if self.rows:
            self.chunks.append(np.stack(self.rows))
            self.rows = []

    def records(self):
        if self._recs is None:
            self._recs = np.array(self.recs, np.int64)
        return self._recs

    def column(self, j):
        """The values of the block's `j`-th key, one per record, in write order (a view: do not write)."""
        return self.matrix()[j]

    def matrix(self):
        """`[key, record]` values, one contiguous row per key: built from the chunks on first use, which are
        released as they are copied (the block's memory stays about one copy of its values)."""
        self._flush()
        if self.chunks:
            parts = ([self._matrix.T] if self._matrix is not None else []) + self.chunks
            matrix = np.empty((len(self.ids), sum(len(p) for p in parts)), np.result_type(*parts))
            at = 0
            for p in parts:
                matrix[:, at : at + len(p)] = p.T
                at += len(p)
            self.chunks, self._matrix = [], matrix
        if self._matrix is None:
            return np.zeros((len(self.ids), 0), np.float32)
        return self._matrix


class _Collector(_Keys):
    """`_Keys` plus every tfprobe point: scalars by record (step and wall time once per record, values
    in `_Block`s), histograms as they come."""

    def __init__(self):
        super().__init__()
        self.rec_steps, self.rec_walls = [], []  # per record holding scalar points
        self.blocks = {}  # key ids bytes -> _Block
        self.hists = []  # (key id, step, wall time, counts)
        self._last = (None, None, None, None)  # (run, skeleton, block, float offsets) of the last fast record
        self._keymap = None
        self.path = None  # the file being read
        self.spans = {}  # (run, group, path) -> [first, last] wall time of the records with tfprobe points

    def _span(self, run, group, wall_time):
        span = self.spans.setdefault((run, group, self.path), [wall_time, wall_time])
        span[0], span[1] = min(span[0], wall_time), max(span[1], wall_time)

    def _add_scalars(self, block, step, wall_time, values):
        self.rec_steps.append(step)
        self.rec_walls.append(wall_time)
        block.add(len(self.rec_steps) - 1, values)
        self._keymap = None

    def _block(self, ids):
        key = ids.tobytes()
        block = self.blocks.get(key)
        if block is None:
            block = self.blocks[key] = _Block(ids)
        return block

    def pieces(self, k):
        """`[(block, column)]` holding key `k`'s scalar points."""
        if self._keymap is None:
            self._keymap = {}
            for block in self.blocks.values():
                for j, kid in enumerate(block.ids.tolist()):
                    self._keymap.setdefault(kid, []).append((block, j))
        return self._keymap.get(k, ())

    def key_points(self, k):
        """`(record indices, values)` of key `k`'s scalar points in write order."""
        pieces = self.pieces(k)
        if not pieces:
            return np.zeros(0, np.int64), np.zeros(0)
        if len(pieces) == 1:
            block, j = pieces[0]
            return block.records(), block.column(j)
        recs = np.concatenate([b.records() for b, _ in pieces])
        values = np.concatenate([b.column(j) for b, j in pieces])
        order = np.argsort(recs, kind="stable")  # a key twice in one record: in write order
        return recs[order], values[order]

    def add_record(self, run, path, offset, data):
        """Adds one record's points; False if the record is not an `Event` (the file stops there)."""
        self.path = path
        head = _decode.split_event(data)
        if head is not None and self._add_fast(run, data, *head):
            return True
        event = parse_event(path, offset, data)
        if event is None:
            return False
        if event.HasField("summary"):
            self._add_values(run, event.step, event.wall_time, event.summary.value)
        return True

    def _add_fast(self, run, data, wall_time, step, pos):
        """Reads the fast-layout scalars at the start of the Summary, the values after them in general."""
        last_run, last_skeleton, block, at = self._last
        # most records repeat the layout of the one before: compared with it, not split again
        values = _decode.same_layout(data, pos, last_skeleton, at) if last_run == run else None
        if values is not None:
            end, found = pos + len(last_skeleton), None
        else:
            end = _decode.fast_end(data, pos)
            found = _decode.fast_scalars(data, pos, end) if end > pos else None
            if found is None:
                return False
        rest = None
        if end < len(data):
            try:
                rest = summary_pb2.Summary.FromString(data[end:])
            except DecodeError:
                return False
        if found is not None:
            skeleton, values, tags, at = found
            if last_run != run or last_skeleton != skeleton:
                tags = tags()
                known = self.tag_ids.get(run, {})
                if any(known.get(t) is not None and self.keys[known[t]][3] != _SCALAR for t in tags):
                    return False
                try:
                    ids = np.array(
                        [known[t] if t in known else self._register(run, t, metadata.PLUGIN_NAME, b"") for t in tags],
                        np.int64,
                    )
                except UnicodeDecodeError:
                    return False
                block = self._block(ids)
            self._last = (run, skeleton, block, at)
        self._add_scalars(block, step, wall_time, values)
        self._span(run, "window", wall_time)
        if rest is not None:
            self._add_values(run, step, wall_time, rest.value)
        return True

    def _add_values(self, run, step, wall_time, summary_values):
        ids, values = [], []
        known = self.tag_ids.setdefault(run, {})
        for value in summary_values:
            tag = value.tag.encode("utf-8")
            kid = known.get(tag)
            if kid is None:
                pd_ = value.metadata.plugin_data
                kid = self._register(run, tag, pd_.plugin_name, pd_.content)
            _, series, _, kind = self.keys[kid]
            if kind == _IGNORED or (run, series) in self.bad:
                continue
            try:
                if kind == _SCALAR:
                    values.append(_decode.scalar_value(value.tensor))
                    ids.append(kid)
                else:
                    self.hists.append((kid, step, wall_time, _decode.histogram_counts(value.tensor)))
            except (ValueError, TypeError, OverflowError, MemoryError) as e:  # FormatError is a ValueError
                self._mark_bad(run, series, f"file {self.path}, tag {value.tag!r}, step {step}: {e}")
            else:
                self._span(run, "reference" if kid in self.reference_keys else "window", wall_time)
        if ids:
            values = np.array(values, np.float64)
            with np.errstate(over="ignore"):
                narrow = values.astype(np.float32)
            if np.array_equal(narrow, values, equal_nan=True):  # as written (tfprobe writes float32)
                values = narrow
            self._add_scalars(self._block(np.array(ids, np.int64)), step, wall_time, values)


def _progress(paths):
    """A tqdm bar over the bytes of `paths` that shows after `_PROGRESS_DELAY` s, on a terminal only."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    total = sum(_fs.size(p) for _, p in paths)
    return tqdm(total=total, unit="B", unit_scale=True, delay=_PROGRESS_DELAY, desc="tfprobe: reading", leave=False)


def concurrent_writers(spans):
    """`[(run, group, path_a, path_b)]`: two files of one run holding the same kind of tfprobe data
    (`group`) whose wall times interleave, i.e. written at the same time by two processes.

    `spans` maps `(run, group, path)` to the `[first, last]` wall time of the file's tfprobe records.
    A run restarted into its log dir writes a new file after the old one stops: no overlap.

    >>> concurrent_writers({("r", "window", "a"): [1.0, 5.0], ("r", "window", "b"): [6.0, 9.0]})
    []
    >>> concurrent_writers({("r", "window", "a"): [1.0, 5.0], ("r", "window", "b"): [2.0, 9.0]})
    [('r', 'window', 'a', 'b')]
    """
    by_group = {}
    for (run, group, path), (first, last) in spans.items():
        by_group.setdefault((run, group), []).append((first, last, path))
    found = []
    for (run, group), files in by_group.items():
        files.sort()
        end, end_path = files[0][1], files[0][2]
        for first, last, path in files[1:]:
            if first < end:
                found.append((run, group, end_path, path))
                break
            end, end_path = last, path
    return found


def warn_concurrent_writers(spans, stacklevel=3):
    """One `RuntimeWarning` per run that `concurrent_writers` finds; returns the runs."""
    runs = {}
    for run, group, a, b in concurrent_writers(spans):
        runs.setdefault(run, (group, a, b))
    for run, (group, a, b) in runs.items():
        warnings.warn(
            f"run {run!r}: two event files hold {group} data written at the same time ({a} and {b}): two "
            "processes are writing this run at once? Their points are mixed; give each process its own log_dir",
            RuntimeWarning,
            stacklevel=stacklevel,
        )
    return list(runs)


def _collect(logdir, progress=True):
    runs = event_files(logdir)
    paths = [(run, p) for run, ps in runs.items() for p in ps]
    bar = _progress(paths) if progress else None
    col = _Collector()
    try:
        for run, path in paths:
            for offset, data in iter_records(path):
                if not col.add_record(run, path, offset, data):
                    break
                if bar is not None:
                    bar.update(len(data) + 16)
    finally:
        if bar is not None:
            bar.close()
    warn_concurrent_writers(col.spans, stacklevel=4)
    return col


class LogData:
    """Everything tfprobe wrote under a logdir, from one scan of its event files (see `read`).

    Frames are built on first use: `scalars` (the long frame of `read_logdir`),
    `wide()` (its pivot), `histograms` (`read_histograms`: activation
    histograms; `histogram_frame(quantity)` for the others) and `layers`
    (`read_layers`).
    """

    def __init__(self, collector: _Collector):
        self._col = collector
        self._hist_frames = {}  # quantity -> frame
        self._blocks = {}  # id(block) -> its kept steps, wall times and mask (`_block_points`)
        keys = collector.keys
        self._info = [self._series_info(run, series) for run, series, _, _ in keys]
        self._good = np.array(
            [kind != _IGNORED and (run, series) not in collector.bad for run, series, _, kind in keys], bool
        )
        rank = sorted(
            range(len(keys)),
            key=lambda i: (
                keys[i][0],
                self._info[i].order if self._info[i] else -1,
                keys[i][1] or "",
                keys[i][2] or "",
            ),
        )
        self._rank = np.empty(len(keys), np.int64)
        self._rank[rank] = np.arange(len(keys))

    def _series_info(self, run, series):
        if series is None:
            return None
        return self._col.infos.get((run, series)) or metadata.SeriesInfo(series=series, layer=series)

    def _select(self, ids, steps, kinds):
        """Indices of the points to keep, in frame order: good series of a kind in `kinds`, the newest
        write of each step, sorted by key rank (a kept key's steps increase in write order)."""
        keys = self._col.keys
        ok = np.flatnonzero(self._good[ids] & (np.array([k[3] in kinds for k in keys] or [False], bool)[ids]))
        rank = self._rank.astype(np.uint16 if len(keys) < 2**16 else np.int64)  # uint16: a radix sort
        ok = ok[np.argsort(rank[ids[ok]], kind="stable")]
        keep, dropped = metadata.newest_write_wins(ids[ok], steps[ok], grouped=True)
        for run in dict.fromkeys(keys[k][0] for k in dropped):
            self._warn_restart(run)
        return ok[keep]

    def _warn_restart(self, run):
        self._col._warn_once(
            ("restart", run),
            f"run {run!r}: some series were written again at steps at or below steps already logged "
            "(a run restarted into the same log_dir?). The newest write wins, as in TensorBoard: the "
            "older points at those steps and after them are dropped",
        )

    def _scalar_keys(self, stats=None, exclude=()):
        """The good scalar keys (of statistics `stats`, all if None, none in `exclude`), in frame order."""
        keys = self._col.keys
        return [
            int(k)
            for k in np.argsort(self._rank, kind="stable")
            if self._good[k]
            and keys[k][3] == _SCALAR
            and (stats is None or keys[k][2] in stats)
            and keys[k][2] not in exclude
        ]

    def _kept(self, k):
        """`(steps, walls, values)` of key `k`'s kept points (newest write wins), steps increasing."""
        pieces = self._col.pieces(k)
        if len(pieces) == 1:  # the usual case: the records of one block, whose steps its keys share
            block, j = pieces[0]
            steps, walls, keep = self._block_points(block)
            if keep is not None:
                self._warn_restart(self._col.keys[k][0])
                return steps, walls, block.column(j)[keep]
            return steps, walls, block.column(j)
        recs, values = self._col.key_points(k)
        steps = self._rec_steps[recs]
        keep, dropped = metadata.newest_write_wins(np.zeros(len(recs), np.int8), steps, grouped=True)
        if len(dropped):
            self._warn_restart(self._col.keys[k][0])
            recs, steps, values = recs[keep], steps[keep], values[keep]
        return steps, self._rec_walls[recs], values

    def _block_points(self, block):
        """`(steps, walls, keep)` of the kept points of any one key of `block` (`keep`: the mask of its records
        that are kept, None if all are), computed once per block."""
        cached = self._blocks.get(id(block))
        if cached is None:
            recs = block.records()
            steps = self._rec_steps[recs]
            keep, dropped = metadata.newest_write_wins(np.zeros(len(recs), np.int8), steps, grouped=True)
            if len(dropped):
                recs, steps = recs[keep], steps[keep]
            cached = self._blocks[id(block)] = (steps, self._rec_walls[recs], keep if len(dropped) else None)
        return cached

    @functools.cached_property
    def _rec_steps(self):
        return np.array(self._col.rec_steps, np.int64)

    @functools.cached_property
    def _rec_walls(self):
        return np.array(self._col.rec_walls, np.float64)

    def _points(self, keys, last_only=False):
        """`(key ids, steps, wall times, float64 values)` of the kept points of `keys`, in that order
        (with `last_only`, each key's newest point only)."""
        parts = []
        for k in keys:
            steps, walls, values = self._kept(k)
            if last_only:
                steps, walls, values = steps[-1:], walls[-1:], values[-1:]
            parts.append((np.full(len(steps), k, np.int64), steps, walls, values.astype(np.float64)))
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
        return tuple(np.concatenate(c) for c in zip(*parts))

    def has_scalars(self) -> bool:
        """True if any statistic was read (without building a frame)."""
        return any(b.recs and self._good[b.ids].any() for b in self._col.blocks.values())

    @functools.cached_property
    def _scalar_points(self):
        """`(key ids, steps, wall times, values)` of the kept scalar points, in frame order."""
        return self._points(self._scalar_keys())

    def scalar_frame(self, stats=None, exclude=(), last_only=False) -> pd.DataFrame:
        """The long frame of `scalars` restricted to the statistics `stats` (all if None) not in
        `exclude`; with `last_only`, one row per run, layer and statistic: its newest point. Built
        from those points only (a report of a large run reads its latest window without the rest)."""
        ids, steps, walls, values = self._points(self._scalar_keys(stats, exclude), last_only)
        keys = self._col.keys
        return long_frame(
            _key_column(keys, 0, ids), steps, walls, _key_column(keys, 1, ids), _key_column(keys, 2, ids), values
        )

    def run_steps(self, exclude=()) -> dict:
        """`{run: distinct steps}` of the scalar points of statistics not in `exclude`."""
        out, last = {}, {}
        for k in self._scalar_keys(exclude=exclude):
            run = self._col.keys[k][0]
            steps = self._kept(k)[0]
            if run in last and np.array_equal(last[run], steps):
                continue  # a layer's statistics share their steps
            last[run] = steps
            out[run] = np.union1d(out[run], steps) if run in out else steps
        return out

    def stat_frame(self, stats, nonfinite=()) -> pd.DataFrame:
        """`pivot_table(index=["run", "layer", "step"], columns="stat", values="value", aggfunc="last")` of the
        long frame's `stats`, plus a `nonfinite_<stat>` column for each of `nonfinite` (1.0 where the
        value is NaN or Inf, 0.0 where it is finite, NaN where there is none), without the long frame:
        rows sorted by run, layer and step; columns with no value, and rows with none, left out; one
        float64 column per statistic filled layer by layer (tfprobe.findings reads it)."""
        keys = self._col.keys
        by_series = {}
        for k in self._scalar_keys(stats):
            by_series.setdefault(keys[k][:2], []).append(k)
        order = sorted(by_series)  # run, layer: the pivot's order
        # pass 1: the rows (steps) of each series and the columns with a value; pass 2 fills them
        rows, present = {}, set()
        for series in order:
            steps = []
            for k in by_series[series]:
                k_steps, _, values = self._kept(k)
                steps.append(k_steps)
                stat = keys[k][2]
                if len(values) and stat in nonfinite:
                    present.add(f"nonfinite_{stat}")
                if stat not in present and not np.isnan(values).all():
                    present.add(stat)
            same = all(len(s) == len(steps[0]) and np.array_equal(s, steps[0]) for s in steps)
            rows[series] = steps[0] if same else functools.reduce(np.union1d, steps)
        names = sorted(present)
        column = {name: j for j, name in enumerate(names)}
        total = sum(len(r) for r in rows.values())
        matrix = np.full((len(names), total), np.nan)  # the frame's float block, one row per column
        start = 0
        for series in order:
            at = rows[series]
            for k in by_series[series]:
                stat = keys[k][2]
                if stat not in column and f"nonfinite_{stat}" not in column:
                    continue
                steps, _, values = self._kept(k)
                where = start + (np.arange(len(at)) if len(steps) == len(at) else np.searchsorted(at, steps))
                if stat in column:
                    matrix[column[stat], where] = values
                if f"nonfinite_{stat}" in column:
                    matrix[column[f"nonfinite_{stat}"], where] = ~np.isfinite(values)
            start += len(at)
        series_of_row = np.repeat(np.arange(len(order)), [len(rows[s]) for s in order]).astype(np.int64)
        steps = np.concatenate([rows[s] for s in order]) if order else np.zeros(0, np.int64)
        filled = np.zeros(total, bool)
        for j in range(len(names)):
            filled |= ~np.isnan(matrix[j])
        if not filled.all():
            matrix, series_of_row, steps = matrix[:, filled], series_of_row[filled], steps[filled]
        frame = pd.DataFrame(matrix.T, columns=names, copy=False)
        frame.insert(0, "run", pd.Series([s[0] for s in order] or [""]).array.take(series_of_row))
        frame.insert(1, "layer", pd.Series([s[1] for s in order] or [""]).array.take(series_of_row))
        frame.insert(2, "step", steps.astype(np.int64))
        return frame

    @functools.cached_property
    def scalars(self) -> pd.DataFrame:
        """Long frame `run, step, wall_time, layer, stat, value` (see `read_logdir`)."""
        ids, steps, walls, values = self._scalar_points
        keys = self._col.keys
        frame = long_frame(
            _key_column(keys, 0, ids), steps, walls, _key_column(keys, 1, ids), _key_column(keys, 2, ids), values
        )
        return with_layers(frame, self.layers)

    def wide(self) -> pd.DataFrame:
        """The pivot of `scalars`: one row per run, layer and step, one column per statistic
        (tfprobe's in `metadata.STATS` order, then others by name); `wall_time` is the row's latest."""
        return with_layers(_wide_frame(self._col.keys, self._rank, *self._scalar_points), self.layers)

    @property
    def histograms(self) -> pd.DataFrame:
        """The activation histograms: `histogram_frame("activation")` (see `read_histograms`)."""
        return self.histogram_frame("activation")

    def histogram_frame(self, quantity="activation") -> pd.DataFrame:
        """Long frame `run, step, wall_time, layer, quantity, bucket, left, right, count` (see `read_histograms`)."""
        if quantity not in self._hist_frames:
            self._hist_frames[quantity] = self._histograms(_histogram_kinds(quantity))
        return self._hist_frames[quantity]

    def _histograms(self, kinds):
        hists = self._col.hists
        ids = np.array([h[0] for h in hists], np.int64)
        steps = np.array([h[1] for h in hists], np.int64)
        walls = np.array([h[2] for h in hists], np.float64)
        counts = np.stack([h[3] for h in hists]) if hists else np.zeros((0, metadata.NUM_BUCKETS), np.int64)
        idx = self._select(ids, steps, kinds)
        return _histogram_frame(self._col.keys, ids[idx], steps[idx], walls[idx], counts[idx])

    @functools.cached_property
    def layers(self) -> pd.DataFrame:
        """One row per series and run, in model order (see `read_layers`)."""
        seen = {}
        for i in np.argsort(self._rank, kind="stable"):
            run, series, _, _ = self._col.keys[i]
            if self._good[i] and (run, series) not in seen:
                seen[(run, series)] = self._info[i]
        return layers_frame([_layer_row(run, info) for (run, _), info in seen.items()])


LAYERS_ATTR = "tfprobe_layers"
"""The key of `DataFrame.attrs` under which the frames of `read_logdir` carry the layer graph (the columns of
`read_layers`, as lists), so that `tfprobe.diagnose(read_logdir(d))` sees the same graph as with `read_layers`."""


def with_layers(frame: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """`frame` with the layers frame in `frame.attrs[LAYERS_ATTR]` (plain lists: pandas compares and copies
    attrs as it goes, which a DataFrame there would make fail or slow)."""
    frame.attrs[LAYERS_ATTR] = _LayersAttr({c: [_plain(v) for v in layers[c]] for c in layers.columns})
    return frame


class _LayersAttr(dict):
    """The layers frame as `{column: values}` in `DataFrame.attrs`: JSON-ready (pandas writes attrs into
    Parquet metadata), compared as a dict, and never deep-copied (pandas deep-copies attrs on every
    operation: with a 600-layer graph that cost milliseconds per `groupby` group). Treat it as read-only."""

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self


def layers_of(frame: pd.DataFrame):
    """The layers frame a frame of `read_logdir` carries (see `with_layers`), or None."""
    data = getattr(frame, "attrs", {}).get(LAYERS_ATTR)
    if not isinstance(data, dict):
        return None
    try:
        return pd.DataFrame(data, columns=list(data) or _LAYER_COLUMNS)
    except (TypeError, ValueError):
        return None


def _plain(value):
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def long_frame(run, step, wall_time, layer, stat, value) -> pd.DataFrame:
    """The long frame of `read_logdir` from its columns (built here for the reader, the CLI and the
    plugin's `/health`, which reads through TensorBoard's data provider)."""
    frame = pd.DataFrame(
        {"run": run, "step": step, "wall_time": wall_time, "layer": layer, "stat": stat, "value": value},
        columns=_LONG_COLUMNS,
    )
    return frame.astype({"step": "int64", "wall_time": "float64", "value": "float64"})


def layers_frame(rows) -> pd.DataFrame:
    """The frame of `read_layers` from one dict per series (its columns; a missing one is None)."""
    return pd.DataFrame([{c: row.get(c) for c in _LAYER_COLUMNS} for row in rows], columns=_LAYER_COLUMNS)


def _key_column(keys, field, ids):
    """Column `field` of `keys[ids]`, taken from the few distinct names: pandas' default string
    array, without a Python object per row."""
    return pd.Series([k[field] for k in keys] or [""]).array.take(ids)


def _wide_frame(keys, rank, ids, steps, walls, values):
    """The wide frame of the scalar points `ids, steps, walls, values` of `keys` (ranked by `rank`)."""
    series_ids = {}
    sid = np.array([series_ids.setdefault(k[:2], len(series_ids)) for k in keys] or [0], np.int64)
    srank = np.full(len(series_ids) or 1, len(keys), np.int64)
    np.minimum.at(srank, sid[: len(keys)], rank)  # a series' keys are contiguous in rank
    present = {keys[k][2] for k in np.unique(ids)}
    stats = [s for s in metadata.STATS if s in present] + sorted(present - set(metadata.STATS))
    column = np.array([stats.index(k[2]) if k[2] in present else -1 for k in keys] or [0], np.int64)
    order = np.lexsort((steps, srank[sid[ids]]))  # rows: series in model order, then step
    ids, steps, walls, values = ids[order], steps[order], walls[order], values[order]
    new_row = np.ones(len(ids), bool)
    new_row[1:] = (sid[ids][1:] != sid[ids][:-1]) | (steps[1:] != steps[:-1])
    row = np.cumsum(new_row) - 1
    starts = np.flatnonzero(new_row)
    matrix = np.full((len(starts), len(stats)), np.nan)
    matrix[row, column[ids]] = values
    first = ids[starts]
    frame = {
        "run": _key_column(keys, 0, first),
        "step": steps[starts],
        "wall_time": np.maximum.reduceat(walls, starts) if len(starts) else walls,
        "layer": _key_column(keys, 1, first),
    }
    frame.update({stat: matrix[:, j] for j, stat in enumerate(stats)})
    return pd.DataFrame(frame, columns=["run", "step", "wall_time", "layer", *stats])


def _histogram_kinds(quantity):
    """The key kinds of `read_histograms(quantity=...)`; a clear error for another value."""
    if quantity == "all":
        return tuple(_HIST_KINDS)
    kinds = tuple(k for k, q in _HIST_KINDS.items() if q == quantity)
    if not kinds:
        raise ValueError(
            f"`quantity` must be one of {', '.join(map(repr, HISTOGRAM_QUANTITIES))}. Received: quantity={quantity!r}"
        )
    return kinds


def _histogram_frame(keys, ids, steps, walls, counts):
    """One row per non-empty bucket of the histograms `counts` (one row of counts per point, in frame order)."""
    point, bucket = np.nonzero(counts)
    edges = np.array(metadata.histogram_buckets(), np.float64).reshape(-1, 2)
    quantity = pd.Series([_HIST_KINDS.get(k[3], "") for k in keys] or [""]).array.take(ids[point])
    return pd.DataFrame(
        {
            "run": _key_column(keys, 0, ids[point]),
            "step": steps[point],
            "wall_time": walls[point],
            "layer": _key_column(keys, 1, ids[point]),
            "quantity": quantity,
            "bucket": bucket.astype(np.int64),
            "left": edges[bucket, 0],
            "right": edges[bucket, 1],
            "count": counts[point, bucket],
        },
        columns=_HIST_COLUMNS,
    )


def _listed(value):
    return list(value) if value is not None else None


def _layer_row(run, info: metadata.SeriesInfo):
    return {
        "run": run,
        "layer": info.series,
        "order": info.order,
        "layer_path": info.layer,
        "class": info.class_name,
        "kind": info.kind,
        "output": info.output,
        "call": info.call,
        "shape": _listed(info.shape),
        "bounds": _listed(info.bounds),
        "sample_size": info.sample_size,
        "inputs": _listed(info.inputs),
    }


def read(logdir, *, progress: bool = True) -> LogData:
    """Reads every tfprobe value under `logdir` in one scan; frames are built on use.

    Use it when you need more than one frame (e.g. a report needs the
    statistics and the layers): `data = read(d)`, then `data.scalars`,
    `data.wide()`, `data.histograms`, `data.layers`.

    Damaged input never stops the read: a file stops at its first corrupted
    record, a series that is not in tfprobe's format is skipped, both with a
    `RuntimeWarning`. A series written again at steps at or below ones already
    logged keeps its newest write (see `metadata.newest_write_wins`).

    Args:
      logdir: a directory; runs are its sub-directories holding event files.
      progress: show a progress bar on stderr (if it is a terminal) when the
        read takes more than 2 s. Defaults to `True`.
    """
    return LogData(_collect(logdir, progress))


def read_logdir(logdir, *, pivot: bool = False, progress: bool = True) -> pd.DataFrame:
    """Reads every tfprobe statistic under `logdir` (each sub-directory is a run).

    Args:
      logdir: a directory; runs are its sub-directories holding event files
        (`"."` for files directly in it), as in TensorBoard.
      pivot: if True, returns a wide frame with one column per statistic.
        Defaults to `False`.
      progress: show a progress bar on long reads (see `read`). Defaults to `True`.

    Returns:
      Long format: columns `run, step, wall_time, layer, stat, value`, one row
      per point, sorted by run, layer (model order), stat and step. `layer` is
      the series name (see `tfprobe.metadata`). The measures of the
      reference-set analysis (`metadata.REPRESENTATION_STATS`) are rows too,
      at their reference steps. The frame carries the layer graph of
      `read_layers` in `df.attrs["tfprobe_layers"]`: `tfprobe.diagnose(df)`
      uses it (and finds what it finds with `read_layers`).
    """
    data = read(logdir, progress=progress)
    return data.wide() if pivot else data.scalars


def read_histograms(logdir, *, quantity: str = "activation", progress: bool = True) -> pd.DataFrame:
    """Reads the tfprobe histograms under `logdir`.

    Every argument after `logdir` is keyword-only (`read_histograms(d, "gradient")` is a `TypeError`).

    Args:
      logdir: a directory; runs are its sub-directories holding event files.
      progress: show a progress bar on long reads (see `read`). Defaults to `True`.
      quantity: which histograms: `"activation"` (the layers' outputs, the
        default), `"gradient"` (their activation gradients `dL/da`, unscaled,
        from `LayerProbe(gradients=True)`) or `"all"`.

    Returns:
      Long format: columns `run, step, wall_time, layer, quantity, bucket,
      left, right, count`, one row per non-empty bucket per logged window
      and quantity (`quantity` is `"activation"` or `"gradient"`).
      `left`/`right` are the bucket's value range
      (`metadata.histogram_buckets()`), the same for both quantities.
    """
    _histogram_kinds(quantity)  # a bad value fails before the read
    return read(logdir, progress=progress).histogram_frame(quantity)


def read_layers(logdir, *, progress: bool = True) -> pd.DataFrame:
    """One row per recorded series and run, in model order.

    Columns: `run, layer, order, layer_path, class, kind, output, call, shape,
    bounds, sample_size, inputs` (see `tfprobe.metadata`; `inputs` is None for
    logs written before it existed).
    """
    return read(logdir, progress=progress).layers


def read_cka(logdir) -> pd.DataFrame:
    """Reads the layers x layers linear CKA matrices of every reference step (`LayerProbe(reference_data=...)`).

    A matrix that is not in tfprobe's format (another dtype or shape than its layer list says, content
    of the wrong length) is skipped with one `RuntimeWarning` per run naming the file, tag and step. As
    in `read_logdir`, the newest write of a step wins when a run restarted into its log dir.

    Returns:
      Long format: columns `run, step, wall_time, layer_a, layer_b, cka`, one
      row per pair of recorded series (both orders and the diagonal) per
      reference step, in model order.
    """
    points = []  # (run, step, wall time, names, matrix) in write order
    spans = {}
    warned = set()
    for run, paths in event_files(logdir).items():
        for path in paths:
            for offset, data in iter_records(path):
                event = parse_event(path, offset, data)
                if event is None:
                    break
                for value in event.summary.value if event.HasField("summary") else ():
                    if value.metadata.plugin_data.plugin_name != metadata.CKA_PLUGIN_NAME:
                        continue
                    try:
                        names = metadata.cka_layers(value.metadata.plugin_data.content)
                        if names is None:
                            raise metadata.FormatError("its content does not name the layers of the matrix")
                        matrix = _decode.cka_matrix(value.tensor, len(names))
                    except (ValueError, TypeError, OverflowError, MemoryError) as e:
                        if run not in warned:
                            warned.add(run)
                            warnings.warn(
                                f"run {run!r}, file {path}, tag {value.tag!r}, step {event.step}: {e}; "
                                "this matrix (and any other such one of the run) is skipped",
                                RuntimeWarning,
                                stacklevel=2,
                            )
                        continue
                    points.append((run, event.step, event.wall_time, names, matrix))
                    span = spans.setdefault((run, "CKA", path), [event.wall_time, event.wall_time])
                    span[0], span[1] = min(span[0], event.wall_time), max(span[1], event.wall_time)
    warn_concurrent_writers(spans)
    run_ids = {run: i for i, run in enumerate(dict.fromkeys(p[0] for p in points))}
    keep, dropped = metadata.newest_write_wins(
        np.array([run_ids[p[0]] for p in points], np.int64), np.array([p[1] for p in points], np.int64)
    )
    for run in [r for r, i in run_ids.items() if i in set(dropped.tolist())]:
        warnings.warn(
            f"run {run!r}: CKA matrices were written again at steps at or below steps already logged "
            "(a run restarted into the same log_dir?). The newest write wins, as in TensorBoard: the "
            "older matrices at those steps and after them are dropped",
            RuntimeWarning,
            stacklevel=2,
        )
    rows = []
    for (run, step, wall, names, matrix), k in zip(points, keep):
        if k:
            for i, a in enumerate(names):
                rows += [(run, step, wall, a, b, float(matrix[i, j])) for j, b in enumerate(names)]
    frame = pd.DataFrame(rows, columns=_CKA_COLUMNS)
    frame["step"] = frame["step"].astype("int64")
    return frame.sort_values(["run", "step"], kind="stable").reset_index(drop=True)
