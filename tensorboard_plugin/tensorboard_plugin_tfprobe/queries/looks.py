"""The Looks view: the images and predictions of `tfprobe.looks.LooksAnalysis` (`looks`, `looks_image`)."""

from __future__ import annotations

from tensorboard import errors
from tensorboard.data import provider

from tensorboard_plugin_tfprobe.queries.common import (
    ALL_POINTS,
    Source,
    _check_int,
    _checked_points,
    _finite_or_none,
    _newest_points,
    _provider_read,
    list_series,
    require,
)
from tfprobe import metadata

IMAGES_PLUGIN = "images"  # TensorBoard's own plugin names: the looks images and scalars are standard summaries
SCALARS_PLUGIN = "scalars"


def _looks_tags(listing, run, kinds):
    """`{tag: (example, kind, layer)}` of the looks tags of `run` in a data-provider listing."""
    found = {}
    for tag in (listing or {}).get(run, {}):
        parsed = metadata.parse_looks_tag(tag)
        if parsed is not None and parsed[1] in kinds:
            found[tag] = parsed
    return found


def looks(src: Source, run):
    """What `LooksAnalysis` wrote in `run`: its images (tag, example, kind, layer, steps) and predictions.

    A run with tfprobe statistics but no looks images gives empty lists; a run with neither, a 404.
    """
    require("run", run)
    rtf = provider.RunTagFilter(runs=[run])
    listing = src.provider.list_blob_sequences(
        src.ctx, experiment_id=src.experiment_id, plugin_name=IMAGES_PLUGIN, run_tag_filter=rtf
    )
    tags = _looks_tags(listing, run, metadata.LOOKS_IMAGE_KINDS)
    if not tags and run not in list_series(src, [run]):
        raise errors.NotFoundError(f"run {run!r} has no tfprobe data and no looks images")
    blobs = {tag: _looks_blobs(src, run, tag) for tag in tags}
    images = [
        {"tag": tag, "example": e, "kind": k, "layer": layer, "steps": sorted(d.step for d in blobs[tag])}
        for tag, (e, k, layer) in sorted(tags.items())
    ]
    scalar_listing = src.provider.list_scalars(
        src.ctx, experiment_id=src.experiment_id, plugin_name=SCALARS_PLUGIN, run_tag_filter=rtf
    )
    scalar_tags = _looks_tags(scalar_listing, run, metadata.LOOKS_SCALAR_KINDS)
    points = (
        _provider_read(
            src,
            "looks scalar",
            run,
            "looks/",
            lambda: src.provider.read_scalars(
                src.ctx,
                experiment_id=src.experiment_id,
                plugin_name=SCALARS_PLUGIN,
                downsample=ALL_POINTS,
                run_tag_filter=provider.RunTagFilter(runs=[run], tags=list(scalar_tags)),
            ),
            {},
        ).get(run, {})
        if scalar_tags
        else {}
    )
    predictions = {}
    for tag, (example, kind, _) in scalar_tags.items():
        series = predictions.setdefault(str(example), {})
        series[kind] = [[d.step, _finite_or_none(d.value)] for d in _newest_points(points.get(tag, []))]
    return {
        "run": run,
        "examples": sorted({img["example"] for img in images}),
        "gradcam_layers": sorted({img["layer"] for img in images if img["kind"] == "gradcam"}),
        "feature_layers": sorted({img["layer"] for img in images if img["kind"] == "features"}),
        "steps": sorted({s for img in images if img["kind"] != "input" for s in img["steps"]}),
        "images": images,
        "predictions": predictions,
    }


def looks_image(src: Source, run, tag, step=None):
    """The PNG bytes of looks image `tag` of `run` at `step` (the newest at or before it; default the newest)."""
    require("run", run)
    require("tag", tag)
    parsed = metadata.parse_looks_tag(tag)
    if parsed is None or parsed[1] not in metadata.LOOKS_IMAGE_KINDS:
        raise errors.InvalidArgumentError(
            f"`tag` must be a looks image tag (looks/example_<i>/<kind>[/<layer>]). Received: tag={tag!r}"
        )
    step = _check_int("step", step, 0, 2**62, None)
    blobs = _looks_blobs(src, run, tag)
    if not blobs:
        raise errors.NotFoundError(f"run {run!r} has no image {tag!r}")
    chosen = [d for d in blobs if step is None or d.step <= step] or (blobs[:1] if parsed[1] == "input" else [])
    if not chosen:
        raise errors.NotFoundError(f"image {tag!r} of run {run!r} has no value at or before step {step}")
    datum = max(chosen, key=lambda d: d.step)  # `_newest_points`: one point per step, the newest write
    return src.provider.read_blob(src.ctx, blob_key=datum.values[2].blob_key)  # [width, height, png]


def _check_image(datum):
    if len(datum.values) != 3:
        raise metadata.FormatError(f"a looks image must be [width, height, png]; received {len(datum.values)} values")


def _looks_blobs(src: Source, run, tag):
    """The images of looks tag `tag` of `run`: `[width, height, png]` blob sequences only (others are logged
    once and skipped), the newest write of each step (a run restarted into its log dir)."""
    blobs = (
        _provider_read(
            src,
            "looks image",
            run,
            tag,
            lambda: src.provider.read_blob_sequences(
                src.ctx,
                experiment_id=src.experiment_id,
                plugin_name=IMAGES_PLUGIN,
                downsample=ALL_POINTS,
                run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag]),
            ),
            {},
        )
        .get(run, {})
        .get(tag)
        or []
    )
    return _checked_points(run, tag, blobs, _check_image)
