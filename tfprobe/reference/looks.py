"""The reference-step analysis "where the model looks": Grad-CAM overlays and feature maps as TensorBoard images.

`LooksAnalysis(log_dir).run(model, reference, step)` takes the first
`examples` examples of the reference set, runs the model once on them in
inference mode (`tfprobe.saliency.forward`: every layer captured, no sub-model)
and writes, per example, PNG images in TensorBoard's own `images` format
(its Images tab shows them; tags in `tfprobe.metadata.looks_tag`):

* the input, once (at the first step it runs);
* the Grad-CAM of the predicted class and, when the reference set has
  labels, of the true class, at `layer` (default: the last layer with a
  spatial output, see `tfprobe.cam`): overlaid on the input for images and
  spectrograms, a heat strip under the waveform for 1D inputs;
* CAM of the predicted class when the model ends in global average pooling
  then a dense layer (`tfprobe.cam.cam`), at the pooled layer;
* the feature-map grid of each feature layer (`tfprobe.cam.feature_maps`);

and the predicted class and its probability as scalars. Everything goes to
its own event file (`*.tfprobe-looks`) in `log_dir`, one `Event` per step.

Rendering is pure NumPy (`overlay`, `waveform_strip`, `colormap`) and PNG
encoding is `tf.io.encode_png`.

>>> import keras, numpy as np, tempfile
>>> from tfprobe.reference import ReferenceData
>>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="conv"),
...                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
>>> looks = LooksAnalysis(tempfile.mkdtemp(), examples=2)
>>> looks.run(model, ReferenceData((np.ones((4, 8, 8, 1)), np.arange(4) % 3)), step=0)
>>> [tag.split("/", 2)[2] for tag in sorted(looks.last_tags)[:5]]
['cam/conv', 'features/conv', 'gradcam/conv', 'gradcam_true/conv', 'input']
>>> looks.close()
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.util import tensor_util

from tfprobe import metadata, validation
from tfprobe.logs.events import EventFileWriter
from tfprobe.logs.writer import FirstValueMetadata
from tfprobe.recording.selection import select, walk
from tfprobe.reference import saliency

INPUT_KINDS = validation.LOOKS_INPUT_KINDS
MAX_EXAMPLES = 100  # examples drawn per reference step (each a few images)
MAX_FEATURE_LAYERS = 4
_MIN_SIDE = 128  # small inputs are enlarged (nearest neighbour, integer factor) to at least this many pixels
_MAX_WIDTH = 512  # waveforms wider than this are drawn as per-column envelopes
_ALPHA = 0.5
# A perceptually ordered dark-to-bright colour ramp (anchors of matplotlib's "inferno").
_RAMP = (
    np.array(
        [
            [0, 0, 4],
            [40, 11, 84],
            [101, 21, 110],
            [159, 42, 99],
            [212, 72, 66],
            [245, 125, 21],
            [250, 193, 39],
            [252, 255, 164],
        ],
        dtype=np.float32,
    )
    / 255.0
)


# ---------------------------------------------------------------- rendering (pure NumPy)


def colormap(values):
    """Values in [0, 1] `(...)` to RGB `(..., 3)` in [0, 1] along the ramp.

    >>> colormap(np.array([0.0, 1.0])).round(2).tolist()
    [[0.0, 0.0, 0.02], [0.99, 1.0, 0.64]]
    """
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)), 0, 1) * (len(_RAMP) - 1)
    low = np.minimum(v.astype(int), len(_RAMP) - 2)
    t = (v - low)[..., None]
    return _RAMP[low] * (1 - t) + _RAMP[low + 1] * t


def unit(a):
    """`a` scaled to [0, 1] by its own min and max (zeros if constant)."""
    a = np.nan_to_num(np.asarray(a, dtype=np.float32))
    span = a.max() - a.min()
    return (a - a.min()) / span if span > 0 else np.zeros_like(a)


def enlarge(image, min_side=_MIN_SIDE):
    """Repeats pixels by the smallest integer factor (at most 8) that makes the longer side >= `min_side`.

    >>> enlarge(np.zeros((16, 8, 3))).shape
    (128, 64, 3)
    """
    factor = int(min(8, max(1, np.ceil(min_side / max(image.shape[:2])))))
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def display(example, kind):
    """An input example `(H, W, C)` or `(H, W)` as an RGB image in [0, 1]: RGB as is, else its first channel in grey."""
    if example.ndim == 2:
        example = example[..., None]
    rgb = example[..., :3] if example.shape[-1] == 3 else np.repeat(example[..., :1], 3, axis=-1)
    if kind == "spectrogram":
        rgb = orient(rgb)
    return unit(rgb)


def orient(a):
    """A `(time, frequency, ...)` array as an image with time across and low frequencies at the bottom."""
    return np.swapaxes(a, 0, 1)[::-1]


def overlay(background, heat):
    """Blends the heat map (normalised by its maximum) in colour over an RGB background, both `(H, W)`."""
    peak = heat.max()
    h = heat / peak if peak > 0 else np.zeros_like(heat)
    return (1 - _ALPHA) * background + _ALPHA * colormap(h)


def waveform_strip(signal, heat, height=64, strip=16):
    """A waveform (first channel) drawn over its heat, above a heat strip: RGB `(height + strip, width)`.

    Longer than `_MAX_WIDTH` samples, each column shows the range of the samples it covers.
    """
    signal = np.asarray(signal, dtype=np.float32).reshape(len(signal), -1)[:, 0]
    width = min(len(signal), _MAX_WIDTH)
    edges = np.linspace(0, len(signal), width + 1).astype(int)
    low = np.array([signal[a : max(b, a + 1)].min() for a, b in zip(edges[:-1], edges[1:])])
    high = np.array([signal[a : max(b, a + 1)].max() for a, b in zip(edges[:-1], edges[1:])])
    column_heat = np.array([heat[a : max(b, a + 1)].mean() for a, b in zip(edges[:-1], edges[1:])])
    peak = column_heat.max()
    colours = colormap(column_heat / peak if peak > 0 else column_heat * 0)  # (width, 3)
    image = np.repeat(colours[None] * 0.6, height + strip, axis=0)
    image[height:] = colours[None]
    scale = max(np.abs(signal).max(), 1e-12)

    def rows(v):
        return np.clip(((1 - v / scale) / 2 * (height - 1)).round().astype(int), 0, height - 1)

    top, bottom = rows(high), rows(low)
    for column in range(width):
        image[top[column] : bottom[column] + 1, column] = 1.0
    return image


def feature_image(grid):
    """A feature-map grid (2D: tiled maps; 1D: one row per channel, 6 pixels high) in grey, `(H, W, 1)`.

    Grey rather than colour: a third of the bytes, and each map is already normalised on its own.
    """
    if grid.ndim == 2 and grid.shape[0] <= 64 and grid.shape[1] > 4 * grid.shape[0]:
        grid = np.repeat(grid, 6, axis=0)
    return np.asarray(grid, dtype=np.float32)[..., None]


def encode_png(rgb):
    """RGB or grey in [0, 1] `(H, W, 3 or 1)` to PNG bytes, enlarged for small inputs."""
    pixels = np.clip(enlarge(rgb) * 255 + 0.5, 0, 255).astype(np.uint8)
    return tf.io.encode_png(pixels).numpy()


# ---------------------------------------------------------------- summaries


def image_value(tag, png):
    """A `Summary.Value` in the `images` plugin's format: string tensor `[width, height, png]` (no metadata)."""
    width, height = _png_size(png)
    tensor = tensor_util.make_tensor_proto(np.array([str(width).encode(), str(height).encode(), png], dtype=object))
    return summary_pb2.Summary.Value(tag=tag, tensor=tensor)


