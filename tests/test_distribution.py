"""Several replicas are not supported yet: the probe must say so and never write wrong numbers."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import warnings, numpy as np, tensorflow as tf, keras, tfprobe
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, name="h"), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
    x, y = np.ones((32, 6), "float32"), np.ones((32, 1), "float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=8, verbose=0, callbacks=[tfprobe.LayerProbe(LOGDIR, record_freq=1, log_freq=2)])
    assert any("distribution strategies" in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert "call" not in model.get_layer("h").__dict__
    assert tfprobe.read_logdir(LOGDIR).empty
    try:
        model.fit(x, y, batch_size=8, verbose=0, callbacks=[tfprobe.LayerProbe(LOGDIR, strict=True)])
    except NotImplementedError as e:
        assert "MirroredStrategy" in str(e)
    else:
        raise AssertionError("strict=True did not raise")
    print("ok")
    """
)


def test_mirrored_strategy_is_refused_not_miscounted(tmp_path):
    code = f"LOGDIR = {str(tmp_path)!r}\n" + SCRIPT
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")
