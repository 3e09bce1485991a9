"""The `constant_output` check: a layer whose output does not depend on its input.

A layer that outputs the same value for every example carries no information about its input: nothing
on the input side of it can learn through it (the gradient it hands back is exactly zero, `dead_gradient`
and `stalled_layer` behind it). The classic case is a `LayerNormalization` over an axis of size 1 (the
official Keras time-series Transformer example normalises `(batch, 500, 1)` inputs over their last axis):
`(x - mean(x)) / std(x)` is 0 for every value, so the layer outputs its `beta`, whatever the input.

What tfprobe records is enough to see it without any extra device work:

- *one value in the window*: the window's `min` equals its `max` (float32, exact) and the values are not
  all zero (that is a `dead_layer`): every example, unit, position and recorded step gave the same value;
- *one value per example*, for normalisation layers (`is_normalization`: where it happens by construction):
  every example's values have one magnitude (`hoyer_sparsity`, which is 0 exactly then, at most
  `CONSTANT_HOYER`) and one sign (`min` and `max` of the window on the same side of 0, no zeros). A layer
  normalising over an axis of size 1 is this while its `beta` still moves between steps of the window.
  Needs more than one value per example (`hoyer_sparsity` is absent otherwise). Not judged on other
  layers: a near-uniform output is not a constant one (an untrained softmax over 10 classes gives 0.1 +-
  0.1% for every class, `hoyer_sparsity` below 1e-5, `tests/test_zoo_healthy.py`'s recurrent model).

Both need the layer alive (finite weights, not dead) and finite values (`nan_count`, `inf_count` 0).
A constant output is reported where it starts: not at a layer whose every recorded input is dead or
constant in the same window (a Dense after a dead ReLU layer outputs its bias: an effect of the dead layer).
A frozen Dense with a zero kernel is reported: its constant output is why nothing before it learns.
Layers scaled by design to tiny values (`LayerScale` at 1e-6 init) are not constant: their values differ.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tfprobe.findings import _column, _fmt, _spans, is_normalization, register

CONSTANT_HOYER = 1e-4
"""`hoyer_sparsity` at or below which every example's values have one magnitude (it is 0 exactly then,
up to float64 rounding of the sums; a dense Gaussian output has about 0.2)."""


def constant_rows(ctx):
    """`(mask, how)`: rows of `ctx.wide` where the layer's output is constant, and per row `"window"` (one
    value in the whole window) or `"example"` (one value per example, sign and magnitude)."""
    w = ctx.wide
    lo, hi = _column(ctx, "min"), _column(ctx, "max")
    zeros, hoyer = _column(ctx, "zero_fraction"), _column(ctx, "hoyer_sparsity")
    finite = (_column(ctx, "nan_count").fillna(0) == 0) & (_column(ctx, "inf_count").fillna(0) == 0)
    finite &= np.isfinite(lo) & np.isfinite(hi)
    ok = finite & w["alive"].astype(bool) & ~ctx.nonfinite_weights() & (zeros.fillna(0.0) < 1.0)
    one_value = ok & (lo == hi) & (hi != 0)
    one_sign = (lo > 0) | (hi < 0)
    normalizing = ctx.info("class").map(lambda c: is_normalization(str(c))).astype(bool)
    per_example = ok & ~one_value & one_sign & (hoyer <= CONSTANT_HOYER) & normalizing
    how = np.where(one_value, "window", "example")
    constant = (one_value | per_example).fillna(False).astype(bool)
    dead = (zeros.fillna(0.0) >= ctx.t["dead_layer_fraction"]) | ~w["alive"].astype(bool)
    return constant & ~_inherited(ctx, constant | dead), how


def _inherited(ctx, flat):
    """Rows of `ctx.wide` whose layer has recorded inputs, every one of them `flat` (dead or constant) at the
    same step: their constancy comes from upstream."""
    w = ctx.wide
    keys = list(zip(w["run"], w["layer"], w["step"]))
    flat_at = dict(zip(keys, flat.to_numpy()))
    inputs = {(r, l): ins for r, l, ins in zip(ctx.series["run"], ctx.series["layer"], ctx.series["inputs"])}
    out = []
    for run, layer, step in keys:
        ins = [i for i in (inputs.get((run, layer)) or ()) if (run, i, step) in flat_at]
        out.append(bool(ins) and all(flat_at[(run, i, step)] for i in ins))
    return pd.Series(out, index=w.index, dtype=bool)


@register("constant_output")
def check_constant_output(ctx):
    """A layer whose output is constant across examples (see the module docstring): `constant_output`."""
    mask, how = constant_rows(ctx)
    if not mask.any():
        return []
    value = _column(ctx, "mean")
    rows = ctx.rows(mask, value, extra=pd.Series(how, index=ctx.wide.index))

    def message(v, e):
        if e == "window":
            return f"the output is one value ({_fmt(v)}) for every example: it does not depend on the input"
        return (f"every example's output is one value repeated (mean {_fmt(v)}): it does not depend on the "
                "input beyond one number per example")

    return _spans(ctx, rows, "constant_output", "std", message)
