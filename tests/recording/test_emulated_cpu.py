"""The tests whose expectations depend on the CPU's kernels, run as on a CPU with AVX2 and without AVX-512.

oneDNN (and TensorFlow's Eigen contractions, MatMul and convolutions, which call oneDNN's sgemm on x86) choose
their code for the CPU's instruction set at run time; `ONEDNN_MAX_CPU_ISA=AVX2` caps it, and
`TF_ENABLE_ONEDNN_OPTS=0` is TensorFlow's default on CPUs without AVX-512 VNNI (an AMD EPYC, say), so the
pair runs this machine's kernels as an AVX2-only CPU would (docs/development.md). Each test runs in a
subprocess, since both variables are read when TensorFlow loads. Slow:

    python -m pytest -m slow tests/recording/test_emulated_cpu.py
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[2]
EMULATION = {"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_ENABLE_ONEDNN_OPTS": "0"}

PROBE = """
import numpy as np, tensorflow as tf
a = tf.constant(np.ones((64, 64), "float32"))
print(float(tf.reduce_sum(tf.matmul(a, a))))
"""


def environment(**extra):
    env = {**os.environ, **EMULATION, **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tensorboard_plugin"), env.get("PYTHONPATH", "")])
    return env


def test_the_emulation_takes_effect():
    """oneDNN reports the ISA it dispatches on: at most AVX2 under the emulation, whatever this CPU has."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=environment(ONEDNN_VERBOSE="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    isa = re.findall(r"onednn_verbose,.*info,cpu,isa:(.*)", done.stdout)
    assert isa, done.stdout[-2000:]
    assert not re.search(r"AVX-512|AMX|AVX10", isa[0]), isa[0]
    assert re.search(r"gemm_api", done.stdout), "the MatMul did not run through oneDNN's sgemm"


@pytest.mark.parametrize(
    "selection",
    [
        "tests/recording/test_core.py::test_the_probe_does_not_change_what_training_computes",
        "tests/findings/test_gradient_findings.py::test_nan_kernel_is_nan_weights_not_a_dead_layer",
        "tests/recording/test_xla.py",
    ],
)
def test_cpu_dependent_tests_pass_as_on_an_avx2_cpu(selection):
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", selection],
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stdout[-4000:]
