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
    """`(skeleton, float32 values, tags(), at)` if `data[pos:end]` holds fast-layout scalar values only, else None.

    `skeleton` is the Summary with its floats zeroed: records with equal
    skeletons have the same tags in the same order (`tags()` builds them).
    `at`: the offsets of the float bytes in the skeleton (see `same_layout`).

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
    return skeleton.tobytes(), values, lambda: tuple(p[4:-12] for p in pieces), (at - pos).reshape(-1)


def same_layout(data: bytes, pos: int, skeleton: bytes, at: np.ndarray):
    """The float32 values of a record whose fast-layout scalars have the `skeleton` (and float offsets `at`) of
    one `fast_scalars` read before, else None: `fast_scalars(data, pos, fast_end(data, pos))` would give them
    with this skeleton, without splitting the record (a window's records repeat one layout).

    Every byte but the floats' equals the skeleton's, and no `_FAST_END` follows it, so `fast_end` ends
    there (`_FAST_END` cannot overlap itself, and four float bytes followed by `_FAST_END` cannot hold one).
    """
    end = pos + len(skeleton)
    if end > len(data) or data.find(_FAST_END, end) >= 0:
        return None
    piece = np.frombuffer(data, np.uint8, len(skeleton), pos)
    masked = piece.copy()
    masked[at] = 0
    if masked.tobytes() != skeleton:
        return None
    return piece[at].view("<f4")


def fast_end(data: bytes, pos: int) -> int:
    """The end of the last fast-layout scalar in `data[pos:]` (`pos` if none): `WindowWriter` writes
    every scalar of a window before its histograms, which `Summary.FromString` reads from there."""
    at = data.rfind(_FAST_END, pos)
    return pos if at < 0 else at + len(_FAST_END)


# ---------------------------------------------------------------- the typed decoding layer
#
# Every tensor a tfprobe reader decodes (statistics, histograms, CKA matrices) goes through
# `tensor_values`: dtype, declared shape and byte length are checked against limits *before*
# anything is allocated, so a foreign value (3 bytes of float content, a string matrix, a declared
# shape of [2**24, 2**24] with one value) is a `FormatError`, never a numpy error or a huge allocation.

_NP_TYPES = {DT_FLOAT: "<f4", DT_DOUBLE: "<f8", DT_HALF: "<f2", DT_INT32: "<i4", DT_INT64: "<i8"}
FLOAT_DTYPES = (DT_FLOAT, DT_DOUBLE, DT_HALF)
INT_DTYPES = (DT_INT64, DT_INT32)
MAX_ELEMENTS = 1 << 24
"""The most values one decoded tfprobe tensor may declare (a 4096 x 4096 CKA matrix)."""


def _vals(tensor):
    """The `*_val` field of `tensor`'s dtype, as a numpy array of that dtype."""
    if tensor.dtype == DT_FLOAT:
        return np.asarray(tensor.float_val, np.float32)
    if tensor.dtype == DT_DOUBLE:
        return np.asarray(tensor.double_val, np.float64)
    if tensor.dtype == DT_HALF:
        return np.asarray(tensor.half_val, np.uint16).view(np.float16)
    if tensor.dtype == DT_INT64:
        return np.asarray(tensor.int64_val, np.int64)
    return np.asarray(tensor.int_val, np.int32)


def tensor_values(tensor, dtypes, shape_ok, what, max_elements=MAX_ELEMENTS) -> np.ndarray:
    """The values of a `TensorProto` as a flat numpy array, checked before any allocation.

    `dtypes` are the allowed `DT_*` codes, `shape_ok(dims)` says whether the declared shape is one
    this value may have, `what` names the value in the `FormatError` raised for anything else: another
    dtype, another shape, more than `max_elements` values, or content whose byte length is not the
    declared number of values times their size (a single `*_val` value for a larger shape is refused:
    tfprobe never writes one).

    >>> from tensorboard.compat.proto import tensor_pb2
    >>> t = tensor_pb2.TensorProto(dtype=DT_FLOAT, tensor_content=b"abc")
    >>> tensor_values(t, FLOAT_DTYPES, lambda d: d == [], "a statistic")
    Traceback (most recent call last):
    tfprobe.metadata.FormatError: a statistic must hold 1 float32 value (4 bytes); received 3 bytes of content
    """
    if tensor.dtype not in dtypes or tensor.dtype not in _NP_TYPES:
        names = "/".join(np.dtype(_NP_TYPES[d]).name for d in dtypes)
        raise metadata.FormatError(f"{what} must be a {names} tensor; received dtype {tensor.dtype}")
    dims = [d.size for d in tensor.tensor_shape.dim]
    if any(d < 0 for d in dims) or not shape_ok(dims):
        raise metadata.FormatError(f"{what} has the wrong shape; received shape {dims}")
    n = 1
    for d in dims:  # Python integers: no overflow
        n *= d
        if n > max_elements:
            raise metadata.FormatError(f"{what} declares more than {max_elements} values; received shape {dims}")
    np_type = np.dtype(_NP_TYPES[tensor.dtype])
    if tensor.tensor_content:
        size = len(tensor.tensor_content)
        if size != n * np_type.itemsize:
            raise metadata.FormatError(
                f"{what} must hold {n} {np_type.name} value{'s' if n != 1 else ''} ({n * np_type.itemsize} bytes); "
                f"received {size} bytes of content"
            )
        return np.frombuffer(tensor.tensor_content, np_type)
    vals = _vals(tensor)
    if len(vals) != n:
        raise metadata.FormatError(f"{what} must hold {n} value{'s' if n != 1 else ''}; received {len(vals)}")
    return vals


def scalar_value(tensor) -> float:
    """The float of a rank-0 float/double/half `TensorProto`; `FormatError` for anything else."""
    return float(tensor_values(tensor, FLOAT_DTYPES, lambda dims: not dims, "a tfprobe statistic")[0])


def histogram_counts(tensor) -> np.ndarray:
    """The `NUM_BUCKETS` int64 counts of a histogram `TensorProto`; `FormatError` for anything else."""
    counts = tensor_values(
        tensor,
        INT_DTYPES,
        lambda dims: dims == [metadata.NUM_BUCKETS],
        f"a tfprobe histogram (shape [{metadata.NUM_BUCKETS}])",
    )
    return counts.astype(np.int64)


def cka_matrix(tensor, n_layers: int) -> np.ndarray:
    """The `[n_layers, n_layers]` float64 CKA matrix of a `TensorProto`; `FormatError` for anything else."""
    values = tensor_values(
        tensor,
        FLOAT_DTYPES,
        lambda dims: dims == [n_layers, n_layers],
        f"a CKA matrix of {n_layers} layers (shape [{n_layers}, {n_layers}])",
    )
    return values.astype(np.float64).reshape(n_layers, n_layers)


def check_array(array, kinds, shape_ok, what, max_elements=MAX_ELEMENTS):
    """The same checks on an array decoded by someone else (TensorBoard's data provider): a numpy array
    of a numeric kind in `kinds` (`"f"`, `"i"`, `"u"`), whose shape passes `shape_ok`; `FormatError` else."""
    array = np.asarray(array)
    if array.dtype.kind not in kinds:
        raise metadata.FormatError(f"{what} must be numeric; received dtype {array.dtype}")
    if array.size > max_elements or not shape_ok(list(array.shape)):
        raise metadata.FormatError(f"{what} has the wrong shape; received shape {list(array.shape)}")
    return array
