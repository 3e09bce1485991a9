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
    read_arrays,
)
from tensorboard_plugin_tfprobe.queries.files import SCAN_TIME_BUDGET, file_warnings
from tfprobe import metadata


def diagnose_frames(src: Source, found, points=HEALTH_POINTS, budget=None):
    """`(statistics frame, layers frame)` of the runs listed in `found` (`list_series`): what `tfprobe.diagnose`
    reads, through the data provider.

    At most `points` points per series (the provider's uniform sample with the newest point), read a few
    tags at a time (`read_arrays`, at most `budget` points a read) and kept as arrays, one series at a
    time: the statistics frame is built by `tfprobe.findings.series_stat_frame` (what `diagnose` would
    pivot out of the long frame of `tfprobe.read_logdir`, without that frame); the layers frame by the
    reader's `layers_frame`.
    """
    from tfprobe import findings  # pandas: imported on first use, not when TensorBoard starts
    from tfprobe.logs import reader

    layer_rows = [
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
        for run, series in found.items()
        for name, info in series.items()
    ]

    def arrays():
        for run, series in found.items():
            tags = [
                metadata.tag_for(name, s)
                for name, info in series.items()
                for s in findings.REQUIRED_STATS
                if s in info["stats"]
            ]  # series by series
            current, by_stat = None, {}
            for tag, steps, values in read_arrays(src, run, tags, points, budget):
                name, stat = metadata.parse_tag(tag)
                if name != current and by_stat:
                    yield (run, current), by_stat
                    by_stat = {}
                current, by_stat[stat] = name, (steps, values)
            if by_stat:
                yield (run, current), by_stat

    return findings.series_stat_frame(arrays()), reader.layers_frame(layer_rows)


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
    frame, layer_frame = diagnose_frames(src, found, points)
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
