"""Where a model looks: Grad-CAM, Grad-CAM++, CAM and feature maps, on every model kind.

Each function runs the model once on `x` in inference mode
(`training=False`) and captures the layer outputs it needs as the model
computes them (`tfprobe.recording.capture`), watched by a `tf.GradientTape`: no
sub-model is built, so Sequential, Functional, nested (a backbone inside a
model) and subclassed models all work, unlike
`keras.Model(model.inputs, [layer.output, model.output])`.

* `grad_cam(model, x, layer=None, class_index=None)` (Selvaraju et al. 2017):
  the layer's channels weighted by the spatial mean of the gradient of the
  class score, summed, clipped at zero and upsampled (bilinear) to the
  input's spatial size: `(N, H, W)` for 2D layers, `(N, T)` for 1D ones.
* `grad_cam_plus_plus(...)` (Chattopadhyay et al. 2018): the same with
  Grad-CAM++'s per-position weights (closed form, from the same gradient).
* `cam(model, x, class_index=None)` (Zhou et al. 2016): for a head of global
  average pooling followed by a dense layer, the pooled feature maps
  weighted by the dense layer's kernel column of the class.
* `feature_maps(model, x, layer=None, channels=16)`: the most active channels
  of a layer, normalised per channel, and their grid.

The class score is the logit: when the last layer's activation is a softmax
or a sigmoid (a `Dense(..., activation="softmax")`, an `Activation` or a
`Softmax` layer), it is bypassed for the pass (and restored); otherwise the
model's output is the score. One output unit is a binary classifier: class 1
is scored by the logit, class 0 by its negation. `class_index=None` explains
the predicted class.

The default `layer` is the last layer whose output is spatial
(`(batch, *spatial, channels)` with more than one spatial position) in the
input's terms, in the order the model computes them, before the head
(pooling to a vector, flattening, dense): found inside nested backbones too.
For image inputs that is a 2D layer that is not preprocessing (rescaling,
resizing, augmentation) or, in a patch-token model (ViT, MLP-Mixer), the
last `(batch, tokens, dim)` layer whose tokens form a grid of the image
(`token_grid`), laid on that grid (`as_grid`); `last_spatial_layer` says
why when there is none. A layer called more than once is explained at its
first call.

>>> import keras, numpy as np
>>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="conv"),
...                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
>>> x = np.random.default_rng(0).random((4, 8, 8, 1), dtype="float32")
>>> maps = grad_cam(model, x)
>>> maps.shape, bool((maps >= 0).all()), default_layer(model, x)
((4, 8, 8), True, 'conv')
>>> feature_maps(model, x, "conv", channels=2).maps.shape
(4, 2, 6, 6)
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import reprlib
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from tfprobe import layer_kinds
from tfprobe.recording.capture import Capture
from tfprobe.recording.selection import available, walk

DEFAULT_CHANNELS = 16
_NO_OP_LAYERS = layer_kinds.keras_classes(layer_kinds.PASS_THROUGH_CLASSES, keras.layers)
_GAP = layer_kinds.keras_classes(layer_kinds.GLOBAL_AVERAGE_POOLING_CLASSES, keras.layers)


# ---------------------------------------------------------------- arguments


def _check_x(model, x, arg="x"):
    """`x` as a float NumPy batch, checked against the model's input shape where the model declares one."""
    if isinstance(x, (dict, list, tuple)) and not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception:  # noqa: BLE001 - anything np.asarray rejects
            raise TypeError(
                f"`{arg}` must be one array of examples. Received: {arg} of type {type(x).__name__}"
            ) from None
    array = np.asarray(x)
    if array.dtype == object or array.ndim < 2 or len(array) == 0:
        raise ValueError(
            f"`{arg}` must be a non-empty batch of examples (batch, ...). Received: {arg} of shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype("float32")
    try:
        inputs = model.inputs if model.built else None
    except (AttributeError, ValueError):  # a subclassed model declares no inputs
        inputs = None
    if inputs and len(inputs) == 1:
        expected = tuple(inputs[0].shape[1:])
        got = array.shape[1:]
        if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected, got)):
            raise ValueError(
                f"`{arg}` must be examples of shape {expected} for model {model.name!r}. "
                f"Received: {arg} of shape {array.shape}"
            )
    return array


