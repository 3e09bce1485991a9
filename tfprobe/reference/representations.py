"""`RepresentationAnalysis`: the reference-step analysis that measures what each recorded layer represents.

At each reference step (`tfprobe.reference.analysis`) it runs the model in inference
mode over the reference set, reduces each chosen layer's output to at most
`max_dim` values per example (`tfprobe.reference.reduce_features`), and
writes, per layer, the measures of `tfprobe.reference.measures.layer_measures`
(`effective_rank`, `stable_rank`, `probe_accuracy` and `label_information`
when the reference set has class labels, `cka_drift` from the second
reference step on), and the layers x layers linear CKA matrix (format in
`tfprobe.metadata`). With `embeddings`, the last reference step's features
of those layers are written for TensorBoard's Projector when it closes
(`tfprobe.reference.projector`).

Memory: one step holds every chosen layer's reduced features in float64
and the previous step's in float32, about `12 * N * L * D` bytes for N
examples, L layers and `D <= max_dim` (500 examples, 10 layers, D = 512:
31 MB), plus the model's activations for one batch. When
`12 * N * L * max_dim` exceeds `MEMORY_BUDGET` (512 MiB), `max_dim` is
lowered to fit, with a warning (`fitting_dim`).
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np

from tfprobe import metadata
from tfprobe.reference import DEFAULT_MAX_DIM, LayerOutputs, collect, measures
from tfprobe.reference.analysis import Analysis, AnalysisWriter

MEMORY_BUDGET = 512 * 2**20
"""Bytes of reduced features a reference step may hold (this step's in float64, the previous one's in float32)."""


def fitting_dim(max_dim, examples, layers, budget=None):
    """The largest `D <= max_dim` with `12 * examples * layers * D <= budget` (at least 1; `MEMORY_BUDGET` by default).

    >>> fitting_dim(512, 500, 10), fitting_dim(512, 10_000, 100)
    (512, 44)
    """
    budget = MEMORY_BUDGET if budget is None else budget
    return max(1, min(int(max_dim), int(budget // (12 * max(1, examples) * max(1, layers)))))


class RepresentationAnalysis(Analysis):
    """Writes the representation measures of the chosen layers at every reference step.

    Args:
      log_dir: the run directory (its own `*.tfprobe-reference` event file).
      layers: which layers, as `LayerProbe`'s `layers` (None: all).
      max_dim: values per example kept after reduction (defaults to 512).
      embeddings: series or layer names whose last features go to the
        Projector, or None.
      known: the chosen layer paths; unknown `embeddings` raise `ValueError`
        at construction when given.
      examples: the reference set's size; with `known`, `max_dim` is
        lowered to keep the features within `MEMORY_BUDGET`.
      strict: raise, instead of warning once and running the batches
        eagerly, when the model cannot be traced on the reference data
        (`tfprobe.reference.LayerOutputs`).
    """

    name = "representation"

    def __init__(
        self, log_dir, layers=None, max_dim=DEFAULT_MAX_DIM, embeddings=None, known=None, examples=None, strict=False
    ):
        self.log_dir, self.layers, self.max_dim, self.strict = log_dir, layers, max_dim, strict
        self.embeddings = tuple(embeddings or ())
        if known is not None:
            _check_embeddings(self.embeddings, known)
            if examples:
                self.max_dim = fitting_dim(max_dim, examples, len(known))
                if self.max_dim < max_dim:
                    warnings.warn(
                        f"tfprobe: {examples} reference examples x {len(known)} layers x {max_dim} values would "
                        f"exceed the reference memory budget ({MEMORY_BUDGET // 2**20} MiB); keeping "
                        f"{self.max_dim} values per example (reference_max_dim={self.max_dim}).",
                        RuntimeWarning,
                        stacklevel=3,
                    )
        self.writer = AnalysisWriter(log_dir).open()  # before LayerProbe's window file: see `AnalysisWriter.open`
        self.steps_written = 0
        self._previous = None  # (labels, {series: float32 features}) of the previous reference step
        self._last = None  # ({series: features}, labels) of the embedded layers at the last step
        self._label_problem = None
        self._outputs = None

    def run(self, model, reference, step):
        with _one_blas_thread():
            self._run(model, reference, step)

    def _run(self, model, reference, step):
        if self._outputs is None or self._outputs.model is not model:
            self._outputs = LayerOutputs(
                model, self.layers, strict=self.strict
            )  # traced at the first step, reused after
        got = collect(model, reference, self.layers, self.max_dim, outputs=self._outputs)
        labels = self._class_labels(got.labels)
        previous = self._comparable_previous(got.labels)
        names = list(got.features)
        scalars = []
        for series, feats in got.features.items():
            info = {**got.infos[series], "reference_size": len(feats), "dim": int(feats.shape[1])}
            before = previous.get(series) if previous else None
            for stat, value in measures.layer_measures(feats, labels, before).items():
                scalars.append((metadata.tag_for(series, stat), value, {**info, "stat": stat}))
        matrix = measures.cka_matrix([got.features[n] for n in names])
        cka_info = {"layers": names, "reference_size": len(reference)}
        self.writer.write(step, scalars, [(metadata.CKA_TAG, matrix, metadata.CKA_PLUGIN_NAME, cka_info)])
        self.steps_written += 1
        self._previous = (got.labels, {n: f.astype(np.float32) for n, f in got.features.items()})
        if self.embeddings:
            chosen = {n: f for n, f in got.features.items() if _selected(n, self.embeddings)}
            self._last = (chosen, got.labels, reference)

    def _class_labels(self, labels):
        if labels is None:
            return None
        try:
            measures._class_indices(labels, len(labels))
        except ValueError as error:
            if self._label_problem is None:
                self._label_problem = str(error)
                warnings.warn(
                    f"tfprobe: the reference labels are not class labels, so probe_accuracy and "
                    f"label_information are skipped ({error}).",
                    RuntimeWarning,
                    stacklevel=4,
                )
            return None
        return labels

    def _comparable_previous(self, labels):
        """The previous step's features, if they describe the same examples in the same order."""
        if self._previous is None:
            return None
        before, feats = self._previous
        if before is not None and labels is not None and not np.array_equal(before, labels):
            warnings.warn(
                "tfprobe: the reference dataset changed order between reference steps (shuffled?); "
                "cka_drift is skipped. Pass a dataset that yields the same examples in the same order.",
                RuntimeWarning,
                stacklevel=4,
            )
            return None
        return feats

    def close(self):
        try:
            if self._last is not None and self._last[0]:
                feats, labels, reference = self._last
                x, _ = reference.head(len(reference))
                from tfprobe.reference.projector import write_projector

                write_projector(self.log_dir, feats, labels, x)
        finally:
            if self.writer.bytes_written:
                self.writer.close()
            else:  # no reference step ran (a `fit` refused or interrupted first): no empty file left behind
                self.writer.discard()

    def discard(self):
        """Ends an analysis that never ran: its event file, still empty, is removed (`AnalysisWriter.discard`)."""
        self.writer.discard()


