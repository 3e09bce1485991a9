"""The on-disk contract shared by tfprobe's writer, reader and TensorBoard plugin.

This module imports no TensorFlow; it is the only place that knows how tfprobe
data is laid out in TensorBoard event files.

Format version 1
----------------
A *run* is a directory with `events.out.tfevents.*` files (TFRecord framing of
`tensorboard.Event` protos). `LayerProbe(log_dir=D)` writes run `D`.

A *series* is one floating output tensor of one layer call. Its name is the
layer's path (nested models joined with `/`, e.g. `backbone/conv1`), plus
`:k` for output `k` of a layer with several outputs and `#c` for the
`c`-th call (c >= 1) of a layer called more than once per step.

Each logged window is **one** `Event` (`step` = the global training step that
closed the window, i.e. `optimizer.iterations` after it) whose `summary`
holds one value per (series, statistic) and one per histogram:

| what | tag | `plugin_data.plugin_name` | `data_class` | tensor |
| --- | --- | --- | --- | --- |
| statistic | `tfprobe/<series>/<stat>` | `tfprobe` | `DATA_CLASS_SCALAR` | rank-0 `DT_FLOAT` |
| histogram | `tfprobe/<series>/histogram` | `tfprobe_hist` | `DATA_CLASS_TENSOR` | `[NUM_BUCKETS]` `DT_INT64` counts |

`data_class` is always set (TensorBoard drops custom data without one) and
scalars are float32 (TensorBoard's data server drops float64 scalars). The
`SummaryMetadata.plugin_data.content` of every value is UTF-8 JSON::

    {"v": 1, "series": "conv2d", "stat": "mean", "layer": "conv2d",
     "class": "Conv2D", "order": 0, "output": 0, "call": 0,
     "shape": [null, 30, 30, 32], "kind": "activation", "bounds": null,
     "sample_size": null}

`order` is the position of the series in the forward pass (0 = nearest the
input), `kind` is `activation` or `pooling`, `bounds` the `[low, high]` range
of a bounded activation (or null), `sample_size` the number of leading
examples of each recorded batch that the sums and histograms were computed
on (null: the whole batch; max, min, dead units and NaN/Inf counts always
cover the whole batch; absent in files written before it existed). Only the
first value of a tag carries the metadata; readers must take the content
from there.

Histogram buckets (`histogram_buckets()`) are fixed: exact zeros, and for each
sign one bucket per power of two of the magnitude from 2**-20 (~9.5e-7) to
2**20 (~1.05e6), plus an underflow and an overflow bucket. Counts of windows,
steps and devices therefore add exactly. NaN is never counted; +-Inf falls in
the overflow buckets.

Reference-set analyses (format version 1, added later; older readers ignore them)
-----------------------------------------------------------------------------------
`LayerProbe(reference_data=...)` also writes, at each *reference step* (see
`tfprobe.analysis`), into its own file of the run (`*.tfprobe-reference`),
one `Event` per reference step (`step` = the global training step):

| what | tag | `plugin_data.plugin_name` | `data_class` | tensor |
| --- | --- | --- | --- | --- |
| representation measure | `tfprobe/<series>/<stat>` | `tfprobe_repr` | `DATA_CLASS_SCALAR` | rank-0 `DT_FLOAT` |
| CKA matrix | `tfprobe/cka_matrix` | `tfprobe_cka` | `DATA_CLASS_TENSOR` | `[L, L]` `DT_FLOAT` |

`<stat>` is one of `REPRESENTATION_STATS`. Their plugin name is not
`tfprobe`, so readers and dashboard views of the training windows never mix
them with the activation statistics (they come at other steps, on other
data); `tfprobe.read_logdir` returns both. Their content is the JSON above
restricted to `series, layer, class, order, shape` plus `reference_size`
(examples) and `dim` (values per example after reduction). The CKA matrix's
content is on **every** value: `{"v": 1, "layers": [series, ...],
"reference_size": N}`, the row and column order of that step's matrix.

>>> tag_for("conv2d", "mean")
'tfprobe/conv2d/mean'
>>> parse_tag("tfprobe/backbone/conv1/zero_fraction")
('backbone/conv1', 'zero_fraction')
>>> NUM_BUCKETS, histogram_buckets()[HIST_ZERO_BUCKET]
(85, (0.0, 0.0))
"""

from __future__ import annotations

import json
import math

PLUGIN_NAME = "tfprobe"
"""`plugin_name` of the scalar statistics and the name of the dashboard."""
HIST_PLUGIN_NAME = "tfprobe_hist"
"""`plugin_name` of the histograms (a second name so TensorBoard's sampling can differ)."""
FORMAT_VERSION = 1
TAG_PREFIX = "tfprobe/"
HISTOGRAM_TAG_SUFFIX = "histogram"

ACTIVATION_STATS = (
    "mean",
    "std",
    "min",
    "max",
    "rms",
    "mean_abs",
    "zero_fraction",
    "near_zero_fraction",
    "nan_count",
    "inf_count",
    "dead_unit_fraction",
    "hoyer_sparsity",
    "saturation_fraction",
)
POOLING_STATS = ("size_ratio", "mass_retention", "energy_retention", "zero_fraction_in")
STATS = ACTIVATION_STATS + POOLING_STATS

