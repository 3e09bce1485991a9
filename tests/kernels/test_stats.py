"""Each statistic against the NumPy oracle, eagerly and inside tf.function."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import oracle
from helpers.data import OFFSET_FIRST, activation_cases, offset_activation

from tfprobe import metadata
from tfprobe.kernels import graph, stats

NEAR = 1e-3
CASES, rng = activation_cases()  # `rng` continues the stream that drew the cases


def _finalize(p, **kw):
    return stats.finalize(np.asarray(p["sums"]), np.asarray(p["maxes"]), near_zero=NEAR, **kw)


@pytest.mark.parametrize("traced", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_statistics_match_numpy(name, traced):
    x = CASES[name]
    fn = tf.function(graph.partials) if traced else graph.partials
    p = fn(tf.constant(x), near_zero=NEAR, bounds=None)
    got = _finalize({k: v.numpy() for k, v in p.items()})
    want = oracle.activation_stats([x.astype(np.float32)], NEAR)
    oracle.assert_close(got, want)
    assert ("hoyer_sparsity" in got) == ("hoyer_sparsity" in want)
    assert ("dead_unit_fraction" in got) == ("dead_unit_fraction" in want)


def test_saturation_of_bounded_activation():
    x = 1.0 / (1.0 + np.exp(-4 * rng.normal(size=(64, 32)))).astype(np.float32)
    p = graph.partials(tf.constant(x), near_zero=NEAR, bounds=(0.0, 1.0), saturation_margin=0.01)
    got = _finalize({k: v.numpy() for k, v in p.items()}, bounded=True)
    want = oracle.activation_stats([x], NEAR, bounds=(0.0, 1.0), margin=0.01)
    oracle.assert_close(got, want, keys=["saturation_fraction"])
    assert 0.05 < got["saturation_fraction"] < 0.95


def test_one_sided_saturation_counts_only_the_upper_bound():
    """ReLU6: its zeros are sparsity, not saturation; values within 1% of 6 saturate."""
    x = np.clip(rng.normal(3.0, 3.0, size=(64, 32)), 0.0, 6.0).astype(np.float32)
    x[0, :4] = [5.94, 5.9399, 0.06, 0.0]
    p = graph.partials(tf.constant(x), near_zero=NEAR, bounds=(None, 6.0), saturation_margin=0.01)
    got = _finalize({k: v.numpy() for k, v in p.items()}, bounded=True)
    want = oracle.activation_stats([x], NEAR, bounds=(None, 6.0), margin=0.01)
    oracle.assert_close(got, want, keys=["saturation_fraction"])
    assert got["saturation_fraction"] == np.mean(x >= np.float32(5.94))
    two_sided = graph.partials(tf.constant(x), near_zero=NEAR, bounds=(0.0, 6.0))["sums"].numpy()
    assert two_sided[stats.S["saturated"]] - p["sums"].numpy()[stats.S["saturated"]] == np.sum(x <= np.float32(0.06))


@pytest.mark.parametrize("bounds", [(1.0, 1.0), (None, 0.0), (None, -6.0), (2.0,), "sigmoid", (None, None)])
def test_bad_bounds(bounds):
    with pytest.raises(
        ValueError,
        match=r"`bounds` must be \(low, high\) with low < high, or \(None, high\) with high > 0. Received: bounds=",
    ):
        stats.saturation_thresholds(bounds, 0.01)


@pytest.mark.parametrize("first", OFFSET_FIRST.values(), ids=OFFSET_FIRST.keys())
def test_large_offset_activation_matches_float64(first):
    x = offset_activation(first)
    p = graph.partials(tf.constant(x), near_zero=NEAR)
    oracle.assert_float64_accurate(p["sums"].numpy(), p["maxes"].numpy(), x, near_zero=NEAR)


@pytest.mark.parametrize("shape", [(3, 9001), (2, 1000 * 1024), (4, 0), (0, 6)])
def test_row_sums(shape):
    x = np.random.default_rng(2).normal(3.0, 1.0, size=shape).astype(np.float32)
    got = graph.row_sums(tf.constant(x)).numpy()
    want = x.astype(np.float64).sum(axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_sums_and_maxes_compile_with_xla():
    x = CASES["nan_inf"]
    got = tf.function(graph.partials, jit_compile=True)(tf.constant(x), near_zero=NEAR)
    want = graph.partials(tf.constant(x), near_zero=NEAR)
    np.testing.assert_allclose(got["sums"].numpy(), want["sums"].numpy(), rtol=1e-6)  # XLA fuses another order
    np.testing.assert_array_equal(got["maxes"].numpy(), want["maxes"].numpy())


@pytest.mark.parametrize("name", sorted(CASES))
def test_xla_form_counts_what_the_graph_form_counts(name):
    """The zero and near-zero counts of the XLA form (one fused reduction) equal the two counts of the graph form."""
    x2d = graph.as_rows(tf.constant(CASES[name]))
    x2d = tf.concat([x2d, tf.zeros_like(x2d), tf.fill(tf.shape(x2d), 5e-4)], axis=0)  # blocks full of zeros, near
    xu = graph.by_unit(x2d, None)
    sums = {}
    for xla in (False, True):
        fn = tf.function(
            lambda a, b, xla=xla: graph.sums_and_maxes(
                a, b, False, near_zero=NEAR, bounds=None, saturation_margin=0.01, sample_size=None, xla=xla
            ),
            jit_compile=xla,
        )
        sums[xla] = fn(x2d, xu)[0].numpy()
    counts = [stats.S[k] for k in ("zeros", "near", "nan", "inf", "finite")]
    np.testing.assert_array_equal(sums[True][counts], sums[False][counts])
    a = np.abs(x2d.numpy())
    assert sums[True][stats.S["zeros"]] == (a == 0).sum() and sums[True][stats.S["near"]] == (a <= NEAR).sum()


@pytest.mark.parametrize("bounds", [None, (-1.0, 1.0), (None, 1.0)], ids=["unbounded", "tanh", "relu6"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_xla_form_is_the_graph_form(name, bounds):
    """The XLA form (one variadic reduce for the sums and counts, `_one_pass_sums`) gives the graph form's partials."""
    x = CASES[name]
    x2d = graph.as_rows(tf.constant(x))
    units = stats.num_units(tf.constant(x))
    xu = graph.by_unit(x2d, units)
    got = {}
    for xla in (False, True):
        fn = tf.function(
            lambda a, b, xla=xla: graph.sums_and_maxes(
                a,
                b,
                units is not None,
                near_zero=NEAR,
                bounds=bounds,
                saturation_margin=0.01,
                sample_size=None,
                xla=xla,
            ),
            jit_compile=xla,
        )
        got[xla] = [t.numpy() for t in fn(x2d, xu)]
    (sums, maxes), (want_sums, want_maxes) = got[True], got[False]
    counts = [stats.S[k] for k in ("count", "finite", "zeros", "near", "nan", "inf", "saturated", "hoyer_n")]
    np.testing.assert_array_equal(sums[counts], want_sums[counts])
    np.testing.assert_array_equal(maxes, want_maxes)
    # Summed in another order, as the native kernel (the same tolerances as `test_native`): Hoyer sparsity
    # near 0 cancels sqrt(m) against L1/L2; a sum of values of both signs errs relative to the sum of |x|.
    hoyer = stats.S["hoyer_sum"]
    np.testing.assert_allclose(sums[hoyer], want_sums[hoyer], rtol=2e-6, atol=1e-6 * want_sums[stats.S["hoyer_n"]])
    sums[hoyer] = want_sums[hoyer]
    atol = np.zeros_like(sums)
    atol[stats.S["sum"]] = 1e-6 * want_sums[stats.S["sum_abs"]]
    with np.errstate(invalid="ignore"):  # equal infinities are equal, not NaN apart
        error = np.where(sums == want_sums, 0.0, np.abs(sums - want_sums))
    assert np.all(error <= atol + 2e-6 * np.abs(want_sums)), (sums, want_sums)


