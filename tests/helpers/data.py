"""Synthetic data of the tests (seeded NumPy; no download): regression pairs, normal inputs, the CNN's
batches and the activations every statistic is checked on."""

from __future__ import annotations

import numpy as np

CNN_BATCH = 16  # the batch size `cnn_data` is cut for


def regression(n=40, in_shape=(8,), out_dim=4, seed=0):
    """`(x, y)`: `n` standard-normal inputs of `in_shape` and targets of width `out_dim` (float32)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *in_shape)).astype("float32")
    y = rng.normal(size=(n, out_dim)).astype("float32")
    return x, y


def normal(n, shape, seed=0):
    """`n` standard-normal float32 inputs of `shape`."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype("float32")


def cnn_data(steps, seed=0):
    """`steps` batches of `CNN_BATCH` inputs of `models.frozen_cnn` and class labels in 0..2."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(steps * CNN_BATCH, 12, 12, 2)).astype(np.float32)
    y = rng.integers(0, 3, steps * CNN_BATCH)
    return x, y


def activation_cases(seed=0):
    """`(cases, rng)`: the activations every statistic is checked on (`{name: array}`: dead units, NaN and Inf,
    all-NaN, float16, a single element, rank 1, a large offset, values near zero), and the generator that drew
    them, for a module's further draws."""
    rng = np.random.default_rng(seed)
    relu = np.maximum(rng.normal(size=(8, 5, 5, 6)), 0).astype(np.float32)
    relu[..., 2] = 0.0  # one dead unit
    nonfinite = rng.normal(size=(4, 10)).astype(np.float32)
    nonfinite[0, 0], nonfinite[1, 3], nonfinite[2, 5] = np.nan, np.inf, -np.inf
    cases = {
        "normal": rng.normal(size=(16, 7, 3)).astype(np.float32),
        "relu_with_dead_unit": relu,
        "all_zeros": np.zeros((4, 3, 3), np.float32),
        "constant": np.full((5, 4), 2.5, np.float32),
        "nan_inf": nonfinite,
        "all_nan": np.full((2, 3), np.nan, np.float32),
        "float16": rng.normal(size=(6, 9)).astype(np.float16),
        "single_element": np.array([[3.0]], np.float32),
        "rank1": rng.normal(size=(10,)).astype(np.float32),
        "large_offset": (1000.0 + rng.normal(size=(32, 64))).astype(np.float32),
        "near_zero": rng.uniform(-2e-3, 2e-3, size=(8, 16)).astype(np.float32),
    }
    return cases, rng


# The first value shifts the first block's sums: 1003 is 3 std off, 0 is 1000 std off (a float32 sum of
# squares about 0 loses the variance); NaN takes the masked path.
OFFSET_FIRST = {"first_3_std_off": 1003.0, "first_zero": 0.0, "nan_first": np.nan}


def offset_activation(first):
    """2.4 M values of 1000 + N(0, 1) (float32) whose first value, the shift of the sums, is `first`."""
    x = (1000.0 + np.random.default_rng(5).normal(size=(2, 110, 110, 100))).astype(np.float32)
    x.flat[0] = first
    if np.isnan(first):
        x.flat[-1] = np.inf
    return x


def padded_ids(seed=0):
    """8 sequences of 10 token ids in 1..19, zero-padded after lengths 10, 7, 3, 5, 10, 1, 8, 4 (for
    `Embedding(20, ..., mask_zero=True)`)."""
    ids = np.random.default_rng(seed).integers(1, 20, size=(8, 10))
    for row, length in enumerate([10, 7, 3, 5, 10, 1, 8, 4]):
        ids[row, length:] = 0  # padding
    return ids
