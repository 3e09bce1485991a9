"""Capturing layer outputs where the model computes them: one mechanism, used in and outside the step.

A `Capture` replaces the `call` of chosen layers by a thin wrapper. The
wrapper does nothing unless the capture is `collecting`, in which case it
hands each floating output (and, for pooling layers, the pooled input) as a
`Tap` to a callback, in the graph being built: no extra forward pass and
no sub-model, so it works on Sequential, Functional, nested and subclassed
models alike. Two paths use it:

* in the training step: `Instrumentation` attaches the capture and wraps
  `model.train_step` for the duration of `fit`, so that the recorder builds
  the statistics ops next to each activation (see `tfprobe.recording.recorder`);
* on given data, outside training: `layer_outputs(model, x)` runs the model
  in inference mode and returns what each layer produced.

Each tap also names the recorded series that feed it (`Tap.sources`), found
by walking the graph back from the layer's inputs to the nearest recorded
outputs: the model graph as it really ran, through nested models and
operations that are not layers.

>>> import keras, numpy as np
>>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="a"), keras.layers.ReLU(name="b")])
>>> outputs = layer_outputs(model, np.ones((4, 3), "float32"))
>>> sorted(outputs), outputs["b"].shape
(['a', 'b'], (4, 2))
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import logging
import warnings

import keras
import numpy as np
import tensorflow as tf

from tfprobe import metadata
from tfprobe.recording import backward
from tfprobe.recording.selection import is_pooling, select

logger = logging.getLogger("tfprobe")

_ACTIVE_ATTR = "_tfprobe_instrumentation"


@dataclasses.dataclass
class Tap:
    """One floating output of one layer call, seen while collecting."""

    series: str  # the series name (`metadata.series_name`)
    path: str
    layer: object
    output: int
    n_outputs: int
    call: int
    tensor: object
    inputs: object = None  # the pooled input tensor of a pooling layer
    sources: tuple = ()  # series that feed this layer call in the model graph
    mask: object = None  # the boolean mask Keras propagates to this output (`[batch, time]`), if any


class Capture:
    """Patches the `call` of chosen layers; hands out `Tap`s while `collecting`.

    The graph walk is `GraphSources`, the masks `_output_masks`.

    `on_tap(tap)` may return a tensor to use in place of `tap.tensor`
    downstream (same value; the backward path returns an identity whose
    gradient it sees), or None.

    `attach()` / `detach()` (or `with capture:`) patch and restore the
    layers. Each `collecting` block is one `Collection` (the state of one
    traced call); a patched layer finds the collection of the code that
    calls it through a context variable, since Keras calls the layer, not
    tfprobe: MirroredStrategy traces the step once per replica, each in its
    own thread, and each replica's layers reach that replica's collection.
    """

    def __init__(self, chosen=()):
        self.chosen = list(chosen)  # [(path, layer)]
        self._patched = []  # (layer, had an instance `call`, that `call`)
        self._active = contextvars.ContextVar(f"tfprobe_capture_{id(self)}", default=None)  # the `Collection`
        self.skipped = {}  # path -> why it is not recorded (warned once)

    def attach(self, chosen=None):
        """Patches the chosen layers (`chosen`, if given, replaces the choice)."""
        if chosen is not None:
            self.chosen = list(chosen)
        for path, layer in self.chosen:
            had = "call" in layer.__dict__
            previous = layer.__dict__.get("call")
            object.__setattr__(layer, "call", self._wrap(path, layer, layer.call))
            self._patched.append((layer, had, previous))
        return self

    def detach(self):
        for layer, had, previous in reversed(self._patched):
            if had:
                object.__setattr__(layer, "call", previous)
            else:
                object.__delattr__(layer, "call")
        self._patched = []

    def __enter__(self):
        return self.attach()

    def __exit__(self, *exc):
        self.detach()

    def _wrap(self, path, layer, call):
        capture, pooling = self, is_pooling(layer)

        @functools.wraps(call)
        def tapped_call(*args, **kwargs):
            outputs = call(*args, **kwargs)
            collection = capture._active.get()
            if collection is not None:
                outputs = collection.collect(path, layer, outputs, args, kwargs, pooling)
            return outputs

        return tapped_call

    @contextlib.contextmanager
    def collecting(self, on_tap):
        """Calls `on_tap(tap)` for every output of a chosen layer computed in the current graph.

        Yields the `Collection` of the block.
        """
        collection = Collection(self, on_tap)
        token = self._active.set(collection)
        try:
            yield collection
        finally:
            self._active.reset(token)
            collection.finish()

    def _skip(self, path, reason, warn=True):
        if path not in self.skipped:
            self.skipped[path] = reason
            if warn:
                warnings.warn(f"tfprobe: not recording {path} ({reason}).", RuntimeWarning, stacklevel=3)


class Collection:
    """What one `Capture.collecting` block sees: the taps of one traced call, handed to its `on_tap`."""

    def __init__(self, capture, on_tap):
        self.capture, self.on_tap, self.graph = capture, on_tap, _graph()
        self.calls = {}  # path -> calls seen in this collection's graph
        self.foreign = set()  # paths called in another graph
        self.graph_sources = GraphSources()

    def finish(self):
        # A layer seen only in another graph (a nested function or loop of the step) is not recorded.
        # Calls in another graph next to calls in this one are symbolic calls made while tracing
        # (Keras builds an unbuilt subclassed model by running `call` on a scratch graph): ignored.
        for path in sorted(self.foreign - set(self.calls)):
            self.capture._skip(path, "called inside a nested function or loop of the step")

    def collect(self, path, layer, outputs, args, kwargs, pooling):
        """Hands a tap per floating output to `on_tap`; returns the outputs, with those it replaced."""
        if _graph() is not self.graph:
            self.foreign.add(path)
            return outputs
        call = self.calls.get(path, 0)
        self.calls[path] = call + 1
        inputs = args[0] if args else kwargs.get("inputs")
        sources = self.graph_sources.of(tf.nest.flatten((args, kwargs)))
        flat = tf.nest.flatten(outputs)
        masks = _output_masks(layer, args, kwargs, outputs, len(flat))
        returned = list(flat)
        for index, tensor in enumerate(flat):
            name = metadata.series_name(path, index, len(flat), call)
            declared = _declared_floating(layer, index, len(flat)) if isinstance(tensor, tf.Tensor) else None
            if isinstance(tensor, tf.Tensor) and not tensor.dtype.is_floating and declared is not None:
                # Keras' graph says this output is floating, but the layer computes it in another dtype (the
                # one-hot outputs of IntegerLookup / StringLookup are int64; the next layer casts them): its
                # statistics are those of the float values the model goes on with. The model keeps the
                # layer's own tensor (the tap's replacement, if any, is not used: an integer has no gradient).
                self.graph_sources.produced[tensor.ref()] = name
                cast = tf.cast(tensor, declared)
                self.graph_sources.produced[cast.ref()] = name
                self.on_tap(Tap(name, path, layer, index, len(flat), call, cast, None, sources, masks[index]))
                continue
            if not isinstance(tensor, tf.Tensor) or not tensor.dtype.is_floating:
                kind = tensor.dtype.name if isinstance(tensor, tf.Tensor) else type(tensor).__name__
                # Operations that are not layers (casts, comparisons) are skipped silently: they are many.
                self.capture._skip(
                    name, f"output is not a floating tensor: {kind}", warn=isinstance(layer, keras.layers.Layer)
                )
                continue
            pooled = inputs if pooling and isinstance(inputs, tf.Tensor) and inputs.dtype.is_floating else None
            self.graph_sources.produced[tensor.ref()] = name
            tap = Tap(name, path, layer, index, len(flat), call, tensor, pooled, sources, masks[index])
            replacement = self.on_tap(tap)
            if replacement is not None:  # the model goes on with it (e.g. an identity that sees the gradient)
                _keep_keras_attributes(tensor, replacement)
                self.graph_sources.produced[replacement.ref()] = name
                returned[index] = replacement
        if all(a is b for a, b in zip(returned, flat)):
            return outputs
        return tf.nest.pack_sequence_as(outputs, returned)


class GraphSources:
    """Which recorded outputs a tensor is computed from: the model graph as it really ran.

    Walks the graph back from a tensor through any ops (layers that are not
    recorded, operations, casts) to the nearest tensors in `produced`
    (recorded outputs). Each tensor's answer is kept, so a step's walks
    visit each op about once. Eager tensors have no producing op: only
    direct hand-overs are seen there.
    """

    def __init__(self):
        self.produced = {}  # tensor ref -> series name
        self._memo = {}

    def of(self, values):
        """The series that `values` (a layer call's inputs) are computed from, nearest first."""
        found = []
        for value in values:
            # an integer tensor only when it is a recorded output (a lookup's one-hot, cast by the next layer)
            if isinstance(value, tf.Tensor) and (value.dtype.is_floating or value.ref() in self.produced):
                found += self._ancestors(value)
        return tuple(dict.fromkeys(found))

    def _ancestors(self, tensor):
        key = tensor.ref()
        if key in self.produced:
            return [self.produced[key]]
        if key in self._memo:
            return self._memo[key]
        found, seen, stack = [], {key}, [tensor]
        while stack:
            op = _producer(stack.pop())
            for parent in op.inputs if op is not None else ():
                ref = parent.ref()
                if ref in seen:
                    continue
                seen.add(ref)
                if ref in self.produced:
                    found.append(self.produced[ref])
                elif ref in self._memo:
                    found += self._memo[ref]
                else:
                    stack.append(parent)
        self._memo[key] = found = list(dict.fromkeys(found))
        return found


def _declared_floating(layer, index, n):
    """The floating dtype Keras' graph declares for output `index` of `n` of `layer` (the `KerasTensor`s of its
    calls in a functional model), or None when it declares none or another dtype (an integer lookup index).

    Only a layer class that computes its own output spec declares a dtype: `Layer`'s default spec (a `Lambda`)
    assumes the compute dtype whatever `call` returns."""
    if not isinstance(layer, keras.layers.Layer):
        return None
    if type(layer).compute_output_spec is keras.layers.Layer.compute_output_spec:
        return None
    for node in getattr(layer, "_inbound_nodes", ()):
        outputs = getattr(node, "outputs", None) or ()
        if len(outputs) != n:
            continue
        try:
            dtype = tf.as_dtype(outputs[index].dtype)
        except (TypeError, AttributeError):
            continue
        if dtype.is_floating:
            return dtype
    return None


def _output_masks(layer, args, kwargs, outputs, n):
    """The mask Keras propagates to each of `outputs` (as `Layer.__call__` will set it after `call`), or Nones."""
    none = [None] * n
    if not isinstance(layer, keras.layers.Layer) or not layer.supports_masking:
        return none
    first = args[0] if args else kwargs.get("inputs")
    masks = [getattr(o, "_keras_mask", None) for o in tf.nest.flatten(outputs)]
    if not any(m is not None for m in masks):
        previous = kwargs.get("mask")
        if previous is None:
            previous = tf.nest.map_structure(lambda x: getattr(x, "_keras_mask", None), first)
        computed = layer.compute_mask(first, previous)
        masks = tf.nest.flatten(computed) if computed is not None else none
    return [m if isinstance(m, tf.Tensor) and m.dtype == tf.bool else None for m in masks] + none[len(masks) :]


def _keep_keras_attributes(tensor, replacement):
    """Carries what Keras attached to an output (`_keras_logits` of a softmax, which losses use instead of the
    probabilities; `_keras_mask`) over to its replacement, so that training computes exactly the same."""
    for name, value in getattr(tensor, "__dict__", {}).items():
        if name.startswith("_keras"):
            setattr(replacement, name, value)


def _producer(tensor):
    """The op that computes `tensor` in a graph; None for an eager tensor, which has none."""
    try:
        return tensor.op
    except AttributeError:
        return None


def _graph():
    return tf.compat.v1.get_default_graph() if tf.inside_function() else None


STATEFUL_RANDOM_OPS = frozenset(
    {
        "RandomStandardNormal",
        "RandomUniform",
        "RandomUniformInt",
        "TruncatedNormal",
        "ParameterizedTruncatedNormal",
        "RandomShuffle",
        "RandomGamma",
        "RandomPoisson",
        "RandomPoissonV2",
        "Multinomial",
    }
)
"""TensorFlow's stateful random ops (`tf.random.normal`, `tf.random.uniform`, ...): each op's kernel keeps its
own random state, so a function traced twice draws each stream from its start again."""


def _stateful_random(graph):
    """Whether `graph` (the function graph of a step being traced; None outside one) holds stateful random ops."""
    if graph is None:
        return False
    return any(op.type in STATEFUL_RANDOM_OPS for op in graph.get_operations())


class Instrumentation:
    """Everything tfprobe changes on a model during `fit`, applied and undone as one.

    `attach(model, settings)` taps the chosen layers (`settings.layers`) and wraps
    `model.train_step` so that each trace of the step gets its own
    `StepTrace` from `recorder.begin_step(model)`, hands it every tap
    (`StepTrace.on_tap`) and ends it (`StepTrace.end`); then it
    makes Keras build its train function with that step. Keras keeps its
    train function until something (`compile`, ...) invalidates it: while it
    is the same and `settings` (a `StepSettings`: what else the traced step depends on) are equal,
    the instrumented function of an earlier `fit` is reused instead of
    tracing again. `detach()` restores the model, Keras' own train function
    included; a train function that raises detaches first, since `fit`
    does not call `on_train_end` then.

    Host-side dispatch: before each call of the train function the host
    knows, from its own count of the steps run (`steps_per_execution` per
    call from the step the `fit` started at), whether any step of the call
    records statistics or histograms (`Recorder.records`). If none does, it
    calls Keras' own train function instead of the instrumented one: a step
    that records nothing runs exactly the step the user would run without
    tfprobe (no predicate, no cond, no tap; under XLA the plain executable).
    The recorder's step counter catches up on the host afterwards
    (`Recorder.ran_unprobed`, one eager assign, no read). Not dispatched
    (every call probed, as before): a model whose optimizer may skip steps
    (loss scaling: the global step would drift from the count of batches),
    and `steps_per_execution > 1` when the step counter counts batches
    (a custom `train_step` with optimizers of its own: a short last call of
    an epoch would be miscounted), and a step with stateful random ops of
    TensorFlow's (`tf.random.normal` in a WGAN-GP's `train_step`: their
    state lives in each traced function's kernels, so steps alternating
    between two functions would restart their streams and train on other
    noise than without tfprobe; Keras' own random ops keep their state in a
    `SeedGenerator` variable and dispatch).
    """

    def __init__(self, recorder):
        self.recorder = recorder
        self.on_error = None  # called after detaching when a train function raises
        self.owner = None  # who attached it (a `LayerProbe`)
        self.model = None
        # One capture for the probe's lifetime: a reused train function calls the step it was traced with.
        self.capture = Capture()
        self.ran = False  # a step ran since `attach`
        self._saved = None  # (had an instance train_step, that train_step, Keras' train function)
        self._cached = None  # (model, Keras' train function, settings, instrumented train function)
        self._compiles = None  # the instrumented train function found to compile with XLA
        self._plain = None  # Keras' own train function (traced with the model's own step), or None
        # Set around every call of Keras' own train function: a step traced then (a retrace inside the call, on
        # any thread: MirroredStrategy traces each replica in a thread of its own) is the model's own step.
        self.bypass = False
        self._next = None  # host mirror: the global step before the next call of the train function
        self._iterator = None  # the iterator of the last call (a new one: a new epoch)
        self.calls = {"probed": 0, "plain": 0}  # calls of each train function since `attach`
        self.stateful_random = False  # the probed step holds random ops whose state is per function

    def attach(self, model, settings, owner=None):
        self._release(model, owner)
        self.model, self.owner, self.ran = model, owner, False
        self.capture.attach(settings.layers)
        if model.train_function is None:  # Keras' own, built (not traced) before the step is wrapped
            model.make_train_function()
        self._saved = ("train_step" in model.__dict__, model.__dict__.get("train_step"), model.train_function)
        self._plain, self.bypass, self._iterator = model.train_function, False, None
        self._next = self.recorder.fit_start
        self.calls = {"probed": 0, "plain": 0}
        object.__setattr__(model, "train_step", self._step(model, model.train_step))
        object.__setattr__(model, _ACTIVE_ATTR, self)
        plain, cached = model.train_function, self._cached
        if (
            plain is not None
            and cached is not None
            and cached[0] is model
            and cached[1] is plain
            and cached[2] == settings
        ):
            function = cached[3]
        else:
            model.make_train_function(force=True)
            function = model.train_function
            self._cached = (model, plain, settings, function)
        model.train_function = self._guarded(function)
        return self

    def not_recorded(self):
        """`{series or layer: why}`: the series the recorder dropped and what the capture skipped."""
        return {**self.recorder.dropped, **self.capture.skipped}

    def _release(self, model, owner):
        """Removes what a `fit` that raised left attached; refuses a second probe in one `fit`."""
        for other in dict.fromkeys((model.__dict__.get(_ACTIVE_ATTR), self)):
            if other is None or other._saved is None:
                continue
            other.detach()
            if other.owner is not owner and not other.ran:
                raise ValueError(
                    "This model already has a tfprobe.LayerProbe attached in this `fit` call; pass a single "
                    "LayerProbe (use its `layers` argument to choose layers)."
                )
            if other.owner is not owner:
                logger.warning("tfprobe: removed the instrumentation left by a LayerProbe whose `fit` raised.")

    def _step(self, model, original):
        recorder, capture = self.recorder, self.capture

        def train_step(data):
            if self.bypass:  # traced for Keras' own train function (a Keras that looks the step up at trace time)
                return original(data)
            step = recorder.begin_step(model)  # this trace's own `StepTrace` (one per replica)
            with capture.collecting(step.on_tap):
                logs = original(data)
            step.end()
            self.stateful_random = self.stateful_random or _stateful_random(_graph())
            return logs

        return train_step

    def _guarded(self, function):
        def guarded_train_function(iterator):
            if not self.ran:
                self.ran = True
                problem = self._compile_problem(function, iterator)
                if problem is not None:
                    return self._unprobed(problem)(iterator)
            steps = self._steps_per_call()
            plain = self._dispatches(steps, iterator)
            try:
                if plain:
                    self.calls["plain"] += 1
                    self.bypass = True
                    try:
                        logs = self._plain(iterator)
                    finally:
                        self.bypass = False
                    self.recorder.ran_unprobed(steps, self._iterations())
                else:
                    self.calls["probed"] += 1
                    self.recorder.catch_up()
                    logs = function(iterator)
            except (StopIteration, tf.errors.OutOfRangeError):
                # The data ran out (data of unknown length): Keras ends the epoch and training goes on, so the
                # probe stays. Which of the call's ops ran is not known (the optimizer may have counted a step):
                # the host re-reads the step at the next call, after the counter caught up with the optimizer's.
                if plain:
                    self.recorder.ran_unprobed(0, self._iterations())
                self._next = None
                raise
            except BaseException:
                self.detach()
                if self.on_error is not None:
                    self.on_error()
                raise
            if self._next is not None:
                self._next += steps
            return logs

        return guarded_train_function

    def _steps_per_call(self):
        steps = getattr(self.model, "steps_per_execution", 1)
        return steps if isinstance(steps, int) and steps > 0 else 1

    def _iterations(self):
        optimizer = getattr(self.model, "optimizer", None)
        return getattr(optimizer, "iterations", None)

    def _dispatches(self, steps, iterator):
        """Whether this call of `steps` steps records nothing, so that Keras' own train function runs it.

        The host's count of the steps run (`_next`) is exact while every call runs `steps_per_execution`
        steps; the last call of an epoch may run fewer, so with `steps_per_execution > 1` a new iterator (a new
        epoch) re-reads the step from the device, as does the call after the data ran out.
        """
        recorder, model = self.recorder, self.model
        if self._plain is None or recorder.driven is None or recorder.fit_start is None:
            return False  # no probed step traced yet (the first step of a fit records)
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and backward.may_skip_steps(optimizer):
            return False  # loss scaling: skipped steps do not advance the global step
        if steps > 1 and not recorder.driven:
            return False
        if self.stateful_random:
            return False  # their streams continue in one function only (the class docstring)
        if self._next is None or (steps > 1 and iterator is not self._iterator):
            self._next = recorder.step()  # one read of the device step (after catching up)
        self._iterator = iterator
        return not recorder.records(self._next + 1, steps)

    def _compile_problem(self, function, iterator):
        """Why the probed step of an XLA-compiled model does not compile (None if it does, or cannot be checked).

        Run before the first step: XLA turns the step into HLO (`experimental_get_compiler_ir`, which traces
        but runs nothing) on zeros shaped like one batch of `iterator`. A plain `tf.data` iterator only (the
        default strategy); other inputs are not checked.
        """
        model = self.model
        if not getattr(model, "jit_compile", False) or not isinstance(iterator, tf.data.Iterator):
            return None
        if self._compiles is function:  # checked in an earlier `fit`
            return None
        specs = tf.nest.flatten(iterator.element_spec)
        if not all(isinstance(spec, tf.TensorSpec) and spec.shape.rank is not None for spec in specs):
            return None
        batch = tf.nest.pack_sequence_as(
            iterator.element_spec,
            [tf.zeros([d if d is not None else 1 for d in spec.shape], spec.dtype) for spec in specs],
        )
        step = tf.function(
            lambda data: model.distribute_strategy.run(model.train_step, args=(data,)),
            jit_compile=True,
            autograph=False,
        )
        try:
            step.get_concrete_function(batch)  # traced once here; the compiler IR below reuses this trace
        except Exception:  # noqa: BLE001 - the model rejects the stand-in batch (unknown dimensions set to 1, a
            return None  # time axis the model fixes, a batch it splits): not checkable, as other inputs are not
        try:
            step.experimental_get_compiler_ir(batch)(stage="hlo")
        except Exception as error:  # XLA cannot compile the traced step: it cannot run with the probe
            if self.recorder.strict:
                from tfprobe.recording.recorder import RecordingError

                raise RecordingError(f"tfprobe's step does not compile with XLA: {error}") from error
            return f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
        self._compiles = function
        return None

    def _unprobed(self, problem):
        """Detaches before the first step, with one warning; returns Keras' own train function."""
        self.detach()
        warnings.warn(
            f"tfprobe: the probed train step does not compile with XLA (jit_compile=True), so this `fit` trains "
            f"without the probe ({problem}). Compile with jit_compile=False to record it.",
            RuntimeWarning,
            stacklevel=3,
        )
        model = self.model
        if self.on_error is not None:
            self.on_error()
        if model.train_function is None:
            model.make_train_function()
        return model.train_function

    def detach(self):
        """Restores the model; safe to call at any time."""
        if self._saved is None:
            return
        model = self.model
        had, previous, plain = self._saved
        self.capture.detach()
        if had:
            object.__setattr__(model, "train_step", previous)
        else:
            object.__delattr__(model, "train_step")
        if model.__dict__.get(_ACTIVE_ATTR) is self:
            object.__delattr__(model, _ACTIVE_ATTR)
        model.train_function = plain  # None makes the next `fit` build one
        self._saved, self._plain, self.bypass = None, None, False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.detach()


def layer_outputs(model, x, layers=None, training=False):
    """Runs `model(x)` once and returns `{series: NumPy array}` of the chosen layers' outputs.

    No sub-model is built (`keras.Model(inputs, layer.output)` fails on
    nested, subclassed and Sequential models); the outputs are captured as
    the model computes them. `layers` selects as in `LayerProbe`.
    Non-floating outputs are left out. Runs in inference mode unless
    `training=True`.
    """
    found = {}

    def on_tap(tap):
        found[tap.series] = tap.tensor

    with Capture(select(model, layers)) as capture:
        with capture.collecting(on_tap):
            model(x, training=training)
    return {name: np.asarray(tensor) for name, tensor in found.items()}