def _png_size(png):
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # the IHDR chunk


def scalar_value(tag, number):
    """A `Summary.Value` in the `scalars` plugin's format: a float32 scalar (no metadata)."""
    return summary_pb2.Summary.Value(tag=tag, tensor=tensor_util.make_tensor_proto(np.float32(number)))


_IMAGE_CONTENT = image_metadata.create_summary_metadata(display_name="", description="").plugin_data.content
_SUMMARY_KINDS = {  # value maker -> (plugin name, data class, content, tag as display name) of its first value
    image_value: (image_metadata.PLUGIN_NAME, summary_pb2.DATA_CLASS_BLOB_SEQUENCE, _IMAGE_CONTENT, True),
    scalar_value: ("scalars", summary_pb2.DATA_CLASS_SCALAR, b"", False),
}


# ---------------------------------------------------------------- the analysis


def _labels(y):
    """Class indices from integer labels `(N,)`, `(N, 1)` or one-hot / probability rows `(N, classes)`."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return y.argmax(axis=1)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
        raise ValueError(
            f"`reference_data` labels must be class indices or one-hot rows for Grad-CAM of the true "
            f"class. Received: labels of shape {y.shape}"
        )
    return y.astype(np.int64)


def _is_conv(layer):
    return "Conv" in type(layer).__name__


def spread(items, k):
    """At most `k` items evenly spread from the first to the last (both kept).

    >>> spread(list("abcdefg"), 3), spread(list("ab"), 4)
    (['a', 'd', 'g'], ['a', 'b'])
    """
    if len(items) <= k:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, k).round().astype(int)]


class LooksAnalysis:
    """Writes where the model looks on reference examples at every reference step (see the module docstring).

    The maps themselves are computed by `tfprobe.cam`.

    Args:
      log_dir: the run directory (the same as `LayerProbe`'s).
      examples: how many of the first reference examples to show (1 to 100). Defaults to 8.
      layer: the Grad-CAM layer (path, name or layer object); None: the last
        layer with a spatial output (`tfprobe.cam`).
      feature_layers: the layers whose feature maps are shown, as
        `LayerProbe(layers=...)` selects them (names, classes, regular
        expressions, predicates); each must have a 1D or 2D spatial output.
        None: up to 4 convolutional layers with a spatial output, evenly
        spread from the first to the last (the Grad-CAM layer if there is
        none); `[]` for no feature maps.
      channels: channels per feature-map grid (the most active). Defaults to 16.
      input_kind: how inputs are drawn: `"image"` (`(H, W, C)`, the map
        overlaid), `"spectrogram"` (`(time, frequency, 1)`: time across, low
        frequencies at the bottom), `"waveform"` (`(T, C)`: heat strip), or
        `"auto"` (default): waveform when the Grad-CAM layer is 1D, image
        otherwise.

    `check(model, reference)` validates everything on the reference examples
    without writing (call it before training); `run` raises the same errors.
    """

    name = "looks"  # for `tfprobe.reference.analysis.run_all` messages

    def __init__(
        self,
        log_dir,
        *,
        examples=8,
        layer=None,
        feature_layers=None,
        channels=saliency.DEFAULT_CHANNELS,
        input_kind="auto",
    ):
        self.log_dir = validation.log_dir(log_dir)
        validation.integer("examples", examples, 1, MAX_EXAMPLES)
        if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels < 1:
            raise ValueError(f"`channels` must be a positive integer. Received: channels={channels!r}")
        self.examples, self.channels = int(examples), int(channels)
        self.layer, self.feature_layers = layer, feature_layers
        self.input_kind = validation.looks_input_kind(input_kind, "input_kind")
        self._writer = None
        self._metadata = FirstValueMetadata()
        self._inputs_written = False
        self.bytes_written = 0
        self.last_step_bytes = 0
        self.last_tags = []

    # -- what to look at

    def _grad_cam_path(self, model, pass_, x_shape):
        if self.layer is None:
            return saliency.last_spatial_layer(model, pass_.taps, x_shape)
        path, _ = saliency.resolve_layer(model, self.layer)
        saliency.spatial_tap(pass_, path)
        return path

    def _feature_paths(self, model, pass_, grad_cam_path, x_shape):
        if self.feature_layers is None:
            rank = saliency.spatial_rank(pass_.taps[grad_cam_path].tensor, x_shape)
            convs = [
                p
                for p, lay in walk(model)
                if _is_conv(lay)
                and p in pass_.taps
                and saliency.is_spatial(pass_.taps[p].tensor)
                and pass_.taps[p].tensor.shape.rank <= 4
                and saliency.spatial_rank(pass_.taps[p].tensor, x_shape) == rank
            ]
            return spread(convs, MAX_FEATURE_LAYERS) or [grad_cam_path]
        if isinstance(self.feature_layers, (list, tuple)) and not self.feature_layers:
            return []
        try:
            paths = [p for p, _ in select(model, self.feature_layers)]
        except (ValueError, TypeError) as error:  # the same check as LayerProbe(layers=...), renamed
            message = str(error).replace("`layers`", "`feature_layers`").replace(" layers=", " feature_layers=")
            raise type(error)(message) from None
        for path in paths:
            saliency.as_grid(
                saliency.spatial_tap(pass_, path, arg="feature_layers").tensor, x_shape, path, arg="feature_layers"
            )
        return paths

    def _look(self, model, reference):
        x, y = reference.head(self.examples)
        truth = None if y is None else _labels(y)
        pass_ = saliency.forward(
            model, x, list(walk(model)), [None] + ([] if truth is None else [truth]), arg="reference_data"
        )
        path = self._grad_cam_path(model, pass_, np.shape(x))
        kind = self._kind(saliency.spatial_rank(pass_.taps[path].tensor, np.shape(x)), path)
        return x, truth, pass_, path, self._feature_paths(model, pass_, path, np.shape(x)), kind

    def check(self, model, reference):
        """Validates the model, the layers and the reference examples; returns `(grad_cam_layer, feature_layers)`."""
        _, _, _, path, features, _ = self._look(model, reference)
        return path, features

    # -- writing

    def _kind(self, spatial, path):
        """How inputs are drawn: `input_kind`, or from the Grad-CAM layer's spatial rank (1: waveform)."""
        if self.input_kind == "auto":
            return "waveform" if spatial == 1 else "image"
        if (self.input_kind == "waveform") != (spatial == 1):
            need = "a 1D" if self.input_kind == "waveform" else "a 2D"
            raise ValueError(
                f"`input_kind` {self.input_kind!r} needs {need} Grad-CAM layer; {path!r} has a {spatial}D "
                f"output. Received: input_kind={self.input_kind!r}"
            )
        return self.input_kind

    def _heat_image(self, example, heat, kind):
        if kind == "waveform":
            return waveform_strip(example, heat)
        return overlay(display(example, kind), orient(heat) if kind == "spectrogram" else heat)

    def _input_image(self, example, kind):
        return waveform_strip(example, np.zeros(len(example))) if kind == "waveform" else display(example, kind)

    def run(self, model, reference, step):
        """Writes one reference step: images and scalars for the first `examples` reference examples."""
        x, truth, pass_, path, feature_paths, kind = self._look(model, reference)
        maps = [saliency.maps_from(pass_, path, np.shape(x), score) for score in range(len(pass_.score_of))]
        class_maps = self._class_activation_maps(model, pass_, np.shape(x))
        features = [
            saliency.feature_maps_of(pass_, p, self.channels, arg="feature_layers", x_shape=np.shape(x))
            for p in feature_paths
        ]
        values = []
        for i, example in enumerate(np.asarray(x, dtype=np.float32)):
            values += self._example_values(i, example, kind, pass_, truth, path, maps, features, class_maps)
        self._write(step, values)

    def _class_activation_maps(self, model, pass_, x_shape):
        """`(CAM maps, pooled layer)` of the predicted classes, or None when the head is not GAP + dense."""
        try:
            return saliency.cam_from(model, pass_, x_shape)
        except ValueError:  # no such head: CAM does not apply, Grad-CAM is shown alone
            return None

    def _example_values(self, i, example, kind, pass_, truth, path, maps, features, class_maps):
        predicted = int(pass_.predicted[i])
        probability = float(pass_.probabilities[i, predicted])
        said = f"predicted class {predicted} (p={probability:.3f})" + ("" if truth is None else f", true {truth[i]}")
        images = [] if self._inputs_written else [("input", None, self._input_image(example, kind), "The input.")]
        images.append(
            (
                "gradcam",
                path,
                self._heat_image(example, maps[0][i], kind),
                f"Grad-CAM of the predicted class at layer {path}; {said} at this step.",
            )
        )
        if truth is not None:
            images.append(
                (
                    "gradcam_true",
                    path,
                    self._heat_image(example, maps[1][i], kind),
                    f"Grad-CAM of the true class ({truth[i]}) at layer {path}.",
                )
            )
        if class_maps is not None:
            images.append(
                (
                    "cam",
                    class_maps[1],
                    self._heat_image(example, class_maps[0][i], kind),
                    f"CAM of the predicted class at layer {class_maps[1]} (pooled by the head); {said}.",
                )
            )
        for found in features:
            images.append(
                (
                    "features",
                    found.layer,
                    feature_image(found.grid[i]),
                    f"The {found.maps.shape[1]} most active channels of layer {found.layer} (largest mean "
                    f"|activation|, row by row), each normalised to [0, 1].",
                )
            )
        values = [
            self._value(image_value, metadata.looks_tag(i, k, layer), encode_png(rgb), text)
            for k, layer, rgb, text in images
        ]
        values.append(
            self._value(
                scalar_value,
                metadata.looks_tag(i, "predicted_class"),
                predicted,
                "The class the model predicts for this reference example.",
            )
        )
        values.append(
            self._value(
                scalar_value,
                metadata.looks_tag(i, "probability"),
                probability,
                "The probability of the predicted class.",
            )
        )
        if truth is not None:
            values.append(
                self._value(
                    scalar_value,
                    metadata.looks_tag(i, "true_class"),
                    int(truth[i]),
                    "The label of this reference example.",
                )
            )
        return values

    def _value(self, make, tag, payload, description):
        """The value of `tag` made by `make`; its first in the file carries the metadata, later ones none."""
        value = make(tag, payload)
        plugin_name, data_class, content, named = _SUMMARY_KINDS[make]
        md = self._metadata(tag, plugin_name, data_class, content, description, tag if named else "", later=False)
        if md is not None:
            value.metadata.CopyFrom(md)
        return value

    def _write(self, step, values):
        if self._writer is None:
            self._writer = EventFileWriter(self.log_dir, suffix=metadata.LOOKS_SUFFIX)
        event = event_pb2.Event(step=int(step), wall_time=time.time())
        event.summary.value.extend(values)
        self.last_step_bytes = self._writer.write(event)
        self._writer.flush()
        self.bytes_written += self.last_step_bytes
        self.last_tags = [v.tag for v in values]
        self._inputs_written = True

    def close(self):
        """Closes the event file; a later `run` (the next `fit` of a reused probe) starts a new one."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._metadata.clear()  # a new file carries each tag's metadata again
