"""Building a step's statistics ops from its taps, and turning accumulated partials into windows.

The `Recorder` decides what to fold when: on a recorded step (every
`record_freq`-th global step, and the first step of every `fit`) the
partials of every tap (`tfprobe.kernels`), on a histogram step the
histograms, each folded into the series' accumulators
(`tfprobe.recording.accumulators`). `window()` reads them back and finalizes the
statistics (`tfprobe.kernels.stats.finalize`). A failure while building one
series drops that series with one warning (or raises in strict mode);
training goes on.
"""

from __future__ import annotations

import dataclasses
import threading
import warnings

import numpy as np
import tensorflow as tf

from tfprobe import metadata
from tfprobe.kernels import stats
from tfprobe.recording import backward
from tfprobe.recording.accumulators import Accumulators
from tfprobe.recording.selection import is_pooling, saturation_bounds


class RecordingError(RuntimeError):
    """A failure inside recording, raised only with `LayerProbe(strict=True)`."""


@dataclasses.dataclass
class Series:
    """One recorded tensor: its description (written with its first value) and its accumulators."""

    name: str
    info: dict
    units: int | None
    bounds: tuple | None
    pooling: bool
    initial: dict  # slot name -> its empty value (`tfprobe.recording.accumulators`)

    @property
    def histogram(self):
        return "hist" in self.initial


def describe(tap, order, sample_size):
    """The metadata of the series of `tap` (see `tfprobe.metadata`), as written to disk."""
    bounds = saturation_bounds(tap.layer) if tap.n_outputs == 1 else None
    pooling = is_pooling(tap.layer) and tap.inputs is not None
    shape = tap.tensor.shape.as_list() if tap.tensor.shape.rank is not None else None
    if shape:
        shape[0] = None
    return {
        "series": tap.series,
        "layer": tap.path,
        "class": type(tap.layer).__name__,
        "order": order,
        "output": tap.output,
        "call": tap.call,
        "shape": shape,
        "kind": "pooling" if pooling else "activation",
        "bounds": list(bounds) if bounds else None,
        "sample_size": sample_size,
        "inputs": list(tap.sources),
    }


def fold_statistics(taps, kernel, with_histogram, guarded, accumulators, with_stats=True):
    """Folds the partials of every tap (and, with a fusing kernel on histogram steps, its histogram).

    A pooling layer's input partials are read off its producer's when that
    was recorded in the same step (one pass fewer). `guarded(series,
    build, *args)` runs `build(*args)` under the failure policy of the
    series. The partials of all taps are folded with one update per
    accumulator variable (`Accumulators.fold`). A fusing kernel takes
    `with_stats` as a boolean tensor (false: only histograms count).
    """
    own_sums = {}  # tensor ref -> its partial sums, for a pooling layer fed by it
    sums, maxes, hists = {}, {}, {}

    def build(series, tensor, inputs, masks):
        with tf.name_scope("tfprobe"):
            hist = with_histogram if series.histogram else False
            rows = kernel.rows(unmasked(tensor, masks[0]))
            own, extremes, counts = kernel.partials(rows, series.units, series.bounds, hist, with_stats)
            total = own
            if series.pooling:
                producer = own_sums.get(inputs.ref())
                if producer is None:
                    total += kernel.input_sums(kernel.rows(unmasked(inputs, masks[1])), with_stats)
                else:
                    total += stats.as_input_sums(producer)
            sums[series.name], maxes[series.name] = total, extremes
            if counts is not None and series.histogram:
                hists[series.name] = counts
            own_sums[tensor.ref()] = own

    for series, tensor, inputs, masks in taps:
        guarded(series, build, series, tensor, inputs, masks)
    with tf.name_scope("tfprobe"):
        fold_partials(accumulators, sums, maxes, hists)
    return tf.constant(True)


def fold_partials(accumulators, sums, maxes, hists=None):
    """Folds `{series: sums}`, `{series: maxes}` and `{series: histogram}` into their slots, one op per variable."""
    live = lambda d: {k: v for k, v in d.items() if k in accumulators.slots}  # noqa: E731 - failed meanwhile
    accumulators.fold("sums", live(sums), "add")
    accumulators.fold("maxes", live(maxes), "max")
    if hists:
        accumulators.fold("hist", live(hists), "add")


