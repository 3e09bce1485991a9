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
import warnings
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tfprobe import metadata
from tfprobe.kernels import stats
from tfprobe.recording import backward
from tfprobe.recording.accumulators import Accumulators
from tfprobe.recording.selection import is_pooling, saturation_bounds


class RecordingError(RuntimeError):
    """A failure inside recording, raised only with `LayerProbe(strict=True)`."""


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """What a traced step depends on besides the model, its train function and the recorder's own arguments.

    `Instrumentation.attach` reuses the train function traced for an earlier
    `fit` while the settings are equal (`Recorder.step_settings`).
    """

    strategy: object  # the distribution strategy the accumulators live in
    generation: int  # of the accumulator variables (`Recorder.generation`): new variables need a new trace
    kernel: str  # the kernel's name (`tfprobe.kernels`)
    layers: tuple  # the chosen layers, `((path, layer), ...)`


class Window(NamedTuple):
    """One window read back by `Recorder.window()`: what `WindowWriter.write_window` writes at `step`."""

    step: int  # the global step of the last step that ran
    statistics: dict  # {series: {stat: value}} (activation, gradient and weight statistics)
    histograms: dict  # {series: int64 counts} of the activations
    gradient_histograms: dict  # {series: int64 counts} of the activation gradients

    @property
    def has_values(self):
        """Whether the window holds any value to write."""
        return bool(self.statistics or self.histograms or self.gradient_histograms)


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


def fold_statistics(step, with_histogram, with_stats=True):
    """Folds the partials of every tap of `step` (and, with a fusing kernel on histogram steps, its histogram).

    A pooling layer's input partials are read off its producer's when that
    was recorded in the same step (one pass fewer). Each series' ops are
    built under `step.guard` (the failure policy of the series). The
    partials of all taps are folded with one update per accumulator
    variable (`Accumulators.fold`). A fusing kernel takes `with_stats` as a
    boolean tensor (false: only histograms count).
    """
    kernel = step.kernel
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

    for series, tensor, inputs, masks in step.taps:
        step.guard(series, build, series, tensor, inputs, masks)
    with tf.name_scope("tfprobe"):
        fold_partials(step.accumulators, sums, maxes, hists)
    return tf.constant(True)


def fold_partials(accumulators, sums, maxes, hists=None):
    """Folds `{series: sums}`, `{series: maxes}` and `{series: histogram}` into their slots, one op per variable."""
    live = lambda d: {k: v for k, v in d.items() if k in accumulators.slots}  # noqa: E731 - failed meanwhile
    accumulators.fold("sums", live(sums), "add")
    accumulators.fold("maxes", live(maxes), "max")
    if hists:
        accumulators.fold("hist", live(hists), "add")


