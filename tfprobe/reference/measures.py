"""What a layer represents, measured on a fixed reference set: pure NumPy functions of `[N, D]` feature matrices.

`features` is one layer's output on the N reference examples, one row per
example (spatial maps reduced first, see `tfprobe.reference.reduce_features`);
`labels` the N class labels. Every measure centres the features (subtracts
the mean example), so a constant offset never counts as structure.

* `effective_rank`: Roy & Vetterli (2007), "The effective rank: a measure of
  effective dimensionality", EUSIPCO: `exp(H(p))` with `p` the singular
  values of the centred matrix divided by their sum. Between 0 (a constant
  representation) and `min(N, D)`.
* `stable_rank`: `||A||_F^2 / ||A||_2^2` of the centred matrix `A`: the
  number of directions that carry the energy of the largest one. Between 1
  and the rank; 0 for a constant representation.
* `linear_cka`: Kornblith et al. (2019), "Similarity of neural network
  representations revisited", ICML, with a linear kernel. 1 for features
  equal up to a rotation, isotropic scaling and offset. On finite N it is
  biased upwards: two independent isotropic Gaussian matrices of widths
  `Da`, `Db` score about `sqrt(Da * Db / ((N + Da) * (N + Db)))`, roughly
  `D / N` for equal widths, not 0 (`cka_noise_floor`).
* `probe_accuracy`: held-out accuracy of a closed-form ridge linear classifier
  on one-hot targets (`linear_probe` documents the split and regulariser).
* `label_mutual_information`: `H(Y)` minus the probe's held-out cross-entropy,
  in bits, clipped to `[0, H(Y)]`: a lower bound on `I(features; Y)` (see
  `linear_probe` for its bias).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 40))   # rank 5 in 40 dimensions
>>> round(stable_rank(x[:, :1]), 3), effective_rank(x) <= 5
(1.0, True)
>>> q, _ = np.linalg.qr(rng.normal(size=(40, 40)))
>>> round(linear_cka(x, 3 * x @ q + 1), 6)
1.0
"""

from __future__ import annotations

import dataclasses

import numpy as np

DEFAULT_L2 = 1e-2
DEFAULT_TEST_FRACTION = 0.3
_MAX_TEMPERATURE = 1e4


