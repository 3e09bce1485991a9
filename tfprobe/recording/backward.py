"""The backward pass of a training step, seen from inside it: activation gradients and weight updates.

`watch(tensor, on_gradient)` returns `tensor` through an identity whose
gradient function hands the incoming gradient `dL/d tensor` to
`on_gradient` while backpropagation is built, then passes it on unchanged:
the same numbers reach the weights. `WeightWatch` keeps, for the layers
with trainable weights, what an update ratio needs: the weights before the
step (read only on recorded steps), the gradients the step's optimizers are
given (`OptimizerWatch`: every Keras optimizer's `apply`, wrapped for the
duration of `fit`, not only `model.optimizer`'s), and the weights after the
update.

>>> import tensorflow as tf
>>> seen = []
>>> x = tf.constant([1.0, 2.0])
>>> with tf.GradientTape() as tape:
...     tape.watch(x)
...     y = tf.reduce_sum(3.0 * watch(x, seen.append))
>>> tape.gradient(y, x).numpy().tolist(), seen[0].numpy().tolist()
([3.0, 3.0], [3.0, 3.0])
"""

from __future__ import annotations

import contextvars
import functools
import threading

import keras
import numpy as np
import tensorflow as tf

from tfprobe import metadata
from tfprobe.kernels import stats


def watch(tensor, on_gradient):
    """`tensor` (same value) through an identity that hands its incoming gradient to `on_gradient(g)`."""

    @tf.custom_gradient
    def identity(x):
        def grad(g):
            on_gradient(g)
            return g

        return tf.identity(x), grad

    return identity(tensor)


def _recording():
    """Whether a `GradientTape` is recording now (while a gradient function runs: the gradient is being taken
    inside another tape's forward computation). False where TensorFlow's tape module cannot be read."""
    try:
        from tensorflow.python.eager import record
    except ImportError:  # pragma: no cover - a TensorFlow without the module
        return False
    return bool(record.could_possibly_record())


def loss_scale(optimizer):
    """The factor the trainer multiplies the loss by before differentiating (1 without loss scaling).

    Read at the start of a step, before the optimizer may change it.
    """
    if optimizer is None:
        return tf.constant(1.0, tf.float32)
    return tf.cast(optimizer.scale_loss(tf.constant(1.0, tf.float32)), tf.float32)


def may_skip_steps(optimizer):
    """Whether `optimizer` may skip a step's update (a Keras loss-scale optimizer does on non-finite gradients).

    Keras' other optimizers always apply the update; an optimizer tfprobe
    does not know may skip.

    >>> import keras
    >>> sgd = keras.optimizers.SGD()
    >>> may_skip_steps(sgd), may_skip_steps(keras.optimizers.LossScaleOptimizer(sgd))
    (False, True)
    """
    import keras

    optimizers = keras.optimizers
    return isinstance(optimizer, optimizers.LossScaleOptimizer) or not isinstance(optimizer, optimizers.Optimizer)


class OptimizerWatch:
    """Which optimizers apply gradients in a step being traced, and the gradients they apply to which variables.

    A custom `train_step` may use optimizers of its own (a GAN's generator and discriminator optimizers, with
    `model.optimizer` unused), so the watch is not tied to `model.optimizer`: while `attach()`ed it wraps
    `apply` of Keras' optimizer classes (`apply_gradients` calls it), inert except where a step being traced
    is watched (`begin()` returns that step's `AppliedGradients`, which the wrapped `apply`, called by Keras,
    finds through a context variable: each replica's thread its own). Each call in the step's own graph (not
    in a nested cond, as a loss-scale optimizer's inner optimizer is) is noted there.
    """

    _lock = threading.Lock()
    _users = 0
    _originals = {}  # optimizer class -> its own `apply`
    _current = contextvars.ContextVar("tfprobe_applied_gradients", default=None)  # the watched step's record

    def attach(self):
        if getattr(self, "_attached", False):
            return
        cls = OptimizerWatch
        with cls._lock:
            cls._users += 1
            if cls._users == 1:
                for klass in (keras.optimizers.Optimizer, keras.optimizers.LossScaleOptimizer):
                    owner = next(c for c in klass.__mro__ if "apply" in c.__dict__)
                    if owner not in cls._originals:
                        cls._originals[owner] = owner.__dict__["apply"]
                        owner.apply = _watched_apply(owner.__dict__["apply"])
        self._attached = True

    def detach(self):
        if not getattr(self, "_attached", False):
            return
        self._attached = False
        cls = OptimizerWatch
        with cls._lock:
            cls._users -= 1
            if cls._users == 0:
                for owner, original in cls._originals.items():
                    owner.apply = original
                cls._originals = {}

    def begin(self):
        """Starts watching the step being traced here; returns its `AppliedGradients` (filled as it is traced)."""
        seen = AppliedGradients(_graph())
        OptimizerWatch._current.set(seen)
        return seen

    def end(self, seen):
        """Stops watching the step of `seen` (`begin`'s answer)."""
        if OptimizerWatch._current.get() is seen:
            OptimizerWatch._current.set(None)

    @staticmethod
    def _seen(optimizer, grads, variables):
        seen = OptimizerWatch._current.get()
        if seen is not None and _graph() is seen.graph:
            seen.note(optimizer, grads, variables)


