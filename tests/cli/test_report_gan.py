"""`tfprobe report` on a GAN (issue 23, item 8), through the real command line: labels of `#1` series keep
the layer's name, every line fits 80 columns, finding lines align, warnings print without Python source."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from helpers.models import GAN

import tfprobe
from tfprobe import cli

keras = pytest.importorskip("keras")
L = keras.layers


def long_named_gan():
    latent = 8
    discriminator = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            L.Conv2D(4, 3, padding="same", name="discriminator_conv_block_1"),
            L.Flatten(name="discriminator_flatten_features"),
            L.Dense(1, activation="sigmoid", name="discriminator_real_or_fake_1"),
        ],
        name="dcgan_discriminator_network",
    )
    generator = keras.Sequential(
        [
            keras.Input((latent,)),
            L.Dense(4 * 4 * 4, name="generator_project_dense_1"),
            L.Reshape((4, 4, 4), name="generator_reshape_to_maps_1"),
            L.Conv2DTranspose(4, 3, strides=2, padding="same", name="conv2d_transpose_upsample_1"),
            L.Conv2D(3, 3, padding="same", activation="sigmoid", name="conv2d_transpose_upsample_2"),
        ],
        name="dcgan_generator_network",
    )
    gan = GAN(discriminator, generator, latent)
    gan.compile(keras.optimizers.Adam(1e-4), keras.optimizers.Adam(1e-4), keras.losses.BinaryCrossentropy())
    return gan


@pytest.fixture(scope="module")
def gan_logdir(tmp_path_factory):
    """A GAN's logs, written twice into the same directory (a restarted run: the reader warns)."""
    keras.utils.set_random_seed(0)
    d = tmp_path_factory.mktemp("gan")
    x = np.random.default_rng(0).random((16, 8, 8, 3)).astype("float32")
    for _ in range(2):
        probe = tfprobe.LayerProbe(d, record_freq=1, log_freq=1, histogram_freq=0, kernel="graph")
        long_named_gan().fit(x, batch_size=8, epochs=1, verbose=0, callbacks=[probe])
    return d


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", "tfprobe.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_report_on_a_gan_keeps_names_and_80_columns(gan_logdir):
    done = run_cli("report", str(gan_logdir))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), "\n".join(line for line in lines if len(line) > 80)
    layers = tfprobe.read_layers(gan_logdir)["layer"].tolist()
    second = [name for name in layers if name.endswith("#1")]
    assert second and any(len(name) > 35 for name in second)  # the precondition: names that must be shortened
    rows = [
        line.split()[0]
        for line in lines
        if line.startswith("  ") and len(line.split()) == 7 and line.split()[0] != "layer"
    ]
    assert len(rows) == len(layers) and len(set(rows)) == len(rows)  # one distinct label per series
    for name, label in zip(layers, rows):
        base, call = cli.split_call(name)
        assert label.endswith(call)
        kept = label[: len(label) - len(call)].split("…")[-1]
        assert len(kept) >= cli.MIN_KEPT and base.endswith(kept), (name, label)  # the layer's name, not "1"
    # the reader's warning: one line of text per 80 columns, no `functools.py:1001 ... val = self.func(instance)`
    assert "tfprobe: warning: run '.': some series were written again" in done.stderr
    assert "functools.py" not in done.stderr and "self.func" not in done.stderr
    assert all(len(line) <= 80 for line in done.stderr.splitlines())


def test_finding_lines_align_every_kind_and_name_the_run_only_when_several():
    f = SimpleNamespace(
        severity="warning",
        kind="vanishing_gradient",
        run=".",
        layer="dcgan_generator_network/dense_3#1",
        first_step=10,
        last_step=50,
        message="gradient norm per example falls 2e+03x",
    )
    one = cli._finding_lines(f, 80, False, "…generator_network/dense_3#1", show_run=False)[0]
    assert re.match(r"^  WARNING vanishing_gradient +…generator_network/dense_3#1 \(steps 10-50\)$", one), one
    assert "vanishing_gradient." not in one
    several = cli._finding_lines(f, 80, False, "…generator_network/dense_3#1", show_run=True)[0]
    assert "run .: " in several and len(several) <= 80
    narrow = cli._finding_lines(
        f.__class__(**{**vars(f), "kind": "unstable_updates"}), 80, False, "x#1", show_run=False
    )[0]
    assert narrow.index("x#1") == one.index("…")  # kinds of any length: the layer column starts at the same place


def test_a_long_prefix_note_wraps_within_80_columns():
    import pandas as pd

    names = [f"a_long_model_name_that_goes_on/inner_model_with_a_long_name/block_{i}_conv_layer" for i in range(3)]
    df = pd.DataFrame({"run": ".", "step": 1, "layer": names, "stat": "mean", "value": 0.0})
    lines, _, labels = cli.layer_table(df, ".")
    assert all(len(line) <= 80 for line in lines), lines
    note = " ".join(
        line.strip() for line in lines[: lines.index(next(x for x in lines if x.strip().startswith("layer")))]
    )
    assert "--wide shows full names" in note and "inner_model_with_a_long_name" in note
    assert all(label.startswith("…") for label in labels.values())
