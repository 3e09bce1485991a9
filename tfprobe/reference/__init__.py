"""A fixed reference set: the examples that analyses outside the training step look at.

`ReferenceData` takes what a user passes as `reference_data`: `x`, `(x,)`,
`(x, y)` NumPy arrays (or anything `np.asarray` takes), or a finite
`tf.data.Dataset` yielding `x` or `(x, y)` batches, and iterates it in
batches of at most `batch_size` examples. Analyses run the model on these
batches in inference mode through `tfprobe.recording.capture` (no sub-model built), so
they work on every model kind that tfprobe records; `features` does that
and reduces each layer's output to at most `max_dim` values per example, so
memory stays bounded by `examples x layers x max_dim` floats.

>>> import numpy as np
>>> ref = ReferenceData((np.zeros((10, 3)), np.arange(10)), batch_size=4)
>>> len(ref), [len(x) for x, _ in ref.batches()], ref.labels().tolist()[:3]
(10, [4, 4, 2], [0, 1, 2])
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import NamedTuple

import numpy as np

DEFAULT_BATCH_SIZE = 64
DEFAULT_MAX_DIM = 512


def _is_dataset(data):
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover - tfprobe's reference analyses run next to TensorFlow
        return False
    return isinstance(data, tf.data.Dataset)


MAX_UNBOUNDED_EXAMPLES = 2048
"""Examples taken from a dataset of unknown or infinite cardinality (`.repeat()`, `.filter(...)`), with a warning."""


def _as_array(value, what):
    try:
        array = np.asarray(value)
    except Exception as error:  # noqa: BLE001 - anything np.asarray rejects
        raise TypeError(
            f"`reference_data` {what} must be an array. Received: {type(value).__name__} ({error})"
        ) from None
    if array.ndim == 0 or (array.dtype == object and not _is_text(array)):
        raise TypeError(
            f"`reference_data` {what} must be an array with an example axis (or, for a model with several inputs, "
            f"a dict or list of such arrays). Received: a {array.dtype} array of shape {array.shape}"
        )
    return array


def _is_text(array):
    """Whether an object array holds strings or bytes (string inputs of a model, as TensorFlow gives them)."""
    return array.dtype.kind in "US" or (
        array.dtype == object and array.size > 0 and all(isinstance(v, (str, bytes)) for v in array.reshape(-1)[:64])
    )


def map_inputs(fn, x):
    """`fn` applied to every array of an input structure: one array, a dict of arrays or a list/tuple of arrays.

    >>> map_inputs(len, {"a": [1, 2], "b": [3, 4]})
    {'a': 2, 'b': 2}
    """
    if isinstance(x, dict):
        return {key: fn(value) for key, value in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(fn(value) for value in x)
    return fn(x)


def leaves(x):
    """The arrays of an input structure, in order (`map_inputs`' structures)."""
    if isinstance(x, dict):
        return list(x.values())
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def count(x):
    """Examples in a batch of inputs (the length of its first array)."""
    return len(leaves(x)[0])


def _inputs(x):
    """The user's `x`: one array, or a dict / list of arrays with as many examples each (multi-input models)."""
    if isinstance(x, dict):
        if not x:
            raise ValueError("`reference_data` x must hold at least one input. Received: an empty dict")
        bad = [k for k in x if not isinstance(k, str)]
        if bad:
            raise TypeError(f"`reference_data` x must be keyed by input names (strings). Received: key {bad[0]!r}")
        arrays = {k: _as_array(v, f"x[{k!r}]") for k, v in x.items()}
    elif isinstance(x, (list, tuple)) and x and all(hasattr(v, "shape") and hasattr(v, "dtype") for v in x):
        arrays = type(x)(_as_array(v, f"x[{i}]") for i, v in enumerate(x))  # the inputs of a multi-input model
    else:
        return _as_array(x, "x")
    lengths = {len(a) for a in leaves(arrays)}
    if len(lengths) > 1:
        sizes = map_inputs(len, arrays)
        raise ValueError(f"`reference_data` inputs must have as many examples each. Received: {sizes}")
    return arrays


class ReferenceData:
    """The reference set of the analyses outside training (see the module docstring).

    Args:
      data: `x`, `(x,)` or `(x, y)` arrays, or a finite `tf.data.Dataset`
        yielding `x` or `(x, y)` batches (as `fit` takes them). For a model
        with several inputs `x` is a dict of arrays keyed by input name (or
        a list of arrays, inside the tuple: `([x1, x2], y)`), and a dataset
        yields such dicts. A dataset of unknown or infinite cardinality is
        read up to `MAX_UNBOUNDED_EXAMPLES` examples (whole batches), with a
        warning, and that prefix is the reference set.
      batch_size: examples per model call (arrays only; a dataset keeps its
        own batches). Defaults to 64.

    Raises:
      TypeError, ValueError: naming `reference_data` and what is wrong.
    """

    def __init__(self, data, *, batch_size=DEFAULT_BATCH_SIZE):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}")
        self.batch_size = int(batch_size)
        self._dataset = None
        if _is_dataset(data):
            self._dataset, bounded = self._check_dataset(data)
            self._n, self._y = self._materialize_labels(bounded)
            return
        if isinstance(data, (tuple, list)):
            if not 1 <= len(data) <= 2:
                raise ValueError(
                    f"`reference_data` must be x, (x,) or (x, y). Received: a {type(data).__name__} "
                    f"of {len(data)} items"
                )
            x, y = data[0], data[1] if len(data) == 2 else None
        else:
            x, y = data, None
        self._x = _inputs(x)
        self._y = None if _several_outputs(y) else _as_array(y, "y")
        self._n = count(self._x)
        if self._n == 0:
            raise ValueError(
                f"`reference_data` must hold at least one example. Received: x of shape {map_inputs(np.shape, self._x)}"
            )
        if self._y is not None and len(self._y) != self._n:
            raise ValueError(
                f"`reference_data` x and y must have as many examples. Received: {self._n} "
                f"inputs and {len(self._y)} labels"
            )

    @staticmethod
    def _check_dataset(dataset):
        """The dataset, and whether its cardinality is unknown or infinite (then it is read up to a bound)."""
        import tensorflow as tf

        cardinality = int(dataset.cardinality())
        return dataset, cardinality in (int(tf.data.INFINITE_CARDINALITY), int(tf.data.UNKNOWN_CARDINALITY))

    def _materialize_labels(self, bounded):
        """Counts the dataset's examples and keeps its labels (small); the inputs stay in the dataset.

        A dataset of unknown or infinite cardinality is read until
        `MAX_UNBOUNDED_EXAMPLES` examples (whole batches) and cut there.
        """
        n, labels, batches = 0, [], 0
        for element in self._dataset:
            x, y = _split(element)
            y = None if _several_outputs(y) else y
            n += count(x)
            batches += 1
            if y is not None:
                labels.append(np.asarray(y))
            if bounded and n >= MAX_UNBOUNDED_EXAMPLES:
                import warnings

                self._dataset = self._dataset.take(batches)
                warnings.warn(
                    f"tfprobe: `reference_data` is a tf.data.Dataset of unknown or infinite cardinality; its first "
                    f"{batches} batches ({n} examples) are the reference set. Pass a finite dataset (`.take(n)`) "
                    f"to choose them.",
                    RuntimeWarning,
                    stacklevel=4,
                )
                break
        if n == 0:
            raise ValueError("`reference_data` must hold at least one example. Received: an empty tf.data.Dataset")
        return n, (np.concatenate(labels) if labels else None)

    def __len__(self):
        return self._n

    def labels(self):
        """The labels of every example in order, or None."""
        return self._y

    def batches(self):
        """Yields `(x, y or None)` NumPy batches, in order, the same at every call (`x` a dict or list for several
        inputs)."""
        if self._dataset is not None:
            for element in self._dataset:
                x, y = _split(element)
                yield map_inputs(np.asarray, x), None if _several_outputs(y) else np.asarray(y)
            return
        for start in range(0, self._n, self.batch_size):
            end = start + self.batch_size
            yield (
                map_inputs(lambda a, s=slice(start, end): a[s], self._x),
                None if self._y is None else self._y[start:end],
            )

    def head(self, n):
        """The first `n` examples `(x, y or None)` (fewer if the set is smaller)."""
        xs, ys, have = [], [], 0
        for x, y in self.batches():
            take = n - have
            xs.append(map_inputs(lambda a, k=take: a[:k], x))
            ys.append(None if y is None else y[:take])
            have += count(xs[-1])
            if have >= n:
                break
        first = xs[0]
        if isinstance(first, dict):
            x = {k: np.concatenate([part[k] for part in xs]) for k in first}
        elif isinstance(first, (list, tuple)):
            x = type(first)(np.concatenate([part[i] for part in xs]) for i in range(len(first)))
        else:
            x = np.concatenate(xs)
        return x, None if ys[0] is None else np.concatenate(ys)

    def specs(self):
        """`x`'s structure with `(shape without the example axis, NumPy dtype kind)` in place of each array."""
        if self._dataset is not None:
            spec = self._dataset.element_spec
            x = spec[0] if isinstance(spec, (tuple, list)) else spec
            return map_inputs(
                lambda s: Spec(tuple(s.shape.as_list()[1:]) if s.shape.rank is not None else None, _kind_of(s.dtype)), x
            )
        return map_inputs(lambda a: Spec(a.shape[1:], "S" if _is_text(a) else a.dtype.kind), self._x)


