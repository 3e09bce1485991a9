"""The statistics kernel interface, and choosing the kernel a step is built with.

A kernel builds the ops that turn one activation into its partials (see
`tfprobe.kernels.stats`). Two implement `Kernel`: `tfprobe.kernels.graph.GraphKernel`
(TensorFlow graph ops: the reference, runs anywhere, XLA and GPU included)
and `tfprobe.kernels.native.NativeKernel` (a one-pass C++ op for the CPU). Both
compute the same numbers. The recorder sees only this interface.

>>> k = make("graph", jit_compile=False, near_zero=1e-3, saturation_margin=0.01, sample_size=None)
>>> isinstance(k, Kernel), k.name
(True, 'graph')
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

CHOICES = ("auto", "native", "graph")
"""The values of `LayerProbe(kernel=...)`."""


@runtime_checkable
class Kernel(Protocol):
    """Builds the statistics ops of a step. Every method takes `x2d = kernel.rows(x)`."""

    name: str
    fuses_histogram: bool
    """True if `partials(..., with_histogram, with_stats)` counts the histogram in the same pass, and takes
    `with_stats` (and `input_sums` too) as a boolean tensor: when false, sums are zero and maxes -inf."""

    def rows(self, x):
        """`x` as the other methods take it (`graph.as_rows(x)` or what the kernel reads as such), with no
        gradient flowing back through the kernel's ops."""

    def partials(self, x2d, units, bounds, with_histogram, with_stats=True):
        """`(sums, maxes, histogram or None)` of one tensor with `units` (or None) and saturation `bounds`."""

    def gradient_partials(self, x2d, with_histogram, with_stats=True):
        """`partials(x2d, None, None, ...)` reduced to what gradient statistics read (`graph.gradient_partials`)."""

    def histogram(self, x2d):
        """Histogram counts of the (sampled) rows."""

    def input_sums(self, x2d, with_stats=True):
        """The `in_*` partials of a pooling input that no recorded layer produced."""


def make(choice, *, jit_compile, near_zero, saturation_margin, sample_size) -> Kernel:
    """The kernel for `LayerProbe(kernel=choice)` in a step compiled with `jit_compile`.

    `"auto"` takes the native kernel where it can run (no XLA, no GPU) and
    the graph ops elsewhere or when it cannot be built; `"native"` raises
    if it cannot run; `"graph"` is always the graph ops.
    """
    from tfprobe.kernels import graph, native

    if native.choose(choice, jit_compile=jit_compile):
        return native.NativeKernel(near_zero=near_zero, saturation_margin=saturation_margin, sample_size=sample_size)
    return graph.GraphKernel(
        near_zero=near_zero, saturation_margin=saturation_margin, sample_size=sample_size, xla=bool(jit_compile)
    )
