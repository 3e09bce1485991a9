"""Synthetic data with the structure of the examples' datasets and a signal a model can learn."""

from __future__ import annotations

import numpy as np


def rng(seed=0):
    return np.random.default_rng(seed)


def labels(n, classes, seed=0):
    return rng(seed + 1).integers(0, classes, n)


def images(n, size, channels, classes, seed=0, scale=1.0):
    """Noise images with a bright square whose position depends on the class; values in [0, scale]."""
    r = rng(seed)
    y = labels(n, classes, seed)
    x = r.uniform(0.0, 0.4, (n, size, size, channels)).astype("float32")
    cell = max(size // 4, 2)
    for i, c in enumerate(y):
        row, col = divmod(int(c) % 16, 4)
        x[i, row * cell : (row + 1) * cell, col * cell : (col + 1) * cell, :] += 0.6
    return np.clip(x, 0.0, 1.0) * scale, y


def tokens(n, length, vocabulary, classes, seed=0):
    """Token ids in [2, vocabulary) with class-specific marker tokens scattered in each sequence."""
    r = rng(seed)
    y = labels(n, classes, seed)
    x = r.integers(2 + classes, vocabulary, (n, length))
    for i, c in enumerate(y):
        where = r.choice(length, max(length // 4, 1), replace=False)
        x[i, where] = 2 + c
    return x, y


def waves(n, length, channels, classes, seed=0, noise=0.3):
    """Sines whose frequency depends on the class, with noise: `(n, length, channels)`."""
    r = rng(seed)
    y = labels(n, classes, seed)
    t = np.arange(length) / length
    freq = 2.0 + 3.0 * y[:, None, None]
    phase = r.uniform(0, 2 * np.pi, (n, 1, channels))
    x = np.sin(2 * np.pi * freq * t[None, :, None] + phase) + noise * r.normal(size=(n, length, channels))
    return x.astype("float32"), y