def _centred(features, name="features"):
    a = np.asarray(features, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"`{name}` must be an [N, D] matrix with N >= 2 examples. Received: shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"`{name}` must be finite. Received: {int(np.sum(~np.isfinite(a)))} NaN or Inf values")
    return a - a.mean(axis=0)


def _gram(a):
    """The smaller of `A A^T` (N x N) and `A^T A` (D x D): they share their non-zero eigenvalues."""
    return a @ a.T if a.shape[1] > a.shape[0] else a.T @ a


def singular_values(features):
    """Singular values of the centred `[N, D]` matrix, largest first, through its smaller Gram matrix.

    >>> singular_values([[1.0, 0.0], [-1.0, 0.0]]).round(6).tolist()
    [1.414214, 0.0]
    """
    eig = np.linalg.eigvalsh(_gram(_centred(features)))
    return np.sqrt(np.clip(eig[::-1], 0.0, None))


def effective_rank(features):
    """Roy & Vetterli's effective rank of the centred features: `exp(entropy(s / sum(s)))`, `s` the singular values.

    A rank-k matrix with equal singular values scores k; unequal ones score
    less. 0 for a constant representation.

    >>> import numpy as np
    >>> round(effective_rank(np.eye(4)), 6)  # centred: 3 equal directions
    3.0
    """
    s = singular_values(features)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def stable_rank(features):
    """`||A||_F^2 / ||A||_2^2` of the centred features `A`; 0 for a constant representation.

    >>> stable_rank([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])
    1.0
    """
    s2 = singular_values(features) ** 2
    return float(s2.sum() / s2[0]) if s2[0] > 0 else 0.0


def _cross_energy(a, b):
    """`||A^T B||_F^2` of centred `a`, `b`, through whichever of the feature or example space is cheaper."""
    n, da, db = a.shape[0], a.shape[1], b.shape[1]
    if da * db <= n * n:
        return float(np.sum((a.T @ b) ** 2))
    return float(np.sum((a @ a.T) * (b @ b.T)))


def linear_cka(a, b):
    """Linear centred kernel alignment of two representations of the same N examples (Kornblith et al. 2019).

    `||A^T B||_F^2 / (||A^T A||_F ||B^T B||_F)` on centred features: 1 when
    `b` is `a` up to an orthogonal transform, isotropic scaling and offset;
    near `cka_noise_floor` (not 0) for independent features. NaN if either
    representation is constant.

    >>> import numpy as np
    >>> a = np.random.default_rng(1).normal(size=(50, 3))
    >>> round(linear_cka(a, -2 * a), 6), round(linear_cka(a, a[:, :1]), 2)
    (1.0, 0.58)
    """
    a, b = _centred(a, "a"), _centred(b, "b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"`a` and `b` must describe the same examples. Received: {a.shape[0]} and {b.shape[0]} rows")
    return _cka_from(a, b, _self_norm(a), _self_norm(b))


def _self_norm(a):
    return float(np.linalg.norm(_gram(a)))


def _cka_from(a, b, norm_a, norm_b):
    if norm_a <= 0 or norm_b <= 0:
        return float("nan")
    return _cross_energy(a, b) / (norm_a * norm_b)


def cka_matrix(features_list):
    """The `[L, L]` linear CKA matrix of L representations of the same examples (each self-norm computed once).

    A constant or non-finite representation gets a NaN row and column.

    >>> import numpy as np
    >>> x = np.random.default_rng(2).normal(size=(20, 4))
    >>> cka_matrix([x, 2 * x]).round(6).tolist()
    [[1.0, 1.0], [1.0, 1.0]]
    """
    centred = [_centred(f) if np.all(np.isfinite(f)) else None for f in features_list]
    centred = [np.zeros((len(features_list[i]), 1)) if a is None else a for i, a in enumerate(centred)]  # NaN rows
    norms = [_self_norm(a) for a in centred]
    out = np.ones((len(centred), len(centred)))
    for i in range(len(centred)):
        if norms[i] <= 0:
            out[i, :] = out[:, i] = np.nan
        for j in range(i + 1, len(centred)):
            out[i, j] = out[j, i] = _cka_from(centred[i], centred[j], norms[i], norms[j])
    return out


def cka_noise_floor(n, da, db):
    """The expected linear CKA of independent isotropic Gaussian features (N examples, widths Da and Db).

    `||A^T B||_F^2` is about `(N-1) Da Db` and `||A^T A||_F^2` about
    `(N-1) Da (N - 1 + Da)` after centring, hence
    `sqrt(Da Db / ((N - 1 + Da)(N - 1 + Db)))`.

    >>> round(cka_noise_floor(1001, 10, 10), 4)
    0.0099
    """
    m = n - 1
    return float(np.sqrt(da * db / ((m + da) * (m + db))))


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """What one linear probe found (see `linear_probe`)."""

    accuracy: float  # held-out accuracy
    cross_entropy: float  # held-out cross-entropy of the calibrated probe, bits
    label_entropy: float  # H(Y) of the reference labels, bits
    information: float  # clip(label_entropy - cross_entropy, 0, label_entropy), bits
    n_train: int
    n_test: int


def _class_indices(labels, n):
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot or probabilities
        y = y.argmax(axis=1)
    y = y.reshape(len(y), -1)
    if y.shape != (n, 1):
        raise ValueError(
            f"`labels` must hold one class label per example. Received: shape {np.shape(labels)} for {n} examples"
        )
    y = y[:, 0]
    if y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y))):
        raise ValueError(
            "`labels` must be class labels (integers, strings or one-hot rows). Received: non-integral float values"
        )
    classes, index = np.unique(y, return_inverse=True)
    return index, len(classes)


def _split(n, test_fraction, seed):
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(max(1, int(round(n * test_fraction))), n - 1)
    return order[n_test:], order[:n_test]


def _ridge(x, targets, l2):
    """Weights and leave-one-out predictions of ridge regression on centred `x`, in closed form.

    `lam = l2 * ||x||_F^2 / D` (l2 times N times the mean feature variance):
    the penalty follows the scale of the features. Solved in the smaller of
    the feature (D x D) and example (N x N) spaces.
    """
    n, d = x.shape
    lam = max(l2 * float(np.sum(x**2)) / d, 1e-12)
    if d <= n:
        inverse = np.linalg.inv(x.T @ x + lam * np.eye(d))
        weights = inverse @ (x.T @ targets)
        hat_diag = np.sum((x @ inverse) * x, axis=1)
    else:
        kernel = x @ x.T
        dual = np.linalg.inv(kernel + lam * np.eye(n))
        weights = x.T @ (dual @ targets)
        hat_diag = np.sum(kernel * dual.T, axis=1)
    fitted = x @ weights
    loo = targets - (targets - fitted) / np.clip(1.0 - hat_diag, 1e-9, None)[:, None]
    return weights, loo


