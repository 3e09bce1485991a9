"""The Health view: `tfprobe.diagnose` over runs read through the data provider (`health`)."""

from __future__ import annotations

import time

from tensorboard import errors

from tensorboard_plugin_tfprobe.queries.common import (
    HEALTH_POINTS,
    MAX_POINTS,
    Source,
    _check_int,
    _check_runs,
    list_series,
)
from tensorboard_plugin_tfprobe.queries.files import SCAN_TIME_BUDGET, file_warnings
from tfprobe import metadata


def read_frames(src: Source, run_names, stats, points=HEALTH_POINTS):
    """Data-provider reads as the `tfprobe.read_logdir` long frame and the `read_layers` frame.

    At most `points` points per series (the provider's uniform sample with the newest point). The frames
    are built by the reader's own builders (`reader.long_frame`, `reader.layers_frame`).
    """
    from tfprobe.logs import reader  # pandas: imported on first use, not when TensorBoard starts

    found = list_series(src, run_names)
    rows, layer_rows = [], []
    tags = set()
    for run, series in found.items():
        for name, info in series.items():
            layer_rows.append(
                {
                    "run": run,
                    "layer": name,
                    "order": info["order"],
                    "layer_path": info["layer"],
                    "class": info["class"],
                    "kind": info["kind"],
                    "shape": info["shape"],
                    "bounds": info["bounds"],
                    "inputs": info.get("inputs"),
                }
            )
            tags.update(metadata.tag_for(name, s) for s in stats if s in info["stats"])
    data = {}
    if found and tags:
        data = src.read_scalars(list(found), sorted(tags), points)
    for run, by_tag in data.items():
        for tag, pts in by_tag.items():
            parsed = metadata.parse_tag(tag)
            if parsed is None:
                continue
            name, stat = parsed
            rows.extend((run, p.step, p.wall_time, name, stat, p.value) for p in pts)
    frame = reader.long_frame(*(list(column) for column in zip(*rows))) if rows else reader.long_frame(*[[]] * 6)
    return frame, reader.layers_frame(layer_rows)


def threshold_args(args):
    """The thresholds of `tfprobe.diagnose` among a request's query arguments (a mapping such as
    werkzeug's `MultiDict`: the first value of each name), those given and not empty.

    The names are those of `tfprobe.findings.thresholds()`, the table `diagnose` itself validates
    against: a threshold added there is accepted by `/health` and `/incidents` without a change here.
    Values are checked by `health`/`incidents` (400 naming the threshold).

    >>> sorted(threshold_args({"run": "train", "std_ratio": "4", "min_std": "", "max_grad_abs": "1e3"}).items())
    [('max_grad_abs', '1e3'), ('std_ratio', '4')]
    """
    from tfprobe import findings  # pandas: imported on first use, not when TensorBoard starts

    return {name: args[name] for name in findings.thresholds() if args.get(name)}


def _diagnosed(src: Source, run_names, points, thresholds):
    """`(runs, points, findings, layers frame)`: the checked arguments of `health`/`incidents` and
    `tfprobe.diagnose` over the runs' statistics read through the data provider."""
    from tfprobe import findings as diagnose_module

    run_names = _check_runs(run_names)
    points = _check_int("points", points, 1, MAX_POINTS, HEALTH_POINTS)
    found = list_series(src, run_names)
    for r in run_names:
        if r not in found:
            raise errors.NotFoundError(f"run {r!r} has no tfprobe data")
    try:
        diagnose_module.thresholds(**thresholds)  # every check of `diagnose`'s own, also across thresholds
    except (TypeError, ValueError) as e:
        raise errors.InvalidArgumentError(str(e)) from None
    frame, layer_frame = read_frames(src, run_names, diagnose_module.REQUIRED_STATS, points)
    return run_names, points, diagnose_module.diagnose(frame, layer_frame, **thresholds), layer_frame


def health(src: Source, run_names, points=HEALTH_POINTS, **thresholds):
    """`tfprobe.diagnose` over the selected runs, read through the data provider; most severe first."""
    from tfprobe import findings as diagnose_module

    deadline = time.monotonic() + SCAN_TIME_BUDGET
    run_names, points, findings, _ = _diagnosed(src, run_names, points, thresholds)
    records = []
    for rec in findings.to_dict("records"):
        records.append({k: (int(v) if k.endswith("_step") and v is not None else v) for k, v in rec.items()})
    return {
        "runs": run_names,
        "file_warnings": {run: w for run in run_names if (w := file_warnings(src, run, deadline))},
        "points": points,
        "thresholds": diagnose_module.thresholds(**thresholds),
        "findings": records,
    }
