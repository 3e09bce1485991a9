"""`LayerProbe`: the Keras callback that records per-layer activation statistics."""

from __future__ import annotations

import logging
import sys
import warnings

import keras
import tensorflow as tf

from tfprobe import kernels, validation
from tfprobe.logs.writer import WindowWriter
from tfprobe.recording.capture import Instrumentation
from tfprobe.recording.recorder import Recorder, RecordingError
from tfprobe.recording.selection import select
from tfprobe.reference import analysis

logger = logging.getLogger("tfprobe")

ZERO_COUNTS = {"tfprobe_warnings": 0, "tfprobe_errors": 0}
"""The incident counts of an epoch's logs before any incident was found."""

_SHARED_ATTR = "_tfprobe_recorders"
_EXACT = (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)


def _classes(*paths):
    """The strategy classes at `paths` (`"tf.distribute.TPUStrategy"`) that this TensorFlow has."""
    found = []
    for path in paths:
        obj = tf
        for part in path.split(".")[1:]:
            obj = getattr(obj, part, None)
        if isinstance(obj, type):
            found.append(obj)
    return tuple(found)


_TPU = _classes(
    "tf.distribute.TPUStrategy",
    "tf.distribute.experimental.TPUStrategy",
    "tf.compat.v1.distribute.experimental.TPUStrategy",
)
_PARAMETER_SERVER = _classes(
    "tf.distribute.experimental.ParameterServerStrategy", "tf.compat.v1.distribute.experimental.ParameterServerStrategy"
)


def unsupported_strategy(strategy):
    """Why tfprobe cannot record exactly under `strategy` (a message naming it), or None if it can.

    >>> unsupported_strategy(tf.distribute.get_strategy()) is None
    True
    """
    name, replicas = type(strategy).__name__, getattr(strategy, "num_replicas_in_sync", 1)
    if isinstance(strategy, _TPU):
        why = "TPUs have no float64, which the accumulators need to count exactly"
    elif isinstance(strategy, _PARAMETER_SERVER):
        why = "its workers run steps asynchronously, with no common step at which to read a window"
    elif replicas > 1 and not isinstance(strategy, _EXACT):
        name, why = f"{name} with {replicas} replicas", "combining its replicas' accumulators is not written"
    else:
        return None
    return (
        f"tfprobe supports the default strategy, MirroredStrategy and MultiWorkerMirroredStrategy but not "
        f"{name} ({why}); LayerProbe records nothing in this `fit` rather than wrong numbers."
    )


def writes(strategy):
    """Whether this process writes the windows: the chief under `MultiWorkerMirroredStrategy`, else always.

    >>> writes(tf.distribute.get_strategy())
    True
    """
    try:
        return bool(strategy.extended.should_save_summary)
    except (AttributeError, NotImplementedError):
        return True