class Spec(NamedTuple):
    """One input array as `ReferenceData.specs` describes it."""

    shape: tuple | None  # without the example axis; None if unknown
    kind: str  # NumPy dtype kind ("f", "i", "u", "b", "c"), "S" for strings, "?" if unknown


def _kind_of(dtype):
    if dtype.name == "string":
        return "S"
    try:
        return np.dtype(dtype.as_numpy_dtype).kind
    except TypeError:
        return "?"


def _several_outputs(y):
    """No labels, or the targets of several outputs (a dict or list): no class labels for the label measures."""
    return (
        y is None
        or isinstance(y, dict)
        or (isinstance(y, (list, tuple)) and len(y) > 0 and all(len(getattr(v, "shape", ())) >= 1 for v in y))
    )


def _split(element):
    if isinstance(element, (tuple, list)):
        return element[0], element[1] if len(element) > 1 else None
    return element, None


class ModelCannotRun(RuntimeError):
    """The model cannot be run on its own (`model(x)`), so no analysis outside training can look at it."""


def _model_inputs(model):
    try:
        inputs = model.inputs
    except Exception:  # noqa: BLE001 - a subclassed model declares no inputs
        return None
    return list(inputs) if inputs else None


def _fits(expected, got):
    """Whether data of shape `got` (no example axis) fits an input of shape `expected`, as Keras adjusts ranks."""
    if got is None:
        return True
    if len(got) == len(expected) + 1 and got[-1] == 1:
        got = got[:-1]
    elif len(got) == len(expected) - 1 and expected[-1] == 1:
        expected = expected[:-1]
    return len(got) == len(expected) and all(e is None or g is None or e == g for e, g in zip(expected, got))


