"""The healthy zoo: real architectures, freshly built (the first window is the first step) and after
3 steps of SGD on synthetic data, must get **no warning and no error** from `tfprobe.diagnose`.

The small models and MobileNetV2 (alpha 0.35, 32x32) run in the default suite; the twelve
`keras.applications` models are marked `slow`:

    python -m pytest -m slow tests/test_zoo_healthy.py

Depth findings need the graph: where the recorder does not write `inputs` yet, `zoo.with_graph` fills
it in from the Keras graph (what the recorder is to write).
"""

from __future__ import annotations

import pytest
from helpers.zoo import (
    APPLICATIONS,
    application,
    conv1d_audio,
    not_info,
    recurrent_text,
    run_healthy,
    small_cnn,
    transformer_block,
)

keras = pytest.importorskip("keras")
L = keras.layers


def assert_healthy(build, tmp_path):
    findings, _ = run_healthy(build, tmp_path / "run")
    bad = not_info(findings)
    assert bad.empty, bad[["layer", "kind", "severity", "message"]].to_string()
    live = findings.attrs["live_incidents"]  # the probe's alerts while training stay silent too
    assert live.empty, live[["root_layer", "root_kind", "summary"]].to_string()


FAST = [small_cnn, transformer_block, recurrent_text, conv1d_audio, application("MobileNetV2", 32, alpha=0.35)]
SLOW = APPLICATIONS


@pytest.mark.parametrize("build", FAST, ids=lambda b: b.__name__)
def test_healthy_model_has_no_warning(tmp_path, build):
    assert_healthy(build, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("build", SLOW, ids=lambda b: b.__name__)
def test_healthy_application_has_no_warning(tmp_path, build):
    assert_healthy(build, tmp_path)
