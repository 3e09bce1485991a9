"""The on-disk contract shared by tfprobe's writer, reader and TensorBoard plugin.

This module imports no TensorFlow; it is the only place that knows how tfprobe
data is laid out in TensorBoard event files.

Format version 1
----------------
A *run* is a directory with `events.out.tfevents.*` files (TFRecord framing of
`tensorboard.Event` protos). `LayerProbe(log_dir=D)` writes run `D`: the training
windows to files ending in `WINDOWS_SUFFIX` (`.tfprobe`), the reference-set analyses to
`REFERENCE_SUFFIX` (`.tfprobe-reference`) and where the model looks to `LOOKS_SUFFIX`
(`.tfprobe-looks`). Each value carries its `SummaryMetadata` with the first value of its
tag in a file (`tfprobe.logs.writer.FirstValueMetadata`; CKA matrices on every value).

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
| gradient histogram | `tfprobe/<series>/grad_histogram` | `tfprobe_grad_hist` | `DATA_CLASS_TENSOR` | `[NUM_BUCKETS]` `DT_INT64` counts |

`data_class` is always set (TensorBoard drops custom data without one) and
scalars are float32 (TensorBoard's data server drops float64 scalars). The
`SummaryMetadata.plugin_data.content` of every value is UTF-8 JSON::

    {"v": 1, "series": "conv2d", "stat": "mean", "layer": "conv2d",
     "class": "Conv2D", "order": 0, "output": 0, "call": 0,
     "shape": [null, 30, 30, 32], "kind": "activation", "bounds": null,
     "sample_size": null, "inputs": ["max_pooling2d"]}

`order` is the position of the series in the forward pass (0 = nearest the
input), `kind` is `activation` or `pooling`, `bounds` the `[low, high]` range
of a bounded activation (or null; `low` is null for a one-sided bound such as
ReLU6, whose `saturation_fraction` counts the upper bound only), `sample_size` the number of leading
examples of each recorded batch that the sums and histograms were computed
on (null: the whole batch; max, min, dead units and NaN/Inf counts always
cover the whole batch; absent in files written before it existed), and
`inputs` the series that feed this one in the model graph (absent in older
files: unknown). Only the first value of a tag carries the metadata; readers
must take the content from there, and parse it with `parse_content` (the one
parser, used by the reader and the TensorBoard plugin).

Versions: `"v"` is the *major* format version. A reader understands every
content whose `v` is at most `FORMAT_VERSION` (a missing `v` means 1); new
optional fields do not change `v` (readers keep unknown keys in
`SeriesInfo.extra`), a change that older readers would misread raises it,
and such content is refused with a message naming the versions.

The histogram counts the series' values `a`, the gradient histogram (with
`LayerProbe(gradients=True)`, added later) the activation gradient `g = dL/da`,
unscaled, of the same steps (`HISTOGRAM_QUANTITIES` maps each quantity to its
plugin name and tag suffix). The gradient histogram has a plugin name of its
own, so readers that predate it ignore it instead of mixing it into the
activation histograms: it did not change `v`.

Histogram buckets (`histogram_buckets()`) are fixed: exact zeros, and for each
sign one bucket per power of two of the magnitude from 2**-20 (~9.5e-7) to
2**20 (~1.05e6), plus an underflow and an overflow bucket. Counts of windows,
steps and devices therefore add exactly. NaN is never counted; +-Inf falls in
the overflow buckets.

Reference-set analyses (format version 1, added later; older readers ignore them)
-----------------------------------------------------------------------------------
`LayerProbe(reference_data=...)` also writes, at each *reference step* (see
`tfprobe.reference.analysis`), into its own file of the run (`*.tfprobe-reference`),
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

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

WINDOWS_SUFFIX = ".tfprobe"
"""File name suffix of the event files of the training windows (`events.out.tfevents.<...>.tfprobe`).

Every tfprobe event file's name ends in a suffix that starts with this one."""
REFERENCE_SUFFIX = ".tfprobe-reference"
"""File name suffix of the event files of the reference-set analyses (`tfprobe.reference.analysis`)."""
LOOKS_SUFFIX = ".tfprobe-looks"
"""File name suffix of the event files of `LooksAnalysis` (where the model looks)."""
FILE_SUFFIXES = (WINDOWS_SUFFIX, REFERENCE_SUFFIX, LOOKS_SUFFIX)

