"""MirroredStrategy gives the same numbers as one device (2 logical CPUs, in a subprocess)."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import numpy as np, pandas as pd, tensorflow as tf, keras, tfprobe
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6, 6, 2)).astype("float32")
    y = rng.normal(size=(96, 1)).astype("float32")

    def build():
        model = keras.Sequential([
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(5, activation="sigmoid", name="sig"),
            keras.layers.Dense(1, name="out"),
        ])
        model.compile(keras.optimizers.SGD(0.0), "mse")  # frozen weights: same activations everywhere
        return model

    with strategy.scope():
        mirrored = build()
    single = build()
    single.set_weights(mirrored.get_weights())
    for name, model in (("mirrored", mirrored), ("single", single)):
        probe = tfprobe.LayerProbe(f"{LOGDIR}/{name}", record_freq=1, log_freq=4, histogram_freq=2, gradients=True)
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[probe])
        assert "call" not in model.get_layer("conv").__dict__
    wide = tfprobe.read_logdir(LOGDIR, pivot=True).drop(columns="wall_time")
    a = wide[wide.run == "mirrored"].drop(columns="run").reset_index(drop=True)
    b = wide[wide.run == "single"].drop(columns="run").reset_index(drop=True)
    assert len(a) == 5 * 2 and sorted(set(a.step)) == [4, 6], a
    assert a["grad_rms"].notna().sum() == 5 * 2 and a["update_ratio"].notna().sum() == 3 * 2
    # The weight-gradient norm is not recorded under several replicas (documented); everything else is equal.
    assert a["weight_grad_norm"].isna().all() and b["weight_grad_norm"].notna().sum() == 3 * 2
    pd.testing.assert_frame_equal(a.drop(columns="weight_grad_norm"), b.drop(columns="weight_grad_norm"), rtol=1e-5)
    # ... so it is no `nan_weights` finding: the two runs get the same findings (the learning rate 0 stalls)
    found = tfprobe.diagnose(tfprobe.read_logdir(LOGDIR), tfprobe.read_layers(LOGDIR))
    assert set(found.kind) == {"stalled_layer"}, found.to_string()
    stalled = {run: sorted(found[found.run == run].layer) for run in ("mirrored", "single")}
    assert stalled == {"mirrored": ["conv", "out", "sig"], "single": ["conv", "out", "sig"]}, stalled
    ha = tfprobe.read_histograms(LOGDIR, quantity="all")  # the activations' and their gradients'
    assert set(ha["quantity"]) == {"activation", "gradient"}
    ca = ha[ha.run == "mirrored"].drop(columns=["run", "wall_time"]).reset_index(drop=True)
    cb = ha[ha.run == "single"].drop(columns=["run", "wall_time"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(ca, cb)
    assert ca["count"].sum() > 0

    # Host-side dispatch under the strategy: the steps that record nothing run Keras' own train function (on
    # every replica), the step counter catches up, and the windows are those of one device.
    for name, model in (("mirrored", mirrored), ("single", single)):
        probe = tfprobe.LayerProbe(f"{LOGDIR}/dispatch/{name}", record_freq=4, log_freq=3, histogram_freq=0,
                                   alerts=False)
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[probe])
        # steps 7 (the fit's first), 8, 12 and 16 of 7..18 record
        assert probe._instrumentation.calls == {"probed": 4, "plain": 8}, probe._instrumentation.calls
        assert probe._recorder.step() == int(model.optimizer.iterations.numpy()) == 18
    wide = tfprobe.read_logdir(f"{LOGDIR}/dispatch", pivot=True).drop(columns="wall_time")
    a = wide[wide.run == "mirrored"].drop(columns="run").reset_index(drop=True)
    b = wide[wide.run == "single"].drop(columns="run").reset_index(drop=True)
    assert sorted(set(a.step)) == [9, 12, 18], a
    pd.testing.assert_frame_equal(a, b, rtol=1e-5)

    # A strategy it cannot record exactly: a warning naming it and nothing written (strict: an error).
    import warnings
    assert tfprobe.callback.unsupported_strategy(strategy) is None
    central = tf.distribute.experimental.CentralStorageStrategy(["/cpu:0", "/cpu:1"])
    with central.scope():
        model = build()
    for strict in (False, True):
        probe = tfprobe.LayerProbe(f"{LOGDIR}/central", strict=strict)
        probe.set_model(model)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                probe.on_train_begin()
        except NotImplementedError as error:
            assert strict and "CentralStorageStrategy" in str(error), error
        else:
            assert not strict and any("CentralStorageStrategy with 2 replicas" in str(w.message) for w in caught)
        probe.on_train_end()
    import os
    assert not os.path.exists(f"{LOGDIR}/central")

    # Steps a loss-scale optimizer skips are counted once, not once per replica.
    keras.mixed_precision.set_global_policy("mixed_float16")
    with strategy.scope():
        mixed = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Flatten(name="flat"),
                                  keras.layers.Dense(4, name="h"), keras.layers.Dense(1, name="out", dtype="float32")])
        optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.0), initial_scale=2.0**24)
        mixed.compile(optimizer, "mse")
    keras.mixed_precision.set_global_policy("float32")
    probe = tfprobe.LayerProbe(f"{LOGDIR}/mixed", record_freq=1, log_freq=12, gradients=True)
    mixed.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[probe])
    skipped = tfprobe.read_logdir(f"{LOGDIR}/mixed", pivot=True).set_index("layer")["skipped_steps"]
    assert 0 < skipped["h"] == skipped["out"] == 12 - int(optimizer.iterations.numpy()) < 12, skipped
    print("ok")
    """
)


def test_mirrored_strategy_matches_one_device(tmp_path):
    code = f"LOGDIR = {str(tmp_path)!r}\n" + SCRIPT
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")