def _kind_fits(dtype, kind):
    """Whether data of NumPy kind `kind` can feed an input of `dtype` (strings to strings, no complex to reals)."""
    if kind == "?":
        return True
    if (kind == "S") != (str(dtype) == "string"):
        return False
    return kind != "c" or "complex" in str(dtype)


def _pairs(model, inputs, specs):
    """`[(input tensor, what the user passed for it, (shape, kind))]`, or a `ValueError` on a structure mismatch."""
    names = [t.name for t in inputs]
    if isinstance(specs, Spec):
        if len(inputs) != 1:
            raise ValueError(
                f"`reference_data` must hold the {len(inputs)} inputs of model {model.name!r} "
                f"({', '.join(names)}) as a dict by name or a list. Received: x as one array of shape "
                f"(N, {', '.join(map(str, specs.shape or ()))})"
            )
        return [(inputs[0], "x", specs)]
    if isinstance(specs, dict):
        struct = getattr(model, "_inputs_struct", None)
        keyed = dict(struct) if isinstance(struct, dict) else {t.name: t for t in inputs}  # Keras maps dicts so
        missing = [n for n in keyed if n not in specs]
        if missing:
            raise ValueError(
                f"`reference_data` must hold every input of model {model.name!r} by name "
                f"({', '.join(keyed)}); missing: {', '.join(missing)}. Received: x with keys "
                f"{', '.join(map(str, specs))}"
            )
        return [(t, f"x[{key!r}]", specs[key]) for key, t in keyed.items()]
    if isinstance(specs, (list, tuple)):
        if len(specs) != len(inputs):
            raise ValueError(
                f"`reference_data` must hold the {len(inputs)} inputs of model {model.name!r} "
                f"({', '.join(names)}). Received: x with {len(specs)} arrays"
            )
        return [(t, f"x[{i}]", spec) for i, (t, spec) in enumerate(zip(inputs, specs))]
    raise TypeError(f"unexpected specs {specs!r}")  # pragma: no cover - `ReferenceData.specs` makes one of the above