STAT_DESCRIPTIONS = {
    "mean": "mean of the finite values",
    "std": "population standard deviation of the finite values",
    "min": "smallest finite value",
    "max": "largest finite value",
    "rms": "sqrt(mean(x**2)) over the finite values",
    "mean_abs": "mean(|x|) over the finite values",
    "zero_fraction": "share of finite values with x == 0",
    "near_zero_fraction": "share of finite values with |x| <= near_zero",
    "nan_count": "number of NaN values in the window",
    "inf_count": "number of +-Inf values in the window",
    "dead_unit_fraction": "share of units (last axis) with |x| <= near_zero for every example and position",
    "hoyer_sparsity": "Hoyer sparsity (sqrt(n) - L1/L2) / (sqrt(n) - 1) per example, averaged",
    "saturation_fraction": "share of finite values within saturation_margin * (high - low) of a bound",
    "size_ratio": "elements(output) / elements(input) of a pooling layer",
    "mass_retention": "sum|output| / sum|input| of a pooling layer",
    "energy_retention": "sum(output**2) / sum(input**2) of a pooling layer",
    "zero_fraction_in": "share of the pooling layer's input values with x == 0",
}

REPR_PLUGIN_NAME = "tfprobe_repr"
"""`plugin_name` of the per-layer measures of the reference-set analysis (`tfprobe.representation`)."""
CKA_PLUGIN_NAME = "tfprobe_cka"
"""`plugin_name` of the per-reference-step layers x layers CKA matrix."""
CKA_TAG = "tfprobe/cka_matrix"
REPRESENTATION_STATS = ("effective_rank", "stable_rank", "probe_accuracy", "label_information", "cka_drift")
REPRESENTATION_DESCRIPTIONS = {
    "effective_rank": "Roy & Vetterli effective rank of the centred reference features",
    "stable_rank": "||A||_F^2 / ||A||_2^2 of the centred reference features",
    "probe_accuracy": "held-out accuracy of a ridge linear probe on the reference labels",
    "label_information": "H(Y) minus the probe's held-out cross-entropy, bits (a lower bound on I(features; Y))",
    "cka_drift": "linear CKA of the layer's reference features with those of the previous reference step",
}

DATA_CLASS_SCALAR = 1  # tensorboard.compat.proto.summary_pb2.DATA_CLASS_SCALAR
DATA_CLASS_TENSOR = 2  # tensorboard.compat.proto.summary_pb2.DATA_CLASS_TENSOR

# Histogram layout: see the module docstring.
HIST_MIN_EXP = -20
HIST_MAX_EXP = 20
_MAG_BUCKETS = HIST_MAX_EXP - HIST_MIN_EXP + 2  # underflow + octaves + overflow
NUM_BUCKETS = 2 * _MAG_BUCKETS + 1
HIST_ZERO_BUCKET = _MAG_BUCKETS


def histogram_buckets():
    """Returns the `(left, right)` value range of each histogram bucket, in order.

    Bucket `HIST_ZERO_BUCKET` holds exact zeros. Above it, bucket
    `HIST_ZERO_BUCKET + 1` holds `0 < x < 2**-20`, then `[2**k, 2**(k+1))` for
    k = -20..19, then `[2**20, inf]`. Below it, the mirror image.
    """
    positive = [(0.0, 2.0**HIST_MIN_EXP)]
    positive += [(2.0**k, 2.0 ** (k + 1)) for k in range(HIST_MIN_EXP, HIST_MAX_EXP)]
    positive += [(2.0**HIST_MAX_EXP, math.inf)]
    negative = [(-hi, -lo) for lo, hi in reversed(positive)]
    return negative + [(0.0, 0.0)] + positive


def tag_for(series: str, stat: str) -> str:
    """The event-file tag of one statistic (or `"histogram"`) of one series."""
    return f"{TAG_PREFIX}{series}/{stat}"


def parse_tag(tag: str):
    """Splits a tfprobe tag into `(series, stat)`; returns None for other tags."""
    if not tag.startswith(TAG_PREFIX) or "/" not in tag[len(TAG_PREFIX) :]:
        return None
    series, stat = tag[len(TAG_PREFIX) :].rsplit("/", 1)
    return series, stat


def series_name(layer_path: str, output: int = 0, n_outputs: int = 1, call: int = 0) -> str:
    """Builds a series name from a layer path, output index and call index.

    >>> series_name("enc/dense"), series_name("split", 1, 2), series_name("shared", call=1)
    ('enc/dense', 'split:1', 'shared#1')
    """
    name = layer_path
    if n_outputs > 1:
        name += f":{output}"
    if call:
        name += f"#{call}"
    return name


def encode_content(info: dict, stat: str) -> bytes:
    """The JSON `plugin_data.content` for one value of a series."""
    return json.dumps({"v": FORMAT_VERSION, **info, "stat": stat}, sort_keys=True).encode("utf-8")


def decode_content(content: bytes) -> dict:
    """Parses `plugin_data.content`; unknown or broken content gives `{}`.

    Newer versions are read as far as their fields are understood.
    """
    try:
        data = json.loads(content.decode("utf-8")) if content else {}
    except (UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