class AppliedGradients:
    """The optimizers one traced step applies (`applied`), and the gradients they apply: `grads`,
    `{id(variable): (gradient, loss scale or None)}` (a loss-scale optimizer's gradients are scaled)."""

    def __init__(self, graph):
        self.graph, self.applied, self.grads = graph, [], {}

    def note(self, optimizer, grads, variables):
        if variables is None:
            variables = getattr(optimizer, "_trainable_variables", None) or ()
        if not any(o is optimizer for o in self.applied):
            self.applied.append(optimizer)
        scale = None
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            scale = loss_scale(optimizer)  # read before this apply updates it
        for g, v in zip(grads, variables):
            # An embedding's gradient is `IndexedSlices` (summed into a dense tensor where its norm is taken).
            if isinstance(g, (tf.Tensor, tf.IndexedSlices)) and g.dtype.is_floating and _graph_of(g) is self.graph:
                self.grads[id(v)] = (g, scale)


def _watched_apply(original):
    @functools.wraps(original)
    def apply(self, grads, trainable_variables=None, *args, **kwargs):
        try:
            grads = list(grads)
            listed = None if trainable_variables is None else list(trainable_variables)
            OptimizerWatch._seen(self, grads, listed)
            trainable_variables = listed if listed is not None else trainable_variables
        except Exception:  # noqa: BLE001 - watching must never change what the optimizer does
            pass
        return original(self, grads, trainable_variables, *args, **kwargs)

    apply._tfprobe_original = original
    return apply


def _graph():
    return tf.compat.v1.get_default_graph() if tf.inside_function() else None


def _graph_of(tensor):
    try:
        return (tensor.values if isinstance(tensor, tf.IndexedSlices) else tensor).graph
    except AttributeError:  # an eager tensor
        return None


class BackwardPass:
    """What a traced step folds of its backward pass: each tap's activation gradient, each layer's weight figures.

    `begin(optimizer, iterations, record, hist)` before each traced step
    returns that step's `BackwardStep`: `watch(series, tensor)` for each tap
    (the model goes on with the returned identity); `end(...)` after it folds
    everything on recorded steps (the gradient histograms on histogram steps)
    whose update the optimizer applied (a loss-scale optimizer skips steps with
    non-finite gradients, and `iterations` does not advance then; those steps
    are counted instead, `SKIPPED`). Gradients are divided by the step's loss scale.
    """

    def __init__(self, chosen):
        self.weights = WeightWatch(chosen)

    def follows(self, chosen):
        """Whether it watches the weights of exactly these layers."""
        return set(self.weights.layers) == set(WeightWatch(chosen).layers)

    def begin(self, optimizer, iterations, record, hist=None, xla=False):
        """Starts a traced step: `record` and `hist` (None: no histograms) are the step's predicates.

        `xla`: the step is compiled with XLA, whose conds need branches of the same shapes (`WeightWatch.begin`).
        """
        return BackwardStep(self.weights, optimizer, iterations, record, hist, xla)


