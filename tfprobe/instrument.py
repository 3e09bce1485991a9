"""Finding the layers of a model, choosing them, and tapping their outputs inside the step.

Tapping replaces a layer's `call` by a thin wrapper for the duration of `fit`.
The wrapper does nothing unless a training step is being traced, in which case
it hands the layer's output (and, for pooling layers, its input) as a `Tap`
to a callback, which builds the statistics ops right there, in the step's
graph: no extra forward pass.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import threading

import keras
import tensorflow as tf

logger = logging.getLogger("tfprobe")

_BOUNDED = {
    "sigmoid": (0.0, 1.0),
    "hard_sigmoid": (0.0, 1.0),
    "softmax": (0.0, 1.0),
    "tanh": (-1.0, 1.0),
    "softsign": (-1.0, 1.0),
    "hard_tanh": (-1.0, 1.0),
    "relu6": (0.0, 6.0),
}
_POOLING_NAMES = (
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GlobalMaxPooling3D",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAveragePooling3D",
)
POOLING_CLASSES = tuple(getattr(keras.layers, n) for n in _POOLING_NAMES if hasattr(keras.layers, n))


def activation_bounds(layer):
    """`(low, high)` if the layer's output is bounded by its activation, else None.

    >>> activation_bounds(keras.layers.Dense(3, activation="sigmoid"))
    (0.0, 1.0)
    >>> activation_bounds(keras.layers.ReLU(max_value=6.0))
    (0.0, 6.0)
    >>> activation_bounds(keras.layers.Dense(3, activation="relu")) is None
    True
    """
    if isinstance(layer, keras.layers.Softmax):
        return (0.0, 1.0)
    if isinstance(layer, keras.layers.ReLU):
        if layer.max_value is not None and not layer.negative_slope and not layer.threshold:
            return (0.0, float(layer.max_value))
        return None
    activation = getattr(layer, "activation", None)
    return _BOUNDED.get(getattr(activation, "__name__", None))


def is_pooling(layer) -> bool:
    return isinstance(layer, POOLING_CLASSES)


def walk(model, prefix=""):
    """Yields `(path, layer)` for every layer, entering nested models (not recorded themselves)."""
    seen = set()

    def visit(container, prefix):
        for layer in container.layers:
            if id(layer) in seen or isinstance(layer, keras.layers.InputLayer):
                continue
            seen.add(id(layer))
            path = f"{prefix}{layer.name}"
            if isinstance(layer, keras.Model):
                yield from visit(layer, path + "/")
            else:
                yield path, layer

    yield from visit(model, prefix)


def select(model, spec):
    """Resolves the `layers` argument of `LayerProbe` to `[(path, layer)]` in model order.

    `spec` is None (every layer), or one or a list of: layer names or paths
    (exact), layer classes, compiled regular expressions (matched in full
    against the path or the name) and predicates `f(layer) -> bool`.
    """
    candidates = list(walk(model))
    if spec is None:
        return candidates
    items = spec if isinstance(spec, (list, tuple, set)) else [spec]
    chosen, unknown = set(), []
    for item in items:
        if isinstance(item, str):
            hits = [p for p, layer in candidates if item in (p, layer.name)]
            if not hits:
                unknown.append(item)
        elif isinstance(item, type):
            hits = [p for p, layer in candidates if isinstance(layer, item)]
        elif isinstance(item, re.Pattern):
            hits = [p for p, layer in candidates if item.fullmatch(p) or item.fullmatch(layer.name)]
        elif callable(item):
            hits = [p for p, layer in candidates if item(layer)]
        else:
            raise TypeError(
                "Each entry of `layers` must be a layer name, a layer class, a compiled regular "
                f"expression or a predicate. Received: layers={spec!r} (entry {item!r} of type "
                f"{type(item).__name__})"
            )
        chosen.update(hits)
    if unknown:
        available = ", ".join(p for p, _ in candidates) or "(none)"
        raise ValueError(
            f"Unknown layer name(s) in `layers`: {', '.join(map(repr, unknown))}. "
            f"Received: layers={spec!r}. Available layers: {available}"
        )
    return [(p, layer) for p, layer in candidates if p in chosen]


@dataclasses.dataclass
class Tap:
    """One floating output of one layer call, seen while tracing a training step."""

    path: str
    layer: object
    output: int
    n_outputs: int
    call: int
    tensor: object
    inputs: object = None  # the pooling layer's input tensor


class Tapper:
    """Patches the `call` of chosen layers and hands out `Tap`s while a step is traced."""

    def __init__(self):
        self._patched = []  # (layer, had_instance_call, previous)
        # Trace state is per thread: MirroredStrategy traces the step once per replica, each in its thread.
        self._t = threading.local()
        self.skipped = {}  # path -> reason, logged once

    def patch(self, chosen):
        for path, layer in chosen:
            had = "call" in layer.__dict__
            previous = layer.__dict__.get("call")
            object.__setattr__(layer, "call", self._wrap(path, layer, layer.call))
            self._patched.append((layer, had, previous))

    def unpatch(self):
        for layer, had, previous in reversed(self._patched):
            if had:
                object.__setattr__(layer, "call", previous)
            else:
                object.__delattr__(layer, "call")
        self._patched = []

    def _wrap(self, path, layer, call):
        tapper = self
        pooling = is_pooling(layer)

        @functools.wraps(call)
        def tapped_call(*args, **kwargs):
            outputs = call(*args, **kwargs)
            if getattr(tapper._t, "collecting", False):
                inputs = args[0] if args else kwargs.get("inputs")
                tapper._collect(path, layer, outputs, inputs if pooling else None)
            return outputs

        return tapped_call

    def begin(self, on_tap=None):
        """Starts collecting; `on_tap(tap)` (if given) is called for each tap as it is seen."""
        self._t.on_tap = on_tap
        self._t.collecting = True
        self._t.graph = tf.compat.v1.get_default_graph() if tf.inside_function() else None
        self._t.calls = {}
        self._t.foreign = set()

    def end(self):
        """Stops collecting."""
        self._t.collecting = False
        # A layer seen only in another graph (a nested function or loop of the step) is not recorded.
        # Calls in another graph next to calls in the step graph are symbolic calls made while tracing
        # (Keras builds an unbuilt subclassed model by running `call` on a scratch graph): ignored.
        for path in sorted(self._t.foreign - set(self._t.calls)):
            self._skip(path, "called inside a nested function or loop of the step")

    def _skip(self, path, reason):
        if path not in self.skipped:
            self.skipped[path] = reason
            logger.warning("tfprobe: not recording %s (%s).", path, reason)

    def _collect(self, path, layer, outputs, inputs):
        graph = tf.compat.v1.get_default_graph() if tf.inside_function() else None
        if graph is not self._t.graph:
            self._t.foreign.add(path)
            return
        call = self._t.calls.get(path, 0)
        self._t.calls[path] = call + 1
        flat = tf.nest.flatten(outputs)
        for index, tensor in enumerate(flat):
            if not isinstance(tensor, tf.Tensor) or not tensor.dtype.is_floating:
                kind = type(tensor).__name__ if not isinstance(tensor, tf.Tensor) else tensor.dtype.name
                self._skip(f"{path}[{index}]" if len(flat) > 1 else path, f"output is not a floating tensor: {kind}")
                continue
            pooled_input = inputs if isinstance(inputs, tf.Tensor) and inputs.dtype.is_floating else None
            tap = Tap(path, layer, index, len(flat), call, tensor, pooled_input)
            if self._t.on_tap is not None:
                self._t.on_tap(tap)
