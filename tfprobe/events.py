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

import glob
import os
import socket
import struct
import time

from tensorboard.compat.proto import event_pb2

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

    _counter = 0

    def __init__(self, logdir: str, suffix: str = ".tfprobe"):
        os.makedirs(logdir, exist_ok=True)
        EventFileWriter._counter += 1
        name = "events.out.tfevents.%010d.%s.%d.%d%s" % (
            int(time.time()),
            socket.gethostname(),
            os.getpid(),
            EventFileWriter._counter,
            suffix,
        )
        self.path = os.path.join(logdir, name)
        self._file = open(self.path, "ab")
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
        if not self._file.closed:
            self._file.close()


def read_records(path: str):
    """Yields the payload of every complete record in a TFRecord file.

    A truncated last record (a file still being written) is ignored.
    """
    with open(path, "rb") as f:
        while True:
            header = f.read(12)
            if len(header) < 12:
                return
            (length,) = struct.unpack("<Q", header[:8])
            data = f.read(length)
            if len(data) < length or len(f.read(4)) < 4:
                return
            yield data


def read_events(path: str):
    """Yields the `Event` protos of one event file."""
    for data in read_records(path):
        event = event_pb2.Event()
        event.ParseFromString(data)
        yield event


def event_files(logdir: str):
    """Maps each run (directory relative to `logdir`, `.` for itself) to its event files, sorted."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(logdir, "**", "*tfevents*"), recursive=True)):
        if os.path.isfile(path):
            run = os.path.relpath(os.path.dirname(path), logdir)
            runs.setdefault(run.replace(os.sep, "/"), []).append(path)
    return runs