_BLAS = []  # the threadpoolctl controller, found once: looking for the BLAS libraries costs ~50 ms in a TF process


def _one_blas_thread():
    """Limits NumPy's BLAS to one thread while measuring, when threadpoolctl is installed.

    The matrices are small (D <= max_dim): BLAS threads gain little on them
    and, next to TensorFlow's thread pools on a busy machine, cost far more
    in waiting than they compute (a 500 x 64 Gram matrix measured at 40 ms
    instead of 0.05 ms on 2 shared cores).
    """
    if not _BLAS:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - an optional speed-up
            _BLAS.append(None)
        else:
            _BLAS.append(ThreadpoolController())
    controller = _BLAS[0]
    return controller.limit(limits=1, user_api="blas") if controller is not None else contextlib.nullcontext()


def _selected(series, names):
    base = series.split("#")[0].rsplit(":", 1)[0]
    return series in names or base in names


def _check_embeddings(embeddings, known):
    unknown = [e for e in embeddings if e not in known and not any(_selected(e, [k]) for k in known)]
    if unknown:
        raise ValueError(
            f"`reference_embeddings` must name recorded layers ({', '.join(known)}). "
            f"Received: reference_embeddings={list(embeddings)!r} (unknown: {', '.join(unknown)})"
        )


__all__ = ["RepresentationAnalysis"]