def _log_softmax(scores):
    shifted = scores - scores.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _cross_entropy_nats(scores, index, temperature):
    return float(-np.mean(_log_softmax(temperature * scores)[np.arange(len(index)), index]))


def _fit_temperature(scores, index, iterations=28):
    """The `T > 0` minimising the cross-entropy of `softmax(T * scores)`.

    Convex in T, hence unimodal in `log T`: a golden-section search over
    `log T` in `[log 1e-3, log 1e4]`, to about 0.1% of T.
    """
    golden = (np.sqrt(5.0) - 1.0) / 2.0
    lo, hi = np.log(1e-3), np.log(_MAX_TEMPERATURE)

    def loss(u):
        return _cross_entropy_nats(scores, index, np.exp(u))

    m1, m2 = hi - golden * (hi - lo), lo + golden * (hi - lo)
    f1, f2 = loss(m1), loss(m2)
    for _ in range(iterations):  # the bracket shrinks by 0.618 per iteration, one evaluation each
        if f1 <= f2:
            hi, m2, f2 = m2, m1, f1
            m1 = hi - golden * (hi - lo)
            f1 = loss(m1)
        else:
            lo, m1, f1 = m1, m2, f2
            m2 = lo + golden * (hi - lo)
            f2 = loss(m2)
    return float(np.exp((lo + hi) / 2.0))