PLUGIN_NAME = "tfprobe"
"""`plugin_name` of the scalar statistics and the name of the dashboard."""
HIST_PLUGIN_NAME = "tfprobe_hist"
"""`plugin_name` of the histograms (a second name so TensorBoard's sampling can differ)."""
GRAD_HIST_PLUGIN_NAME = "tfprobe_grad_hist"
"""`plugin_name` of the activation-gradient histograms (older readers, which know only `tfprobe_hist`, skip them)."""
FORMAT_VERSION = 1
TAG_PREFIX = "tfprobe/"
HISTOGRAM_TAG_SUFFIX = "histogram"
GRAD_HISTOGRAM_TAG_SUFFIX = "grad_histogram"
HISTOGRAM_QUANTITIES = {
    "activation": (HIST_PLUGIN_NAME, HISTOGRAM_TAG_SUFFIX),
    "gradient": (GRAD_HIST_PLUGIN_NAME, GRAD_HISTOGRAM_TAG_SUFFIX),
}
"""What a histogram counts -> `(plugin_name, tag suffix)`: a series' values, or its activation gradient."""

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
GRADIENT_STATS = (
    "grad_rms",
    "grad_mean_abs",
    "grad_max_abs",
    "grad_zero_fraction",
    "grad_nan_count",
    "grad_inf_count",
    "skipped_steps",
    "weight_norm",
    "weight_grad_norm",
    "update_ratio",
)
STATS = ACTIVATION_STATS + POOLING_STATS + GRADIENT_STATS

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
    "grad_rms": "sqrt(mean(g**2)) of the activation gradient g = dL/da over its finite values (unscaled)",
    "grad_mean_abs": "mean(|g|) of the activation gradient over its finite values",
    "grad_max_abs": "largest finite |g| of the activation gradient",
    "grad_zero_fraction": "share of the activation gradient's finite values with g == 0",
    "grad_nan_count": "number of NaN values in the activation gradient",
    "grad_inf_count": "number of +-Inf values in the activation gradient",
    "skipped_steps": "steps of the window whose update the loss-scale optimizer skipped (non-finite gradients); "
    "left out of every gradient statistic",
    "weight_norm": "L2 norm of the layer's trainable weights before the update, averaged over recorded steps",
    "weight_grad_norm": "L2 norm of the gradient of the layer's trainable weights (unscaled), averaged",
    "update_ratio": "||w_after - w_before|| / ||w_before|| of the update the optimizer applied, averaged",
}

REPR_PLUGIN_NAME = "tfprobe_repr"
"""`plugin_name` of the per-layer measures of the reference-set analysis (`tfprobe.reference.measures`)."""
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


def encode_json(info: dict) -> bytes:
    """The JSON `plugin_data.content` of any tfprobe value: `info` with the format version `"v"`.

    The one encoder of tfprobe's content (series, representation measures, CKA matrices).

    >>> encode_json({"layers": ["a", "b"], "reference_size": 8})
    b'{"layers": ["a", "b"], "reference_size": 8, "v": 1}'
    """
    return json.dumps({"v": FORMAT_VERSION, **info}, sort_keys=True).encode("utf-8")


def encode_content(info: dict, stat: str) -> bytes:
    """The JSON `plugin_data.content` for one value of a series (`info` with its statistic `stat`)."""
    return encode_json({**info, "stat": stat})


def newest_write_wins(keys, steps, grouped=False):
    """Mask of the points to keep when a series was written again at the same or lower steps.

    `keys` and `steps` are integer arrays of points in write order (files in
    name order, records in file order). A point is dropped if a later point
    of the same key (series and statistic of one run) has a step <= its step:
    the newest write wins, as in TensorBoard's default data server (a run
    restarted into the same log_dir replaces the steps it writes again, and
    the old points after them). `grouped=True` says each key's points are
    already together (in write order), which saves a sort. Returns
    `(keep, dropped_keys)`.

    >>> keep, dropped = newest_write_wins(np.array([0, 0, 0, 0, 1]), np.array([1, 2, 3, 2, 1]))
    >>> keep.tolist(), dropped.tolist()
    ([True, False, False, True, True], [0])
    """
    order = np.arange(len(keys)) if grouped else np.argsort(keys, kind="stable")  # each key's points together
    k, s = (keys, steps) if grouped else (keys[order], steps[order])
    keep = np.ones(len(keys), bool)
    back = (k[1:] == k[:-1]) & (s[1:] <= s[:-1])
    if not back.any():
        return keep, np.zeros(0, keys.dtype)
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    ends = np.r_[starts[1:], len(k)]
    groups = np.unique(np.searchsorted(starts, np.flatnonzero(back) + 1, side="right") - 1)
    for a, b in zip(starts[groups], ends[groups]):
        later_min = np.minimum.accumulate(s[a:b][::-1])[::-1]
        keep[order[a : b - 1]] = s[a : b - 1] < later_min[1:]
    return keep, k[starts[groups]]


