"""The statistics' definitions, the layout of their partials, and window results in NumPy.

A step contributes *partials* of each recorded tensor: a vector of sums
(`SUM_FIELDS`, added across steps, replicas and devices) and a vector of
maxima (`max`, `-min`, then the per-unit `max|x|`, combined with `maximum`).
`finalize` turns the partials of a window into the statistics of
`tfprobe.metadata.STATS`. Histograms use the fixed layout of
`metadata.histogram_buckets()` and add up the same way. Both kernels
(`tfprobe.kernels.graph`, the reference, and `tfprobe.kernels.native`)
compute the partials this module lays out.

Definitions (all over the finite values of the window unless said otherwise;
`n` = number of finite values; sums are float32 within blocks of at most
`BLOCK` values and float64 across them, see `tfprobe.kernels.graph.row_sums`):

| stat | definition |
| --- | --- |
| mean | sum(x) / n |
| std | sqrt(sum(x**2)/n - mean**2) (population) |
| min, max | extremes of the finite values |
| rms | sqrt(sum(x**2) / n) |
| mean_abs | sum(abs(x)) / n |
| zero_fraction | count(x == 0) / n |
| near_zero_fraction | count(abs(x) <= near_zero) / n |
| nan_count, inf_count | number of NaN / +-Inf values (all values) |
| dead_unit_fraction | share of units u (last axis) with abs(x[..., u]) <= near_zero for every example and position of the window |
| hoyer_sparsity | mean over examples of (sqrt(m) - L1/L2) / (sqrt(m) - 1), m = finite values of the example; an all-zero example counts 1; absent when m == 1 |
| saturation_fraction | count(x <= low + d or x >= high - d) / n with d = saturation_margin * (high - low), for bounded activations only; one-sided bounds `(None, high)` (ReLU6: its zeros are sparsity, not saturation): count(x >= high - d) / n with d = saturation_margin * high |
| size_ratio | elements(output) / elements(input) (all values), pooling layers only |
| mass_retention | sum(abs(y)) / sum(abs(x)) over finite values, pooling |
| energy_retention | sum(y**2) / sum(x**2) over finite values, pooling |
| zero_fraction_in | count(x == 0) / finite values of the pooling input |

>>> import numpy as np, tensorflow as tf
>>> from tfprobe.kernels import graph
>>> p = graph.partials(tf.constant([[0.0, 1.0], [2.0, -3.0]]), near_zero=1e-3)
>>> s = finalize(p["sums"].numpy(), p["maxes"].numpy(), near_zero=1e-3)
>>> round(s["mean"], 6), s["zero_fraction"], s["min"], s["max"], s["dead_unit_fraction"]
(0.0, 0.25, -3.0, 2.0, 0.0)
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

SUM_FIELDS = (
    "steps",
    "count",
    "finite",
    "sum",
    "sumsq",
    "sum_abs",
    "zeros",
    "near",
    "nan",
    "inf",
    "hoyer_sum",
    "hoyer_n",
    "saturated",
    "in_count",
    "in_finite",
    "in_abs",
    "in_sq",
    "in_zeros",
)
S = {name: i for i, name in enumerate(SUM_FIELDS)}
NUM_SUMS = len(SUM_FIELDS)
MAX_FIXED = 2  # maxes[0] = max, maxes[1] = -min, maxes[2:] = per-unit max|x|


def num_units(x) -> int | None:
    """Size of the last axis if static, non-zero and the tensor has rank >= 2, else None."""
    if x.shape.rank is None or x.shape.rank < 2:
        return None
    return x.shape[-1] or None


def saturation_thresholds(bounds, saturation_margin):
    """`(below, above)`: a finite value `x` is saturated if `x <= below` or `x >= above` (both float32 values).

    `bounds` is `(low, high)`, or `(None, high)` for an activation whose low
    side does not saturate (ReLU6, `ReLU(max_value=...)`: their zeros are
    sparsity). Then `below` is `-inf` and the margin is `saturation_margin * high`.

    >>> saturation_thresholds((0.0, 1.0), 0.01)
    (0.009999999776482582, 0.9900000095367432)
    >>> saturation_thresholds((None, 6.0), 0.01)
    (-inf, 5.940000057220459)
    """
    try:
        low, high = bounds
        valid = (low is None and high > 0) or (low is not None and low < high)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(
            f"`bounds` must be (low, high) with low < high, or (None, high) with high > 0. Received: bounds={bounds!r}"
        )
    if low is None:
        return -math.inf, float(np.float32(high - saturation_margin * high))
    margin = saturation_margin * (high - low)
    return float(np.float32(low + margin)), float(np.float32(high - margin))


GRADIENT_FIELDS = ("steps", "count", "finite", "sumsq", "sum_abs", "zeros", "nan", "inf")
"""The sum fields that activation-gradient statistics read (`tfprobe.recording.backward.statistics`); the others are zero."""


def as_input_sums(sums):
    """The `in_*` partials of a pooling input from the partials of that tensor (its own sums)."""
    src = [S[k] for k in ("count", "finite", "sum_abs", "sumsq", "zeros")]
    dst = [[S[k]] for k in ("in_count", "in_finite", "in_abs", "in_sq", "in_zeros")]
    return tf.scatter_nd(dst, tf.gather(sums, src), [NUM_SUMS])


def empty_sums():
    return np.zeros(NUM_SUMS, np.float64)


def empty_maxes(units):
    return np.full(MAX_FIXED + (units or 0), -np.inf, np.float32)


def _ratio(a, b):
    return float(a / b) if b > 0 else math.nan


def finalize(sums, maxes, *, near_zero, bounded=False, pooling=False, hoyer=None):
    """Statistics of one window from its accumulated partials (NumPy).

    Args:
      sums: float64[NUM_SUMS]; maxes: float32[2 + units].
      near_zero: threshold used for dead units.
      bounded: include `saturation_fraction`.
      pooling: include the pooling statistics.
      hoyer: include `hoyer_sparsity`; default: when any example had more
        than one value.

    Returns:
      `{stat: float}`, NaN where a statistic has no finite value to describe.
    """
    s = {name: float(sums[i]) for i, name in enumerate(SUM_FIELDS)}
    n = s["finite"]
    out = {}
    mean = _ratio(s["sum"], n)
    mean_sq = _ratio(s["sumsq"], n)
    out["mean"] = mean
    out["std"] = math.sqrt(max(mean_sq - mean * mean, 0.0)) if n > 0 else math.nan
    out["min"] = float(-maxes[1]) if n > 0 else math.nan
    out["max"] = float(maxes[0]) if n > 0 else math.nan
    out["rms"] = math.sqrt(mean_sq) if n > 0 else math.nan
    out["mean_abs"] = _ratio(s["sum_abs"], n)
    out["zero_fraction"] = _ratio(s["zeros"], n)
    out["near_zero_fraction"] = _ratio(s["near"], n)
    out["nan_count"] = s["nan"]
    out["inf_count"] = s["inf"]
    unit_max = np.asarray(maxes[MAX_FIXED:])
    if unit_max.size:
        out["dead_unit_fraction"] = float(np.mean(unit_max <= near_zero)) if s["count"] > 0 else math.nan
    if hoyer or (hoyer is None and s["hoyer_n"] > 0):
        out["hoyer_sparsity"] = _ratio(s["hoyer_sum"], s["hoyer_n"])
    if bounded:
        out["saturation_fraction"] = _ratio(s["saturated"], n)
    if pooling:
        out["size_ratio"] = _ratio(s["count"], s["in_count"])
        out["mass_retention"] = _ratio(s["sum_abs"], s["in_abs"])
        out["energy_retention"] = _ratio(s["sumsq"], s["in_sq"])
        out["zero_fraction_in"] = _ratio(s["in_zeros"], s["in_finite"])
    return out