class BackwardStep:
    """The backward pass of one traced step (`BackwardPass.begin`): the gradients its taps receive."""

    def __init__(self, weights, optimizer, iterations, record, hist, xla):
        # Without a loss-scale optimizer every update is applied (no wait for `iterations`), and a loss scale that
        # is statically 1 divides nothing (no copy of each gradient).
        self.weights, self.grads = weights, []  # (series, gradient)
        self.nested = set()  # series differentiated inside the forward computation (`end`)
        self.before = iterations if may_skip_steps(optimizer) else None
        self.scale = loss_scale(optimizer)
        self.unscaled = tf.get_static_value(self.scale) == 1
        self.skips = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        self.weights_before = weights.begin(record, xla=xla)
        self.record, self.hist = record, hist

    def watch(self, series, tensor):
        grads, nested = self.grads, self.nested

        def seen(g):
            if _recording():  # a gradient taken inside the forward computation (`end`)
                nested.add(series.name)
            else:
                grads.append((series, g))

        return watch(tensor, seen)

    def end(self, step, iterations, applied_grads=None):
        """Folds the gradients and weight figures into `step.accumulators` (`step`: the `StepTrace`, whose
        `in_conds` gates the folds as the activations' and whose `guard` runs each series' ops under the
        recorder's failure policy).

        A series whose tap is differentiated while a tape records (a `tape.gradient` inside the loss's
        `GradientTape`: a WGAN-GP's gradient penalty differentiates its critic's output with respect to its
        input) gets no gradient figures for the step: that inner gradient is part of the forward computation,
        not `dL/da`, and what the loss's backward pass hands that call is a second-order term (exactly zero
        through piecewise-linear layers, however much the weights learn from the penalty), neither comparable
        to the first-order gradients of the step's other series."""
        accumulators = step.accumulators
        if iterations is None or self.before is None:
            applied = tf.constant(True)
        else:
            applied = tf.not_equal(tf.cast(iterations, tf.int64), self.before)
        record = tf.logical_and(self.record, applied)
        hist = None if self.hist is None else tf.logical_and(self.hist, applied)
        grads = [(series, g) for series, g in self.grads if series.name not in self.nested]
        empty = {"grad_sums": stats.empty_sums(), "grad_maxes": stats.empty_maxes(None)}
        if hist is not None:
            empty["grad_hist"] = np.zeros(metadata.NUM_BUCKETS)
        accumulators.create_many({series.name: empty for series, _ in grads})
        step.in_conds(
            functools.partial(_fold_gradients, step, grads, None if self.unscaled else self.scale), record, hist
        )
        if self.skips and grads:
            _count_skipped(accumulators, applied)
        weight_grads = applied_grads or {}
        moved, still = (
            {path: f for path, f in part.items() if path in step.series}
            for part in self.weights.sums(record, weight_grads, self.weights_before)
        )
        accumulators.create_many({path: {"weights": np.zeros(4)} for path in moved})
        accumulators.create_many({path: {STILL: np.zeros(2)} for path in still})
        accumulators.fold("weights", moved, "add")
        accumulators.fold(STILL, still, "add")


STILL = "weights_untrained"
"""The slot of a layer's weight figures on steps no optimizer was given its weights: `[steps, sum of ||w||]`."""

SKIPPED = "\0skipped_steps"
"""The accumulator entry (no series can be named so) counting a window's skipped steps, shared by every series."""


def _count_skipped(accumulators, applied):
    """Adds 1 to the window's skipped steps if the optimizer did not apply this step's update.

    Each replica adds its share, so that the sum over replicas (how
    accumulators combine) is 1 per skipped step.
    """
    accumulators.create_many({SKIPPED: {"skipped_steps": np.zeros(1)}})
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync if context is not None else 1
    skipped = tf.cast(tf.logical_not(applied), tf.float64) / replicas
    accumulators.fold("skipped_steps", {SKIPPED: tf.reshape(skipped, [1])}, "add")