@pytest.mark.parametrize("first", OFFSET_FIRST.values(), ids=OFFSET_FIRST.keys())
def test_xla_form_of_a_large_offset_activation_matches_float64(first):
    x = offset_activation(first)
    x2d = graph.as_rows(tf.constant(x))
    fn = tf.function(
        lambda a, b: graph.sums_and_maxes(
            a, b, False, near_zero=NEAR, bounds=None, saturation_margin=0.01, sample_size=None, xla=True
        ),
        jit_compile=True,
    )
    sums, maxes = fn(x2d, graph.by_unit(x2d, None))
    oracle.assert_float64_accurate(sums.numpy(), maxes.numpy(), x, near_zero=NEAR)


def _accumulate(batches, traced=False):
    fn = tf.function(graph.partials) if traced else graph.partials
    sums, maxes = None, None
    for b in batches:
        p = fn(tf.constant(b), near_zero=NEAR)
        s, m = p["sums"].numpy(), p["maxes"].numpy()
        sums = s if sums is None else sums + s
        maxes = m if maxes is None else np.maximum(maxes, m)
    return sums, maxes


@pytest.mark.parametrize("traced", [False, True], ids=["eager", "tf.function"])
def test_streaming_over_batches_equals_one_pass(traced):
    batches = [np.maximum(rng.normal(size=(8, 4, 6)), 0).astype(np.float32) for _ in range(5)]
    batches[2][1, 1, 1] = np.nan
    sums, maxes = _accumulate(batches, traced)
    streamed = stats.finalize(sums, maxes, near_zero=NEAR)
    one = graph.partials(tf.constant(np.concatenate(batches)), near_zero=NEAR)
    single = stats.finalize(one["sums"].numpy(), one["maxes"].numpy(), near_zero=NEAR)
    oracle.assert_close(streamed, single, rtol=1e-6)
    # The step counter differs (5 steps vs 1); everything else adds up.
    assert sums[stats.S["steps"]] == 5 and one["sums"].numpy()[stats.S["steps"]] == 1
    oracle.assert_close(streamed, oracle.activation_stats(batches, NEAR))