def fold_histograms(step):
    """Folds the histogram of every tap of `step` that has one (histogram steps that are not recorded steps)."""
    kernel = step.kernel
    hists = {}

    def build(series, tensor, mask):
        with tf.name_scope("tfprobe_hist"):
            hists[series.name] = kernel.histogram(kernel.rows(unmasked(tensor, mask)))

    for series, tensor, _, masks in step.taps:
        if series.histogram:
            step.guard(series, build, series, tensor, masks[0])
    with tf.name_scope("tfprobe_hist"):
        fold_partials(step.accumulators, {}, {}, hists)
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
    `detach()` around `fit` (the optimizer watch). Each trace of the step
    is a `StepTrace` (`begin_step`); on the host, `window()` reads a `Window`.
    """

    def __init__(
        self, *, record_freq, histogram_freq, near_zero, sample_size, strict, gradients=False, include_masked=False
    ):
        self.record_freq, self.histogram_freq = record_freq, histogram_freq
        self.near_zero, self.sample_size, self.strict = near_zero, sample_size, strict
        self.gradients, self.include_masked = gradients, include_masked
        self.backward = backward.BackwardPass([]) if gradients else None
        self.optimizers = backward.OptimizerWatch()  # which optimizers a traced step applies (the step counter)
        self.series = {}  # name -> Series, in order of first appearance
        self.dropped = {}  # name -> reason
        self.accumulators = Accumulators()
        self.kernel = None
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

    def step_settings(self, chosen):
        """The `StepSettings` of a step traced now with the chosen layers (after `use` and `prepare`)."""
        return StepSettings(self.accumulators.strategy, self.generation, self.kernel.name, tuple(chosen))

    # -- graph side: called while a step is traced ------------------------------------

    def begin_step(self, model):
        """Starts a traced step of `model`: returns its `StepTrace`, with the predicates of the step being run.

        Each trace gets its own (MirroredStrategy traces the step once per
        replica, each in its own thread). The step being run is the
        recorder's step + 1: the step counter (`StepTrace.end`) follows
        `model.optimizer.iterations` when the step applies `model.optimizer`
        (Keras' count after the batch, which a loss-scale optimizer does not
        advance on a skipped step), else it counts train batches (a custom
        `train_step` with optimizers of its own, or none).
        """
        acc = self.accumulators
        xla = bool(getattr(model, "jit_compile", False))
        applied = self.optimizers.begin()
        optimizer = getattr(model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        current = acc.step + 1
        first = tf.equal(current, acc.fit_start + 1)
        record = tf.logical_or(tf.equal(current % self.record_freq, 0), first)
        hist = tf.logical_or(tf.equal(current % self.histogram_freq, 0), first) if self.histogram_freq else None
        backward_step = None
        if self.backward is not None:
            iterations_before = None if iterations is None else tf.cast(iterations, tf.int64)
            backward_step = self.backward.begin(optimizer, iterations_before, record, hist, xla=xla)
        return StepTrace(self, model, record, hist, xla, applied, backward_step)

    def _unmasked(self, tap, xla):
        """Whether the statistics of `tap` cover every position (no mask, `include_masked`, or XLA).

        Under XLA a `boolean_mask` inside a cond is wrong (its dynamic shape does not cross the cond: the rows it
        drops are counted with other values), so a step compiled with XLA keeps the masked positions, warned once.
        """
        if tap.mask is None or self.include_masked:
            return True
        if xla:
            if not self._warned_xla_masks:
                self._warned_xla_masks = True
                warnings.warn(
                    f"tfprobe: under XLA (jit_compile=True) the statistics of masked outputs ({tap.series!r} and any "
                    "other) include the masked (padding) positions, as with include_masked=True; compile with "
                    "jit_compile=False to leave them out.",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return True
        return False

    def _series_for(self, tap, xla):
        found = self.series.get(tap.series)
        if found is not None:
            return found
        info = describe(tap, len(self.series), self.sample_size)
        info["masked"] = not self._unmasked(tap, xla)
        units = stats.num_units(tap.tensor)
        initial = {"sums": stats.empty_sums(), "maxes": stats.empty_maxes(units)}
        if self.histogram_freq:
            initial["hist"] = np.zeros(metadata.NUM_BUCKETS)
        bounds = tuple(info["bounds"]) if info["bounds"] else None
        series = Series(tap.series, info, units, bounds, info["kind"] == "pooling", initial)
        return self.series.setdefault(tap.series, series)

    def _drop(self, name, error):
        """Stops recording series `name` (raises `RecordingError` in strict mode); the caller warns."""
        if self.strict:
            raise RecordingError(f"tfprobe failed to record {name!r}: {error}") from error
        self.dropped[name] = f"{type(error).__name__}: {error}"
        self.series.pop(name, None)
        self.accumulators.remove(name)

    # -- host side ----------------------------------------------------------------------

    def infos(self):
        """`{series: metadata}` of the recorded series, in model order (`tfprobe.metadata`; written with each
        series' first value)."""
        return {name: s.info for name, s in self.series.items()}

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
        """Reads, resets and finalizes one window: a `Window` (step, statistics, histograms, gradient histograms)."""
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
                    slots["sums"],
                    slots["maxes"],
                    near_zero=self.near_zero,
                    bounded=s.bounds is not None,
                    pooling=s.pooling,
                )
            for slot, out in (("hist", histograms), ("grad_hist", grad_histograms)):
                hist = slots.get(slot)
                if hist is not None and hist.sum() > 0:
                    out[name] = hist.astype(np.int64)
            if name in results:
                results[name].update(backward.statistics(slots, self.near_zero, skipped))
        return Window(step, results, histograms, grad_histograms)