def resolve_layer(model, layer, arg="layer"):
    """`(path, layer)` for `layer` given as a path, a name or a layer object of `model`.

    Raises `ValueError` naming `arg` with the available layers when it is not one.
    """
    candidates = list(walk(model))
    if isinstance(layer, keras.layers.Layer):
        hits = [(p, lay) for p, lay in candidates if lay is layer]
    elif isinstance(layer, str):
        hits = [(p, lay) for p, lay in candidates if layer in (p, lay.name)]
    else:
        raise TypeError(f"`{arg}` must be a layer name, path or layer object. Received: {arg}={layer!r}")
    if not hits:
        near = [layer] if isinstance(layer, str) else []
        raise ValueError(
            f"`{arg}` is not a layer of model {model.name!r}. Received: {arg}={layer!r}. "
            f"Available layers: {available(candidates, near)}"
        )
    return hits[0]


def _classes(class_index, n, n_classes, predicted, arg="class_index"):
    """One class per example: the predicted ones for None, an int for all, or one per example."""
    if class_index is None:
        return predicted
    values = np.asarray(class_index)
    if values.ndim == 0:
        values = np.full(n, values)
    bad = (
        values.ndim != 1
        or len(values) != n
        or not np.issubdtype(values.dtype, np.integer)
        or (values < 0).any()
        or (values >= max(n_classes, 2)).any()
    )
    if bad and arg != "class_index":
        raise ValueError(
            f"`{arg}` labels must be class indices in [0, {max(n_classes, 2)}), one per example, for "
            f"Grad-CAM of the true class. Received: labels={reprlib.repr(class_index)}"
        )
    if bad:
        raise ValueError(
            f"`class_index` must be None, an int in [0, {max(n_classes, 2)}) or one such int per "
            f"example ({n}). Received: class_index={reprlib.repr(class_index)}"
        )
    return values.astype("int64")


# ---------------------------------------------------------------- the one pass


_SQUASHING = ("softmax", "sigmoid")


def _activation_name(layer):
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    return getattr(getattr(layer, "activation", None), "__name__", None)


def _last_layer(model):
    layers = list(walk(model))
    return layers[-1] if layers else None


@contextlib.contextmanager
def _logits(last):
    """Bypasses a softmax or sigmoid of the layer `(path, layer)` for the pass; yields its name (or None)."""
    name = _activation_name(last[1]) if last is not None else None
    if name not in _SQUASHING:
        yield None
        return
    layer = last[1]
    if isinstance(layer, keras.layers.Softmax):
        had, previous = "call" in layer.__dict__, layer.__dict__.get("call")
        object.__setattr__(layer, "call", lambda inputs, *args, **kwargs: inputs)
        try:
            yield name
        finally:
            if had:
                object.__setattr__(layer, "call", previous)
            else:
                object.__delattr__(layer, "call")
        return
    previous = layer.activation
    object.__setattr__(layer, "activation", keras.activations.linear)
    try:
        yield name
    finally:
        object.__setattr__(layer, "activation", previous)


def _is_output(tap, output):
    """Whether the captured tap is (or equals) the model's output: the bypassed layer made the output."""
    if tap is None or not isinstance(output, tf.Tensor):
        return False
    return tap.tensor is output or (
        tap.tensor.shape == output.shape
        and bool(np.allclose(np.asarray(tap.tensor, np.float32), np.asarray(output, np.float32), equal_nan=True))
    )


@dataclasses.dataclass
class Pass:
    """What one inference pass saw: class scores, predictions and the first tap of each captured layer."""

    logits: np.ndarray  # (N, C): the class scores (pre-softmax where it was bypassed)
    probabilities: np.ndarray  # (N, C), or (N, 2) for one sigmoid unit
    predicted: np.ndarray  # (N,) int
    taps: dict  # path -> Tap (first call, first output)
    tape: object
    score_of: object  # classes -> the summed score tensor (recorded on the tape)


def _class_scores(model, output):
    if not isinstance(output, tf.Tensor) or output.shape.rank != 2:
        shape = getattr(output, "shape", type(output).__name__)
        raise ValueError(
            f"`model` must output class scores of shape (batch, classes) for Grad-CAM and CAM. "
            f"Received: model {model.name!r} with an output of shape {shape}"
        )
    return tf.cast(output, tf.float32)


