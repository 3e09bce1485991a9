"""TFRecord framing of TensorBoard event files, without TensorFlow.

A record is `uint64 length | uint32 masked_crc(length) | data | uint32 masked_crc(data)`.

>>> import tempfile, os
>>> from tensorboard.compat.proto import event_pb2
>>> d = tempfile.mkdtemp()
>>> w = EventFileWriter(d)
>>> _ = w.write(event_pb2.Event(step=3, wall_time=1.0)); w.close()
>>> [e.step for e in read_events(w.path)][1:]
[3]
"""

from __future__ import annotations

import os
import socket
import struct
import time
import warnings

from google.protobuf.message import DecodeError
from tensorboard.compat.proto import event_pb2

from tfprobe import metadata
from tfprobe.logs import _fs

try:  # a C implementation; TensorBoard's own is pure Python (about half the time of writing a window)
    import google_crc32c

    def masked_crc32c(data: bytes) -> int:
        crc = google_crc32c.value(data)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

except ImportError:  # pragma: no cover - same values, slower
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

_FILE_VERSION = "brain.Event:2"


def _frame(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


class EventFileWriter:
    """Appends `Event` protos to a new `events.out.tfevents.*` file in `logdir`.

    The file is created (and the directory checked) on construction, so an
    unwritable `logdir` fails at once with an `OSError` that names it.
    """

    _counter = 0  # zero-padded in the name: files of one process and second sort in write order (9 before 10)

    def __init__(self, logdir: str, suffix: str = metadata.WINDOWS_SUFFIX):
        _fs.makedirs(logdir)
        EventFileWriter._counter += 1
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{EventFileWriter._counter:06d}{suffix}"
        self.path = _fs.join(logdir, name)
        self._file = _fs.open_file(self.path, "ab")
        self.write(event_pb2.Event(wall_time=time.time(), file_version=_FILE_VERSION))
        self.flush()

    def write(self, event) -> int:
        """Writes one event; returns the number of bytes written."""
        data = _frame(event.SerializeToString())
        self._file.write(data)
        return len(data)

    def flush(self):
        self._file.flush()

    def close(self):
        if self._file is not None:  # GFile has no `closed`
            self._file.close()
            self._file = None


def check_logdir(logdir) -> str:
    """Returns `logdir` as a string path, or raises a clear error if it is not a directory.

    >>> check_logdir(None)
    Traceback (most recent call last):
    TypeError: `logdir` must be a path to a directory (str or os.PathLike). Received: logdir=None
    """
    if isinstance(logdir, bytes) or not isinstance(logdir, (str, os.PathLike)):
        raise TypeError(f"`logdir` must be a path to a directory (str or os.PathLike). Received: logdir={logdir!r}")
    path = _fs.check_url(os.fspath(logdir))
    try:
        exists, isdir = _fs.exists(path), _fs.isdir(path)
    except _fs.read_errors(path) as e:  # a remote store that cannot be reached (no network, no credentials)
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OSError(f"`logdir` cannot be opened: {message}. Received: logdir={path!r}") from None
    if not exists:
        raise FileNotFoundError(f"`logdir` must be an existing directory. Received: logdir={path!r} (no such path)")
    if not isdir:
        raise NotADirectoryError(f"`logdir` must be a directory. Received: logdir={path!r} (a file)")
    return path


def _bad_record(path, offset, reason):
    warnings.warn(
        f"{path}: bad event record at byte offset {offset} ({reason}); "
        "the rest of this file is skipped, the records before it are kept",
        RuntimeWarning,
        stacklevel=3,
    )


def iter_records(path: str, start: int = 0):
    """Yields `(offset, payload)` of every record of a TFRecord file, checking both CRCs.

    `start` is the byte offset of a record to begin at (a file read before up to there).

    A truncated last record (a file still being written) is ignored silently.
    At the first corrupted record (bad CRC of the length or of the data) the
    rest of the file is skipped with one `RuntimeWarning` naming the file and
    the record's byte offset, as TensorBoard stops at a `DataLossError`. A
    file that cannot be opened (removed, no permission) is skipped with one.
    """
    try:
        size = _fs.size(path)
        f = _fs.open_file(path, "rb")
    except _fs.read_errors(path) as e:
        return _bad_record(path, 0, f"the file cannot be read: {e}")
    with f:
        offset = start
        if start:
            f.seek(start)
        while True:
            header = f.read(12)
            if len(header) < 12:
                return
            length_bytes, length_crc = header[:8], struct.unpack("<I", header[8:])[0]
            if masked_crc32c(length_bytes) != length_crc:
                return _bad_record(path, offset, "the CRC of its length does not match")
            (length,) = struct.unpack("<Q", length_bytes)
            if length > size - offset - 16:  # checked length, missing bytes: still being written
                return
            data = f.read(length)
            footer = f.read(4)
            if len(data) < length or len(footer) < 4:
                return
            if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
                return _bad_record(path, offset, "the CRC of its data does not match")
            yield offset, data
            offset += 16 + length


def read_records(path: str):
    """Yields the payload of every good record of a TFRecord file (see `iter_records`)."""
    for _, data in iter_records(path):
        yield data


def parse_event(path: str, offset: int, data: bytes):
    """The `Event` in one record's payload, or None (with a warning) if it does not parse."""
    try:
        return event_pb2.Event.FromString(data)
    except DecodeError as e:
        _bad_record(path, offset, f"not an Event proto: {e}")
        return None


def read_events(path: str):
    """Yields the `Event` protos of one event file, up to its first bad record."""
    for offset, data in iter_records(path):
        event = parse_event(path, offset, data)
        if event is None:
            return
        yield event


def is_event_file(name: str) -> bool:
    """TensorBoard's rule: a file whose name contains `tfevents`."""
    return "tfevents" in name


def event_files(logdir) -> dict:
    """Maps each run (directory relative to `logdir`, `.` for itself) to its event files, sorted.

    Walks `logdir` like TensorBoard: every sub-directory (hidden ones too), names
    taken literally (no glob patterns), symbolic links to directories not followed
    (a link loop does not invent runs). Raises `TypeError`, `FileNotFoundError` or
    `NotADirectoryError` if `logdir` is not a directory. A path with a scheme
    (`gs://...`) is read through `tf.io.gfile`.
    """
    root = check_logdir(logdir)
    runs = {}
    for run, dirpath, filenames in _fs.walk(root):
        paths = [_fs.join(dirpath, n) for n in filenames if is_event_file(n)]
        if paths:
            runs[run] = paths
    return dict(sorted(runs.items()))
