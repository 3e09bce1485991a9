"""Synthetic tfprobe logs written with the real `WindowWriter` (`conftest.py`'s `synthetic_logdir` fixture).

Layout of `synthetic_logdir` (steps 10, 20, ..., 200 unless noted)::

    logs/
      train/   RUN_TRAIN: TRAIN_LAYERS in model order; `conv2d` and `dense` have histograms;
               `dead_relu` is all zeros, `nan_layer` has NaNs from step 100,
               `dense` (softmax, bounds [0, 1]) saturates, `max_pooling2d` is a pooling layer
      eval/    RUN_EVAL: the first three layers only, other values
      xss/     RUN_XSS: one layer named XSS_LAYER (steps 1..3)
      other/   RUN_OTHER: a first-party scalar only (omitted: no tfprobe data)
"""

from __future__ import annotations

import math

import numpy as np

from tfprobe import metadata
from tfprobe.logs.events import EventFileWriter
from tfprobe.logs.writer import WindowWriter

RUN_TRAIN, RUN_EVAL, RUN_XSS, RUN_OTHER = "train", "eval", "xss", "other"
XSS_LAYER = "<img src=x onerror=alert(1)>"
STEPS = list(range(10, 201, 10))
NAN_FROM = 100

# name, class, kind, shape, bounds
TRAIN_LAYERS = [
    ("conv2d", "Conv2D", "activation", [None, 8, 8, 4], None),
    ("max_pooling2d", "MaxPooling2D", "pooling", [None, 4, 4, 4], None),
    ("backbone/conv1", "Conv2D", "activation", [None, 4, 4, 8], None),
    ("split:1", "Lambda", "activation", [None, 4, 4, 4], None),
    ("shared#1", "Dense", "activation", [None, 16], None),
    ("dead_relu", "ReLU", "activation", [None, 16], None),
    ("nan_layer", "Dense", "activation", [None, 8], None),
    ("dense", "Dense", "activation", [None, 10], [0.0, 1.0]),
]


def info_for(order, name, cls="Dense", kind="activation", shape=None, bounds=None):
    return {
        "series": name,
        "layer": name.split(":")[0].split("#")[0],
        "class": cls,
        "order": order,
        "output": 0,
        "call": 0,
        "shape": shape,
        "kind": kind,
        "bounds": bounds,
    }


def stats_for(name, kind, step, scale=1.0):
    """Deterministic, plausible statistics for one series at one step."""
    t = step / 200.0
    std = scale * (1.0 + 0.5 * t)
    s = {
        "mean": 0.1 * scale + 0.01 * t,
        "std": std,
        "min": -2.0 * std,
        "max": 2.0 * std,
        "rms": std * 1.01,
        "mean_abs": std * 0.8,
        "zero_fraction": 0.2 + 0.3 * t,
        "near_zero_fraction": 0.25 + 0.3 * t,
        "nan_count": 0.0,
        "inf_count": 0.0,
        "dead_unit_fraction": 0.1 * t,
        "hoyer_sparsity": 0.3,
        "saturation_fraction": 0.0,
    }
    if name == "dead_relu":
        s.update(
            mean=0.0,
            std=0.0,
            min=0.0,
            max=0.0,
            rms=0.0,
            mean_abs=0.0,
            zero_fraction=1.0,
            near_zero_fraction=1.0,
            dead_unit_fraction=1.0,
        )
    if name == "nan_layer" and step >= NAN_FROM:
        s.update(nan_count=12.0, mean=math.nan, std=math.nan)
    if name == "dense":
        s.update(
            min=0.0,
            max=1.0,
            mean=0.1,
            std=0.25,
            zero_fraction=0.0,
            near_zero_fraction=0.0,
            saturation_fraction=0.6 + 0.1 * t,
        )
    if kind == "pooling":
        s.update(size_ratio=0.25, mass_retention=0.5 - 0.1 * t, energy_retention=0.7, zero_fraction_in=0.3)
    return s


def hist_for(step):
    counts = np.zeros(metadata.NUM_BUCKETS, dtype=np.int64)
    z = metadata.HIST_ZERO_BUCKET
    counts[z] = 100 + step
    counts[z + 18 : z + 24] = [5, 20, 50, 50, 20, 5]
    counts[z - 24 : z - 18] = [1, 2, 3, 3, 2, 1]
    return counts


def write_windows(path, infos, windows):
    """Writes a run with the real `WindowWriter`: `windows` yields `(step, stats, histograms)`; wall time 1000 + step.

    For example `write_windows(p, {"a": info_for(0, "a")}, ((s, {"a": {"mean": 0.5}}, {}) for s in (1, 2)))`.
    """
    writer = WindowWriter(str(path))
    for step, stats, hists in windows:
        writer.write_window(step, infos, stats, hists, wall_time=1000.0 + step)
    writer.close()


def write_run(path, layers, steps, scale=1.0, hist_layers=()):
    """The synthetic run: `layers` as in TRAIN_LAYERS, `stats_for` values, `hist_for` histograms of `hist_layers`."""
    infos = {
        name: info_for(i, name, cls, kind, shape, bounds) for i, (name, cls, kind, shape, bounds) in enumerate(layers)
    }
    write_windows(
        path,
        infos,
        (
            (
                step,
                {name: stats_for(name, kind, step, scale) for name, _c, kind, _s, _b in layers},
                {name: hist_for(step) for name in hist_layers},
            )
            for step in steps
        ),
    )


def write_other_run(path):
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.util import tensor_util

    w = EventFileWriter(str(path))
    md = summary_pb2.SummaryMetadata(data_class=summary_pb2.DATA_CLASS_SCALAR)
    md.plugin_data.plugin_name = "scalars"
    for step in (1, 2):
        ev = event_pb2.Event(step=step, wall_time=1000.0 + step)
        ev.summary.value.add(tag="loss", metadata=md, tensor=tensor_util.make_tensor_proto(np.float32(1.0 / step)))
        w.write(ev)
    w.close()


def make_synthetic_logdir(root):
    write_run(root / RUN_TRAIN, TRAIN_LAYERS, STEPS, hist_layers=("conv2d", "dense"))
    write_run(root / RUN_EVAL, TRAIN_LAYERS[:3], STEPS, scale=2.0)
    write_run(root / RUN_XSS, [(XSS_LAYER, "Dense", "activation", [None, 4], None)], [1, 2, 3])
    write_other_run(root / RUN_OTHER)
    return root