def test_pooling_statistics():
    x = np.maximum(rng.normal(size=(4, 8, 8, 3)), 0).astype(np.float32)
    y = tf.keras.layers.MaxPooling2D()(x).numpy()
    sums = graph.partials(tf.constant(y), near_zero=NEAR)["sums"] + graph.pooling_input_sums(tf.constant(x))
    got = stats.finalize(sums.numpy(), np.zeros(2 + 3, np.float32), near_zero=NEAR, pooling=True)
    oracle.assert_close(
        got,
        oracle.pooling_stats([x], [y]),
        keys=["size_ratio", "mass_retention", "energy_retention", "zero_fraction_in"],
    )
    assert got["size_ratio"] == 0.25
    assert 0.25 <= got["mass_retention"] <= 1.0


def test_max_pool_mass_retention_bounds():
    """A 2x2 max pool keeps 1/4 of the mass of uniform windows and all of it for one-hot windows."""
    uniform = np.ones((1, 4, 4, 1), np.float32)
    onehot = np.zeros((1, 4, 4, 1), np.float32)
    onehot[0, ::2, ::2, 0] = 1.0
    for x, want in ((uniform, 0.25), (onehot, 1.0)):
        y = tf.keras.layers.MaxPooling2D()(x)
        sums = graph.partials(y, near_zero=NEAR)["sums"] + graph.pooling_input_sums(tf.constant(x))
        got = stats.finalize(sums.numpy(), np.zeros(3, np.float32), near_zero=NEAR, pooling=True)
        assert got["mass_retention"] == pytest.approx(want)


HIST_VALUES = np.array(
    [0.0, -0.0, 1.0, 1.5, 2.0, -3.0, 1e-7, -1e-9, 5e-7, 1e6, 2e6, -3e7, np.inf, -np.inf, np.nan, 1e-45, 0.75],
    np.float32,
)


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_histogram_matches_bucket_definition(jit):
    values = np.concatenate([HIST_VALUES, rng.normal(scale=10.0, size=2000).astype(np.float32)])
    got = tf.function(graph.histogram, jit_compile=jit)(tf.constant(values)).numpy()
    np.testing.assert_array_equal(got, oracle.histogram(values))
    assert got.sum() == values.size - 1  # NaN is not counted
    buckets = metadata.histogram_buckets()
    assert len(buckets) == metadata.NUM_BUCKETS
    finite = values[np.isfinite(values) & (values != 0)]
    for v in finite[:50]:
        idx = np.flatnonzero(oracle.histogram([v]))[0]
        lo, hi = buckets[idx]
        assert lo <= abs(v) < hi or lo < v <= hi or lo <= v < hi


def test_histogram_of_float16_and_merging():
    a = rng.normal(size=(64, 8)).astype(np.float16)
    b = rng.normal(size=(32, 8)).astype(np.float16)
    ha, hb = graph.histogram(tf.constant(a)).numpy(), graph.histogram(tf.constant(b)).numpy()
    np.testing.assert_array_equal(ha + hb, graph.histogram(tf.constant(np.concatenate([a, b]))).numpy())
    np.testing.assert_array_equal(ha, oracle.histogram(a))


