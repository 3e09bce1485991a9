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

import numpy as np

DEFAULT_BATCH_SIZE = 64
DEFAULT_MAX_DIM = 512


def _is_dataset(data):
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover - tfprobe's reference analyses run next to TensorFlow
        return False
    return isinstance(data, tf.data.Dataset)


def _as_array(value, what):
    try:
        array = np.asarray(value)
    except Exception as error:  # noqa: BLE001 - anything np.asarray rejects
        raise TypeError(f"`reference_data` {what} must be an array. Received: {type(value).__name__} ({error})") from None
    if array.ndim == 0 or array.dtype == object:
        raise TypeError(
            f"`reference_data` {what} must be an array with an example axis. Received: a {array.dtype} array of "
            f"shape {array.shape}"
        )
    return array


class ReferenceData:
    """The reference set of the analyses outside training (see the module docstring).

    Args:
      data: `x`, `(x,)` or `(x, y)` arrays, or a finite `tf.data.Dataset`
        yielding `x` or `(x, y)` batches (as `fit` takes them).
      batch_size: examples per model call (arrays only; a dataset keeps its
        own batches). Defaults to 64.

    Raises:
      TypeError, ValueError: naming `reference_data` and what is wrong.
    """

    def __init__(self, data, batch_size=DEFAULT_BATCH_SIZE):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}")
        self.batch_size = int(batch_size)
        self._dataset = None
        if _is_dataset(data):
            self._dataset = self._check_dataset(data)
            self._n, self._y = self._materialize_labels()
            return
        if isinstance(data, (tuple, list)):
            if not 1 <= len(data) <= 2:
                raise ValueError(f"`reference_data` must be x, (x,) or (x, y). Received: a {type(data).__name__} "
                                 f"of {len(data)} items")
            x, y = data[0], data[1] if len(data) == 2 else None
        else:
            x, y = data, None
        self._x = _as_array(x, "x")
        self._y = None if y is None else _as_array(y, "y")
        if len(self._x) == 0:
            raise ValueError("`reference_data` must hold at least one example. Received: x of shape "
                             f"{self._x.shape}")
        if self._y is not None and len(self._y) != len(self._x):
            raise ValueError(f"`reference_data` x and y must have as many examples. Received: {len(self._x)} "
                             f"inputs and {len(self._y)} labels")
        self._n = len(self._x)

    @staticmethod
    def _check_dataset(dataset):
        import tensorflow as tf

        if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
            raise ValueError("`reference_data` must be a finite dataset (it is read at every reference step). "
                             "Received: an infinite tf.data.Dataset (use .take(n))")
        return dataset

    def _materialize_labels(self):
        """Counts the dataset's examples and keeps its labels (small); the inputs stay in the dataset."""
        n, labels = 0, []
        for element in self._dataset:
            x, y = _split(element)
            n += len(x)
            if y is not None:
                labels.append(np.asarray(y))
        if n == 0:
            raise ValueError("`reference_data` must hold at least one example. Received: an empty tf.data.Dataset")
        return n, (np.concatenate(labels) if labels else None)

    def __len__(self):
        return self._n

    def labels(self):
        """The labels of every example in order, or None."""
        return self._y

    def batches(self):
        """Yields `(x, y or None)` NumPy batches, in order, the same at every call."""
        if self._dataset is not None:
            for element in self._dataset:
                x, y = _split(element)
                yield np.asarray(x), None if y is None else np.asarray(y)
            return
        for start in range(0, len(self._x), self.batch_size):
            end = start + self.batch_size
            yield self._x[start:end], None if self._y is None else self._y[start:end]

    def head(self, n):
        """The first `n` examples `(x, y or None)` (fewer if the set is smaller)."""
        xs, ys, have = [], [], 0
        for x, y in self.batches():
            xs.append(x[: n - have])
            ys.append(None if y is None else y[: n - have])
            have += len(xs[-1])
            if have >= n:
                break
        return np.concatenate(xs), None if ys[0] is None else np.concatenate(ys)


def _split(element):
    if isinstance(element, (tuple, list)):
        return element[0], element[1] if len(element) > 1 else None
    return element, None


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
    model cannot be traced, batches run eagerly.

    `infos` describes each series (`tfprobe.metadata`: series, layer,
    class, order, shape) once a batch has run.
    """

    def __init__(self, model, layers=None):
        from tfprobe.recording.capture import Capture
        from tfprobe.recording.selection import select

        self.model, self.layers = model, layers
        self._capture = Capture(select(model, layers))
        self._function = None
        self.infos = {}

    def _on_tap(self, found):
        import tensorflow as tf

        def on_tap(tap):
            tensor = tf.cast(tap.tensor, tf.float32)
            rank = tensor.shape.rank
            found[tap.series] = tf.reduce_mean(tensor, axis=list(range(1, rank - 1))) if rank > 2 else tensor
            shape = tap.tensor.shape.as_list() if rank is not None else None
            self.infos.setdefault(tap.series, {"series": tap.series, "layer": tap.path, "order": len(self.infos),
                                               "class": type(tap.layer).__name__, "shape": [None, *shape[1:]]
                                               if shape else None})

        return on_tap

    def _trace(self, x):
        import tensorflow as tf

        def outputs(batch):
            found = {}
            with self._capture.collecting(self._on_tap(found)):
                self.model(batch, training=False)
            return found

        spec = tf.TensorSpec([None, *np.shape(x)[1:]], tf.as_dtype(np.asarray(x).dtype))
        # autograph=False: Keras layers run unconverted anyway; converting this wrapper alone cost 0.1 s a trace
        return tf.function(outputs, input_signature=[spec], autograph=False)

    def __call__(self, x):
        """`{series: NumPy array}` for batch `x`, in forward-pass order."""
        if self._function is None:
            self._function = self._trace(x)
            try:
                with self._capture:
                    found = self._function(x)
            except Exception as error:  # noqa: BLE001 - a model that cannot be traced runs eagerly
                import logging

                logging.getLogger("tfprobe").info("tfprobe: reference batches run eagerly (%s)", error)
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
