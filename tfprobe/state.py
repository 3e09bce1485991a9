"""In-step state: per-series accumulators folded inside the training step, read once per window.

Each series owns three variables, combined the way Keras metrics are:
`sums` (float64, added), `maxes` (float32, `maximum`; holds max, -min and the
per-unit max|x|) and, with histograms on, `hist` (float64 counts, added).
Float64 sums keep counts exact far beyond 2**24. `Recorder.snapshot()` reads
every variable in one host transfer and resets them.
"""

from __future__ import annotations

import dataclasses
import threading
import warnings

import numpy as np
import tensorflow as tf

from tfprobe import metadata, stats
from tfprobe.instrument import activation_bounds, is_pooling


@dataclasses.dataclass
class Series:
    """One recorded tensor: its description and its accumulators."""

    name: str
    info: dict
    units: int | None
    bounds: tuple | None
    pooling: bool
    sums: tf.Variable
    maxes: tf.Variable
    hist: tf.Variable | None


class RecordingError(RuntimeError):
    pass


class Recorder:
    """Builds the statistics ops of a traced step and owns the accumulators.

    Args:
      record_freq, histogram_freq: record statistics (histograms) on steps
        where `step % freq == 0`; `histogram_freq=0` turns histograms off.
      near_zero, saturation_margin, sample_size: see `tfprobe.stats.partials`.
      strict: raise instead of warning and dropping a series on failure.
    """

    def __init__(self, *, record_freq, histogram_freq, near_zero, saturation_margin, strict, sample_size=None):
        self.record_freq = record_freq
        self.histogram_freq = histogram_freq
        self.near_zero = near_zero
        self.saturation_margin = saturation_margin
        self.sample_size = sample_size
        self.strict = strict
        self.series = {}  # name -> Series, in order of first appearance
        self.dropped = {}  # name -> reason
        self.step = None
        self.strategy = tf.distribute.get_strategy()
        self._snapshot_fn = None
        self._snapshot_key = None
        # Trace state is per thread: MirroredStrategy traces the step once per replica, each in its thread.
        self._t = threading.local()

    # -- graph side -----------------------------------------------------------------

    def _variable(self, initial, dtype, name):
        """A per-replica (`ON_READ`) accumulator, like a Keras metric's; combined in `snapshot`."""
        with tf.init_scope(), self.strategy.scope():
            return tf.Variable(
                initial,
                dtype=dtype,
                trainable=False,
                name=name,
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
            )

    def create_step(self, strategy, initial):
        """Sets the distribution strategy and the step the next `fit` starts from."""
        if self.step is not None and strategy is not self.strategy:
            # A new strategy needs new variables (reused across `fit` calls otherwise).
            self.step, self.series, self._snapshot_fn = None, {}, None
        self.strategy = strategy
        if self.step is None:
            self.step = self._variable(initial, tf.int64, "tfprobe_step")
        for component in self.strategy.experimental_local_results(self.step):
            component.assign(initial)

    def _series_for(self, tap):
        name = metadata.series_name(tap.path, tap.output, tap.n_outputs, tap.call)
        if name in self.dropped:
            return None
        found = self.series.get(name)
        if found is not None:
            return found
        units = stats.num_units(tap.tensor)
        bounds = activation_bounds(tap.layer) if tap.n_outputs == 1 else None
        pooling = is_pooling(tap.layer) and tap.inputs is not None
        shape = tap.tensor.shape.as_list() if tap.tensor.shape.rank is not None else None
        if shape:
            shape[0] = None
        info = {
            "series": name,
            "layer": tap.path,
            "class": type(tap.layer).__name__,
            "order": len(self.series),
            "output": tap.output,
            "call": tap.call,
            "shape": shape,
            "kind": "pooling" if pooling else "activation",
            "bounds": list(bounds) if bounds else None,
            "sample_size": self.sample_size,
        }

        def create(*_):
            if name not in self.series:  # merge_call runs this once for all replicas
                sums = self._variable(stats.empty_sums(), tf.float64, "tfprobe_sums")
                maxes = self._variable(stats.empty_maxes(units), tf.float32, "tfprobe_maxes")
                hist = None
                if self.histogram_freq:
                    hist = self._variable(np.zeros(metadata.NUM_BUCKETS), tf.float64, "tfprobe_hist")
                self.series[name] = Series(name, info, units, bounds, pooling, sums, maxes, hist)

        replica = tf.distribute.get_replica_context()
        if replica is not None and self.strategy.num_replicas_in_sync > 1:
            # Each replica traces the step in its own thread and arrives here; variables are
            # created once, in cross-replica context, as per-replica (ON_READ) variables.
            replica.merge_call(create)
        else:
            create()
        return self.series[name]

    def _fail(self, name, error):
        if self.strict:
            raise RecordingError(f"tfprobe failed to record {name!r}: {error}") from error
        self.dropped[name] = f"{type(error).__name__}: {error}"
        self.series.pop(name, None)
        warnings.warn(f"tfprobe: not recording {name!r} from now on: {error}", RuntimeWarning, stacklevel=2)

    def begin_step(self, iterations=None):
        """Starts a traced step: the record/histogram predicates of the step being run.

        `iterations` is the optimizer's step counter, read before its update;
        the step being run is `iterations + 1` (Keras' count after the batch).
        Without it the recorder counts steps itself.
        """
        base = self.step if iterations is None else tf.cast(iterations, tf.int64)
        current = base + 1
        self._t.record_pred = tf.equal(current % self.record_freq, 0)
        self._t.hist_pred = tf.equal(current % self.histogram_freq, 0) if self.histogram_freq else None
        self._t.computed = {}
        self._t.recorded_any = False

    def on_tap(self, tap):
        """Adds the statistics ops of one tap right where the layer produced it.

        Built next to the activation (not at the end of the step), the ops can
        run while the rest of the step goes on and the activation is not held
        until after the optimizer update. On steps that are not recorded only
        the `tf.cond` predicate is evaluated.
        """
        name = metadata.series_name(tap.path, tap.output, tap.n_outputs, tap.call)
        try:
            series = self._series_for(tap)
        except Exception as error:  # noqa: BLE001 - any failure drops only this series
            self._fail(name, error)
            return
        if series is None:
            return
        self._t.recorded_any = True
        tensor = tf.stop_gradient(tap.tensor)
        inputs = tf.stop_gradient(tap.inputs) if series.pooling else None
        computed = self._t.computed
        no = lambda: tf.constant(False)  # noqa: E731
        no_sums = lambda: tf.zeros([stats.NUM_SUMS], tf.float64)  # noqa: E731

        def record():
            with tf.name_scope("tfprobe"):
                p = stats.partials(
                    tensor,
                    near_zero=self.near_zero,
                    bounds=series.bounds,
                    saturation_margin=self.saturation_margin,
                    sample_size=self.sample_size,
                )
                sums = p["sums"]
                if series.pooling:
                    sums = sums + self._input_sums(inputs, computed.get(tap.inputs.ref()))
                series.sums.assign_add(sums)
                series.maxes.assign(tf.maximum(series.maxes, p["maxes"]))
                return tf.identity(p["sums"])

        def record_histogram():
            with tf.name_scope("tfprobe_hist"):
                series.hist.assign_add(stats.histogram_compiled(stats.leading(tensor, self.sample_size)))
                return tf.constant(True)

        try:
            own_sums = tf.cond(self._t.record_pred, record, no_sums)
            if series.hist is not None:
                tf.cond(self._t.hist_pred, record_histogram, no)
        except Exception as error:  # noqa: BLE001
            self._fail(series.name, error)
            return
        # A pooling layer fed by this tensor reuses its sums instead of reducing it again.
        computed[tap.tensor.ref()] = own_sums

    def end_step(self, iterations=None):
        """Ends a traced step: stores the step number (after the optimizer update)."""
        if not self._t.recorded_any:
            return
        if iterations is not None:
            self.step.assign(tf.cast(iterations, tf.int64))
        else:
            self.step.assign_add(1)

    def _input_sums(self, inputs, producer):
        """The `in_*` partials of a pooling input, read off its producer's partials if it was recorded."""
        if producer is None:
            return stats.pooling_input_sums(inputs, self.sample_size)
        src = [stats.S[k] for k in ("count", "finite", "sum_abs", "sumsq", "zeros")]
        dst = [[stats.S[k]] for k in ("in_count", "in_finite", "in_abs", "in_sq", "in_zeros")]
        return tf.scatter_nd(dst, tf.gather(producer, src), [stats.NUM_SUMS])

    # -- host side ------------------------------------------------------------------

    def _variables(self):
        out = [self.step]
        for s in self.series.values():
            out += [s.sums, s.maxes] + ([s.hist] if s.hist is not None else [])
        return out

    def snapshot(self):
        """Reads and resets every accumulator with one host transfer.

        Returns `(step, {name: (sums, maxes, hist or None)})` as NumPy arrays.
        """
        key = tuple(self.series)
        if self._snapshot_fn is None or key != self._snapshot_key:
            variables = self._variables()

            local = self.strategy.experimental_local_results

            def combine(i, v):
                parts = [tf.cast(c, tf.float64) for c in local(v)]
                if i == 0:  # the step: every replica holds the same value
                    return parts[0]
                if v.dtype == tf.float32:  # maxima
                    return tf.reduce_max(tf.stack(parts), axis=0)
                return tf.add_n(parts)

            @tf.function(autograph=False)
            def read_and_reset():
                flat = tf.concat([tf.reshape(combine(i, v), [-1]) for i, v in enumerate(variables)], axis=0)
                with tf.control_dependencies([flat]):
                    for v in variables[1:]:
                        empty = tf.constant(-np.inf if v.dtype == tf.float32 else 0, v.dtype)
                        for component in local(v):
                            component.assign(tf.fill(tf.shape(component), empty))
                return tf.identity(flat)

            self._snapshot_fn, self._snapshot_key = read_and_reset, key
        flat = self._snapshot_fn().numpy()
        step, offset, out = int(flat[0]), 1, {}
        for name, s in self.series.items():
            parts = []
            for v in (s.sums, s.maxes, s.hist):
                if v is None:
                    parts.append(None)
                    continue
                n = int(np.prod(v.shape))
                parts.append(flat[offset : offset + n])
                offset += n
            out[name] = tuple(parts)
        return step, out

    def window(self):
        """Snapshots and finalizes one window: `(step, stats_by_series, histograms_by_series)`."""
        step, raw = self.snapshot()
        results, histograms = {}, {}
        for name, (sums, maxes, hist) in raw.items():
            if name in self.dropped:
                continue
            s = self.series[name]
            if sums[stats.S["steps"]] > 0:
                results[name] = stats.finalize(
                    sums,
                    maxes,
                    near_zero=self.near_zero,
                    bounded=s.bounds is not None,
                    pooling=s.pooling,
                )
            if hist is not None and hist.sum() > 0:
                histograms[name] = hist.astype(np.int64)
        return step, results, histograms