class FormatError(ValueError):
    """Content or a value that uses a tfprobe plugin name but not tfprobe's format."""


@dataclasses.dataclass(frozen=True)
class SeriesInfo:
    """The typed metadata of one series (`plugin_data.content`, see the module docstring).

    >>> info = parse_content(b'{"v": 1, "layer": "d", "class": "Dense", "order": 2, "shape": [null, 4]}', "d")
    >>> info.class_name, info.order, info.shape, info.inputs
    ('Dense', 2, (None, 4), None)
    """

    series: str
    layer: str
    class_name: str = ""
    order: int = -1
    output: int = 0
    call: int = 0
    shape: tuple[int | None, ...] | None = None
    kind: str = "activation"
    bounds: tuple[float | None, float] | None = None
    sample_size: int | None = None
    inputs: tuple[str, ...] | None = None
    version: int = FORMAT_VERSION
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# key: (field, check, what it must be); a missing key or null keeps the default where allowed
_FIELDS = {
    "layer": ("layer", lambda x: isinstance(x, str), "a string"),
    "class": ("class_name", lambda x: isinstance(x, str), "a string"),
    "order": ("order", _is_int, "an integer"),
    "output": ("output", lambda x: _is_int(x) and x >= 0, "an integer >= 0"),
    "call": ("call", lambda x: _is_int(x) and x >= 0, "an integer >= 0"),
    "kind": ("kind", lambda x: isinstance(x, str), "a string"),
    "shape": (
        "shape",
        lambda x: x is None or (isinstance(x, list) and all(d is None or (_is_int(d) and d >= 0) for d in x)),
        "null or a list of integers >= 0 and nulls",
    ),
    "bounds": (
        "bounds",
        lambda x: (
            x is None
            or (isinstance(x, list) and len(x) == 2 and _is_number(x[1]) and (x[0] is None or _is_number(x[0])))
        ),
        "null or a list [low, high] of numbers (low null for a one-sided bound)",
    ),
    "sample_size": ("sample_size", lambda x: x is None or (_is_int(x) and x >= 1), "null or an integer >= 1"),
    "inputs": (
        "inputs",
        lambda x: x is None or (isinstance(x, list) and all(isinstance(n, str) for n in x)),
        "null or a list of series names",
    ),
}
_KNOWN_KEYS = set(_FIELDS) | {"v", "series", "stat"}


def parse_content(content: bytes, series: str, where: str = "") -> SeriesInfo:
    """Parses and checks the `plugin_data.content` of series `series` into a `SeriesInfo`.

    Empty content gives the defaults. Raises `FormatError` (naming `where`, e.g.
    the run, and the series) for content that is not tfprobe's format or that
    has a newer major version than `FORMAT_VERSION`.

    >>> parse_content(b"", "relu").order
    -1
    >>> parse_content(b'{"v": 1, "order": "3"}', "relu", "run1")
    Traceback (most recent call last):
    tfprobe.metadata.FormatError: run 'run1', series 'relu': `order` must be an integer. Received: order='3'
    >>> parse_content(b'{"v": 99}', "relu")
    Traceback (most recent call last):
    tfprobe.metadata.FormatError: series 'relu': written in tfprobe format version 99, this tfprobe reads versions up to 1; upgrade tfprobe to read it
    """
    prefix = (f"run {where!r}, " if where else "") + f"series {series!r}: "
    if not content:
        return SeriesInfo(series=series, layer=series)
    try:
        data = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"{prefix}the metadata is not UTF-8 JSON ({e})") from None
    if not isinstance(data, dict):
        raise FormatError(f"{prefix}the metadata must be a JSON object. Received: {data!r:.100}")
    version = data.get("v", 1)
    if not _is_int(version) or version < 1:
        raise FormatError(f"{prefix}`v` must be an integer >= 1. Received: v={version!r}")
    if version > FORMAT_VERSION:
        raise FormatError(
            f"{prefix}written in tfprobe format version {version}, this tfprobe reads versions up to "
            f"{FORMAT_VERSION}; upgrade tfprobe to read it"
        )
    fields = {"series": series, "layer": series, "version": version}
    for key, (field, check, must) in _FIELDS.items():
        if key not in data:
            continue
        value = data[key]
        if not check(value):
            raise FormatError(f"{prefix}`{key}` must be {must}. Received: {key}={value!r:.100}")
        if isinstance(value, list):
            value = tuple(value)
        fields[field] = value
    fields["extra"] = {k: v for k, v in data.items() if k not in _KNOWN_KEYS}
    return SeriesInfo(**fields)


