"""`LayerProbe`: the Keras callback that records per-layer activation statistics."""

from __future__ import annotations

import logging
import numbers
import os
import warnings

import keras
import tensorflow as tf

from tfprobe import native
from tfprobe.instrument import Tapper, select
from tfprobe.state import Recorder, RecordingError
from tfprobe.writer import WindowWriter

logger = logging.getLogger("tfprobe")

_ACTIVE_ATTR = "_tfprobe_active_probe"


def _check_freq(name, value, allow_zero=False):
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < (0 if allow_zero else 1):
        need = "a non-negative integer (0 turns it off)" if allow_zero else "a positive integer"
        raise ValueError(f"`{name}` must be {need}. Received: {name}={value!r}")
    return int(value)


def _check_log_dir(log_dir):
    if not isinstance(log_dir, (str, os.PathLike)) or not str(log_dir):
        raise TypeError(f"`log_dir` must be a non-empty path. Received: log_dir={log_dir!r}")
    path = os.path.abspath(os.fspath(log_dir))
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"`log_dir` is not a directory. Received: log_dir={log_dir!r}")
    if not (os.path.isdir(probe) and os.access(probe, os.W_OK | os.X_OK)):
        raise ValueError(f"`log_dir` cannot be written ({probe} is not writable). Received: log_dir={log_dir!r}")
    return os.fspath(log_dir)


