"""Real `fit` with frozen weights: logged windows equal NumPy statistics of the same batches."""

import keras
import numpy as np
import pytest
from helpers import oracle
from helpers.data import CNN_BATCH as BATCH
from helpers.data import cnn_data
from helpers.models import frozen_cnn

import tfprobe
import tfprobe.kernels.native

NEAR = 1e-3


def _activations(model, x):
    names = ["conv_a", "pool", "conv_b", "gap", "dense_sig", "logits"]
    probe_model = keras.Model(model.inputs[0], [model.get_layer(n).output for n in names])
    outs = probe_model(x, training=True)
    return dict(zip(names, [o.numpy() for o in outs]))


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_logged_windows_equal_numpy_statistics(tmp_path, jit_compile):
    steps, log_freq = 10, 4
    model = frozen_cnn()
    model.compile(model.optimizer, model.loss, jit_compile=jit_compile)
    x, y = cnn_data(steps)
    probe = tfprobe.LayerProbe(tmp_path / "run", record_freq=1, log_freq=log_freq, histogram_freq=1, near_zero=NEAR)
    model.fit(x, y, batch_size=BATCH, epochs=2, steps_per_epoch=steps // 2, shuffle=False, verbose=0, callbacks=[probe])

    wide = tfprobe.read_logdir(tmp_path, pivot=True)
    assert sorted(set(wide["step"])) == [4, 8, 10]
    assert list(tfprobe.read_layers(tmp_path)["layer"]) == ["conv_a", "pool", "conv_b", "gap", "dense_sig", "logits"]
    hists = tfprobe.read_histograms(tmp_path)
    bounds = {"conv_b": (-1.0, 1.0), "dense_sig": (0.0, 1.0)}
    start = 0
    for end in (4, 8, 10):
        window = _activations(model, x[start * BATCH : end * BATCH])
        before = {"pool": window["conv_a"]}
        for layer, acts in window.items():
            got = wide[(wide.layer == layer) & (wide.step == end)].iloc[0].to_dict()
            want = oracle.activation_stats([acts], NEAR, bounds=bounds.get(layer))
            oracle.assert_close(got, want, rtol=1e-5, atol=1e-6)
            if layer in before:
                oracle.assert_close(got, oracle.pooling_stats([before[layer]], [acts]), rtol=1e-5)
            h = hists[(hists.layer == layer) & (hists.step == end)]
            counts = np.zeros(len(oracle.histogram([])), np.int64)
            counts[h["bucket"].to_numpy()] = h["count"].to_numpy()
            want_counts = oracle.histogram(acts)
            assert counts.sum() == want_counts.sum() == acts.size
            # Same float32 kernels in both graphs; allow a value on a power-of-two edge to differ.
            assert np.abs(counts - want_counts).sum() <= 2
        start = end
    assert probe.windows_written == 3


@pytest.mark.parametrize(
    "record_freq, log_freq, expected_steps, recorded",
    [
        # The first step of a `fit` is always recorded.
        (3, 4, [4, 8, 10], {4: [1, 3], 8: [6], 10: [9]}),
        (5, 2, [2, 6, 10], {2: [1], 6: [5], 10: [10]}),
        (1, 10, [10], {10: list(range(1, 11))}),
        (2, 3, [3, 6, 9, 10], {3: [1, 2], 6: [4, 6], 9: [8], 10: [10]}),
    ],
)
def test_windows_follow_record_and_log_freq(tmp_path, record_freq, log_freq, expected_steps, recorded):
    model = frozen_cnn()
    x, y = cnn_data(10)
    probe = tfprobe.LayerProbe(tmp_path, record_freq=record_freq, log_freq=log_freq, histogram_freq=0, near_zero=NEAR)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[probe])
    wide = tfprobe.read_logdir(tmp_path, pivot=True)
    assert sorted(set(wide["step"])) == expected_steps
    conv = wide[wide.layer == "conv_a"].set_index("step")
    for step, steps_in_window in recorded.items():
        batches = [x[(s - 1) * BATCH : s * BATCH] for s in steps_in_window]
        acts = _activations(model, np.concatenate(batches))["conv_a"]
        oracle.assert_close(
            conv.loc[step].to_dict(),
            oracle.activation_stats([acts], NEAR),
            keys=["mean", "std", "max", "zero_fraction"],
        )
    assert tfprobe.read_histograms(tmp_path).empty