def cka_layers(content: bytes) -> list[str] | None:
    """The layer names (rows and columns, in order) of a CKA matrix's content; None if it does not name them.

    >>> cka_layers(b'{"layers": ["a", "b"]}'), cka_layers(b"[1]")
    (['a', 'b'], None)
    """
    names = decode_content(content).get("layers")
    return names if isinstance(names, list) and all(isinstance(n, str) for n in names) else None


def decode_content(content: bytes) -> dict:
    """Parses `plugin_data.content` as a plain dict; unknown or broken content gives `{}`.

    For the plain JSON objects of the other values (`cka_layers`); series use `parse_content`, which checks types.
    """
    try:
        data = json.loads(content.decode("utf-8")) if content else {}
    except (UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------- where the model looks (`tfprobe.looks`)

LOOKS_PREFIX = "looks/"
"""Tags of `LooksAnalysis`, written to `*.tfprobe-looks` event files next to the statistics.

Images use TensorBoard's `images` plugin format (`DATA_CLASS_BLOB_SEQUENCE`, a string tensor
`[width, height, png]`), so its Images tab shows them; scalars its `scalars` format. Tags:

| tag | what | written |
| --- | --- | --- |
| `looks/example_<i>/input` | the input (image, waveform, spectrogram) | the first step |
| `looks/example_<i>/gradcam/<layer>` | Grad-CAM of the predicted class, overlaid | every step |
| `looks/example_<i>/gradcam_true/<layer>` | Grad-CAM of the true class (labels given) | every step |
| `looks/example_<i>/cam/<layer>` | CAM of the predicted class (global average pooling + dense head) | every step |
| `looks/example_<i>/features/<layer>` | the feature-map grid of a layer | every step |
| `looks/example_<i>/predicted_class`, `.../probability` | prediction and its probability (scalars) | every step |
| `looks/example_<i>/true_class` | the label (scalar) | every step |

`<i>` is the example's position in the reference set, two digits at least; `<layer>` a layer path.
"""
MAX_LOOKS_INDEX_DIGITS = 6
"""The most digits of `<i>` in a looks tag that readers accept."""
LOOKS_IMAGE_KINDS = ("input", "gradcam", "gradcam_true", "cam", "features")
LOOKS_SCALAR_KINDS = ("predicted_class", "probability", "true_class")


def looks_tag(example: int, kind: str, layer: str | None = None) -> str:
    """The tag of one looks image or scalar.

    >>> looks_tag(3, "gradcam", "backbone/conv5"), looks_tag(12, "probability")
    ('looks/example_03/gradcam/backbone/conv5', 'looks/example_12/probability')
    """
    return f"{LOOKS_PREFIX}example_{example:02d}/{kind}" + (f"/{layer}" if layer else "")


def parse_looks_tag(tag: str):
    """`(example, kind, layer or None)` of a looks tag; None for other tags.

    >>> parse_looks_tag("looks/example_03/gradcam/backbone/conv5"), parse_looks_tag("tfprobe/a/mean")
    ((3, 'gradcam', 'backbone/conv5'), None)
    >>> parse_looks_tag("looks/example_" + "9" * 5000 + "/input"), parse_looks_tag("looks/example_\u00b2/input")
    (None, None)
    """
    if not tag.startswith(LOOKS_PREFIX):
        return None
    parts = tag[len(LOOKS_PREFIX) :].split("/", 2)
    index = parts[0][8:] if parts[0].startswith("example_") else ""
    # ASCII digits only (`str.isdigit` accepts "²", which `int` refuses), and few of them: an index
    # of 5000 digits is no example of tfprobe's (and `int` would refuse it too)
    if len(parts) < 2 or not 1 <= len(index) <= MAX_LOOKS_INDEX_DIGITS or not index.isascii() or not index.isdigit():
        return None
    kind = parts[1]
    if kind not in LOOKS_IMAGE_KINDS + LOOKS_SCALAR_KINDS:
        return None
    return int(parts[0][8:]), kind, parts[2] if len(parts) > 2 else None
