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
from tfprobe.native import NativeKernel


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

    `use_kernel(native)` (before a step is traced) chooses how the partials
    are computed: `tfprobe.native.NativeKernel` or `tfprobe.stats.GraphKernel`
    (the default); both compute the same numbers.
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
        self.generation = 0  # changes when the variables are replaced (a step traced before cannot be reused)
        self.strategy = tf.distribute.get_strategy()
        self._snapshot_fn = None
        self._snapshot_key = None
        # Trace state is per thread: MirroredStrategy traces the step once per replica, each in its thread.
        self._t = threading.local()
        self.use_kernel(native=False)

    def use_kernel(self, native):
        """Builds later steps with the native kernel (True) or the graph ops (False)."""
        kind = NativeKernel if native else stats.GraphKernel
        self.kernel = kind(near_zero=self.near_zero, saturation_margin=self.saturation_margin, sample_size=self.sample_size)

    @property
    def use_native(self):
        return self.kernel.name == "native"

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
            self.generation += 1
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
        self._t.taps = []  # (series, tensor, pooling input or None)

    def on_tap(self, tap):
        """Takes note of one tap; `end_step` builds the statistics ops of every tap of the step."""
        name = metadata.series_name(tap.path, tap.output, tap.n_outputs, tap.call)
        try:
            series = self._series_for(tap)
        except Exception as error:  # noqa: BLE001 - any failure drops only this series
            self._fail(name, error)
            return
        if series is None:
            return
        self._t.taps.append((series, tap.tensor, tap.inputs if series.pooling else None))

    def end_step(self, iterations=None):
        """Ends a traced step: the statistics ops of its taps, and the step number (after the optimizer update).

        One `tf.cond` holds the statistics of every tap and one the histograms.
        A cond per tap traced and optimized two branch functions per layer,
        which dominated the time to build a step. The conds are lowered to
        switches, so each tap's ops still run as soon as its activation
        exists, not after the optimizer update. On steps that are not
        recorded only the predicates are evaluated.
        """
        taps = self._t.taps
        if not taps:
            return
        no = lambda: tf.constant(False)  # noqa: E731
        try:
            tf.cond(self._t.record_pred, lambda: self._record(taps), no)
            if self.histogram_freq:
                hist_only = self._t.hist_pred
                if self.kernel.fuses_histogram:  # recorded steps count it in the statistics' pass
                    hist_only = tf.logical_and(hist_only, tf.logical_not(self._t.record_pred))
                tf.cond(hist_only, lambda: self._record_histograms(taps), no)
        except Exception as error:  # noqa: BLE001
            for series, *_ in taps:
                self._fail(series.name, error)
            return
        if iterations is not None:
            self.step.assign(tf.cast(iterations, tf.int64))
        else:
            self.step.assign_add(1)

    def _guarded(self, series, build):
        """Runs `build()` (ops of one series); a failure drops only that series (or raises in strict mode)."""
        if series.name not in self.series:
            return None
        try:
            return build()
        except Exception as error:  # noqa: BLE001
            self._fail(series.name, error)
            return None

    def _record(self, taps):
        own_sums = {}  # tensor ref -> its partial sums, for a pooling layer fed by it

        def build(series, tensor, inputs):
            with tf.name_scope("tfprobe"):
                x2d = stats.as_rows(tf.stop_gradient(tensor))
                with_histogram = self._t.hist_pred if series.hist is not None and self.kernel.fuses_histogram else False
                own, maxes, counts = self.kernel.partials(x2d, series.units, series.bounds, with_histogram)
                if counts is not None and series.hist is not None:
                    series.hist.assign_add(counts, read_value=False)
                sums = own
                if series.pooling:
                    sums = sums + self._input_sums(tf.stop_gradient(inputs), own_sums.get(inputs.ref()))
                series.sums.assign_add(sums, read_value=False)
                series.maxes.assign(tf.maximum(series.maxes, maxes), read_value=False)
                own_sums[tensor.ref()] = own

        for series, tensor, inputs in taps:
            self._guarded(series, lambda: build(series, tensor, inputs))
        return tf.constant(True)

    def _record_histograms(self, taps):
        def build(series, tensor):
            with tf.name_scope("tfprobe_hist"):
                counts = self.kernel.histogram(stats.as_rows(tf.stop_gradient(tensor)))
                series.hist.assign_add(counts, read_value=False)

        for series, tensor, *_ in taps:
            if series.hist is not None:
                self._guarded(series, lambda: build(series, tensor))
        return tf.constant(True)

    def _input_sums(self, inputs, producer):
        """The `in_*` partials of a pooling input, read off its producer's partials if it was recorded."""
        if producer is None:
            return self.kernel.input_sums(stats.as_rows(inputs))
        return stats.as_input_sums(producer)

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
            self._snapshot_fn, self._snapshot_key = self._read_and_reset_function(), key
        f64, f32 = (t.numpy() for t in self._snapshot_fn())
        step, out, offsets = int(f64[0]), {}, {tf.float64: 1, tf.float32: 0}
        for name, s in self.series.items():
            parts = []
            for v in (s.sums, s.maxes, s.hist):
                if v is None:
                    parts.append(None)
                    continue
                flat, n = (f32 if v.dtype == tf.float32 else f64), int(np.prod(v.shape))
                parts.append(flat[offsets[v.dtype] : offsets[v.dtype] + n])
                offsets[v.dtype] += n
            out[name] = tuple(parts)
        return step, out

    def _read_and_reset_function(self):
        """A `tf.function` returning every accumulator (float64 ones after the step, then float32) and resetting them.

        About two ops per variable (a read and an assign): its first trace is
        part of the first window of every `fit` and grows with the layers.
        """
        variables = self._variables()
        local = self.strategy.experimental_local_results

        def combine(v):
            parts = [c.value() for c in local(v)]
            if len(parts) == 1:
                return parts[0]
            if v.dtype == tf.float32:  # maxima
                return tf.reduce_max(tf.stack(parts), axis=0)
            return tf.add_n(parts)

        @tf.function(autograph=False)
        def read_and_reset():
            step = tf.cast(local(variables[0])[0].value(), tf.float64)  # the same on every replica
            f64 = [tf.reshape(step, [1])] + [combine(v) for v in variables[1:] if v.dtype == tf.float64]
            f32 = [combine(v) for v in variables[1:] if v.dtype == tf.float32]
            out = (tf.concat(f64, 0), tf.concat(f32, 0) if f32 else tf.zeros([0], tf.float32))
            empties = {}  # one constant per shape and dtype; automatic control dependencies order reads before resets
            for v in variables[1:]:
                k = (tuple(v.shape), v.dtype)
                if k not in empties:
                    empties[k] = tf.constant(np.full(k[0], -np.inf if v.dtype == tf.float32 else 0.0), v.dtype)
                for component in local(v):
                    component.assign(empties[k], read_value=False)
            return out

        return read_and_reset

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
