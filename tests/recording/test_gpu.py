"""Ready for a GPU: the graph path's traced step has no host round trip, the CPU-only native kernel is never
placed on a GPU, and `benchmarks/gpu.py` says so on a machine without one. Tests that need a GPU are
marked `gpu` and skipped without one (tests/conftest.py)."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprobe
from tfprobe import kernels
from tfprobe.kernels import native

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Ops that run on the host or call back into Python: inside a step they would stop the GPU's stream, copy
# activations to the host, or (PyFunc) hold the GIL. None may appear in a probed step on the graph path.
HOST_OPS = {
    "PyFunc",
    "PyFuncStateless",
    "EagerPyFunc",
    "NumpyFunction",
    "Print",
    "PrintV2",
    "StringFormat",
    "AsString",
    "WriteScalarSummary",
    "WriteHistogramSummary",
    "WriteSummary",
    "ScalarSummary",
    "HistogramSummary",
    "_HostSend",
    "_HostRecv",
    "_Send",
    "_Recv",
}


def _functions():
    from tensorflow.python.eager import context

    return set(context.context().list_function_names())


def _step_nodes(names):
    """`[(op, node name, device)]` of the training step among the functions `names` (Keras'
    `one_step_on_data`) and of every function it calls (cond branches, nested calls)."""
    from tensorflow.python.eager import context

    ctx, nodes = context.context(), []
    todo = [n for n in names if n.startswith("__inference_one_step_on_data")]
    seen = set(todo)
    while todo:
        for node in ctx.get_function_def(todo.pop()).node_def:
            nodes.append((node.op, node.name, node.device))
            for attr in node.attr.values():
                called = [attr.func.name] if attr.func.name else [f.name for f in attr.list.func]
                for name in called:
                    if name not in seen:
                        seen.add(name)
                        todo.append(name)
    assert nodes, "no training step was traced"
    return nodes


def _model(jit_compile):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit_compile)
    return model


@pytest.mark.parametrize("jit_compile", [False, True])
def test_graph_path_step_has_no_host_round_trip(tmp_path, jit_compile):
    x = np.random.default_rng(0).random((16, 8, 8, 3), dtype=np.float32)
    y = np.arange(16) % 3
    model = _model(jit_compile)
    before = _functions()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    plain = _step_nodes(_functions() - before)
    before = _functions()
    probe = tfprobe.LayerProbe(
        str(tmp_path),
        kernel="auto" if jit_compile else "graph",
        record_freq=1,
        histogram_freq=1,
        gradients=not jit_compile,
    )
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[probe])
    probed = _step_nodes(_functions() - before)
    assert probe._recorder.kernel.name == "graph"
    ops = {op for op, _, _ in probed}
    assert ops - {op for op, _, _ in plain}, "the probed step's statistics ops were not found"
    assert not HOST_OPS & ops, sorted(HOST_OPS & ops)
    assert not [op for op in ops if op.startswith("Tfprobe")]  # the native kernel
    # nothing of tfprobe's is placed on the host by hand (Keras pins its optimizer's variable initialisation)
    pinned = {(op, name) for op, name, device in probed if "CPU" in device.upper()}
    assert not pinned - {(op, name) for op, name, device in plain if "CPU" in device.upper()}


def test_native_kernel_is_registered_for_the_cpu_only():
    if not native.available():
        pytest.skip("tfprobe's native kernel cannot be built here (no C++ compiler)")
    from tensorflow.python.framework import kernels as tf_kernels

    devices = {k.device_type for k in tf_kernels.get_registered_kernels_for_op("TfprobePartials").kernel}
    assert devices == {"CPU"}


def test_auto_never_takes_the_native_kernel_with_a_gpu_or_xla(monkeypatch):
    """`kernel="auto"` takes the graph ops when a GPU is visible (the activations live there: a CPU kernel
    would copy them to the host) and under XLA; `"native"` under XLA is an error naming the argument."""
    real = tf.config.list_logical_devices
    gpu = tf.config.LogicalDevice("/device:GPU:0", "GPU")
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: [gpu] if kind == "GPU" else real(kind))
    assert native.choose("auto", jit_compile=False) is False
    settings = {"near_zero": 1e-3, "saturation_margin": 0.01, "sample_size": None}
    assert kernels.make("auto", jit_compile=False, **settings).name == "graph"
    monkeypatch.undo()
    assert kernels.make("auto", jit_compile=True, **settings).name == "graph"
    with pytest.raises(ValueError, match="kernel='native'"):
        native.choose("native", jit_compile=True)


def test_gpu_benchmark_without_a_gpu_says_so_and_exits_0(tmp_path):
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible: `python benchmarks/gpu.py` measures")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", PYTHONPATH=REPO)
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "gpu.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no CUDA GPU visible" in done.stdout and "nothing measured" in done.stdout
    assert not os.listdir(tmp_path)  # no table written


@pytest.mark.gpu
def test_on_a_gpu_auto_records_with_the_graph_ops_on_the_gpu(tmp_path):
    x = np.random.default_rng(0).random((16, 8, 8, 3), dtype=np.float32)
    y = np.arange(16) % 3
    model = _model(jit_compile=True)
    probe = tfprobe.LayerProbe(str(tmp_path), record_freq=1, histogram_freq=1)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[probe])
    assert probe._recorder.kernel.name == "graph"
    df = tfprobe.read_logdir(tmp_path, progress=False)
    assert set(df["layer"]) >= {"conv2d", "dense"} and df["value"].notna().all()