def linear_probe(features, labels, l2=DEFAULT_L2, test_fraction=DEFAULT_TEST_FRACTION, seed=0):
    """Fits a linear classifier on part of the examples and scores it on the rest.

    The split is a fixed permutation of the examples (`seed`), with
    `test_fraction` of them held out. On the training part the features
    are centred (training mean), and ridge regression onto one-hot targets
    is solved in closed form with the penalty `l2 * ||X||_F^2 / D` (scale
    free). The predicted class is the largest score. For probabilities the
    scores go through `softmax(T * scores)`, with one temperature `T` fitted
    on the training part's leave-one-out scores (closed form for ridge), so
    that the held-out examples are never used for fitting.

    `information = H(Y) - cross_entropy` (bits) is a lower bound on
    `I(features; Y)` in expectation (any fixed predictor's cross-entropy is
    at least `H(Y|features)`), so it is biased low: a linear probe trained
    on few examples misses non-linear and hard-to-fit structure. On a finite
    held-out set it has sampling noise of either sign (of order
    `1/sqrt(n_test)`), and `H(Y)` is the plug-in entropy of the reference
    labels (slightly low for many classes and few examples). It is clipped
    to `[0, H(Y)]`.

    >>> import numpy as np
    >>> y = np.arange(200) % 4
    >>> x = np.eye(4)[y] + 0.01 * np.random.default_rng(0).normal(size=(200, 4))
    >>> r = linear_probe(x, y)
    >>> r.accuracy, round(r.label_entropy, 3), r.information > 1.9
    (1.0, 2.0, True)
    """
    x = np.asarray(features, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    _centred(x)  # checks the shape and values
    index, k = _class_indices(labels, len(x))
    if len(x) < 4:
        raise ValueError(f"`features` must hold at least 4 examples for a held-out probe. Received: {len(x)}")
    counts = np.bincount(index, minlength=k) / len(index)
    h_y = float(-np.sum(counts[counts > 0] * np.log2(counts[counts > 0])))
    train, test = _split(len(x), test_fraction, seed)
    mean = x[train].mean(axis=0)
    x_train, x_test = x[train] - mean, x[test] - mean
    targets = np.eye(k)[index[train]]
    prior = targets.mean(axis=0)
    weights, loo = _ridge(x_train, targets - prior, l2)
    scores = x_test @ weights + prior
    temperature = _fit_temperature(loo + prior, index[train])
    cross_entropy = _cross_entropy_nats(scores, index[test], temperature) / np.log(2.0)
    accuracy = float(np.mean(scores.argmax(axis=1) == index[test]))
    information = float(np.clip(h_y - cross_entropy, 0.0, h_y))
    return ProbeResult(accuracy, float(cross_entropy), h_y, information, len(train), len(test))


def layer_measures(features, labels=None, previous=None, **probe_args):
    """Every per-layer measure of a reference step, `{stat: float}` (names as `metadata.REPRESENTATION_STATS`).

    `labels` None skips `probe_accuracy` and `label_information`; `previous`
    (the layer's features at the previous reference step, same examples)
    None skips `cka_drift`. Non-finite features give NaN for every measure.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(40, 3))
    >>> sorted(layer_measures(x, previous=x))
    ['cka_drift', 'effective_rank', 'stable_rank']
    """
    f = np.asarray(features, dtype=np.float64)
    finite = bool(np.all(np.isfinite(f)))
    out = {
        "effective_rank": effective_rank(f) if finite else float("nan"),
        "stable_rank": stable_rank(f) if finite else float("nan"),
    }
    if labels is not None and len(f) >= 4:
        probe = linear_probe(f, labels, **probe_args) if finite else None
        out["probe_accuracy"] = probe.accuracy if probe else float("nan")
        out["label_information"] = probe.information if probe else float("nan")
    if previous is not None:
        p = np.asarray(previous, dtype=np.float64)
        ok = finite and np.all(np.isfinite(p)) and len(p) == len(f)
        out["cka_drift"] = cka_drift(p, f) if ok else float("nan")
    return out


CONSTANT_TOLERANCE = 1e-5
"""Features whose every value is within this fraction of their largest magnitude of its column's mean are constant."""


def is_constant(features):
    """Whether a representation carries no variation across examples (to float32 rounding, `CONSTANT_TOLERANCE`).

    >>> is_constant([[1.0, 2.0], [1.0, 2.0]]), is_constant([[1.0, 2.0], [1.0, 2.5]]), is_constant([[0.0], [0.0]])
    (True, False, True)
    """
    a = np.asarray(features, dtype=np.float64)
    a = a[:, None] if a.ndim == 1 else a
    scale = float(np.abs(a).max()) if a.size else 0.0
    return float(np.abs(a - a.mean(axis=0)).max(initial=0.0)) <= CONSTANT_TOLERANCE * scale


def cka_drift(previous, current):
    """`cka_drift`: the linear CKA of a layer's features at two reference steps, defined for constant layers too.

    Linear CKA is 0/0 when a representation is constant (a dead layer, a
    normalisation over an axis of size 1). Here a layer constant at both
    steps did not change (1.0: it carries no variation either time), and a
    layer constant at exactly one of them shares nothing with the other
    (0.0: it lost or gained all its variation). Non-finite features: NaN.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(20, 3))
    >>> cka_drift(np.ones((20, 3)), 2 * np.ones((20, 3))), cka_drift(np.ones((20, 3)), x), round(cka_drift(x, -x), 6)
    (1.0, 0.0, 1.0)
    """
    p, f = np.asarray(previous, dtype=np.float64), np.asarray(current, dtype=np.float64)
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(f))):
        return float("nan")
    before, now = is_constant(p), is_constant(f)
    if before or now:
        return 1.0 if before and now else 0.0
    return linear_cka(p, f)


def probe_accuracy(features, labels, l2=DEFAULT_L2, test_fraction=DEFAULT_TEST_FRACTION, seed=0):
    """Held-out accuracy of a closed-form ridge linear classifier (`linear_probe`).

    >>> import numpy as np
    >>> y = np.arange(100) % 2
    >>> probe_accuracy(np.c_[y * 5.0, np.ones(100)], y)
    1.0
    """
    return linear_probe(features, labels, l2, test_fraction, seed).accuracy


def label_mutual_information(features, labels, l2=DEFAULT_L2, test_fraction=DEFAULT_TEST_FRACTION, seed=0):
    """`H(Y)` minus the linear probe's held-out cross-entropy, in bits, in `[0, H(Y)]` (`linear_probe`).

    >>> import numpy as np
    >>> y = np.arange(100) % 2
    >>> round(label_mutual_information(np.c_[y * 5.0, np.ones(100)], y), 2)
    1.0
    """
    return linear_probe(features, labels, l2, test_fraction, seed).information


__all__ = [
    "effective_rank",
    "stable_rank",
    "linear_cka",
    "cka_drift",
    "is_constant",
    "cka_matrix",
    "cka_noise_floor",
    "probe_accuracy",
    "label_mutual_information",
    "linear_probe",
    "layer_measures",
    "ProbeResult",
    "singular_values",
]
