"""Reference steps of `LayerProbe(reference_data=...)`: the representation measures end to end (issue 15)."""

from __future__ import annotations

import json
import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import models
from helpers.tensorboard import http_get, tensorboard_server
from sklearn.datasets import load_digits

import tfprobe
from tfprobe import cli, metadata
from tfprobe.reference.analysis import REFERENCE_SUFFIX
from tfprobe.reference.measures import probe_accuracy

STATS = set(metadata.REPRESENTATION_STATS)


def digits():
    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    return (d.data[order] / 16.0).astype("float32"), d.target[order].astype("int32")


def mlp():
    model = models.mlp(("h1", "h2", "logits"), (64, 64, 32, 10), ("relu", "relu", None), name="digits_mlp")
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def measures(logdir):
    df = tfprobe.read_logdir(logdir)
    return df[df["stat"].isin(STATS)]


@pytest.mark.slow
def test_digits_mlp_every_reference_step_writes_every_measure(tmp_path, capsys):
    x, y = digits()
    keras.utils.set_random_seed(0)
    model = mlp()
    x_ref, y_ref = x[:500], y[:500]
    probe = tfprobe.LayerProbe(tmp_path / "run", log_freq=20, reference_data=(x_ref, y_ref), reference_freq=2)
    model.fit(x[500:], y[500:], batch_size=64, epochs=7, verbose=0, callbacks=[probe])
    steps_per_epoch = -(-(len(x) - 500) // 64)
    want = [steps_per_epoch * e for e in (2, 4, 6, 7)]  # every 2nd epoch, and the end of training

    rep = measures(tmp_path)
    assert sorted(rep["step"].unique()) == want
    for step in want:
        at = rep[rep["step"] == step]
        for layer in ("h1", "h2", "logits"):
            got = set(at.loc[at["layer"] == layer, "stat"])
            assert got == (STATS if step != want[0] else STATS - {"cka_drift"}), (step, layer)
    assert np.isfinite(rep["value"]).all()
    last = rep[rep["step"] == want[-1]].set_index(["layer", "stat"])["value"]
    assert last["h2", "probe_accuracy"] > probe_accuracy(x_ref, y_ref) + 0.01  # decodable beyond the pixels
    assert 0 < last["h2", "label_information"] <= np.log2(10)
    assert 0.5 < last["h2", "cka_drift"] <= 1.0
    assert last["h1", "effective_rank"] <= 64 and last["logits", "stable_rank"] <= 10

    cka = tfprobe.read_cka(tmp_path)
    assert sorted(cka["step"].unique()) == want
    final = cka[cka["step"] == want[-1]].pivot(index="layer_a", columns="layer_b", values="cka")
    assert final.shape == (3, 3) and np.allclose(np.diag(final), 1.0) and np.allclose(final, final.T)
    # the reference file is separate from the training windows' file; the layers keep their recorder metadata
    files = os.listdir(tmp_path / "run")
    assert sum(f.endswith(REFERENCE_SUFFIX) for f in files) == 1
    assert sorted(f for f in files if "tfevents" in f)[-1].endswith(
        ".tfprobe"
    )  # windows newest: see test_reference_live
    assert tfprobe.read_layers(tmp_path)["layer"].tolist() == ["h1", "h2", "logits"]

    assert cli.main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"representations at reference step {want[-1]} (4 reference steps)" in out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert cli.main(["export", str(tmp_path), str(tmp_path / "all.csv")]) == 0
    import pandas as pd

    assert STATS <= set(pd.read_csv(tmp_path / "all.csv")["stat"])


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="subclassed")
        self.d1 = keras.layers.Dense(8, activation="relu", name="d1")
        self.d2 = keras.layers.Dense(3, name="out")

    def call(self, x):
        return self.d2(self.d1(x))


def nested():
    inner = keras.Sequential(
        [keras.Input((6, 6, 1)), keras.layers.Conv2D(4, 3, activation="relu", name="conv")], name="backbone"
    )
    inp = keras.Input((6, 6, 1))
    out = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D(name="gap")(inner(inp)))
    return keras.Model(inp, out)


@pytest.mark.parametrize(
    "build, shape, layers",
    [
        (Subclassed, (8,), {"d1", "out"}),
        (nested, (6, 6, 1), {"backbone/conv", "gap", "head"}),
    ],
)
def test_nested_and_subclassed_models(tmp_path, build, shape, layers):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64,) + shape).astype("float32"), rng.integers(0, 3, size=64)
    model = build()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ref = tf.data.Dataset.from_tensor_slices((x[:40], y[:40])).batch(16)
    probe = tfprobe.LayerProbe(tmp_path, reference_data=ref, reference_freq=1)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[probe])
    rep = measures(tmp_path)
    assert set(rep["layer"]) == layers and sorted(rep["step"].unique()) == [4, 8]
    assert set(rep.loc[rep["step"] == 8, "stat"]) == STATS
    assert set(tfprobe.read_cka(tmp_path)["layer_a"]) == layers


