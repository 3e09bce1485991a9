"""Which layers of a Keras model tfprobe records, and what it knows about each from its class alone.

`walk` lists every layer, entering nested models; `select` resolves the
`layers` argument of `LayerProbe`; `saturation_bounds` and `is_pooling` say
how a layer's output is judged (from the class table `tfprobe.layer_kinds`).

>>> import keras
>>> inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="conv1")], name="backbone")
>>> model = keras.Sequential([keras.Input((4,)), inner, keras.layers.Dense(2, name="head")])
>>> [path for path, _ in walk(model)]
['backbone/conv1', 'head']
>>> [path for path, _ in select(model, "head")]
['head']
"""

from __future__ import annotations

import difflib
import re

import keras

from tfprobe import layer_kinds

POOLING_CLASSES = layer_kinds.keras_classes(layer_kinds.POOLING_CLASSES, keras.layers)
_LISTED = 40  # layer names shown in an error message before "... and N more"


def saturation_bounds(layer):
    """The range `(low, high)` that bounds the layer's output through its activation, or None.

    `low` is None for a one-sided bound (ReLU6, `ReLU(max_value=...)`): its
    zeros are sparsity, not saturation, so only the upper bound saturates.

    >>> saturation_bounds(keras.layers.Dense(3, activation="sigmoid"))
    (0.0, 1.0)
    >>> saturation_bounds(keras.layers.ReLU(max_value=6.0))
    (None, 6.0)
    >>> saturation_bounds(keras.layers.Dense(3, activation="relu")) is None
    True
    """
    layer = inner_layer(layer)
    if isinstance(layer, keras.layers.Softmax):
        return (0.0, 1.0)
    if isinstance(layer, keras.layers.ReLU):
        if layer.max_value is not None and not layer.negative_slope and not layer.threshold:
            return (None, float(layer.max_value))
        return None
    activation = getattr(layer, "activation", None)
    return layer_kinds.BOUNDED_ACTIVATIONS.get(getattr(activation, "__name__", None))


def inner_layer(layer):
    """The layer a wrapper applies (`TimeDistributed`, the forward layer of `Bidirectional`), else `layer`.

    A wrapper's output is judged as its inner layer's would be.

    >>> inner_layer(keras.layers.TimeDistributed(keras.layers.MaxPooling2D())).__class__.__name__
    'MaxPooling2D'
    """
    while True:
        if isinstance(layer, keras.layers.Bidirectional):
            layer = layer.forward_layer
        elif isinstance(layer, keras.layers.TimeDistributed):
            layer = layer.layer
        else:
            return layer


def is_pooling(layer) -> bool:
    """True for Keras' pooling layers (max, average, global, also inside `TimeDistributed`): retention is measured."""
    return isinstance(inner_layer(layer), POOLING_CLASSES)


def walk(model):
    """Yields `(path, layer)` for every layer, entering nested models (not recorded themselves).

    In a Functional model, the operations that are not layers (`inputs + x`,
    `keras.ops.multiply(...)`: graph nodes Keras names in `model.summary()`)
    are listed too, in the model's graph order.
    """
    seen = set()

    def visit(container, prefix):
        for layer in getattr(container, "operations", None) or container.layers:
            if id(layer) in seen or isinstance(layer, keras.layers.InputLayer):
                continue
            seen.add(id(layer))
            path = f"{prefix}{layer.name}"
            if isinstance(layer, keras.Model):
                yield from visit(layer, path + "/")
            else:
                yield path, layer

    yield from visit(model, "")


def _matches(item, candidates, spec):
    """The paths of `candidates` that one entry of the `layers` argument selects."""
    if isinstance(item, str):
        return [p for p, layer in candidates if item in (p, layer.name)]
    if isinstance(item, type):
        return [p for p, layer in candidates if isinstance(layer, item)]
    if isinstance(item, re.Pattern):
        return [p for p, layer in candidates if item.fullmatch(p) or item.fullmatch(layer.name)]
    if callable(item):
        return [p for p, layer in candidates if item(layer)]
    raise TypeError(
        "Each entry of `layers` must be a layer name, a layer class, a compiled regular "
        f"expression or a predicate. Received: layers={spec!r} (entry {item!r} of type "
        f"{type(item).__name__})"
    )


def available(candidates, near=()):
    """The layer paths for an error message: at most `_LISTED`, then a count; close names to `near` first.

    >>> available([(f"dense_{i}", None) for i in range(50)])[-25:]
    'dense_39, ... and 10 more'
    """
    paths = [p for p, _ in candidates]
    if not paths:
        return "(none)"
    close = [m for name in near for m in difflib.get_close_matches(name, paths, n=3)]
    shown = list(dict.fromkeys(close + paths))[:_LISTED]
    more = len(paths) - len(shown)
    return ", ".join(shown) + (f", ... and {more} more" if more > 0 else "")


def select(model, spec):
    """Resolves the `layers` argument of `LayerProbe` to `[(path, layer)]` in model order.

    `spec` is None (every layer), or one or a list of: layer names or paths
    (exact), layer classes, compiled regular expressions (matched in full
    against the path or the name) and predicates `f(layer) -> bool`.

    Raises:
      ValueError: a name matches no layer, or the selection matches nothing;
        the message lists the available layers (close names first).
      TypeError: an entry is none of the above.
    """
    candidates = list(walk(model))
    if spec is None:
        if not candidates:
            raise ValueError(f"tfprobe.LayerProbe found nothing to record in model {model.name!r}: it has no layers.")
        return candidates
    items = spec if isinstance(spec, (list, tuple, set)) else [spec]
    chosen, unknown = set(), []
    for item in items:
        hits = _matches(item, candidates, spec)
        if isinstance(item, str) and not hits:
            unknown.append(item)
        chosen.update(hits)
    if unknown:
        raise ValueError(
            f"Unknown layer name(s) in `layers`: {', '.join(map(repr, unknown))}. "
            f"Received: layers={spec!r}. Available layers: {available(candidates, unknown)}"
        )
    if not chosen:
        raise ValueError(
            f"`layers` matched no layer of model {model.name!r}, so there is nothing to record. "
            f"Received: layers={spec!r}. Available layers: {available(candidates)}"
        )
    return [(p, layer) for p, layer in candidates if p in chosen]