class StepTrace:
    """One traced step: its predicates, its taps, and the failure policy its series' ops are built under.

    `Recorder.begin_step(model)` creates it while Keras traces the step, one
    per trace (MirroredStrategy traces once per replica, each in its own
    thread); `on_tap(tap)` takes each tap of the step, and `end()` builds the
    statistics ops and advances the step counter. Each series' ops are built
    through `guard`: a failure drops only that series (or raises
    `RecordingError` in strict mode), and the failures of the step are
    warned once per cause when it ends, naming how many series they dropped.
    """

    def __init__(self, recorder, model, record, hist, xla, applied, backward_step=None):
        self.recorder, self.model = recorder, model
        self.kernel, self.accumulators = recorder.kernel, recorder.accumulators
        self.record, self.hist, self.xla = record, hist, xla  # `hist` None: no histograms
        self.taps = []  # (series, tensor, pooled input or None, (mask, pooled input mask))
        self.backward = backward_step  # a `backward.BackwardStep`, or None without gradients
        self._applied = applied  # `backward.AppliedGradients`: the optimizers this step applies
        self._watched = {}  # the identity the model goes on with (backward path) -> the tap's own tensor
        self._failures = {}  # cause -> names of the series it dropped in this step

    @property
    def series(self):
        """The recorder's live series (a failed series leaves it)."""
        return self.recorder.series

    def on_tap(self, tap):
        """Takes note of one tap; `end` builds the ops of every tap of the step."""
        recorder = self.recorder
        if tap.series in recorder.dropped:
            return None
        try:
            series = recorder._series_for(tap, self.xla)
        except Exception as error:  # noqa: BLE001 - any failure drops only this series
            self.fail(tap.series, error)
            return None
        pooled = tap.inputs if series.pooling else None
        # The masks are applied inside the folds' conds: a `boolean_mask` copies its tensor, on recorded steps only.
        masks = (None, None) if recorder._unmasked(tap, self.xla) else (tap.mask, getattr(pooled, "_keras_mask", None))
        if pooled is not None:  # the producer's own output, so that its partials are reused (one pass fewer)
            pooled = self._watched.get(pooled.ref(), pooled)
        self.taps.append((series, tap.tensor, pooled, masks))
        if self.backward is None:
            return None
        watched = self.backward.watch(series, tap.tensor)
        self._watched[watched.ref()] = tap.tensor
        return watched

    def guard(self, series, build, *args):
        """Runs `build(*args)` (the ops of one series); a failure drops only that series (or raises in strict mode)."""
        if series.name not in self.recorder.series:
            return
        try:
            build(*args)
        except Exception as error:  # noqa: BLE001
            self.fail(series.name, error)

    def fail(self, name, error):
        """Drops series `name` (raises `RecordingError` in strict mode); warned when the step ends."""
        self.recorder._drop(name, error)
        self._failures.setdefault(str(error), []).append(name)

    def in_conds(self, fold, record, hist):
        """Builds `fold(with_stats=..., with_histogram=...)` in the conds of predicates `record` and `hist`.

        One `tf.cond` holds the statistics of every series (a cond per
        series made building a step slow); a kernel that fuses histograms
        counts them in the same ops, on recorded or histogram steps (`fold`
        gets both predicates as tensors), else a second cond holds the
        histograms (`with_stats=False`). `hist` None: no histograms.
        """
        no = lambda: tf.constant(False)  # noqa: E731
        if hist is not None and self.kernel.fuses_histogram:
            tf.cond(tf.logical_or(record, hist), lambda: fold(with_stats=record, with_histogram=hist), no)
        else:
            tf.cond(record, lambda: fold(with_stats=True, with_histogram=False), no)
            if hist is not None:
                tf.cond(hist, lambda: fold(with_stats=False, with_histogram=True), no)

    def end(self):
        """Ends the traced step: the statistics ops of its taps (`in_conds`), then the step counter.

        The conds are lowered to switches, so each tap's ops still run as
        soon as its activation exists, not after the optimizer update. On
        steps that are not recorded only the predicates are evaluated.
        """
        recorder = self.recorder
        recorder.optimizers.end(self._applied)
        try:
            if self.taps:
                self._build()
        finally:
            self._warn_failures()

    def _build(self):
        recorder, taps = self.recorder, self.taps
        optimizer = getattr(self.model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        driven = iterations is not None and any(o is optimizer for o in self._applied.applied)
        acc = self.accumulators

        def fold(with_stats, with_histogram):
            if with_stats is False:
                return fold_histograms(self)
            return fold_statistics(self, with_histogram, with_stats=with_stats)

        try:
            # The variables of every series seen first in this step, created at once (one per kind).
            acc.create_many({s.name: s.initial for s, *_ in taps if s.name in recorder.series})
            self.in_conds(fold, self.record, self.hist)
            if self.backward is not None:
                self.backward.end(self, iterations if driven else None, self._applied.grads)
        except Exception as error:  # noqa: BLE001
            for series, *_ in taps:
                if series.name not in recorder.dropped:
                    self.fail(series.name, error)
            return
        recorder.driven = driven
        if driven:
            acc.step.assign(tf.cast(iterations, tf.int64))
        else:
            acc.step.assign_add(1)

    def _warn_failures(self):
        """One warning per cause of this step's failures, naming how many series it dropped."""
        failures, self._failures = self._failures, {}
        for cause, names in failures.items():
            if len(names) == 1:
                what = repr(names[0])
            else:
                shown = ", ".join(repr(n) for n in names[:3]) + (
                    f", ... ({len(names) - 3} more)" if len(names) > 3 else ""
                )
                what = f"{len(names)} series ({shown})"
            warnings.warn(f"tfprobe: not recording {what} from now on: {cause}", RuntimeWarning, stacklevel=4)
