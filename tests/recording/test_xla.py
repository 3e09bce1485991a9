"""Every capture path and option under XLA (`jit_compile=True`), against the same oracles as without it.

The tests of the recording (gradients, histograms, pooling, masks, mixed precision, NaN and Inf counts, skipped
steps) run again here with every `compile` forced to `jit_compile=True`: the probed step must compile wherever the
plain step compiles, and record what the oracle computes. XLA's CPU `max`/`min` do not propagate NaN, so the NaN
and Inf counts are checked here too.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import test_core
import test_end_to_end
import test_gradients
import test_models
from helpers.data import normal as data
from helpers.data import padded_ids

import tfprobe


@pytest.fixture
def xla(monkeypatch):
    """Forces `jit_compile=True` on every `compile`; yields the compiled models (each checked to be XLA)."""
    compiled = []
    original = keras.Model.compile

    def compile_with_xla(self, *args, **kwargs):
        kwargs["jit_compile"] = True
        original(self, *args, **kwargs)
        compiled.append(self)

    monkeypatch.setattr(keras.Model, "compile", compile_with_xla)
    yield compiled
    assert compiled and all(m.jit_compile is True for m in compiled)


# (module, test, arguments besides tmp_path): the recording's oracle tests, graph kernel (native refuses XLA).
# The first ones run by default; the others are `slow` (`python -m pytest -m slow tests/recording/test_xla.py`).
FAST = {
    "test_sequential_cnn_with_batchnorm_and_pooling",
    "test_nan_and_inf_are_counted",
    "test_skipped_steps_are_counted_and_left_out",
}
CASES = [
    (test_gradients, "test_sequential_cnn_with_batchnorm_and_pooling", {}),
    (test_gradients, "test_nested_frozen_backbone_subclassed_and_shared_layers", {}),
    (test_gradients, "test_multi_output_model_with_loss_weights", {}),
    (test_gradients, "test_update_ratio_is_the_applied_update", {}),
    (test_gradients, "test_adam_update_ratio_matches_the_weights_it_changed", {}),
    (test_gradients, "test_outputs_without_a_gradient_record_none", {}),
    (test_gradients, "test_mixed_float16_gradients_are_unscaled", {}),
    (test_gradients, "test_gradient_histograms_match_the_oracle", {"kernel": "graph", "policy": "float32"}),
    (test_gradients, "test_gradient_histograms_match_the_oracle", {"kernel": "graph", "policy": "mixed_float16"}),
    (test_gradients, "test_skipped_steps_are_counted_and_left_out", {"kernel": "graph"}),
    (test_end_to_end, "test_histogram_steps_that_are_not_recorded_count_only_histograms", {"kernel": "graph"}),
    (test_core, "test_masked_positions_are_left_out_of_the_statistics", {"include_masked": True}),
    (test_core, "test_time_distributed_pooling_has_its_retention", {}),
    (test_core, "test_operations_that_are_not_layers_are_recorded", {}),
    (test_models, "test_nan_and_inf_are_counted", {}),
    (test_models, "test_shared_layer_called_twice", {}),
    (test_models, "test_nested_frozen_backbone", {}),
]


@pytest.mark.parametrize(
    "module, name, kwargs",
    [
        pytest.param(
            *case, id=f"{case[1]}{list(case[2].values()) or ''}", marks=() if case[1] in FAST else pytest.mark.slow
        )
        for case in CASES
    ],
)
def test_recording_tests_pass_under_xla(tmp_path, xla, module, name, kwargs):
    getattr(module, name)(tmp_path, **kwargs)


def test_masked_statistics_under_xla_cover_every_position_with_one_warning(tmp_path, xla):
    """XLA cannot drop the masked positions inside the recorded cond (a `boolean_mask`'s dynamic shape does not
    cross it): the statistics cover every position, as with `include_masked=True`, and one warning says why."""
    from tfprobe.recording.capture import layer_outputs

    ids = padded_ids()
    model = keras.Sequential(
        [
            keras.Input((10,), dtype="int32"),
            keras.layers.Embedding(20, 6, mask_zero=True, name="emb"),
            keras.layers.GRU(4, return_sequences=True, name="gru"),
            keras.layers.GlobalAveragePooling1D(name="pool"),
        ]
    )
    model.compile(keras.optimizers.SGD(0.0), "mse")
    probe = tfprobe.LayerProbe(tmp_path, record_freq=1, log_freq=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(ids, np.zeros((8, 4)), batch_size=8, verbose=0, callbacks=[probe])
    said = [w for w in caught if "include the masked (padding) positions" in str(w.message)]
    assert len(said) == 1, [str(w.message) for w in caught]
    assert not any(s.info["masked"] for s in probe._recorder.series.values())
    wide = tfprobe.read_logdir(tmp_path, pivot=True).set_index("layer")
    outputs = layer_outputs(model, ids)
    for name in ("emb", "gru"):
        np.testing.assert_allclose(wide.loc[name, "mean"], outputs[name].mean(), rtol=1e-4, err_msg=name)
        np.testing.assert_allclose(wide.loc[name, "std"], outputs[name].std(), rtol=1e-4, err_msg=name)


def test_a_probed_step_that_does_not_compile_trains_unprobed_with_one_warning(tmp_path, xla, monkeypatch):
    """If XLA cannot compile the probed step, the probe finds it before the first step, warns once, detaches,
    and `fit` trains exactly as without it (no batch lost); with `strict=True` it raises instead."""
    import tensorflow as tf

    from tfprobe.kernels import graph
    from tfprobe.recording.recorder import RecordingError

    def build():
        keras.utils.set_random_seed(1)
        model = keras.Sequential(
            [keras.Input((5,)), keras.layers.Dense(4, activation="relu", name="h"), keras.layers.Dense(1, name="out")]
        )
        model.compile(keras.optimizers.SGD(0.05), "mse")
        return model

    x, y = data(32, (5,)), data(32, (1,), seed=1)
    plain = build()
    want = plain.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history["loss"]

    original = graph.GraphKernel.rows

    def rows(self, t):  # a host function: XLA cannot compile it
        return original(self, tf.numpy_function(lambda a: a, [t], t.dtype, stateful=False))

    monkeypatch.setattr(graph.GraphKernel, "rows", rows)
    model = build()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = model.fit(
            x,
            y,
            batch_size=8,
            epochs=2,
            shuffle=False,
            verbose=0,
            callbacks=[tfprobe.LayerProbe(tmp_path, record_freq=1, log_freq=2)],
        ).history["loss"]
    said = [str(w.message) for w in caught if "tfprobe" in str(w.message)]
    assert len(said) == 1 and "does not compile with XLA" in said[0], said
    assert got == want
    assert all(np.array_equal(a, b) for a, b in zip(plain.get_weights(), model.get_weights()))
    assert "train_step" not in model.__dict__  # detached
    with pytest.raises(RecordingError, match="does not compile with XLA"):
        build().fit(x, y, batch_size=8, verbose=0, callbacks=[tfprobe.LayerProbe(tmp_path / "strict", strict=True)])
