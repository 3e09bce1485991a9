"""The variables a recording folds statistics into inside the step, read and reset once per window.

Like a Keras metric's state: created once (under any distribution
strategy, as per-replica `ON_READ` variables combined on read), updated
inside the step, and read with one host transfer per window (and, across
the workers of `MultiWorkerMirroredStrategy`, one all-reduce). Each series
owns up to three slots (and the backward path's, `tfprobe.recording.backward`):

| slot | dtype | combined with | holds |
| --- | --- | --- | --- |
| `sums` | float64 | `+` | `tfprobe.kernels.stats.SUM_FIELDS` |
| `maxes` | float32 | `maximum` | max, -min, then the per-unit max abs value |
| `hist` | float64 | `+` | histogram counts (`tfprobe.metadata.NUM_BUCKETS`) |

Float64 sums keep counts exact far beyond 2**24. The slots of a kind
created together (every series a traced step sees first) share one packed
variable, each series a `Segment` of it, and `fold` updates all of them
with one op: a variable and an update per series made building a step
slow. `Accumulators.layout` is the one place that orders the variables:
the read-and-reset function packs them in that order and `read_and_reset`
unpacks them in the same order.

>>> import numpy as np
>>> acc = Accumulators()
>>> acc.prepare(tf.distribute.get_strategy(), initial_step=0)
>>> empty = {"sums": np.zeros(2), "maxes": np.full(3, -np.inf, np.float32)}
>>> acc.create_many({"dense": empty, "relu": empty})
>>> acc.fold("sums", {"dense": tf.constant([1.0, 2.0], tf.float64)}, "add")
>>> acc.fold("maxes", {"dense": tf.constant([4.0, 5.0, 6.0]), "relu": tf.constant([7.0, 8.0, 9.0])}, "max")
>>> step, values = acc.read_and_reset()
>>> step, values["dense"]["sums"].tolist(), values["relu"]["sums"].tolist(), values["dense"]["maxes"].tolist()
(0, [1.0, 2.0], [0.0, 0.0], [4.0, 5.0, 6.0])
>>> acc.read_and_reset()[1]["dense"]["maxes"].tolist()  # reset to the empty value
[-inf, -inf, -inf]
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

_COMBINE = {tf.float64: tf.add_n, tf.float32: lambda parts: tf.reduce_max(tf.stack(parts), axis=0)}
_EMPTY = {tf.float64: 0.0, tf.float32: -np.inf}


@dataclasses.dataclass(frozen=True)
class Segment:
    """Where one series' slot lives: `variable[offset : offset + size]`."""

    variable: object
    offset: int
    size: int


class Accumulators:
    """Owns every accumulator variable of a recording and the step counter.

    `prepare(strategy, initial_step)` before each `fit`; `create_many({name:
    initial})` (inside a traced step or not) adds series' slots, `fold`
    updates them inside a step; `read_and_reset()` on the host.
    """

    def __init__(self):
        self.strategy = None
        self.step = None  # the global step of the last traced step that ran (int64)
        self.fit_start = None  # the global step the current `fit` started from
        self.slots = {}  # series -> {slot name: Segment}, in order of creation
        self.variables = []  # (packed variable, its empty value), in order of creation
        self.generation = 0  # changes when the variables are replaced: a step traced before cannot be reused
        self._reader = None  # (layout, tf.function)

    def _variable(self, initial, dtype, name):
        # Created eagerly (`init_scope`) even while a step is traced. Without lifting, `tf.function` does not
        # count them as created by the trace, which would make it trace the whole step a second time.
        with tf.init_scope(), self.strategy.scope():
            return tf.Variable(
                initial,
                dtype=dtype,
                trainable=False,
                name=name,
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
                experimental_enable_variable_lifting=False,
            )

    def prepare(self, strategy, initial_step):
        """Uses `strategy` (new variables if it changed) and sets the step the next `fit` starts from."""
        if self.step is not None and strategy is not self.strategy:
            self.step, self.slots, self.variables, self._reader = None, {}, [], None
            self.generation += 1
        self.strategy = strategy
        if self.step is None:
            self.step = self._variable(initial_step, tf.int64, "tfprobe_step")
            self.fit_start = self._variable(initial_step, tf.int64, "tfprobe_fit_start")
        for variable in (self.step, self.fit_start):
            for component in strategy.experimental_local_results(variable):
                component.assign(initial_step)

    def create_many(self, initials):
        """Creates the slots of `{series: {slot: initial NumPy array}}` that do not exist yet.

        The missing slots of one kind share one new variable (the initial
        values concatenated). Inside a replica context (a step traced under
        a strategy) it is created in cross-replica context through
        `merge_call`, once for all replicas.
        """
        if all(slot in self.slots.get(name, ()) for name, initial in initials.items() for slot in initial):
            return

        def create(*_):
            missing = {}  # slot -> [(series, initial)]; merge_call runs this once for all replicas
            for name, initial in initials.items():
                for slot, value in initial.items():
                    if slot not in self.slots.get(name, ()):
                        missing.setdefault(slot, []).append((name, np.ravel(value)))
            for slot, entries in missing.items():
                empty = np.concatenate([value for _, value in entries])
                dtype = tf.float32 if empty.dtype == np.float32 else tf.float64
                variable = self._variable(empty, dtype, f"tfprobe_{slot}")
                self.variables.append((variable, empty))
                offset = 0
                for name, value in entries:
                    self.slots.setdefault(name, {})[slot] = Segment(variable, offset, value.size)
                    offset += value.size

        if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
            tf.distribute.get_replica_context().merge_call(create)
        else:
            create()

    def fold(self, slot, updates, combine):
        """Folds `{series: tensor}` into their `slot` segments, one op per variable; `combine` is "add" or "max".

        Segments without an update are left as they are (the update holds
        the identity of `combine` there).
        """
        by_variable = {}
        for name, tensor in updates.items():
            segment = self.slots[name][slot]
            by_variable.setdefault(id(segment.variable), []).append((segment, tensor))
        for (variable, empty), pieces in (
            (v, by_variable[id(v[0])]) for v in self.variables if id(v[0]) in by_variable
        ):
            neutral = 0.0 if combine == "add" else -np.inf
            parts, at = [], 0
            for segment, tensor in sorted(pieces, key=lambda p: p[0].offset):
                if segment.offset > at:
                    parts.append(tf.constant(np.full(segment.offset - at, neutral, empty.dtype)))
                if tensor.dtype != variable.dtype or tensor.shape != [segment.size]:
                    tensor = tf.reshape(tf.cast(tensor, variable.dtype), [segment.size])
                parts.append(tensor)
                at = segment.offset + segment.size
            if at < empty.size:
                parts.append(tf.constant(np.full(empty.size - at, neutral, empty.dtype)))
            update = parts[0] if len(parts) == 1 else tf.concat(parts, 0)
            if combine == "add":
                variable.assign_add(update, read_value=False)
            else:
                variable.assign(tf.maximum(variable, update), read_value=False)

    def remove(self, name):
        self.slots.pop(name, None)

    def layout(self):
        """`[(variable, empty value)]`: float64 variables first, then float32, each in creation order."""
        return [entry for dtype in (tf.float64, tf.float32) for entry in self.variables if entry[0].dtype == dtype]

    def read_and_reset(self):
        """Returns `(step, {series: {slot: NumPy array}})` and resets every slot, in one host transfer."""
        layout = self.layout()
        key = [id(v) for v, _ in layout]
        if self._reader is None or self._reader[0] != key:
            self._reader = (key, self._read_and_reset_function(layout))
        f64, f32 = (t.numpy() for t in self._reader[1]())
        step, flat = int(f64[0]), {tf.float64: f64[1:], tf.float32: f32}
        offsets, base = {tf.float64: 0, tf.float32: 0}, {}
        for v, empty in layout:
            base[id(v)] = offsets[v.dtype]
            offsets[v.dtype] += empty.size
        out = {}
        for name, slots in self.slots.items():
            for slot, seg in slots.items():
                start = base[id(seg.variable)] + seg.offset
                out.setdefault(name, {})[slot] = flat[seg.variable.dtype][start : start + seg.size]
        return step, out

    def _read_and_reset_function(self, layout):
        # A callable object, not a closure: TensorFlow counts traces per code object, and one probe per
        # `fit` in a loop would otherwise print retracing warnings about a function traced once each.
        return tf.function(_ReadAndReset(self.strategy, self.step, layout), autograph=False)