def test_sample_size_statistics_use_the_leading_examples_and_extremes_the_whole_batch(tmp_path):
    steps, log_freq, k = 6, 3, 5
    model = frozen_cnn()
    x, y = cnn_data(steps, seed=3)
    probe = tfprobe.LayerProbe(
        tmp_path / "run", record_freq=1, log_freq=log_freq, histogram_freq=1, near_zero=NEAR, sample_size=k
    )
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[probe])

    wide = tfprobe.read_logdir(tmp_path, pivot=True)
    layers = tfprobe.read_layers(tmp_path)
    assert set(layers["sample_size"]) == {k}
    hists = tfprobe.read_histograms(tmp_path)
    bounds = {"conv_b": (-1.0, 1.0), "dense_sig": (0.0, 1.0)}
    exact = ["min", "max", "dead_unit_fraction", "nan_count", "inf_count"]
    for end in (3, 6):
        batches = range(end - log_freq, end)
        full = _activations(model, x[(end - log_freq) * BATCH : end * BATCH])
        sampled = {name: [] for name in full}
        for b in batches:
            acts = _activations(model, x[b * BATCH : b * BATCH + k])
            for name, a in acts.items():
                sampled[name].append(a)
        for layer in full:
            got = wide[(wide.layer == layer) & (wide.step == end)].iloc[0].to_dict()
            want_sample = oracle.activation_stats(sampled[layer], NEAR, bounds=bounds.get(layer))
            want_full = oracle.activation_stats([full[layer]], NEAR, bounds=bounds.get(layer))
            oracle.assert_close(got, want_full, rtol=1e-5, atol=1e-6, keys=[s for s in exact if s in want_full])
            others = [s for s in want_sample if s not in exact]
            oracle.assert_close(got, want_sample, rtol=1e-5, atol=1e-6, keys=others)
            h = hists[(hists.layer == layer) & (hists.step == end)]
            assert h["count"].sum() == sum(a.size for a in sampled[layer])
    pool = wide[(wide.layer == "pool") & (wide.step == 3)].iloc[0].to_dict()
    ins = [_activations(model, x[b * BATCH : b * BATCH + k])["conv_a"] for b in range(3)]
    outs = [_activations(model, x[b * BATCH : b * BATCH + k])["pool"] for b in range(3)]
    oracle.assert_close(pool, oracle.pooling_stats(ins, outs), rtol=1e-5)


@pytest.mark.parametrize("kernel", ["native", "graph"])
def test_histogram_steps_that_are_not_recorded_count_only_histograms(tmp_path, kernel):
    # The native kernel counts histograms in the statistics' op, turned off at run time on such steps.
    if kernel == "native" and not tfprobe.kernels.native.available():
        pytest.skip("native kernel unavailable")
    steps = 4
    model = frozen_cnn()
    x, y = cnn_data(steps)
    probe = tfprobe.LayerProbe(tmp_path, record_freq=3, log_freq=steps, histogram_freq=1, near_zero=NEAR, kernel=kernel)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[probe])

    wide = tfprobe.read_logdir(tmp_path, pivot=True)
    hists = tfprobe.read_histograms(tmp_path)
    recorded = _activations(model, np.concatenate([x[:BATCH], x[2 * BATCH : 3 * BATCH]]))  # steps 1 and 3
    every = _activations(model, x[: steps * BATCH])
    for layer in ("conv_a", "pool", "dense_sig"):
        got = wide[(wide.layer == layer) & (wide.step == steps)].iloc[0].to_dict()
        oracle.assert_close(got, oracle.activation_stats([recorded[layer]], NEAR), rtol=1e-5, atol=1e-6)
        h = hists[(hists.layer == layer) & (hists.step == steps)]
        assert h["count"].sum() == every[layer].size
