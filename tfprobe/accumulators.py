"""The variables a recording folds statistics into inside the step, read and reset once per window.

Like a Keras metric's state: created once (under any distribution
strategy, as per-replica `ON_READ` variables combined on read), updated
inside the step, and read with one host transfer per window. Each series
owns up to three slots:

| slot | dtype | combined with | holds |
| --- | --- | --- | --- |
| `sums` | float64 | `+` | `tfprobe.stats.SUM_FIELDS` |
| `maxes` | float32 | `maximum` | max, -min, then the per-unit max abs value |
| `hist` | float64 | `+` | histogram counts (`tfprobe.metadata.NUM_BUCKETS`) |

Float64 sums keep counts exact far beyond 2**24. `Accumulators.layout` is
the one place that orders the slots: the read-and-reset function packs
them in that order and `read_and_reset` unpacks them in the same order.

>>> import numpy as np
>>> acc = Accumulators()
>>> acc.prepare(tf.distribute.get_strategy(), initial_step=0)
>>> v = acc.create("dense", {"sums": np.zeros(2), "maxes": np.full(3, -np.inf, np.float32)})
>>> _ = v["sums"].assign_add([1.0, 2.0]); _ = v["maxes"].assign([4.0, 5.0, 6.0])
>>> step, values = acc.read_and_reset()
>>> step, values["dense"]["sums"].tolist(), values["dense"]["maxes"].tolist()
(0, [1.0, 2.0], [4.0, 5.0, 6.0])
>>> acc.read_and_reset()[1]["dense"]["maxes"].tolist()  # reset to the empty value
[-inf, -inf, -inf]
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

_COMBINE = {tf.float64: tf.add_n, tf.float32: lambda parts: tf.reduce_max(tf.stack(parts), axis=0)}
_EMPTY = {tf.float64: 0.0, tf.float32: -np.inf}


class Accumulators:
    """Owns every accumulator variable of a recording and the step counter.

    `prepare(strategy, initial_step)` before each `fit`; `create(name,
    initial)` (inside a traced step or not) adds a series' slots;
    `read_and_reset()` on the host.
    """

    def __init__(self):
        self.strategy = None
        self.step = None  # the global step of the last traced step that ran (int64)
        self.fit_start = None  # the global step the current `fit` started from
        self.slots = {}  # series -> {slot name: variable}, in order of creation
        self.generation = 0  # changes when the variables are replaced: a step traced before cannot be reused
        self._reader = None  # (layout, tf.function)

    def _variable(self, initial, dtype, name):
        with tf.init_scope(), self.strategy.scope():
            return tf.Variable(
                initial,
                dtype=dtype,
                trainable=False,
                name=name,
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
            )

    def prepare(self, strategy, initial_step):
        """Uses `strategy` (new variables if it changed) and sets the step the next `fit` starts from."""
        if self.step is not None and strategy is not self.strategy:
            self.step, self.slots, self._reader = None, {}, None
            self.generation += 1
        self.strategy = strategy
        if self.step is None:
            self.step = self._variable(initial_step, tf.int64, "tfprobe_step")
            self.fit_start = self._variable(initial_step, tf.int64, "tfprobe_fit_start")
        for variable in (self.step, self.fit_start):
            for component in strategy.experimental_local_results(variable):
                component.assign(initial_step)

    def create(self, name, initial):
        """The variables of series `name`; the slots of `{slot: initial NumPy array}` it lacks are created.

        Inside a replica context (a step traced under a strategy) they are
        created in cross-replica context through `merge_call`, once for all
        replicas.
        """
        if all(slot in self.slots.get(name, ()) for slot in initial):
            return self.slots[name]

        def create(*_):
            slots = self.slots.setdefault(name, {})
            for slot, value in initial.items():
                if slot not in slots:  # merge_call runs this once for all replicas
                    dtype = tf.float32 if value.dtype == np.float32 else tf.float64
                    slots[slot] = self._variable(value, dtype, f"tfprobe_{slot}")

        if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
            tf.distribute.get_replica_context().merge_call(create)
        else:
            create()
        return self.slots[name]

    def remove(self, name):
        self.slots.pop(name, None)

    def layout(self):
        """`[(series, slot, variable)]`: float64 slots first, then float32, each in creation order."""
        flat = [(name, slot, v) for name, slots in self.slots.items() for slot, v in slots.items()]
        return [entry for dtype in (tf.float64, tf.float32) for entry in flat if entry[2].dtype == dtype]

    def read_and_reset(self):
        """Returns `(step, {series: {slot: NumPy array}})` and resets every slot, in one host transfer."""
        layout = self.layout()
        key = [(name, slot) for name, slot, _ in layout]
        if self._reader is None or self._reader[0] != key:
            self._reader = (key, self._read_and_reset_function(layout))
        f64, f32 = (t.numpy() for t in self._reader[1]())
        step, out, flat = int(f64[0]), {}, {tf.float64: f64[1:], tf.float32: f32}
        offsets = {tf.float64: 0, tf.float32: 0}
        for name, slot, v in layout:
            n = int(np.prod(v.shape))
            out.setdefault(name, {})[slot] = flat[v.dtype][offsets[v.dtype] : offsets[v.dtype] + n]
            offsets[v.dtype] += n
        return step, out

    def _read_and_reset_function(self, layout):
        # A callable object, not a closure: TensorFlow counts traces per code object, and one probe per
        # `fit` in a loop would otherwise print retracing warnings about a function traced once each.
        return tf.function(_ReadAndReset(self.strategy, self.step, layout), autograph=False)


class _ReadAndReset:
    """Returns `(step and float64 slots, float32 slots)`, each concatenated, and resets every slot.

    About two ops per variable (a read and an assign): its first trace is
    part of the first window of every `fit` and grows with the layers.
    """

    def __init__(self, strategy, step, layout):
        self.local = strategy.experimental_local_results
        self.step, self.layout = step, layout

    def combine(self, v):
        parts = [c.value() for c in self.local(v)]
        return parts[0] if len(parts) == 1 else _COMBINE[v.dtype](parts)

    def __call__(self):
        step = tf.cast(self.local(self.step)[0].value(), tf.float64)  # the same on every replica
        f64 = [tf.reshape(step, [1])] + [self.combine(v) for _, _, v in self.layout if v.dtype == tf.float64]
        f32 = [self.combine(v) for _, _, v in self.layout if v.dtype == tf.float32]
        out = (tf.concat(f64, 0), tf.concat(f32, 0) if f32 else tf.zeros([0], tf.float32))
        empties = {}  # one constant per shape and dtype; automatic control dependencies order reads before resets
        for _, _, v in self.layout:
            k = (tuple(v.shape), v.dtype)
            if k not in empties:
                empties[k] = tf.constant(np.full(k[0], _EMPTY[v.dtype]), v.dtype)
            for component in self.local(v):
                component.assign(empties[k], read_value=False)
        return out