def small_fit(tmp_path, seed=0, **probe_args):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(48, 8)).astype("float32")
    y = rng.integers(0, 2, size=48)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(8, name="d"),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(2, name="out"),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    probe = tfprobe.LayerProbe(tmp_path, **{"reference_freq": 1, **probe_args})
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False, callbacks=[probe])
    return model, probe


def test_reference_steps_leave_training_unchanged(tmp_path):
    ref = np.random.default_rng(2).normal(size=(20, 8)).astype("float32")
    plain, _ = small_fit(tmp_path / "a")
    with_ref, probe = small_fit(tmp_path / "b", reference_data=ref)
    for a, b in zip(plain.get_weights(), with_ref.get_weights()):  # batch-norm statistics included
        np.testing.assert_array_equal(a, b)
    assert set(measures(tmp_path / "b")["stat"]) == {"effective_rank", "stable_rank", "cka_drift"}  # no labels
    assert probe._analyses == []  # closed at the end of fit


def test_a_failing_analysis_warns_once_and_training_goes_on(tmp_path, monkeypatch):
    from tfprobe.reference import representations as representation_analysis

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(representation_analysis, "collect", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, _ = small_fit(tmp_path, reference_data=np.zeros((8, 8), "float32"))
    about = [w for w in caught if "representation analysis failed" in str(w.message)]
    assert len(about) == 1 and "boom" in str(about[0].message)
    assert int(model.optimizer.iterations) == 6
    probe = tfprobe.LayerProbe(
        tmp_path / "strict", reference_data=np.zeros((8, 8), "float32"), strict=True, reference_freq=1
    )  # raises at the end of the epoch, before `on_train_end`
    with pytest.raises(RuntimeError, match="boom"):
        model.fit(np.zeros((16, 8)), np.zeros(16), epochs=1, verbose=0, callbacks=[probe])
    assert "call" not in model.get_layer("d").__dict__ and "train_step" not in model.__dict__  # restored


@pytest.mark.parametrize(
    "args, message",
    [
        (dict(reference_data=np.zeros((4, 8)), reference_freq=0), "`reference_freq` must be a positive integer"),
        (dict(reference_freq=2.5), "reference_freq=2.5"),
        (dict(reference_embeddings=["d"]), "needs `reference_data`"),
        (dict(reference_data=np.zeros((4, 8)), reference_embeddings=[3]), "reference_embeddings=[3]"),
        (dict(reference_data=(np.zeros((4, 8)), np.zeros(3))), "4 inputs and 3 labels"),
        (dict(reference_data=np.zeros((4, 8)), reference_max_dim=0), "reference_max_dim=0"),
    ],
)
def test_bad_reference_arguments_are_named(tmp_path, args, message):
    with pytest.raises((ValueError, TypeError)) as info:
        tfprobe.LayerProbe(tmp_path, **args)
    assert message in str(info.value)


def test_unknown_embedding_layer_is_named_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"reference_embeddings.*unknown: nope"):
        small_fit(tmp_path, reference_data=np.zeros((8, 8), "float32"), reference_embeddings=["d", "nope"])


def test_older_logs_have_no_cka_and_still_read(synthetic_logdir):
    assert tfprobe.read_cka(synthetic_logdir).columns.tolist() == [
        "run",
        "step",
        "wall_time",
        "layer_a",
        "layer_b",
        "cka",
    ]
    assert tfprobe.read_cka(synthetic_logdir).empty
    assert not set(tfprobe.read_logdir(synthetic_logdir)["stat"]) & STATS


def test_cka_content_names_rows_at_every_step(tmp_path):
    from tfprobe.logs.events import read_events

    small_fit(tmp_path, reference_data=np.random.default_rng(0).normal(size=(12, 8)).astype("float32"))
    path = next(p for p in os.listdir(tmp_path) if p.endswith(REFERENCE_SUFFIX))
    contents = [
        json.loads(v.metadata.plugin_data.content)
        for e in read_events(str(tmp_path / path))
        for v in e.summary.value
        if v.tag == metadata.CKA_TAG
    ]
    assert len(contents) == 2 and all(c["layers"][0] == "d" and c["reference_size"] == 12 for c in contents)