def _fold_gradients(step, grads, scale, *, with_stats, with_histogram):
    """Folds each `(series, g)` of `grads`, divided by the loss `scale` (None: 1): its partials, its histogram or both.

    `with_stats=False` counts histograms only (`kernel.histogram`); else
    `kernel.gradient_partials` (only what `statistics` reads) counts the histogram too when `with_histogram` (a
    tensor for a fusing kernel, which also takes `with_stats` as one).
    A gradient reaching several series (an `Add`'s inputs get the same
    tensor) is read once. A series reached by several gradients in one step (a persistent tape differentiated
    twice) folds each of them, as it folds the steps of a window (a gradient taken while a tape records never
    gets here: `BackwardStep.end`). Each series' ops are built under `step.guard` (the failure policy).
    """
    kernel, accumulators = step.kernel, step.accumulators
    sums, maxes, hists = {}, {}, {}
    done = {}  # gradient -> (sums, maxes, counts)

    def build(series, g):
        if g.ref() not in done:
            with tf.name_scope("tfprobe_grad"):
                x2d = kernel.rows(g) if scale is None else kernel.rows(g) / tf.cast(scale, tf.float32)
                if with_stats is False:
                    done[g.ref()] = (None, None, kernel.histogram(x2d))
                else:
                    done[g.ref()] = kernel.gradient_partials(x2d, with_histogram, with_stats)
        s, m, counts = done[g.ref()]
        name = series.name
        if s is not None:  # a second gradient of the same tap in the step: both are folded
            sums[name] = s if name not in sums else sums[name] + s
            maxes[name] = m if name not in maxes else tf.maximum(maxes[name], m)
        if counts is not None and with_histogram is not False:
            hists[name] = counts if name not in hists else hists[name] + counts

    for series, g in grads:
        step.guard(series, build, series, g)
    live = lambda d: {k: v for k, v in d.items() if k in accumulators.slots}  # noqa: E731 - a series may have failed
    accumulators.fold("grad_sums", live(sums), "add")
    accumulators.fold("grad_maxes", live(maxes), "max")
    accumulators.fold("grad_hist", live(hists), "add")
    return tf.constant(True)


def statistics(slots, near_zero, skipped=None):
    """The gradient and weight statistics of one series' window (`tfprobe.metadata.GRADIENT_STATS`).

    `skipped` is the window's `SKIPPED` entry (None without a loss-scale
    optimizer), written for every series with an activation gradient.
    """
    out = {}
    if skipped is not None and "grad_sums" in slots:
        out["skipped_steps"] = round(float(skipped["skipped_steps"][0]))
    sums = slots.get("grad_sums")
    if sums is not None and sums[stats.S["steps"]] > 0:
        g = stats.finalize(sums, slots["grad_maxes"], near_zero=near_zero, hoyer=False)
        out.update(
            grad_rms=g["rms"],
            grad_mean_abs=g["mean_abs"],
            grad_max_abs=max(g["max"], -g["min"]) if np.isfinite(g["max"]) else g["max"],
            grad_zero_fraction=g["zero_fraction"],
            grad_nan_count=g["nan_count"],
            grad_inf_count=g["inf_count"],
        )
    weights, still = slots.get("weights"), slots.get(STILL)
    if weights is not None and weights[0] > 0:
        out.update(
            weight_norm=weights[1] / weights[0],
            weight_grad_norm=weights[2] / weights[0],
            update_ratio=weights[3] / weights[0],
        )
    elif still is not None and still[0] > 0:  # no optimizer was given these weights: no update figures
        out.update(weight_norm=still[1] / still[0])
    return {k: float(v) for k, v in out.items()}


