"""The partials of one step as TensorFlow graph ops: the reference kernel, which runs anywhere (XLA and GPU included).

`tfprobe.kernels.stats` defines the statistics and the layout of their
partials (`SUM_FIELDS`, `finalize`); this module computes them per step
(`sums_and_maxes`, `histogram`) and wraps them as `GraphKernel`.

>>> import tensorflow as tf
>>> p = partials(tf.constant([[0.0, 1.0], [2.0, -3.0]]), near_zero=1e-3)
>>> p["maxes"].numpy().tolist()
[2.0, 3.0, 2.0, 3.0]
"""

from __future__ import annotations

import functools
import math

import numpy as np
import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla as tfxla

from tfprobe import metadata
from tfprobe.kernels.stats import GRADIENT_FIELDS, SUM_FIELDS, S, num_units, saturation_thresholds

_F32 = tf.float32
_F64 = tf.float64


def as_rows(x):
    """Casts to float32 and reshapes to `[examples, values per example]`."""
    x = tf.cast(x, _F32)
    if x.shape.rank == 0:
        return tf.reshape(x, [1, 1])
    if x.shape.rank == 1:
        return tf.reshape(x, [-1, 1])
    return tf.reshape(x, [tf.shape(x)[0], -1])


def leading(x, sample_size):
    """The first `sample_size` examples of `x` (all of it for None or a scalar); slicing the first axis does not copy."""
    if sample_size is None or x.shape.rank == 0:
        return x
    return x[:sample_size]


BLOCK = 256  # at most this many values are summed in float32, then in float64 (as in the native kernel)


def _count(mask):
    return tf.cast(tf.reduce_sum(tf.cast(mask, tf.int32)), _F64)


def _row_counts(mask):
    """Per-row counts of a boolean `[rows, m]` mask (float64), counted in int32: no float64 copy of the mask
    (XLA kept one, activation-sized, shared by its two users)."""
    return tf.cast(tf.reduce_sum(tf.cast(mask, tf.int32), axis=1), _F64)