def _probabilities(logits, squashing):
    """Class probabilities from the scores: the bypassed squashing applied, or the output itself if it is one."""
    if logits.shape[1] == 1:
        already = squashing is None and ((logits >= 0) & (logits <= 1)).all()
        p = logits[:, 0] if already else 1 / (1 + np.exp(-logits[:, 0]))
        return np.stack([1 - p, p], axis=1)
    if squashing == "sigmoid":  # independent classes (multi-label)
        return 1 / (1 + np.exp(-logits))
    if squashing is None and (logits >= 0).all() and np.allclose(logits.sum(axis=1), 1, atol=1e-3):
        return logits
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _check_callable(model):
    """Raises `ValueError` when `model(x)` cannot run (a subclass without `call`, such as a distiller or a GAN
    whose own `train_step` calls the models it holds), naming the models it holds that can be called."""
    from tfprobe.reference import has_call

    if not isinstance(model, keras.Model) or has_call(model):
        return
    held = [layer for layer in model.layers if isinstance(layer, keras.Model) and has_call(layer)]
    if held:
        hint = "pass one of the models it holds that can be called: " + ", ".join(
            f"model.{_attribute(model, m) or 'get_layer(' + repr(m.name) + ')'} ({m.name!r}, {type(m).__name__})"
            for m in held
        )
    else:
        hint = "pass a model that can be called on `x` (a Functional or Sequential model, or a subclass with `call`)"
    raise ValueError(
        f"`model` must be a model that can be called on `x`: model {model.name!r} "
        f"({type(model).__name__}) has no `call` method (it runs only inside its own `train_step`); "
        f"{hint}."
    )


def _attribute(owner, value):
    """The name of an attribute of `owner` holding `value` (`teacher` for `distiller.teacher`), or None."""
    for name, held in vars(owner).items():
        if held is value and not name.startswith("_"):
            return name
    return None


def forward(model, x, chosen, class_sets=(), watch=True, arg="x", bypass=True):
    """Runs `model(x, training=False)` once, capturing `chosen` `[(path, layer)]` under a gradient tape.

    `class_sets` are class choices (None, an int or one per example) whose
    summed scores are recorded on the tape (`Pass.score_of[i]`), so that
    `pass_.tape.gradient(pass_.score_of[i], tensor)` gives their gradient.
    Errors about `x` and the classes name `arg` (the caller's argument).
    The last layer's softmax or sigmoid is bypassed (`bypass`) when that
    layer turns out to produce the model's output; otherwise the pass runs
    again without touching it.
    """
    _check_callable(model)
    x = _check_x(model, x, arg)
    last = _last_layer(model) if bypass else None
    given = list(chosen)
    chosen = given + ([last] if last is not None and all(lay is not last[1] for _, lay in given) else [])
    taps = {}
    tape = tf.GradientTape(persistent=len(class_sets) > 1, watch_accessed_variables=False)

    def on_tap(tap):
        if tap.output == 0 and tap.path not in taps:
            taps[tap.path] = tap
            if watch:
                tape.watch(tap.tensor)

    with _logits(last) as squashing, Capture(chosen) as capture, tape:
        with capture.collecting(on_tap):
            try:
                output = model(x, training=False)
            except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
                raise ValueError(
                    f"`{arg}` could not be run through model {model.name!r}: {error}. "
                    f"Received: {arg} of shape {x.shape}"
                ) from None
        hidden = squashing is not None and not _is_output(taps.get(last[0]), output)
        if not hidden:  # the scores are recorded on the tape
            scored = _score(model, output, squashing, class_sets, len(x), "class_index" if arg == "x" else arg)
    if hidden:  # a hidden layer was bypassed: run again, now that it is restored, without bypassing
        return forward(model, x, given, class_sets, watch, arg, bypass=False)
    return Pass(*scored[:3], taps, tape, scored[3])


def _score(model, output, squashing, class_sets, n, arg):
    """`(logits, probabilities, predicted, [summed score tensor per class set])` of one pass's output."""
    logits_t = _class_scores(model, output)
    logits = logits_t.numpy()
    probabilities = _probabilities(logits, squashing)
    predicted = probabilities.argmax(axis=1)
    scores = []
    for class_index in class_sets:
        classes = _classes(class_index, n, logits.shape[1], predicted, arg)
        if logits.shape[1] == 1:  # binary: class 1 is the logit, class 0 its negation
            scores.append(tf.reduce_sum(logits_t[:, 0] * (2.0 * classes - 1.0)))
        else:
            scores.append(tf.reduce_sum(tf.gather(logits_t, classes, axis=1, batch_dims=1)))
    return logits, probabilities, predicted, scores


