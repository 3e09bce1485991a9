"""Reference steps: analyses that run the model on a fixed reference set, outside the training step.

An *analysis* is any object with

* `name`: a short name for messages;
* `run(model, reference, step)`: looks at the model on the reference set
  (a `tfprobe.reference.ReferenceData`) at global training step `step`,
  and writes its own results (usually through an `AnalysisWriter`);
* `close()`: flushes and releases what it holds (called once, at the end of
  `fit`, after its last `run`).

`LayerProbe(reference_data=...)` builds its analyses in `on_train_begin`,
calls `run_all` from the host at every reference step (never inside the
training step) and `close_all` at the end of `fit`. `run_all` applies the
failure policy: in a non-strict probe a failing analysis warns once and is
dropped for the rest of the `fit`; a strict probe raises.

`AnalysisWriter` writes one `Event` per reference step into the run
directory through its own event file, so reference results never
interleave with the training windows' file.

>>> import tempfile
>>> from tfprobe.logs.reader import read_logdir
>>> d = tempfile.mkdtemp()
>>> w = AnalysisWriter(d)
>>> w.write(7, scalars=[("tfprobe/dense/effective_rank", 3.5, {"series": "dense", "stat": "effective_rank"})])
>>> w.close()
>>> read_logdir(d)[["step", "layer", "stat", "value"]].values.tolist()
[[7, 'dense', 'effective_rank', 3.5]]
"""

from __future__ import annotations

import functools
import logging
import os
import time
import warnings

import numpy as np
from tensorboard.compat.proto import event_pb2
from tensorboard.util import tensor_util

from tfprobe import metadata
from tfprobe.logs import _fs
from tfprobe.logs.events import EventFileWriter
from tfprobe.logs.writer import FirstValueMetadata, summary_metadata

logger = logging.getLogger("tfprobe")

REFERENCE_SUFFIX = metadata.REFERENCE_SUFFIX  # kept here too: `tfprobe.reference.analysis.REFERENCE_SUFFIX`


class Analysis:
    """The protocol of an analysis (see the module docstring); subclassing it is optional."""

    name = "analysis"

    def run(self, model, reference, step):
        raise NotImplementedError

    def close(self):
        pass


def run_all(analyses, model, reference, step, strict=False):
    """Runs every analysis at `step`; returns those still alive (a failed one is dropped after one warning)."""
    alive = []
    for analysis in analyses:
        try:
            analysis.run(model, reference, step)
        except Exception as error:  # an analysis must not stop a non-strict fit
            if strict:
                raise
            warnings.warn(
                f"tfprobe: the {analysis.name} analysis failed at step {step} and is turned off for the rest of "
                f"this `fit`: {type(error).__name__}: {error}",
                RuntimeWarning,
                stacklevel=3,
            )
            _close_quietly(analysis)
            continue
        alive.append(analysis)
    return alive


def close_all(analyses, strict=False):
    for analysis in analyses:
        if strict:
            analysis.close()
        else:
            _close_quietly(analysis, warn=True)


def _close_quietly(analysis, warn=False):
    try:
        analysis.close()
    except Exception as error:  # noqa: BLE001
        if warn:
            warnings.warn(
                f"tfprobe: could not close the {analysis.name} analysis: {error}", RuntimeWarning, stacklevel=4
            )
        else:
            logger.debug("tfprobe: closing a failed analysis: %s", error)


class AnalysisWriter:
    """One event file per analysis in the run directory; one `Event` per reference step.

    Scalars carry their metadata (`metadata.encode_json`) on the first
    value of each tag (`FirstValueMetadata`); tensors on every value (their
    content describes that step's rows and columns).
    """

    def __init__(self, log_dir, suffix=REFERENCE_SUFFIX, scalar_plugin=metadata.REPR_PLUGIN_NAME):
        self.log_dir, self._suffix, self._plugin = log_dir, suffix, scalar_plugin
        self._file = None  # created by `open` or at the first write
        self._metadata = FirstValueMetadata()
        self.bytes_written = 0

    def open(self):
        """Creates the event file now (before the training windows' file, see `LayerProbe`).

        TensorBoard's legacy loader (`--load_fast=false`) follows only the
        newest event file of a run while it runs: opening this file first
        keeps the training windows live there (reference steps then show
        after a reload of TensorBoard). The default loader follows both.
        """
        if self._file is None:
            self._file = EventFileWriter(self.log_dir, suffix=self._suffix)
        return self

    def write(self, step, scalars=(), tensors=(), wall_time=None):
        """Writes one event.

        Args:
          step: the global training step.
          scalars: `(tag, value, info)` with `info` the JSON content (a dict
            with `stat`), written with the first value of each tag.
          tensors: `(tag, array, plugin_name, info)`; float arrays are
            written as float32.
        """
        event = event_pb2.Event(step=int(step), wall_time=time.time() if wall_time is None else wall_time)
        for tag, value, info in scalars:
            md = self._metadata(
                tag,
                self._plugin,
                metadata.DATA_CLASS_SCALAR,
                functools.partial(metadata.encode_json, info),
                metadata.REPRESENTATION_DESCRIPTIONS.get(info.get("stat"), ""),
            )
            event.summary.value.add(tag=tag, metadata=md, tensor=tensor_util.make_tensor_proto(np.float32(value)))
        for tag, array, plugin, info in tensors:
            md = summary_metadata(plugin, metadata.DATA_CLASS_TENSOR, metadata.encode_json(info))
            array = np.asarray(array)
            array = array.astype(np.float32) if array.dtype.kind == "f" else array
            event.summary.value.add(tag=tag, metadata=md, tensor=tensor_util.make_tensor_proto(array))
        self.open()
        self.bytes_written += self._file.write(event)
        self._file.flush()

    def close(self):
        if self._file is not None:
            self._file.close()

    def discard(self):
        """Closes the file and removes it if no reference step was written to it (a `fit` refused before training)."""
        file, self._file = self._file, None
        if file is None:
            return
        file.close()
        if self.bytes_written == 0:
            try:
                if _fs.is_remote(file.path):
                    _fs._gfile().remove(file.path)
                else:
                    os.remove(file.path)
            except Exception as error:  # noqa: BLE001 - an empty file left behind is only untidy
                logger.debug("tfprobe: could not remove %s: %s", file.path, error)


def discard_all(analyses):
    """Ends analyses that never ran (training did not start): their empty files are removed, nothing raises."""
    for analysis in analyses:
        try:
            getattr(analysis, "discard", analysis.close)()
        except Exception as error:  # noqa: BLE001
            logger.debug("tfprobe: discarding the %s analysis: %s", analysis.name, error)


__all__ = ["Analysis", "AnalysisWriter", "run_all", "close_all", "discard_all", "REFERENCE_SUFFIX"]