@pytest.mark.slow
def test_projector_tab_lists_the_embedded_layers(tmp_path):
    import urllib.parse

    x, y = digits()
    images = x.reshape(-1, 8, 8, 1)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(16, activation="relu", name="dense"),
            keras.layers.Dense(10, name="logits"),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    probe = tfprobe.LayerProbe(
        tmp_path / "run",
        reference_data=(images[:60], y[:60]),
        reference_embeddings=["conv", "dense"],
        reference_max_dim=32,
    )
    model.fit(images[60:300], y[60:300], batch_size=60, epochs=1, verbose=0, callbacks=[probe])
    run = tmp_path / "run"
    tsv = np.loadtxt(run / "tfprobe_projector" / "dense.tsv", delimiter="\t")
    assert tsv.shape == (60, 16)
    assert (run / "tfprobe_projector" / "sprite.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with tensorboard_server(tmp_path) as tb:
        assert tb.wait_until(lambda runs: runs == ["run"], route="/data/plugin/projector/runs") == ["run"]
        info = json.loads(http_get(tb.base + "/data/plugin/projector/info?run=run")[1])
        shapes = {e["tensorName"]: [int(s) for s in e["tensorShape"]] for e in info["embeddings"]}
        assert shapes == {"conv": [60, 8], "dense": [60, 16]}  # conv: averaged over space
        assert all(e["sprite"]["singleImageDim"] == [8, 8] for e in info["embeddings"])
        bodies = {}
        for name, (n, d) in shapes.items():
            query = urllib.parse.urlencode({"run": "run", "name": name})
            status, bodies[name] = http_get(tb.base + "/data/plugin/projector/tensor?" + query)
            assert status == 200 and len(bodies[name]) == n * d * 4
        tensor = np.frombuffer(bodies["dense"], dtype=np.float32).reshape(60, 16)
        np.testing.assert_allclose(tensor, tsv, rtol=1e-5, atol=1e-6)
        labels = http_get(tb.base + "/data/plugin/projector/metadata?run=run&name=dense")[1].decode()
        assert labels.splitlines()[:2] == ["example\tlabel", f"0\t{y[0]}"]
        status, png = http_get(tb.base + "/data/plugin/projector/sprite_image?run=run&name=dense")
        assert status == 200 and png[:4] == b"\x89PNG"


MIRRORED = """
import sys, numpy as np, tensorflow as tf, keras, tfprobe
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
rng = np.random.default_rng(0)
x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 3, size=64)

def build():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, activation="relu", name="d"),
                              keras.layers.Dense(3, name="out")])
    model.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model

with strategy.scope():
    mirrored = build()
single = build()
single.set_weights(mirrored.get_weights())
for name, model in (("mirrored", mirrored), ("single", single)):
    probe = tfprobe.LayerProbe(f"{sys.argv[1]}/{name}", reference_data=(x[:40], y[:40]), reference_freq=1)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[probe])
df = tfprobe.read_logdir(sys.argv[1])
rep = df[df.stat.isin(["effective_rank", "stable_rank", "probe_accuracy", "label_information", "cka_drift"])]
a, b = (rep[rep.run == r].set_index(["layer", "stat", "step"])["value"].sort_index() for r in ("mirrored", "single"))
assert len(a) == 2 * 4 + 2 * 5, a
np.testing.assert_allclose(a.values, b.values, rtol=1e-4, atol=1e-5)
print("ok")
"""


@pytest.mark.slow
def test_mirrored_strategy_gives_the_single_device_measures(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_the_reduction_is_lowered_to_the_memory_budget(tmp_path, monkeypatch):
    from tfprobe.reference import representations as representation_analysis

    monkeypatch.setattr(representation_analysis, "MEMORY_BUDGET", 12 * 40 * 4 * 3)  # 40 examples, 4 layers, D=3
    x = np.random.default_rng(0).normal(size=(40, 8)).astype("float32")
    with pytest.warns(RuntimeWarning, match=r"keeping 3 values per example"):
        small_fit(tmp_path, reference_data=x)
    dims = {}
    for path in os.listdir(tmp_path):
        if path.endswith(REFERENCE_SUFFIX):
            from tfprobe.logs.events import read_events

            for event in read_events(str(tmp_path / path)):
                for v in event.summary.value:
                    if v.metadata.plugin_data.content and v.tag != metadata.CKA_TAG:
                        info = json.loads(v.metadata.plugin_data.content)
                        dims[info["series"]] = info["dim"]
    assert sorted(dims.values()) == [2, 3, 3, 3] and dims["d"] == 3 and dims["out"] == 2  # out: 2 wide already