@pytest.mark.parametrize("traced", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_sample_size_splits_sampled_and_whole_batch_statistics(name, traced):
    x = CASES[name]
    k = 2
    fn = tf.function(graph.partials) if traced else graph.partials
    p = fn(tf.constant(x), near_zero=NEAR, bounds=None, sample_size=k)
    got = _finalize({key: v.numpy() for key, v in p.items()})
    full = oracle.activation_stats([x.astype(np.float32)], NEAR)
    sample = oracle.activation_stats([x[:k].astype(np.float32)], NEAR)
    exact = [s for s in ("min", "max", "dead_unit_fraction", "nan_count", "inf_count") if s in full]
    oracle.assert_close(got, full, keys=exact)
    oracle.assert_close(got, sample, keys=[s for s in sample if s not in exact])


@pytest.mark.parametrize("xla", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("row", [0, 7, 4095])
def test_non_finite_value_outside_the_sample_is_found(row, xla):
    # Found without trusting max/min to propagate NaN (XLA's CPU max/min may not).
    x = np.ones((4096, 3), np.float32)
    x[row, 1] = np.nan
    x[(row + 1) % 4096, 2] = -np.inf
    x2d = graph.as_rows(tf.constant(x))
    fn = tf.function(
        lambda a, b: graph.sums_and_maxes(
            a, b, True, near_zero=NEAR, bounds=None, saturation_margin=0.01, sample_size=1 if row else 2, xla=xla
        ),
        jit_compile=xla,
    )
    sums, maxes = fn(x2d, graph.by_unit(x2d, 3))
    got = _finalize({"sums": sums.numpy(), "maxes": maxes.numpy()})
    assert (got["nan_count"], got["inf_count"]) == (1.0, 1.0)
    assert got["min"] == got["max"] == 1.0


@pytest.mark.parametrize("xla", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("name", ["nan_inf", "normal", "relu_with_dead_unit"])
@pytest.mark.parametrize("sample", [None, 2])
def test_gradient_partials_are_the_full_partials_reduced(name, sample, xla):
    """`gradient_sums_and_maxes` computes what `gradient_partials` keeps of the full partials, also under XLA
    and with a NaN outside the sample."""
    x = CASES[name].copy()
    if sample is not None:
        x.reshape(len(x), -1)[-1, 0] = np.nan  # outside the sample
    x2d = graph.as_rows(tf.constant(x))
    got = tf.function(lambda t: graph.gradient_sums_and_maxes(t, sample_size=sample, xla=xla), jit_compile=xla)(x2d)
    full = graph.sums_and_maxes(
        x2d, graph.by_unit(x2d, None), False, near_zero=NEAR, bounds=None, saturation_margin=0.01, sample_size=sample
    )
    want_sums, want_maxes = (t.numpy() for t in graph.gradient_partials(*full))
    sums, maxes = got[0].numpy(), got[1].numpy()
    counts = [stats.S[k] for k in ("steps", "count", "finite", "zeros", "nan", "inf")]
    np.testing.assert_array_equal(sums[counts], want_sums[counts])
    np.testing.assert_allclose(sums, want_sums, rtol=2e-6)
    np.testing.assert_array_equal(maxes, want_maxes)
    assert sums[stats.S["nan"]] == np.isnan(x).sum() and sums[stats.S["inf"]] == np.isinf(x).sum()


def test_sampled_pooling_input_sums():
    x = rng.normal(size=(6, 4, 4, 2)).astype(np.float32)
    s = graph.pooling_input_sums(tf.constant(x), sample_size=3).numpy()
    assert s[stats.S["in_count"]] == x[:3].size
    np.testing.assert_allclose(s[stats.S["in_sq"]], (x[:3].astype(np.float64) ** 2).sum(), rtol=1e-6)


@pytest.mark.parametrize("traced", [False, True], ids=["eager", "tf.function"])
def test_tiny_values_do_not_make_negative_squares(traced):
    """Squares of values near 1e-19 underflow in float32; the sum of squares must still not go below 0."""
    x = np.zeros((64, 16), np.float32)
    x[:, :8] = np.random.default_rng(1).uniform(0.5e-19, 1.6e-19, size=(64, 8))
    fn = tf.function(graph.partials) if traced else graph.partials
    p = fn(tf.constant(x), near_zero=NEAR)
    assert p["sums"].numpy()[stats.S["sumsq"]] >= 0
    got = _finalize({k: v.numpy() for k, v in p.items()})
    want = oracle.activation_stats([x], NEAR)
    for name in ("mean", "min", "max", "mean_abs", "zero_fraction", "near_zero_fraction", "dead_unit_fraction"):
        assert got[name] == pytest.approx(want[name], rel=1e-5, abs=0), name
    assert 0 <= got["rms"] <= 1.6e-19 and 0 <= got["std"] <= 1.6e-19