class LayerProbe(keras.callbacks.Callback):
    """Records per-layer activation statistics during `fit`, for TensorBoard and pandas.

    Statistics are computed inside the training step on the activations the
    forward pass already produces, folded into variables, and read back once
    per logging window: no extra forward pass and no per-layer host sync.
    Evaluation and prediction are untouched, and the model is restored as it
    was when `fit` ends. One probe can be reused across `fit` calls; steps
    continue from `model.optimizer.iterations`.

    The statistics and their exact definitions are listed in `tfprobe.kernels.stats`
    and the documentation (docs/guide/statistics.md). Each window's values are written at the step that closed
    it (the global training step, as Keras' `TensorBoard` callback counts).
    Under `MultiWorkerMirroredStrategy` every worker takes part in reading
    a window and only the chief writes (docs/limitations.md).

    Args:
      log_dir: directory of the run to write (created if needed).
      layers: which layers to record. None (default) records every layer
        with a floating output, entering nested models. Otherwise one or a
        list of: layer names or paths (`"backbone/conv1"`), layer classes,
        compiled regular expressions (`re.compile("conv.*")`, matched in full)
        and predicates `f(layer) -> bool`. Unknown names raise `ValueError`.
      record_freq: compute statistics on every `record_freq`-th training step
        (the steps in between run Keras' own step, except under a loss-scale
        optimizer: docs/guide/how-it-works.md). Defaults to `10`; use `1` to
        see every batch.
      log_freq: steps per logging window: statistics aggregate every recorded
        step of the window and are written when it ends; a partial last
        window is written when training ends. Defaults to `100`.
      histogram_freq: accumulate histograms on every `histogram_freq`-th
        step, `0` for none. Defaults to `100`.
      near_zero: the `|x| <= near_zero` threshold of `near_zero_fraction` and
        dead units. Defaults to `1e-3`.
      saturation_margin: a value of a bounded activation with range
        `[low, high]` is saturated within `saturation_margin * (high - low)`
        of a bound. Defaults to `0.01`.
      sample_size: `None` (default) computes every statistic over the whole
        batch. An integer `k` computes the distribution statistics (mean,
        std, rms, mean_abs, zero and near-zero fractions, Hoyer sparsity,
        saturation, pooling retention) and histograms over the first `k`
        examples of each recorded batch (a random sample when the data is
        shuffled), which makes a recorded step several times cheaper with
        the graph ops (little with the native kernel, see `kernel`); max,
        min, dead units and NaN/Inf counts still cover the whole batch.
      strict: raise on any failure inside recording instead of warning once
        per layer and dropping it. Defaults to `False`.
      kernel: how the statistics are computed; every choice gives the same
        numbers. `"auto"` (default): tfprobe's one-pass C++ kernel
        (`tfprobe.kernels.native`, compiled on first use) where it can run, that is
        in steps that are not XLA-compiled on a machine without a GPU, and
        TensorFlow graph ops elsewhere. `"native"`: the kernel, or an error
        saying why it cannot run. `"graph"`: graph ops only.
      gradients: also record the backward pass of the same steps: the
        statistics of each layer's activation gradient `dL/da` (folded in the
        step through the same kernel, passed on unchanged) and of its weights'
        gradients and updates (`grad_rms`, `update_ratio`, ...;
        docs/guide/gradients.md). Defaults to `False`.
      include_masked: include the positions Keras masks (padding, where an
        `Embedding(mask_zero=True)` or `Masking` propagates a mask to the
        output) in the statistics. Defaults to `False`: masked positions are
        left out.
      reference_data: a fixed reference set, `x`, `(x,)` or `(x, y)` arrays
        or a `tf.data.Dataset` yielding the same batches in the same order
        every time (a few hundred to a few thousand examples; `y`: class
        labels, optional; for several inputs `x` is a dict of arrays by
        input name or a list of arrays). A dataset of unknown or infinite
        cardinality is read up to 2048 examples, with a warning. At every
        reference step the model runs in inference mode over it, outside
        the training step, and the representation measures of the recorded
        layers are written (`tfprobe.reference.measures`,
        docs/guide/representations.md). When `fit` starts it is checked
        against the model's inputs (a mismatch raises `ValueError`); a
        model without `call` skips the reference steps with one warning
        (`ValueError` when `strict`). Defaults to None (no reference steps).
      reference_freq: a reference step runs at the end of every
        `reference_freq`-th epoch and at the end of training. Defaults to `5`.
      reference_embeddings: layer names (or one) whose reference features at
        the last reference step are written for TensorBoard's Projector tab
        (labels as metadata, a sprite for image inputs). Defaults to None.
      reference_max_dim: values per example kept of each layer's output
        (spatial maps are averaged over space first, then projected on
        fixed random directions if wider). Defaults to `512`.
      looks_examples: with `reference_data`, every reference step also
        writes, for its first `looks_examples` examples, the Grad-CAM (and
        CAM) maps of a classifier and feature-map grids as images that
        TensorBoard's Images tab and the dashboard's Looks view show
        (`tfprobe.looks`, docs/guide/looks.md). An integer in `[0, 100]`;
        defaults to `0` (off). A model Looks cannot explain (no class
        scores, no spatial or patch-token layer, several inputs) turns it
        off for that `fit` with one warning (`ValueError` when `strict`).
      looks_input_kind: how those examples are drawn (`LooksAnalysis`'s
        `input_kind`): `"image"` (the maps overlaid), `"spectrogram"`
        (`(time, frequency, 1)` inputs: time across, low frequencies at the
        bottom), `"waveform"` (1D inputs: a heat strip under the signal) or
        `"auto"` (default): waveform when the Grad-CAM layer is 1D, image
        otherwise. Needs `looks_examples`.
      alerts: at every window, evaluate the incidents (`tfprobe.incidents`: findings grouped by root
        cause) on the statistics the probe already has on the host, and log each new warning or error
        incident once (again if it becomes an error) as one line through the `tfprobe` logger, e.g.
        `tfprobe: step 20: error nan_weights in hidden1..logits, root cause: unstable updates at hidden1
        from step 5 (learning rate too high?)`. The incidents so far are `probe.incidents`; their counts
        are added to every epoch's logs as `tfprobe_warnings` and `tfprobe_errors` (0 until an incident is
        found, from the first epoch on, whatever `log_freq`: History, CSVLogger, ... get a complete column).
        Evaluated on one worker thread while training goes on (with `stop_on`: before training goes on).
        Defaults to `True` (healthy models stay silent: the healthy zoo, `tests/findings/test_zoo_healthy.py`).
      stop_on: `"error"` or `"warning"`: set `model.stop_training` at the window in which an incident of
        that severity or worse starts (or becomes one), logging why in one line; every window written so
        far stays readable. Defaults to None (never stop). Evaluates the incidents even with
        `alerts=False` (then only the stop is logged).

    Example:

    ```python
    import numpy as np, keras, tfprobe
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(np.ones((64, 8)), np.ones((64, 1)), epochs=2, verbose=0,
              callbacks=[tfprobe.LayerProbe(log_dir="logs/run1", log_freq=2)])
    df = tfprobe.read_logdir("logs")   # run, step, wall_time, layer, stat, value
    ```
    """

    def __init__(
        self,
        log_dir,
        *,
        layers=None,
        record_freq=10,
        log_freq=100,
        histogram_freq=100,
        near_zero=1e-3,
        saturation_margin=0.01,
        sample_size=None,
        strict=False,
        kernel="auto",
        gradients=False,
        include_masked=False,
        reference_data=None,
        reference_freq=5,
        reference_embeddings=None,
        reference_max_dim=512,
        looks_examples=0,
        looks_input_kind="auto",
        alerts=True,
        stop_on=None,
    ):
        super().__init__()
        self.log_dir = validation.log_dir(log_dir)
        self.layers = validation.layers(layers)
        self.record_freq = validation.frequency("record_freq", record_freq)
        self.log_freq = validation.frequency("log_freq", log_freq)
        self.histogram_freq = validation.frequency("histogram_freq", histogram_freq, allow_zero=True)
        self.near_zero = validation.number("near_zero", near_zero, 0.0)
        self.saturation_margin = validation.number("saturation_margin", saturation_margin, 0.0, 0.5)
        self.sample_size = validation.optional_positive_int("sample_size", sample_size)
        self.strict = validation.boolean("strict", strict)
        self.kernel = validation.choice("kernel", kernel, kernels.CHOICES)
        self.gradients = validation.boolean("gradients", gradients)
        self.include_masked = validation.boolean("include_masked", include_masked)
        self.reference_data = validation.reference_data(reference_data)
        self.reference_freq = validation.frequency("reference_freq", reference_freq)
        self.reference_embeddings = validation.reference_embeddings(reference_embeddings, self.reference_data)
        self.reference_max_dim = validation.frequency("reference_max_dim", reference_max_dim)
        from tfprobe.reference.looks import MAX_EXAMPLES

        self.looks_examples = validation.integer(
            "looks_examples", looks_examples, 0, MAX_EXAMPLES, " (0 turns Looks off)"
        )
        if self.looks_examples and self.reference_data is None:
            raise ValueError(
                f"`looks_examples` needs `reference_data` (the examples are its first ones). "
                f"Received: looks_examples={looks_examples!r} and reference_data=None"
            )
        self.looks_input_kind = validation.looks_input_kind(looks_input_kind)
        if self.looks_input_kind != "auto" and not self.looks_examples:
            raise ValueError(
                f"`looks_input_kind` needs `looks_examples` (the examples it draws). "
                f"Received: looks_input_kind={looks_input_kind!r} and looks_examples={looks_examples!r}"
            )
        self.alerts = validation.boolean("alerts", alerts)
        self.stop_on = validation.choice("stop_on", stop_on, (None, "warning", "error"))
        self._live = None
        self._executor = None
        self._evaluations = []
        self._analyses = []
        self._last_reference = None
        self._recorder = Recorder(
            record_freq=self.record_freq,
            histogram_freq=self.histogram_freq,
            near_zero=self.near_zero,
            sample_size=self.sample_size,
            strict=self.strict,
            gradients=self.gradients,
            include_masked=self.include_masked,
        )
        self._instrumentation = Instrumentation(self._recorder)
        self._writer = None
        self._active = False
        self._warned = set()
        self._chief = True
        self.bytes_written = 0
        """Bytes of event data written so far (all `fit` calls)."""
        self.windows_written = 0

    @property
    def incidents(self):
        """The incidents found so far while training (`tfprobe.incidents`' columns, run `"live"`; empty with
        `alerts=False` and no `stop_on`)."""
        if self._live is None:
            import pandas as pd

            from tfprobe.findings.incidents import INCIDENT_COLUMNS

            return pd.DataFrame(columns=INCIDENT_COLUMNS)
        self._drain()
        return self._live.incidents.copy()

    @property
    def series(self):
        """Names of the recorded series, in model order."""
        return list(self._recorder.infos())

    def detach(self):
        """Restores the model if `fit` stopped with an exception before `on_train_end`.

        Safe to call at any time; `fit` calls it itself when it ends normally.
        """
        self._drain()
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        self._instrumentation.detach()
        self._recorder.detach()
        self._close_writer()
        analyses, self._analyses = self._analyses, []
        analysis.close_all(analyses)

    # -- Keras hooks ----------------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._analyses = []
        try:
            self._train_begin()
        except BaseException:
            analyses, self._analyses = self._analyses, []
            analysis.discard_all(analyses)  # refused before training: no empty reference file left behind
            raise

    def _train_begin(self):
        self._active = False
        strategy = self.model.distribute_strategy
        problem = unsupported_strategy(strategy)
        if problem:
            if self.strict:
                raise NotImplementedError(problem)
            warnings.warn(problem, RuntimeWarning, stacklevel=2)
            return
        model = self.model
        chosen = select(model, self.layers)
        self._chief = writes(strategy)
        self._analyses = self._make_analyses(chosen) if self._chief else []
        kernel = kernels.make(
            self.kernel,
            jit_compile=bool(getattr(model, "jit_compile", False)),
            near_zero=self.near_zero,
            saturation_margin=self.saturation_margin,
            sample_size=self.sample_size,
        )
        self._share(model, chosen, kernel.name)
        start = first_step(model)
        self._recorder.use(kernel)
        self._recorder.prepare(strategy, start, chosen)
        self._instrumentation.on_error = self._stopped
        self._instrumentation.attach(model, self._recorder.step_settings(chosen), owner=self)
        self._recorder.attach()
        try:
            self._writer = WindowWriter(self.log_dir) if self._chief else None
        except Exception as error:  # OSError, a TensorFlow OpError of a remote store, ...
            # The probe detaches fully (instrumentation, apply_gradients wrapper, analysis files); training
            # goes on without it, unless strict.
            self.detach()
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            message = f"`log_dir` cannot be written: {first}. Received: log_dir={self.log_dir!r}"
            if self.strict:
                raise ValueError(message) from error
            warnings.warn(
                f"tfprobe.LayerProbe: {message}; training goes on without the probe", RuntimeWarning, stacklevel=2
            )
            return
        self._active = True
        self._host_step = self._epoch_base = start
        self._next_log = (start // self.log_freq + 1) * self.log_freq
        self._pending = False
        self._last_step = start  # the step of the last window (a window is written when the step passed it)
        self._all_skipped = False
        self._windows_at_start = self.windows_written

    def _share(self, model, chosen, kernel_name):
        """Takes the recorder of an earlier probe with the same settings on this model, if there is one.

        Its instrumented step is then reused, as Keras reuses its train
        function across `fit` calls: a new probe per `fit` in a loop does
        not trace the step again (nor make TensorFlow warn about retracing).
        """
        shared = model.__dict__.get(_SHARED_ATTR)
        if shared is None:
            shared = {}
            object.__setattr__(model, _SHARED_ATTR, shared)  # not tracked by Keras, gone with the model
        settings = (
            self.record_freq,
            self.histogram_freq,
            self.near_zero,
            self.saturation_margin,
            self.sample_size,
            self.strict,
            self.gradients,
            self.include_masked,
            kernel_name,
            tuple(chosen),
        )
        self._recorder, self._instrumentation = shared.setdefault(settings, (self._recorder, self._instrumentation))

    def _make_analyses(self, chosen):
        """The analyses of the reference steps (none without `reference_data`); same layers as the recording.

        Everything is checked before an analysis opens its file: the
        reference set against the model's inputs (a mismatch raises, naming
        `reference_data`), then Looks on the first examples. A model that
        cannot be run outside its training step, or that Looks cannot
        explain (no class scores, no spatial layer, inputs that are not
        one array), turns that part off with one warning, or raises when
        `strict`.
        """
        from tfprobe.reference import ModelCannotRun, check_inputs
        from tfprobe.reference.representations import RepresentationAnalysis

        self._last_reference = None
        if self.reference_data is None:
            return []
        try:
            check_inputs(self.model, self.reference_data)
        except ModelCannotRun as error:
            self._refuse(f"`reference_data` is not analysed in this `fit`: {error}.", "reference_data")
            return []
        looks = self._checked_looks() if self.looks_examples else None
        analyses = [
            RepresentationAnalysis(
                self.log_dir,
                self.layers,
                self.reference_max_dim,
                embeddings=self.reference_embeddings,
                known=[p for p, _ in chosen],
                examples=len(self.reference_data),
                strict=self.strict,
            )
        ]
        return analyses + ([looks] if looks is not None else [])

    def _checked_looks(self):
        """A `LooksAnalysis` checked on the model and the first reference examples, or None (refused)."""
        from tfprobe.reference.looks import LooksAnalysis

        looks = LooksAnalysis(self.log_dir, examples=self.looks_examples, input_kind=self.looks_input_kind)
        try:
            looks.check(self.model, self.reference_data)  # bad input fails before training starts
        except (ValueError, TypeError) as error:  # LooksAnalysis names its own `input_kind`: here `looks_input_kind`
            renamed = (
                str(error).replace("`input_kind`", "`looks_input_kind`").replace(" input_kind=", " looks_input_kind=")
            )
            if renamed != str(error):
                raise ValueError(renamed) from None
            reason = f"{error}"
        except Exception as error:  # noqa: BLE001 - the model cannot be run as Looks runs it
            reason = (
                f"model {self.model.name!r} cannot be run on the reference examples ({type(error).__name__}: {error})"
            )
        else:
            return looks
        self._refuse(f"`looks_examples` is turned off in this `fit`: {reason.rstrip('.')}.", "looks_examples")
        return None

    def _refuse(self, message, argument):
        """A reference argument this model cannot honour: one warning (a `ValueError` before training when strict)."""
        if self.strict:
            raise ValueError(
                f"tfprobe: {message} (`strict=True`: an error instead of a warning; `{argument}` "
                f"cannot be honoured for this model)"
            )
        warnings.warn(f"tfprobe: {message}", RuntimeWarning, stacklevel=4)

    def _reference_step(self):
        """Runs every analysis on the reference data, from the host, once per global step at most."""
        if not self._analyses or self._host_step == self._last_reference:
            return
        self._last_reference = self._host_step
        try:
            self._analyses = analysis.run_all(
                self._analyses, self.model, self.reference_data, self._host_step, strict=self.strict
            )
        except Exception:  # strict: `fit` stops here, without `on_train_end`
            self.detach()
            raise

    def on_epoch_end(self, epoch, logs=None):
        if self._active and (epoch + 1) % self.reference_freq == 0:
            self._reference_step()
        if (self.alerts or self.stop_on) and logs is not None:
            # in every epoch's logs, 0 until a window found something (a `log_freq` longer than an epoch
            # evaluates no window in some epochs): History, CSVLogger, ... see a complete column
            self._drain()
            logs.update(self._live.counts() if self._live is not None else ZERO_COUNTS)

    def on_epoch_begin(self, epoch, logs=None):
        if self._active:
            self._epoch_base = self._host_step

    def on_train_batch_end(self, batch, logs=None):
        if not self._active:
            return
        # `batch` is the index (within the epoch) of the last step just run.
        self._host_step = self._epoch_base + batch + 1
        self._pending = True
        if self._host_step >= self._next_log:
            self._write_window()
            self._next_log = (self._host_step // self.log_freq + 1) * self.log_freq

    def on_train_end(self, logs=None):
        if not self._active:
            return
        self._active = False
        try:
            if self._pending:
                self._write_window(final=True)
            self._reference_step()
        finally:
            self.detach()
            remember_last_step(self.model, self._last_step, self._recorder.driven)
        if self._chief and self._instrumentation.ran and self.windows_written == self._windows_at_start:
            self._warn_nothing_written()

    # -- writing --------------------------------------------------------------------

    def _warn_nothing_written(self):
        reasons = self._instrumentation.not_recorded()
        why = "; ".join(f"{name}: {reason}" for name, reason in list(reasons.items())[:5]) or (
            "the loss-scale optimizer skipped every step: non-finite gradients"
            if self._all_skipped
            else "no recorded values"
        )
        warnings.warn(
            f"tfprobe.LayerProbe wrote nothing to {self.log_dir!r} in this `fit` ({why}).", RuntimeWarning, stacklevel=3
        )

    def _write_window(self, final=False):
        try:
            if self._recorder.counts_skipped_steps and self._recorder.step() == self._last_step:
                # A loss-scale optimizer skipped every step since the last window (the global step did not
                # advance): a window at the same step would replace that one. The window goes on; at the end
                # of training, holding skipped steps only, it is dropped.
                if final:
                    self._recorder.window()
                    self._all_skipped = self.windows_written == self._windows_at_start
                return
            self._pending = False
            window = self._recorder.window()  # every worker: it may hold a collective
            self._last_step = window.step
            if self._writer is not None and window.has_values:
                infos = self._recorder.infos()
                self.bytes_written += self._writer.write_window(
                    window.step, infos, window.statistics, window.histograms, grad_histograms=window.gradient_histograms
                )
                self.windows_written += 1
            if window.statistics and (self.alerts or self.stop_on):
                self._evaluate(window.step, window.statistics)
        except RecordingError:
            raise
        except Exception as error:  # noqa: BLE001 - a logging failure must not stop training
            self._logging_failed("write a window to", error)

    def _evaluate(self, step, results):
        """The live incidents of this window (`tfprobe.findings.live`): alerts and the stop rule.

        With `stop_on` (or `strict`) the window is evaluated here, before training goes on, so that the stop
        happens at that window (and a strict failure stops `fit`). Alerts alone are evaluated on one worker
        thread, in window order, while training goes on (the evaluation is NumPy/pandas work on values
        already on the host; the step runs in TensorFlow's threads meanwhile); the counts in the epoch
        logs and `probe.incidents` wait for it at the end of each epoch and of training."""
        from tfprobe.findings.live import LiveIncidents

        if self._live is None:
            self._live = LiveIncidents()
        infos = self._recorder.infos()
        if self.stop_on or self.strict:
            self._evaluate_now(step, results, infos)
            return
        if self._executor is None:
            import concurrent.futures

            self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tfprobe-live")
        self._evaluations.append(self._executor.submit(self._evaluate_now, step, results, infos))
        self._evaluations = [f for f in self._evaluations if not f.done()]

    def _drain(self):
        """Waits for the windows handed to the worker thread (`_evaluate`)."""
        evaluations, self._evaluations = self._evaluations, []
        for future in evaluations:
            future.result()

    def _evaluate_now(self, step, results, infos):
        from tfprobe.findings import severity_rank

        try:
            raised = self._live.update(step, results, infos)
        except Exception as error:
            if self.strict:
                raise
            self._logging_failed("evaluate the incidents of", error)
            return
        stop = None
        for severity, line, _inc in raised:
            if self.alerts and self._chief:  # every worker evaluates the same all-reduced window; the chief logs
                _alert(severity, line)
            if stop is None and self.stop_on and severity_rank(severity) >= severity_rank(self.stop_on):
                stop = line
        if stop is not None and self.model is not None:
            self.model.stop_training = True
            if self._chief:
                _alert("error", f"stopping training at step {step} (stop_on={self.stop_on!r}): {stop}")

    def _stopped(self):
        """The instrumentation detached during `fit` (its train function raised, or the probed step does not
        compile): nothing more is recorded in this `fit`, and everything tfprobe attached is undone."""
        self._active = False
        self.detach()

    def _close_writer(self):
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            writer.close()
        except OSError as error:
            self._logging_failed("close the event file in", error)

    def _logging_failed(self, what, error):
        if self.strict:
            raise error
        if what not in self._warned:
            self._warned.add(what)
            warnings.warn(f"tfprobe: could not {what} {self.log_dir!r}: {error}", RuntimeWarning, stacklevel=3)


def _alert(severity, line):
    """Logs one alert line through the `tfprobe` logger. On a terminal, Keras' progress bar line is cleared
    first (it is redrawn on its next update), so the alert stands on a line of its own."""
    stream = sys.stdout
    try:
        if stream.isatty():
            stream.write("\r\x1b[2K")
            stream.flush()
    except (AttributeError, ValueError, OSError):
        pass
    logger.log(logging.ERROR if severity == "error" else logging.WARNING, "tfprobe: %s", line)


_LAST_STEP_ATTR = "_tfprobe_last_step"


def first_step(model):
    """The global step a `fit` of `model` starts from.

    `model.optimizer.iterations` when the model's steps apply
    `model.optimizer` (Keras' count); when the last probed `fit` counted
    train batches instead (a custom `train_step` with optimizers of its own,
    `model.optimizer` unused), the step that `fit` ended at, so that the next
    `fit` goes on from it instead of writing its windows at steps already
    logged.
    """
    optimizer = getattr(model, "optimizer", None)
    iterations = getattr(optimizer, "iterations", None)
    start = int(iterations.numpy()) if iterations is not None else 0
    last, driven = model.__dict__.get(_LAST_STEP_ATTR, (0, True))
    return start if driven else max(start, last)


def remember_last_step(model, step, driven):
    """Keeps the step a probed `fit` ended at on the model (not tracked by Keras; see `first_step`)."""
    if step is not None and driven is not None:
        object.__setattr__(model, _LAST_STEP_ATTR, (int(step), bool(driven)))


__all__ = ["LayerProbe"]