def _blocks(x2d):
    """`x2d` as a `[rows, blocks, block]` view: blocks of the largest power of two that divides a row, at most `BLOCK`."""
    shape = tf.shape(x2d)
    m = shape[1]
    block = tf.maximum(tf.minimum(tf.bitwise.bitwise_and(m, -m), BLOCK), 1)
    return tf.reshape(x2d, [shape[0], m // block, block])


def row_sums(v):
    """Per-row sums (float64) of a float32 `[rows, m]` tensor: float32 within blocks, float64 across them.

    The rounding error no longer grows with the row, at the cost of one
    small cast. (For an odd `m` the blocks are single values: a float64
    sum, still right, slower.)

    >>> row_sums(tf.constant([[0.5, 1.5, 3.0], [2.0, 4.0, 8.0]])).numpy().tolist()
    [5.0, 14.0]
    """
    return tf.reduce_sum(tf.cast(tf.reduce_sum(_blocks(v), axis=2), _F64), axis=1)


def shifted_row_sums(x2d, finite_mask=None):
    """Per-row sums of `x` and `x**2` (float64) over the finite values (all if `finite_mask` is None).

    Summed as `row_sums` about `k`, the mean of the finite values among
    the first `BLOCK` of the row (0 if none), and shifted back in float64:
    sums of x**2 about 0 would lose the variance of activations whose mean
    is large next to their spread.

    >>> s, sq = shifted_row_sums(tf.constant([[1000.5, 999.5, 1001.0, 999.0]]))
    >>> s.numpy().tolist(), sq.numpy().tolist()
    ([4000.0], [4000002.5])
    """
    first = x2d[:, :BLOCK]
    if finite_mask is None:
        k = tf.reduce_mean(first, axis=1, keepdims=True)
        d = x2d - k
        n = tf.cast(tf.shape(x2d)[1], _F64)
    else:
        fm = finite_mask[:, :BLOCK]
        total = tf.reduce_sum(tf.where(fm, first, tf.zeros_like(first)), axis=1, keepdims=True)
        k = tf.math.divide_no_nan(total, tf.reduce_sum(tf.cast(fm, _F32), axis=1, keepdims=True))
        d = tf.where(finite_mask, x2d - k, tf.zeros_like(x2d))
        n = _row_counts(finite_mask)
    k = tf.cast(k[:, 0], _F64)
    s, ss = row_sums(d), row_sums(tf.square(d))
    return s + n * k, ss + 2.0 * k * s + n * k * k


_ZERO_WEIGHT = 32768.0  # > BLOCK: a block's near-zero count stays below it; BLOCK * (1 + it) < 2**24 (exact in float32)


def _zero_and_near_counts(a2d, near_zero):
    """`(count(a == 0), count(a <= near_zero))` (float64) of `a2d = abs(x2d)`, from one reduction instead of two.

    Each value adds `_ZERO_WEIGHT * (a == 0) + (a <= near_zero)`; a block's
    float32 sum is exact (at most `BLOCK * (1 + _ZERO_WEIGHT)` < 2**24) and
    splits back into its two counts, since a block's near-zero count is below
    `_ZERO_WEIGHT`.

    >>> [float(c) for c in _zero_and_near_counts(tf.constant([[0.0, 1e-4, 2.0, 0.0]]), 1e-3)]
    [2.0, 3.0]
    """
    code = tf.cast(a2d <= near_zero, _F32) + _ZERO_WEIGHT * tf.cast(tf.equal(a2d, 0.0), _F32)
    block = tf.reduce_sum(_blocks(code), axis=2)
    zeros = tf.floor(block / _ZERO_WEIGHT)
    near = block - _ZERO_WEIGHT * zeros
    return tf.reduce_sum(tf.cast(zeros, _F64)), tf.reduce_sum(tf.cast(near, _F64))


@functools.cache
def _reducer(kinds):
    """The body of `_one_pass_block_sums`' XLA variadic reduce: float32 sums (`"sum"`) and maxima (`"max"`)
    side by side."""
    count = len(kinds)
    spec = [tf.TensorSpec([], _F32)] * (2 * count)

    def body(*a):
        return [
            a[i] + a[count + i] if kind == "sum" else tf.maximum(a[i], a[count + i]) for i, kind in enumerate(kinds)
        ]

    return tf.function(body, input_signature=spec, autograph=False).get_concrete_function()


def _one_pass_block_sums(values, maxima=()):
    """Block sums (float32, `[rows, blocks]` each, blocks as `_blocks`) of several `[rows, m]` float32 tensors,
    then block maxima of `maxima`, from one loop: an XLA variadic reduce (compiled by XLA only: the op has
    no TensorFlow kernel).

    XLA's CPU backend writes the elementwise producer of each plain
    reduction out as an activation-sized temporary and reduces it in a
    separate pass; one variadic reduce computes every value in registers
    and reads its input once.
    """
    blocks = [_blocks(v) for v in [*values, *maxima]]
    inits = [tf.constant(0.0, _F32)] * len(values) + [tf.constant(-np.inf, _F32)] * len(maxima)
    kinds = ("sum",) * len(values) + ("max",) * len(maxima)
    return tfxla.variadic_reduce(blocks, inits, [2], _reducer(kinds))


def _one_pass_sums(x2d, a2d, near_zero, bounds, saturation_margin, masked=False):
    """`(row_s, row_sq, row_l1, zeros, near, saturated, counts)` of `x2d` (`a2d = abs(x2d)`) from one XLA
    variadic reduce: the sums of `shifted_row_sums` and `row_sums(a2d)`, the counts of `_zero_and_near_counts`
    and `_saturated`, the same numbers (every block sum is the same float32 sum of at most `BLOCK` values).

    `masked`: over the finite values only (the slow path's masks, fused into the loop instead of written
    out); `counts` is then `(m_row, finite, nan, inf)` (per-row finite counts, then totals), else None.
    """
    if masked:
        fm = tf.math.is_finite(x2d)
        first, first_fm = x2d[:, :BLOCK], fm[:, :BLOCK]
        total = tf.reduce_sum(tf.where(first_fm, first, tf.zeros_like(first)), axis=1, keepdims=True)
        k = tf.math.divide_no_nan(total, tf.reduce_sum(tf.cast(first_fm, _F32), axis=1, keepdims=True))
        d = tf.where(fm, x2d - k, tf.zeros_like(x2d))
        l1 = tf.where(fm, a2d, tf.zeros_like(a2d))
    else:
        k = tf.reduce_mean(x2d[:, :BLOCK], axis=1, keepdims=True)
        d, l1 = x2d - k, a2d
    code = tf.cast(a2d <= near_zero, _F32) + _ZERO_WEIGHT * tf.cast(tf.equal(a2d, 0.0), _F32)  # NaN, Inf: neither
    values = [d, tf.square(d), l1, code]
    if bounds is not None:
        below, above = saturation_thresholds(bounds, saturation_margin)
        high = x2d >= above
        saturated = high if below == -math.inf else tf.math.logical_or(x2d <= below, high)
        values.append(tf.cast(tf.math.logical_and(fm, saturated) if masked else saturated, _F32))
    if masked:
        values += [tf.cast(fm, _F32), tf.cast(tf.math.is_nan(x2d), _F32)]
    sums = _one_pass_block_sums(values)
    s, ss, l1 = (tf.reduce_sum(tf.cast(b, _F64), axis=1) for b in sums[:3])
    zeros = tf.floor(sums[3] / _ZERO_WEIGHT)
    near = sums[3] - _ZERO_WEIGHT * zeros
    saturated = tf.reduce_sum(tf.cast(sums[4], _F64)) if bounds is not None else tf.constant(0.0, _F64)
    counts = None
    if masked:
        n = tf.reduce_sum(tf.cast(sums[-2], _F64), axis=1)
        finite, nan = tf.reduce_sum(n), tf.reduce_sum(tf.cast(sums[-1], _F64))
        counts = (n, finite, nan, tf.cast(tf.size(x2d), _F64) - finite - nan)
    else:
        n = tf.cast(tf.shape(x2d)[1], _F64)
    k = tf.cast(k[:, 0], _F64)
    row_s, row_sq = s + n * k, ss + 2.0 * k * s + n * k * k
    zeros, near = tf.reduce_sum(tf.cast(zeros, _F64)), tf.reduce_sum(tf.cast(near, _F64))
    return row_s, row_sq, l1, zeros, near, saturated, counts


def _saturated(x, bounds, saturation_margin):
    """Count of saturated values; NaN (which masks the non-finite values) compares false."""
    if bounds is None:
        return tf.constant(0.0, _F64)
    below, above = saturation_thresholds(bounds, saturation_margin)
    high = x >= above
    return _count(high if below == -math.inf else tf.math.logical_or(x <= below, high))


def _within_l1_bounds(sq, l1, m):
    """`sq` (a row's sum of x**2) clipped to what its L1 norm allows: `l1**2 / m <= sq <= l1**2`.

    Float32 squares of values under ~1e-19 flush to zero (TensorFlow runs
    with denormals off) and the shifted sums then cancel to noise; the
    bounds keep it from being negative or from making Hoyer sparsity leave
    [0, 1]. The native kernel clips the same way.
    """
    l1_sq = l1 * l1
    return tf.clip_by_value(sq, tf.math.divide_no_nan(l1_sq, m), l1_sq)


def _hoyer(l1, sq, m):
    """Per-example Hoyer sparsity (float64) from per-example L1, sum of squares and size."""
    sqrt_m = tf.sqrt(m)
    l2 = tf.sqrt(sq)
    ratio = tf.math.divide_no_nan(l1, l2)
    h = tf.math.divide_no_nan(sqrt_m - ratio, sqrt_m - 1.0)
    h = tf.where(l2 > 0, h, tf.ones_like(h))
    valid = m > 1.0
    return tf.reduce_sum(tf.where(valid, h, tf.zeros_like(h))), _count(valid)


def _scalar_sums(x2d, a2d, near_zero, bounds, saturation_margin, finite_mask=None, fused_counts=False, one_pass=False):
    """The sum-kind partials of one step, in `SUM_FIELDS` order (pooling fields zero).

    `fused_counts`: the zero and near-zero counts from one reduction
    (`_zero_and_near_counts`), faster where XLA fuses it (about 0.6x the two
    counts' CPU time on the CNN's first activation) and slower in plain
    TensorFlow ops, which materialise each of its steps (about 1.25x)."""
    if one_pass:  # XLA only
        row_s, row_sq, row_l1, zeros, near, saturated, counts = _one_pass_sums(
            x2d, a2d, near_zero, bounds, saturation_margin, masked=finite_mask is not None
        )
        if counts is None:
            m_row = tf.fill([tf.shape(x2d)[0]], tf.cast(tf.shape(x2d)[1], _F64))
            finite = tf.cast(tf.size(x2d), _F64)
            nan = inf = tf.constant(0.0, _F64)
        else:
            m_row, finite, nan, inf = counts
    elif finite_mask is None:
        m_row = tf.fill([tf.shape(x2d)[0]], tf.cast(tf.shape(x2d)[1], _F64))
        finite = tf.cast(tf.size(x2d), _F64)
        nan = inf = tf.constant(0.0, _F64)
        xc, l1 = x2d, a2d
    else:
        m_row = _row_counts(finite_mask)
        finite = _count(finite_mask)
        nan = _count(tf.math.is_nan(x2d))
        inf = _count(tf.math.is_inf(x2d))
        xc = tf.where(finite_mask, x2d, tf.fill(tf.shape(x2d), np.nan))  # comparisons with NaN are false
        l1 = tf.where(finite_mask, a2d, tf.zeros_like(a2d))
    if not one_pass:
        row_s, row_sq = shifted_row_sums(x2d, finite_mask)
        row_l1 = row_sums(l1)
        if fused_counts:
            zeros, near = _zero_and_near_counts(a2d, near_zero)
        else:
            zeros, near = _count(tf.equal(a2d, 0.0)), _count(a2d <= near_zero)
        saturated = _saturated(xc, bounds, saturation_margin)
    row_sq = _within_l1_bounds(row_sq, row_l1, m_row)
    hoyer_sum, hoyer_n = _hoyer(row_l1, row_sq, m_row)
    values = {
        "steps": tf.constant(1.0, _F64),
        "count": tf.cast(tf.size(x2d), _F64),
        "finite": finite,
        "sum": tf.reduce_sum(row_s),
        "sumsq": tf.reduce_sum(row_sq),
        "sum_abs": tf.reduce_sum(row_l1),
        "zeros": zeros,
        "near": near,
        "nan": nan,
        "inf": inf,
        "hoyer_sum": hoyer_sum,
        "hoyer_n": hoyer_n,
        "saturated": saturated,
    }
    return _field_vector(values)


def _maxes(xu, has_units, xla=False):
    """The maxima partials of the finite values of `xu = by_unit(...)` (slow path). `xla`: per-unit maxima
    from one XLA variadic reduce, whose masks are not written out."""
    finite = tf.math.is_finite(xu)
    inf = tf.constant(np.inf, _F32)
    hi = tf.where(finite, xu, -inf)
    lo = tf.where(finite, xu, inf)
    if xla:
        a = tf.where(finite, tf.abs(xu), inf)  # as below
        top, bottom, unit = tfxla.variadic_reduce([hi, -lo, a], [-inf] * 3, [0], _reducer(("max",) * 3))
        parts = [tf.reshape(tf.reduce_max(top), [1]), tf.reshape(tf.reduce_max(bottom), [1])]
        return tf.concat(parts + [unit] if has_units else parts, axis=0)
    parts = [tf.reshape(tf.reduce_max(hi), [1]), tf.reshape(-tf.reduce_min(lo), [1])]
    if has_units:
        # A NaN or Inf value is not "near zero": it keeps its unit alive.
        a = tf.where(finite, tf.abs(xu), inf)
        parts.append(tf.reduce_max(a, axis=0))
    return tf.concat(parts, axis=0)


def _extremes(xu, has_units, xla=False):
    """Maxima partials of `xu = by_unit(...)` from two passes: per-unit max and min (max|x| of a unit is max(max, -min)).

    TensorFlow's max/min kernels propagate NaN (XLA's CPU ones do not: there
    the sums detect it), so a NaN or Inf makes the result non-finite, which
    is how `sums_and_maxes` detects them.
    """
    umax = tf.reduce_max(xu, axis=0)
    umin = tf.reduce_min(xu, axis=0)
    if xla:  # XLA would merge each reduction of a reduction into a second pass over `xu`
        umax, umin = tfxla.optimization_barrier(umax, umin)
    parts = [tf.reshape(tf.reduce_max(umax), [1]), tf.reshape(-tf.reduce_min(umin), [1])]
    if has_units:
        parts.append(tf.maximum(umax, -umin))
    return tf.concat(parts, axis=0)


def partials(x, *, near_zero, bounds=None, saturation_margin=0.01, sample_size=None):
    """Partials of one step of one activation tensor.

    Args:
      x: a floating tensor; the first axis is the example axis.
      near_zero: threshold of `near_zero_fraction` and dead units.
      bounds: `(low, high)` of a bounded activation, `(None, high)` if only
        its upper bound saturates (see `saturation_thresholds`), or None.
      saturation_margin: see `saturation_fraction`.
      sample_size: None for every statistic over all of `x`. An integer `k`
        computes the sums (mean, std, rms, mean_abs, zero and near-zero
        fractions, Hoyer sparsity, saturation) over the first `k` examples
        only; max, min, dead units and the NaN/Inf counts still cover all
        of `x`.

    Returns:
      `{"sums": float64[NUM_SUMS], "maxes": float32[2 + units]}`. A tensor
      with NaN or Inf takes a slower path that masks them; the fast path
      runs when the extremes and the sums are finite, which implies that
      every value is.
    """
    x2d, units = as_rows(x), num_units(x)
    sums, maxes = sums_and_maxes(
        x2d,
        by_unit(x2d, units),
        units is not None,
        near_zero=near_zero,
        bounds=bounds,
        saturation_margin=saturation_margin,
        sample_size=sample_size,
    )
    return {"sums": sums, "maxes": maxes}


def by_unit(x2d, units):
    """`as_rows(x)` reshaped to `[-1, units]` (one column per unit; `[-1, 1]` without units): a view, not a copy."""
    return tf.reshape(x2d, [-1, 1 if units is None else units])


def sums_and_maxes(x2d, xu, has_units, *, near_zero, bounds, saturation_margin, sample_size, xla=False):
    """`(sums, maxes)` tensors (as `partials` defines them) of `x2d = as_rows(x)` and `xu = by_unit(x2d, num_units(x))`.

    `xla`: the ops will be compiled by XLA (the same numbers, in the form XLA runs faster)."""
    xs = leading(x2d, sample_size)
    a_s = tf.abs(xs)  # shared by L1, zero and near-zero counts
    fast_sums = _scalar_sums(xs, a_s, near_zero, bounds, saturation_margin, fused_counts=xla, one_pass=xla)
    fast_maxes = _extremes(xu, has_units, xla)
    check = fast_sums[S["sum"]] + fast_sums[S["sumsq"]] + tf.cast(fast_maxes[0] + fast_maxes[1], _F64)
    if sample_size is not None:  # NaN outside the sample: XLA's CPU max/min do not propagate it, a sum does
        check += tf.cast(tf.reduce_sum(x2d[sample_size:]), _F64)
    all_finite = tf.math.is_finite(check)

    def slow():
        sums = _scalar_sums(  # its own abs: a cond's operand is written out whole under XLA
            xs,
            tf.abs(xs),
            near_zero,
            bounds,
            saturation_margin,
            finite_mask=tf.math.is_finite(xs),
            fused_counts=xla,
            one_pass=xla,
        )
        if sample_size is not None:  # NaN/Inf are counted over the whole batch
            whole = {"nan": _count(tf.math.is_nan(x2d)), "inf": _count(tf.math.is_inf(x2d))}
            sums = tf.where(tf.constant([name in whole for name in SUM_FIELDS]), _field_vector(whole), sums)
        return sums, _maxes(xu, has_units, xla)

    return tf.cond(all_finite, lambda: (fast_sums, fast_maxes), slow)


_ROWS = tf.TensorSpec([None, None], _F32)
_NOINLINE = {"_noinline": True}


@functools.cache
def traced_sums_and_maxes(*, near_zero, bounds, saturation_margin, sample_size, has_units, xla=False, jit=False):
    """`sums_and_maxes` as one `tf.function` for every tensor of a kind: `fn(x2d, xu) -> (sums, maxes)`.

    A step calls it once per recorded tensor. Its ops are traced and
    optimized once, not once per layer: inlined, they made a step's graph
    about 300 nodes larger per layer and cost about 0.2 s per layer to
    trace and optimize. Its inputs are tensors only
    (no constants), so TensorFlow does not specialize a copy per call.
    `jit`: XLA compiles the function on its own (with `xla=True`, for a
    step that XLA does not compile).

    >>> fn = traced_sums_and_maxes(near_zero=1e-3, bounds=None, saturation_margin=0.01, sample_size=None, has_units=True)
    >>> x2d = tf.constant([[0.0, 1.0], [2.0, -3.0]])
    >>> sums, maxes = fn(x2d, by_unit(x2d, 2))
    >>> maxes.numpy().tolist()
    [2.0, 3.0, 2.0, 3.0]
    """

    @tf.function(input_signature=[_ROWS, _ROWS], autograph=False, jit_compile=jit, experimental_attributes=_NOINLINE)
    def fn(x2d, xu):
        return sums_and_maxes(
            x2d,
            xu,
            has_units,
            near_zero=near_zero,
            bounds=bounds,
            saturation_margin=saturation_margin,
            sample_size=sample_size,
            xla=xla,
        )

    return fn


def pooling_input_sums(x, sample_size=None):
    """The pooling-input partials (`in_*` fields) of one step, as a full sums vector."""
    return pooling_input_sums_of_rows(as_rows(x), sample_size)


@functools.cache
def traced_pooling_input_sums(sample_size):
    """`pooling_input_sums_of_rows` traced once: `fn(x2d) -> sums`."""
    return tf.function(
        lambda x2d: pooling_input_sums_of_rows(x2d, sample_size),
        input_signature=[_ROWS],
        autograph=False,
        experimental_attributes=_NOINLINE,
    )


def pooling_input_sums_of_rows(x2d, sample_size=None):
    """`pooling_input_sums` of `as_rows(x)`."""
    x2d = leading(x2d, sample_size)
    mask = tf.math.is_finite(x2d)
    xf = tf.where(mask, x2d, tf.zeros_like(x2d))
    values = {
        "in_count": tf.cast(tf.size(x2d), _F64),
        "in_finite": _count(mask),
        "in_abs": tf.reduce_sum(row_sums(tf.abs(xf))),
        "in_sq": tf.reduce_sum(row_sums(tf.square(xf))),
        "in_zeros": _count(tf.equal(x2d, 0.0)),
    }
    return _field_vector(values)


def _field_vector(values):
    """`values` (`{field: float64 scalar}`) as a `SUM_FIELDS` vector, 0 elsewhere. Exact: each element adds the one
    value selected there to zeros.

    A sum of selections, not a `tf.stack`: XLA's CPU backend (TensorFlow 2.21)
    took minutes to compile a stack of several reductions for some shapes (the
    gradient partials of a `[8, 32]` tensor: 4.6 minutes; as selections 0.7 s).

    >>> float(_field_vector({"count": tf.constant(4.0, tf.float64)})[S["count"]])
    4.0
    """
    rows = np.eye(len(SUM_FIELDS), dtype=bool)
    zero = tf.constant(0.0, _F64)
    return tf.add_n([tf.where(tf.constant(rows[S[name]]), value, zero) for name, value in values.items()])


def histogram(x):
    """Counts of `x` in the fixed buckets of `metadata.histogram_buckets()`.

    Computed from the float32 bit pattern: the exponent is floor(log2|x|), so
    the bucket index needs no logarithm and is exact. NaN is not counted.

    Counted by pairs: each pair of neighbouring values is one index into the
    `B * B` pairs of buckets (`B = NUM_BUCKETS + 1`, the last one NaN's), and
    the pair counts fold back to bucket counts (a bucket's count is its row's
    plus its column's sum). The count is a scatter, one serial loop over its
    input under XLA: half the input, about 0.55x the CPU time of counting each
    value on the CNN's first activation.

    >>> histogram(tf.constant([0.0, 1.0, 1.5, -2.0, float("nan")])).numpy().tolist().count(0.0)
    82
    """
    bits = tf.bitcast(tf.reshape(tf.cast(x, _F32), [-1]), tf.int32)
    mag = tf.bitwise.bitwise_and(bits, 0x7FFFFFFF)
    exponent = tf.bitwise.right_shift(mag, 23) - 127
    k = tf.clip_by_value(exponent, metadata.HIST_MIN_EXP - 1, metadata.HIST_MAX_EXP) - (metadata.HIST_MIN_EXP - 1)
    zero = metadata.HIST_ZERO_BUCKET
    idx = tf.where(bits < 0, zero - 1 - k, zero + 1 + k)
    idx = tf.where(mag == 0, zero, idx)
    nan = metadata.NUM_BUCKETS
    idx = tf.where(mag > 0x7F800000, nan, idx)  # NaN: its own bucket, dropped
    idx = tf.concat([idx, tf.fill([tf.size(idx) % 2], nan)], axis=0)  # an odd count: one NaN more
    pairs = tf.reshape(idx, [-1, 2])
    b = metadata.NUM_BUCKETS + 1
    # DenseBincount with a constant size also compiles under XLA (tf.math.bincount does not).
    counts = tf.raw_ops.DenseBincount(input=pairs[:, 0] * b + pairs[:, 1], size=b * b, weights=tf.zeros([0], tf.int32))
    counts = tf.reshape(counts, [b, b])
    return tf.cast(tf.reduce_sum(counts, axis=1) + tf.reduce_sum(counts, axis=0), _F64)[:nan]


# XLA fuses the bucketing into one pass and counts 3-4x faster than the
# graph-mode kernels on CPU; it runs as its own cluster inside any step.
# Traced once for every tensor (flattened by the caller).
histogram_compiled = tf.function(
    histogram, jit_compile=True, autograph=False, input_signature=[tf.TensorSpec([None], _F32)]
)


def gradient_sums_and_maxes(x2d, *, sample_size, xla=False):
    """`gradient_partials(*sums_and_maxes(x2d, ...))` of a tensor without units, computing only what it keeps.

    About half the passes over the values of the full partials: sums of
    `|x|` and `x**2` (not shifted: its terms are squares, they do not
    cancel), zeros, and max|x| (the native kernel's gradient mode does the
    same). A tensor with NaN or Inf takes a slower path that masks them;
    the fast path's check does not rely on max/min propagating NaN (XLA's
    CPU max/min do not). `xla`: the ops will be compiled by XLA (the fast path's
    sums, zeros and, without a sample, max|x| from one variadic reduce).

    >>> sums, maxes = gradient_sums_and_maxes(tf.constant([[0.5, -2.0]]), sample_size=None)
    >>> float(sums[S["sum"]]), float(sums[S["sumsq"]]), maxes.numpy().tolist()
    (0.0, 4.25, [2.0, 2.0])
    """
    xs = leading(x2d, sample_size)
    a = tf.abs(xs)
    size = tf.cast(tf.size(xs), _F64)
    if xla:
        maxima = [a] if sample_size is None else []
        blocks = _one_pass_block_sums([a, tf.square(a), tf.cast(tf.equal(a, 0.0), _F32)], maxima)
        one_pass = [tf.reduce_sum(tf.cast(b, _F64), axis=1) for b in blocks[:3]]
        zeros = tf.reduce_sum(one_pass[2])
        top = tf.reduce_max(blocks[3]) if maxima else tf.maximum(tf.reduce_max(x2d), -tf.reduce_min(x2d))
    else:
        zeros = _count(tf.equal(a, 0.0))
        top = tf.reduce_max(tf.abs(x2d))

    def sums_of(a, m_row, finite, nan, inf, row_l1_sq=None):
        l1, sq = (row_sums(a), row_sums(tf.square(a))) if row_l1_sq is None else row_l1_sq
        sq = _within_l1_bounds(sq, l1, m_row)
        values = {
            "steps": tf.constant(1.0, _F64),
            "count": size,
            "finite": finite,
            "sumsq": tf.reduce_sum(sq),
            "sum_abs": tf.reduce_sum(l1),
            "zeros": zeros,
            "nan": nan,
            "inf": inf,
        }
        return _field_vector(values)

    no = tf.constant(0.0, _F64)
    m_row = tf.fill([tf.shape(xs)[0]], tf.cast(tf.shape(xs)[1], _F64))
    fast_sums = sums_of(a, m_row, size, no, no, one_pass[:2] if xla else None)
    check = fast_sums[S["sum_abs"]] + fast_sums[S["sumsq"]] + tf.cast(top, _F64)
    if sample_size is not None:  # the rows outside the sample, whose NaN the maximum may not show
        check += tf.cast(tf.reduce_sum(x2d[sample_size:]), _F64)

    def slow():
        finite_mask = tf.math.is_finite(xs)
        af = tf.abs(
            tf.where(finite_mask, xs, tf.zeros_like(xs))
        )  # not `a`: a cond's operand is written out whole under XLA
        sums = sums_of(
            af, _row_counts(finite_mask), _count(finite_mask), _count(tf.math.is_nan(x2d)), _count(tf.math.is_inf(x2d))
        )
        whole = tf.abs(x2d)
        finite_top = tf.reduce_max(tf.where(tf.math.is_finite(whole), whole, tf.fill(tf.shape(whole), -np.inf)))
        return sums, tf.broadcast_to(finite_top, [2])

    # `broadcast_to`, not `tf.stack([top, top])`: as `_field_vector`
    return tf.cond(tf.math.is_finite(check), lambda: (fast_sums, tf.broadcast_to(top, [2])), slow)


@functools.cache
def traced_gradient_sums_and_maxes(sample_size, xla=False, jit=False):
    """`gradient_sums_and_maxes` traced once for every gradient: `fn(x2d) -> (sums, maxes)` (`jit`: as
    `traced_sums_and_maxes`)."""
    return tf.function(
        lambda x2d: gradient_sums_and_maxes(x2d, sample_size=sample_size, xla=xla),
        input_signature=[_ROWS],
        autograph=False,
        jit_compile=jit,
        experimental_attributes=_NOINLINE,
    )


def gradient_partials(sums, maxes):
    """`(sums, maxes)` of a tensor (no units) reduced to what its gradient statistics read.

    Sums outside `GRADIENT_FIELDS` are zero and both maxima are max|x| (so
    `max(max, -min)` is still max|x|). The native kernel computes this
    directly with about half the work per value (its sum of squares is not
    shifted: its terms do not cancel).

    >>> sums, maxes = gradient_partials(*sums_and_maxes(
    ...     tf.constant([[0.5, -2.0]]), tf.constant([[0.5], [-2.0]]), False, near_zero=1e-3, bounds=None,
    ...     saturation_margin=0.01, sample_size=None))
    >>> float(sums[S["sum"]]), float(sums[S["sumsq"]]), maxes.numpy().tolist()
    (0.0, 4.25, [2.0, 2.0])
    """
    keep = tf.constant([name in GRADIENT_FIELDS for name in SUM_FIELDS])
    top = tf.maximum(maxes[0], maxes[1])
    return tf.where(keep, sums, tf.zeros_like(sums)), tf.broadcast_to(top, [2])


class GraphKernel:
    """The partials as TensorFlow graph ops: the reference, which runs anywhere (XLA and GPU included).

    A kernel builds a step's statistics ops; `tfprobe.kernels.native.NativeKernel`
    has the same methods. All take `x2d = as_rows(x)`.

    >>> k = GraphKernel(near_zero=1e-3, saturation_margin=0.01, sample_size=None)
    >>> sums, maxes, hist = k.partials(tf.constant([[0.0, 1.0], [2.0, -3.0]]), 2, None, False)
    >>> maxes.numpy().tolist(), hist
    ([2.0, 3.0, 2.0, 3.0], None)
    """

    name = "graph"
    fuses_histogram = False  # `partials` never counts the histogram: `histogram` does, on its own

    def __init__(self, *, near_zero, saturation_margin, sample_size, xla=False, compile_ops=False):
        """`xla`: the step is XLA-compiled (`jit_compile=True`). The ops take the form XLA runs faster, and in
        a step XLA does not compile, `compile_ops=True` has XLA compile each tensor's partials on their own (about
        0.4x the CPU time of the same partials as TensorFlow ops on the CNN's first activation). Off by default:
        each compiled cluster (one per tensor shape and kind) adds about half a second of compilation to the
        first step and holds its executable in host memory (about +110 MB on the reference CNN,
        benchmarks/RESULTS.md)."""
        self.near_zero, self.saturation_margin, self.sample_size = near_zero, saturation_margin, sample_size
        self.xla = xla
        self.jit = compile_ops and not xla

    def rows(self, x):
        """`x` as the kernel's other methods take it: `as_rows(x)`, no gradient flowing back through the statistics."""
        return as_rows(tf.stop_gradient(x))

    def partials(self, x2d, units, bounds, with_histogram, with_stats=True):
        """`(sums, maxes, histogram or None)` of one tensor with `units` (or None) and activation `bounds`."""
        fn = traced_sums_and_maxes(
            near_zero=self.near_zero,
            bounds=bounds,
            saturation_margin=self.saturation_margin,
            sample_size=self.sample_size,
            has_units=units is not None,
            xla=self.xla or self.jit,
            jit=self.jit,
        )
        sums, maxes = fn(x2d, by_unit(x2d, units))
        return sums, maxes, None

    def gradient_partials(self, x2d, with_histogram, with_stats=True):
        """`partials(x2d, None, None, ...)` reduced to what gradient statistics read (`gradient_partials`)."""
        return (*traced_gradient_sums_and_maxes(self.sample_size, self.xla or self.jit, self.jit)(x2d), None)

    def histogram(self, x2d):
        """Histogram counts of the sampled rows."""
        return histogram_compiled(tf.reshape(leading(x2d, self.sample_size), [-1]))

    def input_sums(self, x2d, with_stats=True):
        """The `in_*` partials of a pooling input no recorded layer produced."""
        return traced_pooling_input_sums(self.sample_size)(x2d)
