"""Decoding the values of tfprobe event records into columns (used by `tfprobe.logs.reader`).

Two paths give the same result:

* fast: a record in the exact layout `WindowWriter` writes for scalar values
  after their first window (tag, rank-0 float32, plugin name only) is split
  with one regular expression. It is used only if the matches tile the whole
  `Summary` and every length field agrees, i.e. only if it *is* the protobuf
  parse; otherwise
* general: `Event.FromString` and one `TensorProto` decoded per value
  (float/double/half scalars, int64/int32 histograms, `*_val` or
  `tensor_content`), without `tensor_util.make_ndarray` (most of the time of
  reading used to go there).
"""

from __future__ import annotations

import struct

import numpy as np

from tfprobe import metadata

DT_FLOAT, DT_DOUBLE, DT_INT32, DT_INT64, DT_HALF = 1, 2, 3, 9, 19

# A fast value is `\n <len> \n <tag len> <tag>` + _FAST_TENSOR + 4 float bytes + _FAST_END.
_FAST_TENSOR = b"B\n\x08\x01\x12\x00*\x04"  # tensor: DT_FLOAT, rank 0, one packed float
_FAST_END = b"J\r\n\t\n\x07tfprobe \x01"  # metadata: plugin name tfprobe, DATA_CLASS_SCALAR
_FAST_MIN = 4 + len(_FAST_TENSOR) + 4  # a piece between two _FAST_END with an empty tag


def _varint(data: bytes, pos: int):
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise IndexError
        b = data[pos]
        result |= (b & 0x7F) << shift
        pos += 1
        if b < 0x80:
            return result, pos
        shift += 7


def split_event(data: bytes):
    """`(wall_time, step, summary_offset)` of a record `wall_time, step, summary` in that order, or None."""
    try:
        if len(data) < 12 or data[0] != 0x09 or data[9] != 0x10:
            return None
        step, pos = _varint(data, 10)
        if data[pos] != 0x2A:
            return None
        length, pos = _varint(data, pos + 1)
    except IndexError:
        return None
    if pos + length != len(data):
        return None
    if step >= 1 << 63:
        step -= 1 << 64
    return struct.unpack_from("<d", data, 1)[0], step, pos


def fast_scalars(data: bytes, pos: int, end: int):
    """`(skeleton, float32 values, tags())` if `data[pos:end]` holds fast-layout scalar values only, else None.

    `skeleton` is the Summary with its floats zeroed: records with equal
    skeletons have the same tags in the same order (`tags()` builds them).

    The Summary is split at every `_FAST_END`; each piece must then be one
    value up to its float, with length fields that agree with the piece.
    """
    pieces = data[pos:end].split(_FAST_END)
    if len(pieces) < 2 or pieces.pop():
        return None  # not ending with a fast value
    n = len(pieces)
    sizes = np.fromiter(map(len, pieces), np.int64, n)
    if sizes.min() < _FAST_MIN:
        return None
    starts = pos + np.concatenate([[0], np.cumsum(sizes + len(_FAST_END))[:-1]])
    ends = starts + sizes
    buf = np.frombuffer(data, np.uint8)
    if not (
        (buf[starts] == 0x0A).all()
        and (buf[starts + 2] == 0x0A).all()
        and np.array_equal(buf[starts + 1], sizes - 2 + len(_FAST_END))  # outer length (one-byte varint)
        and np.array_equal(buf[starts + 3], sizes - _FAST_MIN)  # tag length (one-byte varint)
        and (buf[(ends - 12)[:, None] + np.arange(8)] == np.frombuffer(_FAST_TENSOR, np.uint8)).all()
    ):
        return None
    at = (ends - 4)[:, None] + np.arange(4)
    values = buf[at].copy().view("<f4").reshape(-1)
    skeleton = buf[pos:end].copy()
    skeleton[at - pos] = 0
    return skeleton.tobytes(), values, lambda: tuple(p[4:-12] for p in pieces)


def fast_end(data: bytes, pos: int) -> int:
    """The end of the last fast-layout scalar in `data[pos:]` (`pos` if none): `WindowWriter` writes
    every scalar of a window before its histograms, which `Summary.FromString` reads from there."""
    at = data.rfind(_FAST_END, pos)
    return pos if at < 0 else at + len(_FAST_END)


def _check_rank(tensor, rank_ok, what):
    dims = [d.size for d in tensor.tensor_shape.dim]
    if not rank_ok(dims):
        raise metadata.FormatError(f"{what}; received shape {dims}")
    return dims


def scalar_value(tensor) -> float:
    """The float of a rank-0 float/double/half `TensorProto`; `FormatError` for anything else."""
    _check_rank(tensor, lambda dims: not dims, "a tfprobe statistic must be a rank-0 tensor")
    if tensor.dtype == DT_FLOAT:
        vals, np_type = tensor.float_val, "<f4"
    elif tensor.dtype == DT_DOUBLE:
        vals, np_type = tensor.double_val, "<f8"
    elif tensor.dtype == DT_HALF:
        vals, np_type = np.array(tensor.half_val, np.uint16).view(np.float16), "<f2"
    else:
        raise metadata.FormatError(f"a tfprobe statistic must be a float tensor; received dtype {tensor.dtype}")
    if tensor.tensor_content:
        vals = np.frombuffer(tensor.tensor_content, np_type)
    if len(vals) != 1:
        raise metadata.FormatError(f"a tfprobe statistic must hold one value; received {len(vals)}")
    return float(vals[0])


def histogram_counts(tensor) -> np.ndarray:
    """The `NUM_BUCKETS` int64 counts of a histogram `TensorProto`; `FormatError` for anything else."""
    _check_rank(
        tensor,
        lambda dims: dims == [metadata.NUM_BUCKETS],
        f"a tfprobe histogram must be a tensor of shape [{metadata.NUM_BUCKETS}]",
    )
    if tensor.dtype == DT_INT64:
        vals, np_type = tensor.int64_val, "<i8"
    elif tensor.dtype == DT_INT32:
        vals, np_type = tensor.int_val, "<i4"
    else:
        raise metadata.FormatError(f"a tfprobe histogram must be an integer tensor; received dtype {tensor.dtype}")
    counts = np.frombuffer(tensor.tensor_content, np_type) if tensor.tensor_content else np.array(vals, np.int64)
    if len(counts) != metadata.NUM_BUCKETS:
        raise metadata.FormatError(f"a tfprobe histogram must hold {metadata.NUM_BUCKETS} counts; received {len(counts)}")
    return counts.astype(np.int64)