def has_call(model):
    """Whether `model(x)` can run: a Functional or Sequential model, or a subclass that defines `call`."""
    import keras

    if _model_inputs(model):
        return True
    call = getattr(type(model), "call", None)
    return call is not None and call not in (keras.Model.call, keras.layers.Layer.call)


def check_inputs(model, reference):
    """Checks the reference set against `model`'s inputs before training: their number, names, shapes and dtypes.

    A model that declares its inputs (Functional, Sequential) is checked
    from them alone. A subclassed one is run once on the first two
    reference examples in inference mode (its weights are not changed).

    Raises:
      ValueError: naming `reference_data` and what does not fit.
      ModelCannotRun: the model cannot be called (`model(x)`: a subclass
        without `call`, such as a custom training loop's wrapper).
    """
    if not has_call(model):
        raise ModelCannotRun(
            f"model {model.name!r} ({type(model).__name__}) has no `call` method: it runs only "
            f"inside its own `train_step`, and the analyses outside training call the model"
        )
    inputs = _model_inputs(model)
    if inputs:
        for tensor, what, (shape, kind) in _pairs(model, inputs, reference.specs()):
            expected = tuple(tensor.shape[1:])
            if not _fits(expected, shape) or not _kind_fits(tensor.dtype, kind):
                got = "unknown" if shape is None else f"(N, {', '.join(map(str, shape))})".replace(", )", ")")
                kind_name = {
                    "S": "strings",
                    "f": "floats",
                    "i": "integers",
                    "u": "integers",
                    "b": "booleans",
                    "c": "complex numbers",
                }.get(kind, kind)
                raise ValueError(
                    f"`reference_data` must fit the input {tensor.name!r} of model {model.name!r}: shape "
                    f"{(None, *expected)} of {tensor.dtype}. Received: {what} of shape {got} holding {kind_name}"
                )
        return
    if not getattr(model, "built", False):
        return  # not built yet: running it would create its weights; the first reference step will tell
    x, _ = reference.head(2)
    try:
        model(x, training=False)
    except NotImplementedError as error:
        raise ModelCannotRun(
            f"model {model.name!r} cannot be called on its own ({type(error).__name__}: "
            f"{error}); give it a `call` method"
        ) from None
    except Exception as error:  # noqa: BLE001 - whatever the model raises on these inputs
        shapes = map_inputs(np.shape, x)
        raise ValueError(
            f"`reference_data` could not be run through model {model.name!r}: {type(error).__name__}: "
            f"{error}. Received: x of shape {shapes}"
        ) from None


