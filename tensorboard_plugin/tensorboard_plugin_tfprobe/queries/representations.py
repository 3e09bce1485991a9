"""The Representations view: representation measures and CKA matrices of reference steps."""

from __future__ import annotations

import numpy as np
from tensorboard import errors
from tensorboard.data import provider

from tensorboard_plugin_tfprobe.queries.common import (
    ALL_POINTS,
    Source,
    _check_runs,
    _checked_points,
    _json_list,
    _newest_points,
    _pairs,
    _provider_read,
    list_series,
)
from tfprobe import metadata
from tfprobe.logs import _decode


def _representation_measures(src: Source, run):
    """`(layers in model order, {stat: {layer: [[step, value], ...]}})` of one run's reference steps."""
    rtf = provider.RunTagFilter(runs=[run])
    listing = src.provider.list_scalars(
        src.ctx, experiment_id=src.experiment_id, plugin_name=metadata.REPR_PLUGIN_NAME, run_tag_filter=rtf
    ).get(run, {})
    order, tags = {}, []
    for tag, ts in listing.items():
        parsed = metadata.parse_tag(tag)
        if parsed is None or parsed[1] not in metadata.REPRESENTATION_STATS:
            continue
        tags.append(tag)
        try:
            order.setdefault(parsed[0], metadata.parse_content(ts.plugin_content, parsed[0], run).order)
        except metadata.FormatError:
            order.setdefault(parsed[0], -1)
    layers = sorted(order, key=lambda name: (order[name], name))
    measures = {s: {} for s in metadata.REPRESENTATION_STATS}
    for tag in tags:  # one read per tag: a tag whose values TensorBoard cannot decode leaves only itself out
        pts = (
            _provider_read(
                src,
                "representation measure",
                run,
                tag,
                lambda tag=tag: src.provider.read_scalars(
                    src.ctx,
                    experiment_id=src.experiment_id,
                    plugin_name=metadata.REPR_PLUGIN_NAME,
                    downsample=ALL_POINTS,
                    run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag]),
                ),
                {},
            )
            .get(run, {})
            .get(tag)
        )
        if pts is not None:
            name, stat = metadata.parse_tag(tag)
            measures[stat][name] = _pairs(_newest_points(pts))
    return layers, measures


def _cka_matrices(src: Source, run):
    """`{layers, steps, matrices}`: the CKA matrix of every reference step whose shape matches its layer list."""
    rtf = provider.RunTagFilter(runs=[run], tags=[metadata.CKA_TAG])
    listing = src.provider.list_tensors(
        src.ctx, experiment_id=src.experiment_id, plugin_name=metadata.CKA_PLUGIN_NAME, run_tag_filter=rtf
    ).get(run, {})
    if metadata.CKA_TAG not in listing:
        return {"layers": [], "steps": [], "matrices": []}
    names = metadata.cka_layers(listing[metadata.CKA_TAG].plugin_content) or []
    points = (
        _provider_read(
            src,
            "CKA matrix",
            run,
            metadata.CKA_TAG,
            lambda: src.provider.read_tensors(
                src.ctx,
                experiment_id=src.experiment_id,
                plugin_name=metadata.CKA_PLUGIN_NAME,
                downsample=ALL_POINTS,
                run_tag_filter=rtf,
            ),
            {},
        )
        .get(run, {})
        .get(metadata.CKA_TAG, [])
    )
    shape = [len(names), len(names)]
    points = _checked_points(
        run,
        metadata.CKA_TAG,
        points,
        lambda p: _decode.check_array(
            p.numpy, "fiu", lambda dims: dims == shape, f"a CKA matrix of {len(names)} layers (shape {shape})"
        ),
    )
    steps = [int(p.step) for p in points]
    matrices = [_json_list(np.asarray(p.numpy, dtype=np.float64), 3) for p in points]
    return {"layers": names, "steps": steps, "matrices": matrices}


def representations(src: Source, run_names):
    """Per run: the representation measures of every reference step and the CKA matrices (empty without them)."""
    run_names = _check_runs(run_names)
    found = list_series(src, run_names)
    out = []
    for run in run_names:
        if run not in found:
            raise errors.NotFoundError(f"run {run!r} has no tfprobe data")
        layers, measures = _representation_measures(src, run)
        steps = sorted({s for by_layer in measures.values() for pts in by_layer.values() for s, _ in pts})
        elements = {name: found[run].get(name, {}).get("elements") for name in layers}  # as in the depth funnel
        out.append(
            {
                "run": run,
                "layers": layers,
                "elements": elements,
                "steps": steps,
                "measures": measures,
                "cka": _cka_matrices(src, run),
            }
        )
    return {
        "runs": out,
        "stats": list(metadata.REPRESENTATION_STATS),
        "descriptions": metadata.REPRESENTATION_DESCRIPTIONS,
    }