class WeightWatch:
    """Per recorded layer: the norms of its trainable weights, of their gradients and of the applied update.

    `begin(record)` reads the weights on recorded steps; `sums(record,
    grads, before)` after the step (`before`: what `begin` returned) returns `{path: float64[4]}`: `[1, ||w||, ||g||,
    ||w_after - w||/||w||]` on recorded steps (zeros otherwise), `grads` the
    gradients the step's optimizers applied (`OptimizerWatch`: whichever
    optimizers, each gradient divided by its optimizer's loss scale). A layer
    whose weights no optimizer was given has NaN for `||g||` and the update
    ratio (a frozen-in-effect teacher, a discriminator during the generator's
    update): nothing trains it, which is not a stalled layer.
    Under a multi-replica strategy `||g||` is NaN: each replica holds only its
    share of the gradient until the optimizer sums them.
    """

    def __init__(self, layers):
        self.layers = {}  # path -> its trainable variables (first call's series carries the figures)
        for path, layer in layers:
            variables = list(getattr(layer, "trainable_weights", ()))  # operations that are not layers have none
            if variables:
                self.layers[path] = variables

    def begin(self, record, xla=False):
        """Reads the weights before the step, on recorded steps only (empty tensors otherwise).

        Under XLA both branches of a cond must have the same shapes: the other steps give zeros of each
        weight's shape there (XLA allocates them; the graph path keeps empty tensors, which cost nothing).
        """
        variables = [v for vs in self.layers.values() for v in vs]
        if not variables:
            return []

        def read():
            return [tf.identity(_value(v)) for v in variables]

        def empty():
            return [tf.zeros(v.shape if xla else [0], _value(v).dtype) for v in variables]

        return tf.cond(record, read, empty)

    def sums(self, record, grads, befores):
        if not self.layers:
            return {}, {}
        variables = [v for vs in self.layers.values() for v in vs]
        owners = [i for i, vs in enumerate(self.layers.values()) for _ in vs]
        count = len(self.layers)

        # Under several replicas each sees only its share of the gradient; summing it would need a collective
        # inside the recorded branch, which TensorFlow does not allow: the gradient norm is not recorded there.
        context = tf.distribute.get_replica_context()
        replicated = context is not None and context.num_replicas_in_sync > 1

        # A layer none of whose weights an optimizer was given in this step has no update figures (its row goes
        # to `STILL`, its weight norm only): its weights did not move because nothing trains them, not because
        # training stalled (and a NaN update ratio would say its weights are NaN).
        touched = np.zeros(count, bool)
        for v, o in zip(variables, owners):
            touched[o] |= id(v) in grads
        nan = tf.constant(np.nan, tf.float64)

        def figures():
            w2 = sum_squares(befores, owners, count)
            d2 = sum_squares([tf.cast(_value(v), b.dtype) - b for v, b in zip(variables, befores)], owners, count)
            if replicated:
                g = tf.fill([count], nan)
            else:
                present = [(grads[id(v)], o) for v, o in zip(variables, owners) if id(v) in grads]
                g2 = sum_squares(
                    [g for (g, _), _ in present], [o for _, o in present], count, [scale for (_, scale), _ in present]
                )
                g = tf.where(touched, tf.sqrt(g2), nan)
            w = tf.sqrt(w2)
            ratio = tf.where(touched, tf.math.divide_no_nan(tf.sqrt(d2), w), nan)
            return tf.stack([tf.ones([count], tf.float64), w, g, ratio], axis=1)

        rows = tf.unstack(tf.cond(record, figures, lambda: tf.zeros([count, 4], tf.float64)))
        moved = {path: row for path, row, t in zip(self.layers, rows, touched) if t}
        still = {path: row[:2] for path, row, t in zip(self.layers, rows, touched) if not t}
        return moved, still


def sum_squares(tensors, owners, count, scales=None):
    """`float64[count]`: the sum of squares of each of `tensors`, added up at its `owners[i]`.

    `scales` (optional, one per tensor, None for 1): each tensor is divided by its scale first (a loss-scale
    optimizer's gradients).

    One `L2Loss` op per tensor (its squares summed in its own precision,
    float32 at least; each tensor's sum then in float64), then one segment
    sum: a cast, a square and a sum in float64 per tensor made a recorded
    step of a model with hundreds of variables slow. If a float32 sum
    overflows (values beyond about 1e19: finite weights must not read as
    Inf), all are summed again in float64.

    >>> sum_squares([tf.constant([3.0]), tf.constant([[1.0, 2.0]]), tf.constant(2.0)], [0, 1, 0], 2).numpy().tolist()
    [13.0, 5.0]
    >>> sum_squares([tf.constant([2.0**70, 2.0**70])], [0], 1).numpy().tolist() == [2.0**141]
    True
    """
    if not tensors:
        return tf.zeros([count], tf.float64)
    halves = [tf.nn.l2_loss(t if t.dtype in (tf.float32, tf.float64) else tf.cast(t, tf.float32)) for t in tensors]
    fast = 2.0 * tf.stack([tf.cast(h, tf.float64) for h in halves])

    def exact():
        return tf.stack([tf.reduce_sum(tf.square(tf.cast(t, tf.float64))) for t in tensors])

    per_tensor = tf.cond(tf.reduce_all(tf.math.is_finite(fast)), lambda: fast, exact)
    if scales is not None and any(s is not None for s in scales):
        ones = tf.constant(1.0, tf.float64)
        per_tensor = per_tensor / tf.stack([ones if s is None else tf.square(tf.cast(s, tf.float64)) for s in scales])
    return tf.math.unsorted_segment_sum(per_tensor, tf.constant(owners, tf.int32), count)


def _value(variable):
    """The tensor value of a Keras or TensorFlow variable (read in the step's order of stateful ops)."""
    value = getattr(variable, "value", variable)
    return value() if callable(value) else tf.convert_to_tensor(value)
