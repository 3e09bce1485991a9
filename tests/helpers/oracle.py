"""NumPy reference implementations of tfprobe's statistics (the test oracle)."""

import math

import numpy as np

from tfprobe import metadata


def activation_stats(batches, near_zero, bounds=None, margin=0.01, units=True):
    """Statistics of the concatenation of `batches` (arrays with the example axis first)."""
    batches = [np.asarray(b) for b in batches]
    x = np.concatenate([b.astype(np.float64).ravel() for b in batches])
    fin = np.isfinite(x)
    xf = x[fin]
    n = xf.size
    out = {
        "mean": xf.mean() if n else math.nan,
        "std": xf.std() if n else math.nan,
        "min": xf.min() if n else math.nan,
        "max": xf.max() if n else math.nan,
        "rms": math.sqrt((xf**2).mean()) if n else math.nan,
        "mean_abs": np.abs(xf).mean() if n else math.nan,
        "zero_fraction": (xf == 0).mean() if n else math.nan,
        "near_zero_fraction": (np.abs(xf) <= near_zero).mean() if n else math.nan,
        "nan_count": float(np.isnan(x).sum()),
        "inf_count": float(np.isinf(x).sum()),
    }
    if units and batches[0].ndim >= 2:
        k = batches[0].shape[-1]
        a = np.concatenate([np.abs(b.astype(np.float64)).reshape(-1, k) for b in batches])
        a[~np.isfinite(a)] = np.inf
        out["dead_unit_fraction"] = float((a.max(axis=0) <= near_zero).mean())
    hoyer = []
    for b in batches:
        rows = b.astype(np.float64).reshape(b.shape[0], -1) if b.ndim >= 2 else b.astype(np.float64).reshape(-1, 1)
        for row in rows:
            r = row[np.isfinite(row)]
            m = r.size
            if m <= 1:
                continue
            l1, l2 = np.abs(r).sum(), math.sqrt((r**2).sum())
            hoyer.append(1.0 if l2 == 0 else (math.sqrt(m) - l1 / l2) / (math.sqrt(m) - 1))
    if hoyer:
        out["hoyer_sparsity"] = float(np.mean(hoyer))
    if bounds is not None:
        lo, hi = bounds
        if lo is None:  # one-sided: only the upper bound saturates
            saturated = xf >= np.float32(hi - margin * hi)
        else:
            d = margin * (hi - lo)
            saturated = (xf <= np.float32(lo + d)) | (xf >= np.float32(hi - d))
        out["saturation_fraction"] = float(saturated.mean()) if n else math.nan
    return out


def pooling_stats(inputs, outputs):
    x = np.concatenate([np.asarray(b, np.float64).ravel() for b in inputs])
    y = np.concatenate([np.asarray(b, np.float64).ravel() for b in outputs])
    xf, yf = x[np.isfinite(x)], y[np.isfinite(y)]
    return {
        "size_ratio": y.size / x.size,
        "mass_retention": np.abs(yf).sum() / np.abs(xf).sum(),
        "energy_retention": (yf**2).sum() / (xf**2).sum(),
        "zero_fraction_in": (xf == 0).mean(),
    }


def histogram(values):
    """Bucket counts by the definition of `metadata.histogram_buckets()` (via frexp)."""
    x = np.asarray(values, np.float32).astype(np.float64).ravel()
    x = x[~np.isnan(x)]
    counts = np.zeros(metadata.NUM_BUCKETS, np.int64)
    for v in x:
        if v == 0:
            counts[metadata.HIST_ZERO_BUCKET] += 1
            continue
        exp = np.frexp(abs(v))[1] - 1 if np.isfinite(v) else 10**6  # floor(log2|v|)
        k = min(max(exp, metadata.HIST_MIN_EXP - 1), metadata.HIST_MAX_EXP) - (metadata.HIST_MIN_EXP - 1)
        counts[metadata.HIST_ZERO_BUCKET + (1 + k if v > 0 else -1 - k)] += 1
    return counts


def assert_close(got: dict, want: dict, rtol=1e-5, atol=1e-6, keys=None):
    keys = keys or want.keys()
    for key in keys:
        g, w = got[key], want[key]
        if isinstance(w, float) and math.isnan(w):
            assert math.isnan(g), f"{key}: got {g}, want NaN"
            continue
        assert math.isclose(g, w, rel_tol=rtol, abs_tol=atol), f"{key}: got {g!r}, want {w!r}"


def assert_float64_accurate(sums, maxes, x, rtol=1e-7, near_zero=1e-3):
    """mean, std and rms finalized from the partials `sums`, `maxes` of `x` agree with float64 NumPy to `rtol`."""
    from tfprobe.kernels import stats

    got = stats.finalize(np.asarray(sums), np.asarray(maxes), near_zero=near_zero)
    xf = x[np.isfinite(x)].astype(np.float64)
    for name, want in (("mean", xf.mean()), ("std", xf.std()), ("rms", np.sqrt(np.mean(xf**2)))):
        assert abs(got[name] - want) <= rtol * abs(want), (name, got[name], want, abs(got[name] / want - 1))