class _ReadAndReset:
    """Returns `(step and float64 variables, float32 variables)`, each concatenated, and resets every variable.

    A worker of `MultiWorkerMirroredStrategy` holds only its own replicas'
    components: there each replica takes part in one all-reduce (a sum) of
    one vector, its sums followed by a row per replica of zeros where it
    writes its maxima in its own row (adding zeros is exact, so every
    worker receives every replica's maxima and takes their maximum).
    Elsewhere every component is local and combined without a collective.
    Every worker must call it at the same steps (`LayerProbe` does: the
    same windows close on every worker).
    """

    def __init__(self, strategy, step, layout):
        self.__name__ = "tfprobe_read_and_reset"  # the name of its traced function
        self.strategy, self.local = strategy, strategy.experimental_local_results
        self.step, self.layout = step, layout
        self.across_workers = bool(layout) and len(self.local(step)) < strategy.num_replicas_in_sync

    def combine(self, v):
        parts = [c.value() for c in self.local(v)]
        return parts[0] if len(parts) == 1 else _COMBINE[v.dtype](parts)

    def all_reduced(self):
        """In each replica: the window of every replica of the cluster, combined (float64 sums, float32 maxima)."""
        context, replicas = tf.distribute.get_replica_context(), self.strategy.num_replicas_in_sync
        own = {
            dtype: [tf.cast(v.value(), tf.float64) for v, _ in self.layout if v.dtype == dtype]  # -inf is exact
            for dtype in (tf.float64, tf.float32)
        }
        sums, maxes = (tf.concat(own[dtype] or [tf.zeros([0], tf.float64)], 0) for dtype in (tf.float64, tf.float32))
        rows = tf.scatter_nd([[context.replica_id_in_sync_group]], maxes[None], [replicas, maxes.shape[0]])
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.concat([sums, tf.reshape(rows, [-1])], 0))
        n = sums.shape[0]
        return total[:n], tf.cast(tf.reduce_max(tf.reshape(total[n:], [replicas, maxes.shape[0]]), 0), tf.float32)

    def __call__(self):
        step = tf.reshape(tf.cast(self.local(self.step)[0].value(), tf.float64), [1])  # the same on every replica
        if self.across_workers:
            f64, f32 = (self.local(t)[0] for t in self.strategy.run(self.all_reduced))
            out = (tf.concat([step, f64], 0), f32)
        else:
            f64 = [step] + [self.combine(v) for v, _ in self.layout if v.dtype == tf.float64]
            f32 = [self.combine(v) for v, _ in self.layout if v.dtype == tf.float32]
            out = (tf.concat(f64, 0), tf.concat(f32, 0) if f32 else tf.zeros([0], tf.float32))
        for v, empty in self.layout:  # automatic control dependencies order reads before resets
            value = tf.constant(empty, v.dtype)
            for component in self.local(v):
                component.assign(value, read_value=False)
        return out
