"""TensorBoard entry point of the tfprobe dashboard (import-light on purpose).

TensorBoard imports every `tensorboard_plugins` entry point at start-up with no
error handling: if this module failed to import, TensorBoard would not start.
So at import time it needs only TensorBoard's `base_plugin` and `logging`.
`tfprobe` (which pulls in pandas) is imported inside `fix_flags` and `load`,
each guarded: a failure is logged as a warning and TensorBoard starts without
the defaults or without the tab (`load` returns None).

Sampling defaults (`fix_flags`): without flags TensorBoard keeps only 1000
(data server) or 10 (`--load_fast=false`) points per series of a third-party
plugin. The loader adds `tfprobe=0` (keep every statistic point) and
`tfprobe_hist=1000` and `tfprobe_grad_hist=1000` (histograms: the newest point plus a uniform
sample of 999),
`tfprobe_repr=0` and `tfprobe_cka=0` (every reference step: a few per run) to
`--samples_per_plugin`, unless the user set those names explicitly.
"""

from __future__ import annotations

import logging

from tensorboard.plugins import base_plugin

logger = logging.getLogger(__name__)

HIST_DEFAULT_SAMPLES = 1000
"""Default histogram points kept per series (0 would keep all; each is 85 int64)."""


def default_samples():
    """`{data plugin name: points kept}` that the loader adds unless the user set them."""
    from tfprobe import metadata

    return {
        metadata.PLUGIN_NAME: 0,
        metadata.HIST_PLUGIN_NAME: HIST_DEFAULT_SAMPLES,
        metadata.GRAD_HIST_PLUGIN_NAME: HIST_DEFAULT_SAMPLES,
        metadata.REPR_PLUGIN_NAME: 0,
        metadata.CKA_PLUGIN_NAME: 0,
    }


class TfprobeLoader(base_plugin.TBLoader):
    """Adds tfprobe's sampling defaults and loads `TfprobePlugin` lazily."""

    def fix_flags(self, flags):
        try:
            hints = flags.samples_per_plugin
            if hints is None:
                hints = flags.samples_per_plugin = {}
            for name, samples in default_samples().items():
                hints.setdefault(name, samples)  # an explicit user value wins
        except Exception:  # never stop TensorBoard because of an optional default
            logger.warning("tfprobe: could not set default --samples_per_plugin", exc_info=True)

    def load(self, context):
        try:
            from tensorboard_plugin_tfprobe.plugin import TfprobePlugin

            return TfprobePlugin(context)
        except Exception:
            logger.warning("tfprobe: the TensorBoard plugin failed to load; the tab is disabled", exc_info=True)
            return None