class LayerProbe(keras.callbacks.Callback):
    """Records per-layer activation statistics during `fit`, for TensorBoard and pandas.

    Statistics are computed inside the training step on the activations the
    forward pass already produces, folded into variables, and read back once
    per logging window: no extra forward pass and no per-layer host sync.
    Evaluation and prediction are untouched, and the model is restored as it
    was when `fit` ends. One probe can be reused across `fit` calls; steps
    continue from `model.optimizer.iterations`.

    The statistics and their exact definitions are listed in `tfprobe.stats`
    and the README. Each window's values are written at the step that closed
    it (the global training step, as Keras' `TensorBoard` callback counts).

    Args:
      log_dir: directory of the run to write (created if needed).
      layers: which layers to record. None (default) records every layer
        with a floating output, entering nested models. Otherwise one or a
        list of: layer names or paths (`"backbone/conv1"`), layer classes,
        compiled regular expressions (`re.compile("conv.*")`, matched in full)
        and predicates `f(layer) -> bool`. Unknown names raise `ValueError`.
      record_freq: compute statistics on every `record_freq`-th training step
        (steps in between cost almost nothing). Defaults to `10`; use `1` to
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
        (`tfprobe.native`, compiled on first use) where it can run, that is
        in steps that are not XLA-compiled on a machine without a GPU, and
        TensorFlow graph ops elsewhere. `"native"`: the kernel, or an error
        saying why it cannot run. `"graph"`: graph ops only.

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
        layers=None,
        record_freq=10,
        log_freq=100,
        histogram_freq=100,
        near_zero=1e-3,
        saturation_margin=0.01,
        sample_size=None,
        strict=False,
        kernel="auto",
    ):
        super().__init__()
        self.log_dir = _check_log_dir(log_dir)
        self.layers = layers
        self.record_freq = _check_freq("record_freq", record_freq)
        self.log_freq = _check_freq("log_freq", log_freq)
        self.histogram_freq = _check_freq("histogram_freq", histogram_freq, allow_zero=True)
        if not isinstance(near_zero, numbers.Real) or isinstance(near_zero, bool) or not near_zero >= 0:
            raise ValueError(f"`near_zero` must be a non-negative number. Received: near_zero={near_zero!r}")
        if not isinstance(saturation_margin, numbers.Real) or not 0 <= saturation_margin < 0.5:
            raise ValueError(
                f"`saturation_margin` must be a number in [0, 0.5). Received: saturation_margin={saturation_margin!r}"
            )
        self.near_zero = float(near_zero)
        self.saturation_margin = float(saturation_margin)
        if sample_size is not None and (
            not isinstance(sample_size, numbers.Integral) or isinstance(sample_size, bool) or sample_size < 1
        ):
            raise ValueError(f"`sample_size` must be None or a positive integer. Received: sample_size={sample_size!r}")
        self.sample_size = None if sample_size is None else int(sample_size)
        self.strict = bool(strict)
        if kernel not in native.KERNELS:
            raise ValueError(f"`kernel` must be one of {', '.join(map(repr, native.KERNELS))}. Received: kernel={kernel!r}")
        self.kernel = kernel
        self._recorder = Recorder(
            record_freq=self.record_freq,
            histogram_freq=self.histogram_freq,
            near_zero=self.near_zero,
            saturation_margin=self.saturation_margin,
            sample_size=self.sample_size,
            strict=self.strict,
        )
        self._tapper = Tapper()
        self._writer = None
        self._warned = set()
        self._model_state = None
        self._cached_function = None  # (model, Keras' train function, key, instrumented function)
        self._ran_batches = False
        self.bytes_written = 0
        """Bytes of event data written so far (all `fit` calls)."""
        self.windows_written = 0

    # -- public read-only views -----------------------------------------------------

    @property
    def series(self):
        """Names of the recorded series, in model order."""
        return list(self._recorder.series)


    # -- instrumentation ------------------------------------------------------------

    def _instrument(self):
        model = self.model
        if self._model_state is not None:  # left over from a `fit` that raised
            self.detach()
        other = model.__dict__.get(_ACTIVE_ATTR)
        if other is not None and other is not self:
            same_fit = not other._ran_batches
            other.detach()
            if not same_fit:  # left over from a `fit` that raised: clean up and go on
                logger.warning("tfprobe: removed the instrumentation left by a LayerProbe whose `fit` raised.")
            else:
                raise ValueError(
                    "This model already has a tfprobe.LayerProbe attached in this `fit` call; pass a single "
                    "LayerProbe (use its `layers` argument to choose layers)."
                )
        chosen = select(model, self.layers)
        if not chosen:
            raise ValueError(
                f"tfprobe.LayerProbe found nothing to record in model {model.name!r}: it has no layers. "
                f"Received: layers={self.layers!r}"
            )
        use_native = native.choose(self.kernel, jit_compile=bool(getattr(model, "jit_compile", False)))
        optimizer = getattr(model, "optimizer", None)
        initial = int(optimizer.iterations.numpy()) if optimizer is not None else 0
        self._recorder.use_kernel(native=use_native)
        self._recorder.create_step(model.distribute_strategy, initial)
        self._tapper.patch(chosen)
        had = "train_step" in model.__dict__
        previous = model.__dict__.get("train_step")
        original = model.train_step
        tapper, recorder = self._tapper, self._recorder

        def iterations():
            optimizer = getattr(model, "optimizer", None)
            return getattr(optimizer, "iterations", None)

        def train_step(data):
            recorder.begin_step(iterations())
            tapper.begin(recorder.on_tap)
            try:
                logs = original(data)
            finally:
                tapper.end()
            recorder.end_step(iterations())
            return logs

        object.__setattr__(model, "train_step", train_step)
        object.__setattr__(model, _ACTIVE_ATTR, self)
        # Keras builds its train function before `on_train_begin` and keeps it until something
        # (`compile`, ...) invalidates it; it is restored when `fit` ends. While it is the same
        # function, nothing the step depends on changed: the instrumented function traced for an
        # earlier `fit` is reused instead of tracing the step again.
        plain = model.train_function
        key = (model.distribute_strategy, recorder.generation, use_native, tuple((p, id(layer)) for p, layer in chosen))
        self._model_state = (had, previous, plain)
        cached = self._cached_function
        if plain is not None and cached is not None and cached[0] is model and cached[1] is plain and cached[2] == key:
            function = cached[3]
        else:
            model.make_train_function(force=True)
            function = model.train_function
            self._cached_function = (model, plain, key, function)

        def guarded_train_function(iterator):
            try:
                return function(iterator)
            except BaseException:
                # Keras' `fit` does not call `on_train_end` when it raises: restore the model now.
                self.detach()
                raise

        model.train_function = guarded_train_function
        self._start_step = initial

    def detach(self):
        """Restores the model if `fit` stopped with an exception before `on_train_end`.

        Safe to call at any time; `fit` calls it itself when it ends normally.
        """
        self._restore()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _restore(self):
        model = self.model
        if self._model_state is None:
            return
        had, previous, plain = self._model_state
        self._tapper.unpatch()
        if had:
            object.__setattr__(model, "train_step", previous)
        else:
            object.__delattr__(model, "train_step")
        if model.__dict__.get(_ACTIVE_ATTR) is self:
            object.__delattr__(model, _ACTIVE_ATTR)
        # Keras' own train function, without tfprobe's ops (None makes the next `fit` build one).
        model.train_function = plain
        self._model_state = None

    # -- Keras hooks ----------------------------------------------------------------

    def _unsupported_strategy(self):
        """A message if the model trains on several replicas (not supported yet), else None."""
        strategy = getattr(self.model, "distribute_strategy", None)
        replicas = getattr(strategy, "num_replicas_in_sync", 1)
        if replicas > 1 and not isinstance(strategy, tf.distribute.MirroredStrategy):
            return (
                f"tfprobe supports MirroredStrategy but not yet {type(strategy).__name__} with {replicas} "
                "replicas; LayerProbe records nothing in this `fit` rather than wrong numbers."
            )
        return None

    def on_train_begin(self, logs=None):
        self._ran_batches = False
        self._disabled = False
        problem = self._unsupported_strategy()
        if problem:
            if self.strict:
                raise NotImplementedError(problem)
            warnings.warn(problem, RuntimeWarning)
            self._disabled = True
            return
        self._instrument()
        try:
            self._writer = WindowWriter(self.log_dir)
        except OSError as error:
            self._restore()
            raise ValueError(f"`log_dir` cannot be written: {error}. Received: log_dir={self.log_dir!r}") from error
        self._host_step = self._start_step
        self._epoch_base = self._start_step
        self._next_log = (self._start_step // self.log_freq + 1) * self.log_freq
        self._pending = False

    def on_train_batch_begin(self, batch, logs=None):
        self._ran_batches = True

    def on_epoch_begin(self, epoch, logs=None):
        if not self._disabled:
            self._epoch_base = self._host_step

    def on_train_batch_end(self, batch, logs=None):
        if self._disabled:
            return
        # `batch` is the index (within the epoch) of the last step just run.
        self._host_step = self._epoch_base + batch + 1
        self._pending = True
        if self._host_step >= self._next_log:
            self._write_window()
            self._next_log = (self._host_step // self.log_freq + 1) * self.log_freq

    def on_train_end(self, logs=None):
        if self._disabled:
            return
        try:
            if self._pending:
                self._write_window()
        finally:
            self._restore()
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            for name, reason in self._recorder.dropped.items():
                logger.info("tfprobe: %s was not recorded: %s", name, reason)

    # -- writing --------------------------------------------------------------------

    def _write_window(self):
        self._pending = False
        try:
            step, results, histograms = self._recorder.window()
            if results or histograms:
                infos = {name: s.info for name, s in self._recorder.series.items()}
                self.bytes_written += self._writer.write_window(step, infos, results, histograms)
                self.windows_written += 1
        except RecordingError:
            raise
        except Exception as error:  # noqa: BLE001 - a logging failure must not stop training
            if self.strict:
                raise
            if "write" not in self._warned:
                self._warned.add("write")
                warnings.warn(f"tfprobe: could not write a window to {self.log_dir!r}: {error}", RuntimeWarning)


__all__ = ["LayerProbe"]