def fold_histograms(taps, kernel, guarded, accumulators):
    """Folds the histogram of every tap that has one (histogram steps that are not recorded steps)."""
    hists = {}

    def build(series, tensor, mask):
        with tf.name_scope("tfprobe_hist"):
            hists[series.name] = kernel.histogram(kernel.rows(unmasked(tensor, mask)))

    for series, tensor, _, masks in taps:
        if series.histogram:
            guarded(series, build, series, tensor, masks[0])
    with tf.name_scope("tfprobe_hist"):
        fold_partials(accumulators, {}, {}, hists)
    return tf.constant(True)


def unmasked(x, mask):
    """The positions of `x` that `mask` keeps, `[positions, ...]`; `x` itself without a mask.

    A Keras mask covers the leading axes of an output (`[batch, time]` of a
    sequence): each kept position becomes a row of the statistics.
    """
    if mask is None or mask.shape.rank is None or x.shape.rank is None or mask.shape.rank > x.shape.rank:
        return x
    return tf.boolean_mask(x, mask)


class Recorder:
    """Builds the statistics ops of traced steps and owns their accumulators.

    The folding itself is `fold_statistics`, `fold_histograms` and `tfprobe.recording.backward`.

    Args:
      record_freq, histogram_freq: record statistics (histograms) on steps
        where `step % freq == 0`, and on the first step of every `fit`;
        `histogram_freq=0` turns histograms off.
      near_zero: the threshold of dead units (`tfprobe.kernels.stats.finalize`).
      sample_size: recorded in each series' metadata.
      strict: raise `RecordingError` instead of warning and dropping a series.
      gradients: also record the backward pass (`tfprobe.recording.backward`): the
        statistics of each series' activation gradient, and the weight and
        update norms of each layer with trainable weights.
      include_masked: compute statistics over the positions Keras masks too
        (padding); by default they cover only the unmasked positions.

    `use(kernel)` (a `tfprobe.kernels.Kernel`) and `prepare(strategy,
    initial_step, chosen)` come before a step is traced; `attach()` /
    `detach()` around `fit` (the optimizer watch).
    """

    def __init__(self, *, record_freq, histogram_freq, near_zero, sample_size, strict, gradients=False,
                 include_masked=False):
        self.record_freq, self.histogram_freq = record_freq, histogram_freq
        self.near_zero, self.sample_size, self.strict = near_zero, sample_size, strict
        self.gradients, self.include_masked = gradients, include_masked
        self.backward = backward.BackwardPass([]) if gradients else None
        self.optimizers = backward.OptimizerWatch()  # which optimizers a traced step applies (the step counter)
        self.series = {}  # name -> Series, in order of first appearance
        self.dropped = {}  # name -> reason
        self.accumulators = Accumulators()
        self.kernel = None
        self._t = threading.local()  # per thread: MirroredStrategy traces a step per replica, each in its thread
        self._warned_xla_masks = False
        self.driven = None  # whether the last traced step's counter follows `model.optimizer.iterations`
        self.fit_start = None  # the global step the current `fit` started from (host side)
        self._behind = None  # (steps, iterations) run by Keras' own train function since the counter was set

    def attach(self):
        """Watches the optimizers a traced step applies (`tfprobe.recording.backward.OptimizerWatch`)."""
        self.optimizers.attach()

    def detach(self):
        self.optimizers.detach()

    def use(self, kernel):
        self.kernel = kernel

    def prepare(self, strategy, initial_step, chosen=()):
        """Sets the distribution strategy, the global step the next `fit` starts from and the chosen layers."""
        if self.backward is not None and not self.backward.follows(chosen):
            self.backward = backward.BackwardPass(chosen)
        generation = self.accumulators.generation
        self.accumulators.prepare(strategy, initial_step)
        self.fit_start, self._behind = int(initial_step), None
        if self.accumulators.generation != generation:
            self.series = {}

    @property
    def generation(self):
        """Changes when the variables are replaced: a step traced before cannot be reused."""
        return self.accumulators.generation

    # -- graph side: called while a step is traced ------------------------------------

    def begin_step(self, model):
        """Starts a traced step of `model`: the predicates of the step being run.

        The step being run is the recorder's step + 1: the step counter
        (`end_step`) follows `model.optimizer.iterations` when the step applies
        `model.optimizer` (Keras' count after the batch, which a loss-scale
        optimizer does not advance on a skipped step), else it counts train
        batches (a custom `train_step` with optimizers of its own, or none).
        """
        acc = self.accumulators
        self._t.xla = bool(getattr(model, "jit_compile", False))
        self.optimizers.begin()
        optimizer = getattr(model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        before = acc.step
        current = before + 1
        first = tf.equal(current, acc.fit_start + 1)
        self._t.record = tf.logical_or(tf.equal(current % self.record_freq, 0), first)
        hist = tf.logical_or(tf.equal(current % self.histogram_freq, 0), first) if self.histogram_freq else None
        self._t.hist = hist
        self._t.taps = []  # (series, tensor, pooled input or None, (mask, pooled input mask))
        self._t.watched = {}  # the identity the model goes on with (backward path) -> the tap's own tensor
        if self.backward is not None:
            iterations_before = None if iterations is None else tf.cast(iterations, tf.int64)
            self.backward.begin(optimizer, iterations_before, self._t.record, hist, xla=self._t.xla)

    def on_tap(self, tap):
        """Takes note of one tap; `end_step` builds the ops of every tap of the step."""
        if tap.series in self.dropped:
            return
        try:
            series = self._series_for(tap)
        except Exception as error:  # noqa: BLE001 - any failure drops only this series
            self._fail(tap.series, error)
            return
        pooled = tap.inputs if series.pooling else None
        # The masks are applied inside the folds' conds: a `boolean_mask` copies its tensor, on recorded steps only.
        masks = (None, None) if self._unmasked(tap) else (tap.mask, getattr(pooled, "_keras_mask", None))
        if pooled is not None:  # the producer's own output, so that its partials are reused (one pass fewer)
            pooled = self._t.watched.get(pooled.ref(), pooled)
        self._t.taps.append((series, tap.tensor, pooled, masks))
        if self.backward is None:
            return None
        watched = self.backward.watch(series, tap.tensor)
        self._t.watched[watched.ref()] = tap.tensor
        return watched

    def _unmasked(self, tap):
        """Whether the statistics of `tap` cover every position (no mask, `include_masked`, or XLA).

        Under XLA a `boolean_mask` inside a cond is wrong (its dynamic shape does not cross the cond: the rows it
        drops are counted with other values), so a step compiled with XLA keeps the masked positions, warned once.
        """
        if tap.mask is None or self.include_masked:
            return True
        if getattr(self._t, "xla", False):
            if not self._warned_xla_masks:
                self._warned_xla_masks = True
                warnings.warn(
                    f"tfprobe: under XLA (jit_compile=True) the statistics of masked outputs ({tap.series!r} and any "
                    "other) include the masked (padding) positions, as with include_masked=True; compile with "
                    "jit_compile=False to leave them out.", RuntimeWarning, stacklevel=2)
            return True
        return False

    def _series_for(self, tap):
        found = self.series.get(tap.series)
        if found is not None:
            return found
        info = describe(tap, len(self.series), self.sample_size)
        info["masked"] = not self._unmasked(tap)
        units = stats.num_units(tap.tensor)
        initial = {"sums": stats.empty_sums(), "maxes": stats.empty_maxes(units)}
        if self.histogram_freq:
            initial["hist"] = np.zeros(metadata.NUM_BUCKETS)
        bounds = tuple(info["bounds"]) if info["bounds"] else None
        series = Series(tap.series, info, units, bounds, info["kind"] == "pooling", initial)
        return self.series.setdefault(tap.series, series)

    def _fail(self, name, error):
        if self.strict:
            raise RecordingError(f"tfprobe failed to record {name!r}: {error}") from error
        self.dropped[name] = f"{type(error).__name__}: {error}"
        self.series.pop(name, None)
        self.accumulators.remove(name)
        warnings.warn(f"tfprobe: not recording {name!r} from now on: {error}", RuntimeWarning, stacklevel=2)

    def end_step(self, model):
        """Ends a traced step of `model`: the statistics ops of its taps, then the step counter.

        One `tf.cond` holds the statistics of every tap (a cond per tap made
        building a step slow); a kernel that fuses histograms counts them in
        the same ops, on recorded or histogram steps, else a second cond
        holds the histograms. The conds are lowered to switches, so each
        tap's ops still run as soon as its activation exists, not after the
        optimizer update. On steps that are not recorded only the predicates
        are evaluated.
        """
        taps = self._t.taps
        applied, applied_grads = self.optimizers.end()
        if not taps:
            return
        no = lambda: tf.constant(False)  # noqa: E731
        optimizer = getattr(model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        driven = iterations is not None and any(o is optimizer for o in applied)
        acc, kernel, record, hist = self.accumulators, self.kernel, self._t.record, self._t.hist
        try:
            # The variables of every series seen first in this step, created at once (one per kind).
            acc.create_many({s.name: s.initial for s, *_ in taps if s.name in self.series})
            if kernel.fuses_histogram and hist is not None:
                fold = lambda: fold_statistics(taps, kernel, hist, self._guarded, acc, with_stats=record)  # noqa: E731
                tf.cond(tf.logical_or(record, hist), fold, no)
            else:
                tf.cond(record, lambda: fold_statistics(taps, kernel, False, self._guarded, acc), no)
                if hist is not None:
                    tf.cond(hist, lambda: fold_histograms(taps, kernel, self._guarded, acc), no)
            if self.backward is not None:
                self.backward.end(iterations if driven else None, self.series, acc, kernel, self._guarded,
                                  applied_grads)
        except Exception as error:  # noqa: BLE001
            for series, *_ in taps:
                self._fail(series.name, error)
            return
        self.driven = driven
        if driven:
            self.accumulators.step.assign(tf.cast(iterations, tf.int64))
        else:
            self.accumulators.step.assign_add(1)

    def _guarded(self, series, build, *args):
        """Runs `build(*args)` (the ops of one series); a failure drops only that series (or raises in strict mode)."""
        if series.name not in self.series:
            return
        try:
            build(*args)
        except Exception as error:  # noqa: BLE001
            self._fail(series.name, error)

    # -- host side ----------------------------------------------------------------------

    def records(self, first, count=1):
        """Whether any of the global steps `first, ..., first + count - 1` records statistics or histograms.

        The host-side twin of `begin_step`'s predicates (the step being run is the counter + 1).

        >>> r = Recorder(record_freq=5, histogram_freq=0, near_zero=0.0, sample_size=None, strict=False)
        >>> r.fit_start = 0
        >>> [s for s in range(1, 12) if r.records(s)], r.records(6, 4), r.records(6, 5)
        ([1, 5, 10], False, True)
        """
        last = first + count - 1
        if first <= self.fit_start + 1 <= last:
            return True
        return any(freq and last // freq > (first - 1) // freq for freq in (self.record_freq, self.histogram_freq))

    def ran_unprobed(self, steps, iterations):
        """Notes that `steps` steps ran without the probe (Keras' own train function); `catch_up` counts them."""
        behind = self._behind[0] if self._behind is not None else 0
        self._behind = (behind + steps, iterations)

    def catch_up(self):
        """Sets the step counter after unprobed steps, as their `end_step` would have: one eager assign, no read."""
        if self._behind is None:
            return
        (steps, iterations), self._behind = self._behind, None
        acc = self.accumulators
        for component in acc.strategy.experimental_local_results(acc.step):
            if self.driven and iterations is not None:
                component.assign(tf.cast(iterations, tf.int64))
            elif steps:
                component.assign_add(steps)

    def step(self):
        """The global step of the last step that ran (the step `window()` writes), read on the host."""
        self.catch_up()
        acc = self.accumulators
        return int(acc.strategy.experimental_local_results(acc.step)[0].numpy())

    @property
    def counts_skipped_steps(self):
        """Whether the steps a loss-scale optimizer skips are counted (`tfprobe.recording.backward.SKIPPED`)."""
        return backward.SKIPPED in self.accumulators.slots

    def window(self):
        """Reads, resets and finalizes one window.

        Returns `(step, {series: {stat: value}}, {series: counts},
        {series: gradient counts})`: statistics, histograms and activation-gradient histograms.
        """
        self.catch_up()
        step, values = self.accumulators.read_and_reset()
        skipped = values.get(backward.SKIPPED)
        results, histograms, grad_histograms = {}, {}, {}
        for name, slots in values.items():
            s = self.series.get(name)
            if s is None:
                continue
            if slots["sums"][stats.S["steps"]] > 0:
                results[name] = stats.finalize(
                    slots["sums"], slots["maxes"], near_zero=self.near_zero, bounded=s.bounds is not None, pooling=s.pooling
                )
            for slot, out in (("hist", histograms), ("grad_hist", grad_histograms)):
                hist = slots.get(slot)
                if hist is not None and hist.sum() > 0:
                    out[name] = hist.astype(np.int64)
            if name in results:
                results[name].update(backward.statistics(slots, self.near_zero, skipped))
        return step, results, histograms, grad_histograms