def is_spatial(tensor):
    """A 1D or wider spatial output `(batch, *spatial, channels)` with more than one position."""
    return tensor.shape.rank >= 3 and math.prod(int(d) for d in tensor.shape[1:-1]) > 1


def spatial_tap(pass_, path, arg="layer"):
    """The tap of layer `path` in a `forward` pass; a `ValueError` naming `arg` unless it is 1D or 2D spatial."""
    tap = pass_.taps.get(path)
    if tap is None:
        raise ValueError(f"`{arg}` {path!r} was not called when the model ran on `x`. Received: {arg}={path!r}")
    if not is_spatial(tap.tensor) or tap.tensor.shape.rank > 4:
        raise ValueError(
            f"`{arg}` must be a layer with a 1D or 2D spatial output (batch, ..., channels); "
            f"{path!r} outputs shape {tuple(tap.tensor.shape)}. Received: {arg}={path!r}"
        )
    return tap


def _is_preprocessing(layer):
    """A Keras preprocessing layer (rescaling, resizing, augmentation): its output is still the input, not features."""
    return ".preprocessing." in type(layer).__module__


def token_grid(tokens, height, width):
    """`(rows, cols, skip)` when `tokens` positions are a `rows x cols` grid of a `height x width` input, else None.

    The tokens of a patch-token model (ViT, MLP-Mixer: `(batch, tokens,
    dim)`) cover the image row by row, with the input's aspect ratio;
    `skip` is 1 when one extra token (a class token) comes first.

    >>> token_grid(16, 32, 32), token_grid(65, 64, 64), token_grid(8, 32, 64), token_grid(7, 32, 32)
    ((4, 4, 0), (8, 8, 1), (2, 4, 0), None)
    """
    for skip in (0, 1):
        n = tokens - skip
        for rows in range(1, n + 1):
            if n % rows == 0 and n > 1 and rows * width == (n // rows) * height:
                return rows, n // rows, skip
    return None


def spatial_rank(tensor, x_shape):
    """How many spatial axes the output `tensor` maps onto the input of shape `x_shape` (with the batch axis).

    2 for `(batch, h, w, channels)`, and for `(batch, tokens, dim)` tokens
    that form a grid of an image input (`token_grid`); 1 for other
    `(batch, positions, channels)` outputs.
    """
    rank = tensor.shape.rank
    if rank == 3 and len(x_shape) == 4 and token_grid(int(tensor.shape[1]), int(x_shape[1]), int(x_shape[2])):
        return 2
    return rank - 2


def as_grid(tensor, x_shape, path, arg="layer"):
    """A token output `(batch, tokens, dim)` of an image model as `(batch, rows, cols, dim)`; others as they are."""
    if tensor.shape.rank != 3 or len(x_shape) != 4:
        return tensor
    grid = token_grid(int(tensor.shape[1]), int(x_shape[1]), int(x_shape[2]))
    if grid is None:
        raise ValueError(
            f"`{arg}` {path!r} outputs {int(tensor.shape[1])} positions (shape "
            f"{tuple(tensor.shape)}), which do not form a grid of the {tuple(x_shape[1:3])} input images: "
            f"its maps cannot be laid on them. Received: {arg}={path!r}"
        )
    rows, cols, skip = grid
    return tf.reshape(tensor[:, skip:], [-1, rows, cols, int(tensor.shape[-1])])


def last_spatial_layer(model, taps, x_shape=None):
    """The default layer: the last tap (in computation order) with a spatial output that maps onto the input.

    For image inputs `(batch, h, w, c)` (`x_shape`): the last layer with a
    2D spatial output that is not preprocessing (rescaling, resizing,
    augmentation); else, in a patch-token model (ViT, MLP-Mixer), the last
    layer whose tokens form a grid of the image (`token_grid`); else the
    last preprocessing layer. For sequences `(batch, steps)`: the last 1D
    spatial layer. Otherwise (or without `x_shape`) the last 1D or 2D one.
    """
    spatial = [(path, tap) for path, tap in taps.items() if is_spatial(tap.tensor) and tap.tensor.shape.rank <= 4]
    rank = None if x_shape is None else len(x_shape)
    if rank == 4:
        maps = [(p, t) for p, t in spatial if t.tensor.shape.rank == 4]
        tokens = [(p, t) for p, t in spatial if t.tensor.shape.rank == 3]
        tiled = [(p, t) for p, t in tokens if spatial_rank(t.tensor, x_shape) == 2]
        spatial = [(p, t) for p, t in maps if not _is_preprocessing(t.layer)] or tiled or maps
        if not spatial:
            why = (
                ""
                if not tokens
                else (
                    f"; its sequence outputs (such as {tokens[-1][0]!r}, {tuple(tokens[-1][1].tensor.shape)}) do not form "
                    f"a grid of the image"
                )
            )
            raise ValueError(
                f"`layer` cannot be chosen automatically: no layer of model {model.name!r} has a 2D "
                f"spatial output to lay on its {tuple(x_shape[1:])} input images{why}. Received: "
                f"layer=None"
            )
    elif rank == 2:
        spatial = [(p, t) for p, t in spatial if t.tensor.shape.rank == 3]
    if not spatial:
        raise ValueError(
            f"`layer` cannot be chosen automatically: no layer of model {model.name!r} has a 1D or 2D "
            f"spatial output. Received: layer=None"
        )
    return spatial[-1][0]  # taps are in the order the model computed them


def _explain_pass(model, x, layer, class_sets, arg="layer"):
    """One pass for `layer` (None: every layer, to find the default); returns `(pass, path)`."""
    if layer is None:
        pass_ = forward(model, x, list(walk(model)), class_sets)
        return pass_, last_spatial_layer(model, pass_.taps, np.shape(x))
    path, obj = resolve_layer(model, layer, arg)
    pass_ = forward(model, x, [(path, obj)], class_sets)
    spatial_tap(pass_, path, arg)
    return pass_, path


def default_layer(model, x):
    """The path of the layer `grad_cam` explains when `layer=None` (see the module docstring)."""
    pass_ = forward(model, x, list(walk(model)), watch=False)
    return last_spatial_layer(model, pass_.taps, np.shape(x))


# ---------------------------------------------------------------- maps


def _upsample(maps, size):
    """`(N, *spatial)` maps resized (bilinear) to `size`; non-negative maps stay non-negative."""
    maps = tf.convert_to_tensor(maps, tf.float32)
    if maps.shape.rank == 2:
        resized = tf.image.resize(maps[:, :, None, None], (size[0], 1))
        return resized[:, :, 0, 0].numpy()
    return tf.image.resize(maps[..., None], size)[..., 0].numpy()


def _input_size(shape, rank, path):
    if len(shape) < rank + 1:
        raise ValueError(
            f"`x` has no {rank}D spatial axes to upsample the map of layer {path!r} to. Received: x of shape {shape}"
        )
    return tuple(int(s) for s in shape[1 : 1 + rank])


def _weighted_maps(path, activation, gradient, plus):
    """Grad-CAM (`plus=False`) or Grad-CAM++ maps at the layer's own resolution, `(N, *spatial)`."""
    if gradient is None:
        raise ValueError(
            f"`layer` {path!r} does not reach the class score (no gradient flows from the model "
            f"output to it). Received: layer={path!r}"
        )
    a = tf.cast(activation, tf.float32)
    g = tf.cast(gradient, tf.float32)
    axes = list(range(1, a.shape.rank - 1))
    if plus:
        g2, g3 = g * g, g * g * g
        denominator = 2.0 * g2 + tf.reduce_sum(a, axis=axes, keepdims=True) * g3
        alpha = g2 / tf.where(denominator != 0.0, denominator, tf.ones_like(denominator))
        weights = tf.reduce_sum(alpha * tf.nn.relu(g), axis=axes, keepdims=True)
    else:
        weights = tf.reduce_mean(g, axis=axes, keepdims=True)
    return tf.nn.relu(tf.reduce_sum(weights * a, axis=-1)).numpy()


def maps_from(pass_, path, x_shape, score=0, plus=False):
    """Grad-CAM (or Grad-CAM++) maps of a `forward` pass at layer `path` for its `score`-th class set.

    Upsampled to the spatial size in `x_shape` (the inputs' shape). The
    tokens of a patch-token layer are laid on the image grid first
    (`as_grid`).
    """
    tap = spatial_tap(pass_, path)
    gradient = pass_.tape.gradient(pass_.score_of[score], tap.tensor)
    activation = as_grid(tap.tensor, x_shape, path)
    if gradient is not None:
        gradient = as_grid(gradient, x_shape, path)
    maps = _weighted_maps(path, activation, gradient, plus)
    return _upsample(maps, _input_size(x_shape, maps.ndim - 1, path))


def _gradient_maps(model, x, layer, class_index, plus):
    pass_, path = _explain_pass(model, x, layer, [class_index])
    return maps_from(pass_, path, np.shape(x), 0, plus)


def grad_cam(model, x, layer=None, class_index=None):
    """Grad-CAM maps of `x`: `(N, H, W)` for a 2D layer, `(N, T)` for 1D, non-negative, at the input's size.

    Args:
      model: a Keras classifier (Sequential, Functional, nested or
        subclassed) whose output is `(batch, classes)` scores.
      x: a batch of inputs.
      layer: the layer to explain (path such as `"backbone/conv5"`, name or
        layer object); None: the last layer with a spatial output.
      class_index: the class to explain: None (the predicted class of each
        example), an int, or one int per example.

    Returns:
      A float32 NumPy array, clipped at zero, not normalised.
    """
    return _gradient_maps(model, x, layer, class_index, plus=False)


def grad_cam_plus_plus(model, x, layer=None, class_index=None):
    """Grad-CAM++ maps (same arguments and shapes as `grad_cam`), from the same single gradient."""
    return _gradient_maps(model, x, layer, class_index, plus=True)


def cam_head(model):
    """`((gap path, gap), (dense path, dense))` when the model ends in global average pooling then a dense layer."""
    layers = [(p, lay) for p, lay in walk(model) if not isinstance(lay, _NO_OP_LAYERS)]
    if len(layers) >= 2 and isinstance(layers[-2][1], _GAP) and isinstance(layers[-1][1], keras.layers.Dense):
        if getattr(layers[-2][1], "data_format", "channels_last") == "channels_last":
            return layers[-2], layers[-1]
    tail = ", ".join(f"{p} ({type(lay).__name__})" for p, lay in layers[-2:])
    raise ValueError(
        f"`model` must end in global average pooling followed by a dense layer for CAM (use grad_cam "
        f"otherwise). Received: model {model.name!r} ending in {tail or '(no layers)'}"
    )


def cam(model, x, class_index=None):
    """CAM maps (Zhou et al. 2016) of `x`, shaped, clipped and upsampled as `grad_cam`'s.

    The feature maps pooled by the head's global average pooling, weighted
    by the dense layer's kernel column of the class (the bias, the same at
    every position, is left out). For this head, Grad-CAM at the pooled layer
    equals CAM divided by the number of positions.
    """
    head = cam_head(model)
    pass_ = forward(model, x, list(head), [class_index], watch=False)
    return cam_from(model, pass_, np.shape(x), class_index, head)[0]


def cam_from(model, pass_, x_shape, class_index=None, head=None):
    """`(CAM maps, path of the pooled layer)` from a `forward` pass that captured the head's two layers.

    Raises `ValueError` naming `model` unless it ends in global average
    pooling then a dense layer that makes the output.
    """
    (gap_path, _), (dense_path, dense) = head or cam_head(model)
    gap_tap = pass_.taps.get(gap_path)
    if gap_tap is None or gap_tap.inputs is None:
        raise ValueError(
            f"`model` must pool floating feature maps in {gap_path!r} for CAM (it was not called "
            f"on them). Received: model {model.name!r}"
        )
    features = tf.cast(gap_tap.inputs, tf.float32)
    pooled = tf.reduce_mean(features, axis=list(range(1, features.shape.rank - 1)))
    kernel = tf.cast(dense.kernel, tf.float32)
    logits = pooled @ kernel + (tf.cast(dense.bias, tf.float32) if dense.use_bias else 0.0)
    if not np.allclose(logits.numpy(), pass_.logits, rtol=1e-3, atol=1e-4 * (1 + np.abs(pass_.logits).max())):
        raise ValueError(
            f"`model` must output the dense layer {dense_path!r} applied to the pooled features for CAM "
            f"(its output differs from the model's). Received: model {model.name!r}"
        )
    features = as_grid(features, x_shape, gap_path, arg="model")  # a patch-token model's tokens on the image grid
    classes = _classes(class_index, len(pass_.logits), pass_.logits.shape[1], pass_.predicted)
    if kernel.shape[1] == 1:  # binary: class 1 is the logit, class 0 its negation
        weights = tf.transpose(kernel) * tf.constant(2.0 * classes - 1.0, tf.float32)[:, None]
    else:
        weights = tf.gather(tf.transpose(kernel), classes)  # (N, K)
    shape = [-1] + [1] * (features.shape.rank - 2) + [kernel.shape[0]]
    maps = tf.nn.relu(tf.reduce_sum(features * tf.reshape(weights, shape), axis=-1)).numpy()
    pooled_layer = gap_tap.sources[0] if gap_tap.sources else gap_path
    return _upsample(maps, _input_size(x_shape, maps.ndim - 1, gap_path)), pooled_layer


# ---------------------------------------------------------------- feature maps


class FeatureMaps(NamedTuple):
    """The most active channels of one layer per example (see `feature_maps`)."""

    maps: np.ndarray  # (N, k, *spatial) in [0, 1], each channel min-max normalised
    channels: np.ndarray  # (N, k) channel indices, most active first
    grid: np.ndarray  # (N, rows, cols) one image per example: 2D maps tiled, 1D maps one row each
    layer: str  # the layer's path


def top_channels(output, channels=DEFAULT_CHANNELS):
    """Per example, the `channels` channels of largest mean absolute activation, most active first.

    Ties keep the lower channel index first.

    >>> a = np.zeros((1, 2, 2, 3)); a[0, :, :, 2] = 5; a[0, 0, 0, 1] = -1
    >>> top_channels(a, 2).tolist()
    [[2, 1]]
    """
    output = np.asarray(output)
    activity = np.abs(output).mean(axis=tuple(range(1, output.ndim - 1)))
    return np.argsort(-activity, axis=1, kind="stable")[:, :channels]


def normalise(maps):
    """Min-max normalises each map of `(N, k, *spatial)` to [0, 1]; a constant map becomes zeros."""
    maps = np.asarray(maps, dtype=np.float32)
    axes = tuple(range(2, maps.ndim))
    low, high = maps.min(axis=axes, keepdims=True), maps.max(axis=axes, keepdims=True)
    span = high - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1), 0).astype(np.float32)