def reduce_features(output, max_dim=DEFAULT_MAX_DIM, seed=0):
    """One layer's output `[N, ...]` as an `[N, D]` float64 matrix with `D <= max_dim`.

    Spatial maps (rank > 2, channels last) are averaged over every axis but
    the first and the last (global average pooling); then, if more than
    `max_dim` values remain, they are projected on `max_dim` fixed Gaussian
    directions (seeded, scaled by `1/sqrt(max_dim)`: distances and linear
    structure are kept in expectation).

    >>> reduce_features(np.ones((2, 5, 5, 3))).shape, reduce_features(np.ones((2, 1000)), max_dim=8).shape
    ((2, 3), (2, 8))
    """
    a = np.asarray(output, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    elif a.ndim > 2:
        a = a.mean(axis=tuple(range(1, a.ndim - 1)))
    if a.shape[1] > max_dim:
        rng = np.random.default_rng([seed, a.shape[1], max_dim])
        a = a @ (rng.standard_normal((a.shape[1], max_dim)) / np.sqrt(max_dim))
    return a


def features(model, reference, layers=None, max_dim=DEFAULT_MAX_DIM):
    """`{series: [N, D] float64}`: every chosen layer's reduced output over the whole reference set.

    Runs the model in inference mode, batch by batch, capturing the layers'
    outputs as it computes them (`LayerOutputs`, the capture of
    `tfprobe.recording.capture.layer_outputs` in a traced function); each batch is
    reduced (`reduce_features`) before the next one runs.
    """
    return collect(model, reference, layers, max_dim).features


@dataclasses.dataclass
class Collected:
    """One pass over the reference set: reduced features, the labels seen in the same pass, what each series is."""

    features: dict  # {series: [N, D] float64}, in forward-pass order
    labels: object  # [N] labels in the order of `features`' rows, or None
    infos: dict  # {series: {"series", "layer", "class", "order", "shape"}} (`tfprobe.metadata`)


class LayerOutputs:
    """The chosen layers' outputs on one batch, in inference mode, through one traced function.

    The same capture as `tfprobe.recording.capture.layer_outputs` (no sub-model
    built), traced once for a batch of any size and then run as a graph:
    calling a model eagerly costs several times more per batch. Spatial
    maps are averaged over space in the graph (the first step of
    `reduce_features`), so only `[batch, channels]` reaches the host. If the
    model cannot be traced, batches run eagerly, with one warning naming the
    tracing error; with `strict=True` that error is raised instead.

    `infos` describes each series (`tfprobe.metadata`: series, layer,
    class, order, shape) once a batch has run.
    """

    def __init__(self, model, layers=None, strict=False):
        from tfprobe.recording.capture import Capture
        from tfprobe.recording.selection import select

        self.model, self.layers, self.strict = model, layers, strict
        self._capture = Capture(select(model, layers))
        # The training capture already warned about the layers it cannot record (non-floating outputs): the
        # reference pass skips the same ones without saying it again.
        self._capture._skip = lambda path, reason, warn=True: Capture._skip(self._capture, path, reason, warn=False)
        self._function = None
        self.infos = {}

    def _on_tap(self, found):
        import tensorflow as tf

        def on_tap(tap):
            tensor = tf.cast(tap.tensor, tf.float32)
            rank = tensor.shape.rank
            found[tap.series] = tf.reduce_mean(tensor, axis=list(range(1, rank - 1))) if rank > 2 else tensor
            shape = tap.tensor.shape.as_list() if rank is not None else None
            self.infos.setdefault(
                tap.series,
                {
                    "series": tap.series,
                    "layer": tap.path,
                    "order": len(self.infos),
                    "class": type(tap.layer).__name__,
                    "shape": [None, *shape[1:]] if shape else None,
                },
            )

        return on_tap

    def _trace(self, x):
        import tensorflow as tf

        def outputs(batch):
            found = {}
            with self._capture.collecting(self._on_tap(found)):
                self.model(batch, training=False)
            return found

        def spec(a):
            a = np.asarray(a)
            return tf.TensorSpec([None, *a.shape[1:]], tf.string if _is_text(a) else tf.as_dtype(a.dtype))

        spec = map_inputs(spec, x)
        # autograph=False: Keras layers run unconverted anyway; converting this wrapper alone cost 0.1 s a trace
        return tf.function(outputs, input_signature=[spec], autograph=False)

    def __call__(self, x):
        """`{series: NumPy array}` for batch `x`, in forward-pass order."""
        if self._function is None:
            self._function = self._trace(x)
            try:
                with self._capture:
                    found = self._function(x)
            except Exception as error:  # a model that cannot be traced runs eagerly (strict: raises)
                if self.strict:
                    raise
                first = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
                warnings.warn(
                    f"tfprobe: model {self.model.name!r} cannot be traced into a graph on the reference "
                    f"data, so its reference batches run eagerly, several times slower "
                    f"({type(error).__name__}: {first})",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self._function, self.infos = False, {}
            else:
                return {name: found[name].numpy() for name in self.infos}
        if self._function is False:
            found = {}
            with self._capture, self._capture.collecting(self._on_tap(found)):
                self.model(x, training=False)
            return {name: np.asarray(value) for name, value in found.items()}
        with self._capture:
            found = self._function(x)
        return {name: found[name].numpy() for name in self.infos}


def collect(model, reference, layers=None, max_dim=DEFAULT_MAX_DIM, outputs=None):
    """`features`, with the labels read in the same pass (a dataset may change order) and each series' metadata.

    `outputs`: a `LayerOutputs` of this model and `layers` to reuse (its
    traced function), or None for a new one.
    """
    outputs = outputs or LayerOutputs(model, layers)
    parts, ys = {}, []
    for x, y in reference.batches():
        for name, output in outputs(x).items():
            parts.setdefault(name, []).append(reduce_features(output, max_dim))
        ys.append(y)
    labels = None if any(y is None for y in ys) else np.concatenate(ys)
    features = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    return Collected(features, labels, {name: outputs.infos[name] for name in features})
