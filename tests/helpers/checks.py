"""Checks shared by the recording tests: the steps a frame holds, a model left as it was."""

from __future__ import annotations


def steps_of(df, layer=None):
    if layer is not None:
        df = df[df.layer == layer]
    return sorted(int(s) for s in df.step.unique())


def assert_not_instrumented(model):
    """No tfprobe patch left on the model or any of its (nested) layers."""
    assert "train_step" not in model.__dict__
    assert "_tfprobe_instrumentation" not in model.__dict__
    for layer in model._flatten_layers(include_self=False):
        assert "call" not in layer.__dict__, f"{layer.name}.call is still patched"