def tile(maps, pad=1):
    """`(N, k, h, w)` maps as `(N, rows, cols)` grids of `ceil(sqrt(k))` maps a row, `pad` zero pixels between.

    1D maps `(N, k, T)` are returned as they are: one row per channel.

    >>> tile(np.ones((1, 3, 2, 2))).shape
    (1, 5, 5)
    """
    maps = np.asarray(maps)
    if maps.ndim == 3:
        return maps
    n, k, h, w = maps.shape
    cols = math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)
    grid = np.zeros((n, rows * (h + pad) - pad, cols * (w + pad) - pad), dtype=maps.dtype)
    for i in range(k):
        r, c = divmod(i, cols)
        grid[:, r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = maps[:, i]
    return grid


def feature_maps(model, x, layer=None, channels=DEFAULT_CHANNELS):
    """The `channels` most active channels of `layer`'s output on each example of `x` (default 16).

    "Most active" is the largest mean absolute activation over the
    example's spatial positions (`top_channels`); each channel is then
    min-max normalised to [0, 1] on its own (`normalise`) and the channels
    are tiled into one grid image per example (`tile`). `layer=None` takes
    the same default layer as `grad_cam`.
    """
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels < 1:
        raise ValueError(f"`channels` must be a positive integer. Received: channels={channels!r}")
    if layer is None:
        pass_ = forward(model, x, list(walk(model)), watch=False)
        path = last_spatial_layer(model, pass_.taps, np.shape(x))
    else:
        path, obj = resolve_layer(model, layer)
        pass_ = forward(model, x, [(path, obj)], watch=False)
    return feature_maps_of(pass_, path, channels, x_shape=np.shape(x))


def feature_maps_of(pass_, path, channels=DEFAULT_CHANNELS, arg="layer", x_shape=None):
    """`FeatureMaps` of a layer captured in a `forward` pass (tokens laid on the image grid, given `x_shape`)."""
    output = spatial_tap(pass_, path, arg).tensor
    output = tf.cast(output if x_shape is None else as_grid(output, x_shape, path, arg), tf.float32).numpy()
    chosen = top_channels(output, channels)
    moved = np.moveaxis(output, -1, 1)  # (N, K, *spatial)
    index = chosen.reshape(chosen.shape + (1,) * (moved.ndim - 2))
    maps = normalise(np.take_along_axis(moved, index, axis=1))
    return FeatureMaps(maps, chosen, tile(maps), path)
