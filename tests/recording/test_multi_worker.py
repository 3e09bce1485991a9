"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 log what one process logs over the same batches.

Each worker runs `WORKER` (one CPU replica each, so 2 replicas in sync), with its own directory: the chief's
must hold the windows, the other worker's must not exist. The chief then runs the same `fit`s without a
strategy (same weights, learning rate 0) as the reference. Timeouts turn a deadlock into a failure.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

import tfprobe

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np, tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras, tfprobe
    from keras.src.backend.tensorflow import trainer as keras_trainer

    root, plan = sys.argv[1], json.loads(sys.argv[2])
    assert strategy.num_replicas_in_sync == 2
    GLOBAL = 16
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8 * GLOBAL, 6, 6, 2)).astype("float32")
    y = rng.normal(size=(8 * GLOBAL, 1)).astype("float32")

    def batches():
        # Same global batches in both runs: batches of GLOBAL examples, in order (no shuffle, 8 steps per epoch,
        # no partial batch). Under the strategy Keras calls `experimental_distribute_dataset`, which splits each
        # global batch into one slice of GLOBAL / 2 per replica, and with the DATA policy every worker keeps its
        # own slice of every batch: the two slices of step s are global batch s, which the single run sees
        # whole. Statistics are sums, extremes and counts over all values of a step, whatever the split.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL).with_options(options)

    def build():
        keras.utils.set_random_seed(1)
        model = keras.Sequential([
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(5, activation="sigmoid", name="sig"),
            keras.layers.Dense(1, name="out"),
        ])
        model.compile(keras.optimizers.SGD(0.0), "mse")  # frozen weights: the same activations in both runs
        return model

    def collectives():  # {name: [collective op, ...]} of the functions traced so far (TensorFlow's registry)
        from tensorflow.python.eager import context
        ctx = context.context()
        ops = lambda name: [node.op for node in ctx.get_function_def(name).node_def]
        return {name: sorted(op for op in ops(name) if op.startswith("Collective"))
                for name in ctx.list_function_names()}

    def kinds(functions):  # "__inference_one_step_on_data_1723" -> "one_step_on_data"
        return {name.removeprefix("__inference_").rstrip("0123456789").rstrip("_"): ops
                for name, ops in functions.items() if name.startswith("__inference_")}

    def run(model, kind):
        for name, log_freq, *record_freq in plan:  # one probe per `fit`; steps go on from the previous `fit`
            # The `fit` "b" ends with a reference step, which only the chief runs.
            reference = (x[:32], (y[:32, 0] > 0).astype("int32")) if name == "b" else None
            probe = tfprobe.LayerProbe(f"{root}/{kind}/{name}", record_freq=(record_freq or [1])[0],
                                       log_freq=log_freq, histogram_freq=2, gradients=True, reference_data=reference)
            model.fit(batches(), epochs=1, shuffle=False, verbose=0, callbacks=[probe])
            print("calls", kind, name, json.dumps(probe._instrumentation.calls), flush=True)

    with strategy.scope():
        distributed = build()
        # Keras 3's `fit` under this strategy fails in two places (keras-team/keras#20585), worked around here:
        # it reduces a first (x, y) batch with `strategy.reduce`, which fails on a tuple (the model is built
        # from plain arrays instead), and it averages the step's scalar logs along an axis 0 they lack.
        distributed._symbolic_build(data_batch=(x[:1], y[:1]))
    distributed._maybe_symbolic_build = lambda **kwargs: None
    keras_trainer.reduce_per_replica = lambda values, strategy, reduction: tf.nest.map_structure(
        lambda v: strategy.reduce("MEAN", v, axis=None), values)
    known = collectives()
    distributed.fit(batches(), epochs=1, shuffle=False, verbose=0)  # Keras' own step, to compare
    plain = {k: v for k, v in collectives().items() if k not in known}
    known = collectives()
    run(distributed, "mwms")
    probed = {k: v for k, v in collectives().items() if k not in known}
    print(json.dumps({"plain": kinds(plain), "probed": kinds(probed)}))
    if strategy.extended.should_save_summary:  # the chief: the reference, one process without a strategy
        single = build()
        single.set_weights(distributed.get_weights())
        single.optimizer.iterations.assign(8)  # as after the first `fit` of the other
        run(single, "single")
    print("ok", flush=True)
    """
)


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_workers(tmp_path, plan, timeout=240):
    """Runs `WORKER` in two processes; returns `[(returncode, stdout, stderr)]`.

    A worker that fails stops the other at once (it would wait for it in a collective); a timeout (a
    deadlock) fails the test. Output goes to files: a full pipe would block a worker.
    """
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    procs, files = [], []
    for index in range(2):
        env = dict(
            os.environ,
            TF_CPP_MIN_LOG_LEVEL="2",
            OMP_NUM_THREADS="1",
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        )
        out, err = (open(tmp_path / f"{index}.{name}", "w+") for name in ("out", "err"))
        files.append((out, err))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(tmp_path / f"worker{index}"), json.dumps(plan)],
                env=env,
                stdout=out,
                stderr=err,
                text=True,
            )
        )
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        if any(p.poll() not in (None, 0) for p in procs):
            break
        time.sleep(0.2)
    hung = [p.poll() is None for p in procs]
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    results = []
    for proc, (out, err) in zip(procs, files):
        out.seek(0), err.seek(0)
        results.append((proc.returncode, out.read(), err.read()))
        out.close(), err.close()
    if any(hung):
        tails = [(code, err[-2000:]) for code, _, err in results]
        pytest.fail(f"workers still running after {timeout} s (deadlocked, or waiting for one that failed): {tails}")
    return results


def test_two_workers_log_what_one_process_logs(tmp_path):
    # After 8 steps without a probe, "a": steps 9-16 with log_freq=4, the last window closes on the last step
    # (no partial window at the end); "b": steps 17-24 with log_freq=5, a window at 20, a partial one at 24 in
    # `on_train_end`, then a reference step (run by the chief only).
    # "c": steps 25-32 with record_freq=3 and log_freq=4: steps 29 and 31 record nothing (neither statistics nor
    # histograms), so every worker runs Keras' own train function for them (host-side dispatch), in step.
    results = run_workers(tmp_path, [["a", 4], ["b", 5], ["c", 4, 3]])
    for index, (code, out, err) in enumerate(results):
        assert code == 0 and out.strip().endswith("ok"), f"worker {index}: {err[-3000:]}"
    assert not (tmp_path / "worker1").exists()  # the other worker writes nothing
    # ... and warns about nothing (no "wrote nothing"): tfprobe's warnings are RuntimeWarnings naming it.
    assert "tfprobe" not in results[1][2] and "RuntimeWarning" not in results[1][2], results[1][2][-3000:]

    # Recording adds no collective to the step, and one all-reduce per window (the read-back, traced once).
    for index, (_, out, _) in enumerate(results):
        traced = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
        steps = [{kind: ops for kind, ops in functions.items() if "step_on" in kind} for functions in traced.values()]
        assert steps[0] == steps[1], (index, traced)
        read = {name: ops for name, ops in traced["probed"].items() if "tfprobe_read_and_reset" in name}
        assert list(read.values()) == [["CollectiveReduceV2"]], (index, traced)

    chief = tmp_path / "worker0"
    a, b = (
        tfprobe.read_logdir(chief / kind, pivot=True).drop(columns="wall_time").reset_index(drop=True)
        for kind in ("mwms", "single")
    )
    assert sorted(set(a[a.run == "a"].step)) == [12, 16] and sorted(set(a[a.run == "b"].step)) == [20, 24]
    assert sorted(set(a[a.run == "c"].step)) == [28, 32]
    assert len(a) == 5 * 6 and a["grad_rms"].notna().all()
    for index, (_, out, _) in enumerate(results):
        calls = [line.split(" ", 3)[1:] for line in out.splitlines() if line.startswith("calls ")]
        for kind, name, counts in calls:
            want = {"probed": 6, "plain": 2} if name == "c" else {"probed": 8, "plain": 0}
            assert json.loads(counts) == want, (index, kind, name, counts)
        assert {(kind, name) for kind, name, _ in calls} >= {("mwms", "c")}, (index, calls)
    assert a.loc[a.step == 24, "effective_rank"].notna().all()  # the chief's reference step, at the end of "b"
    # Each worker holds only its share of a weight's gradient: its norm is not recorded (as under MirroredStrategy).
    assert a["weight_grad_norm"].isna().all() and b["weight_grad_norm"].notna().any()
    pd.testing.assert_frame_equal(a.drop(columns="weight_grad_norm"), b.drop(columns="weight_grad_norm"), rtol=1e-5)
    ha, hb = (tfprobe.read_histograms(chief / kind).drop(columns="wall_time") for kind in ("mwms", "single"))
    pd.testing.assert_frame_equal(ha, hb)
    assert ha["count"].sum() > 0
