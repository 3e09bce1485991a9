"""The plugin's own scan of a run's event files: checksum failures and concurrent writers (`file_warnings`)."""

from __future__ import annotations

import os
import time
from typing import NamedTuple

from tensorboard_plugin_tfprobe.queries.common import Source, _run_directory
from tfprobe import metadata
from tfprobe.logs import _decode

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
            out.append(
                f"{scan.problem}. TensorBoard's data server may still show the values of such a record, "
                "possibly wrong; tfprobe's readers do not"
            )
        if _TFPROBE_SUFFIX in name and scan.span:
            spans[(run, name[name.rindex(_TFPROBE_SUFFIX) :], path)] = list(scan.span)
    from tfprobe.logs.reader import concurrent_writers

    for _, group, a, b in concurrent_writers(spans)[:1]:
        out.append(
            f"run {run!r}: {os.path.basename(a)} and {os.path.basename(b)} ({group}) were written at the same "
            "time: two processes are writing this run at once? Their points are mixed"
        )
    return out
