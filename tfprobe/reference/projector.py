"""Reference features for TensorBoard's own Projector tab (PCA, t-SNE, UMAP), in its checkpoint-free format.

`write_projector(run_dir, embeddings, labels, images)` writes, in the run
directory:

    projector_config.pbtxt           one `embeddings { tensor_name tensor_path metadata_path sprite }` per layer
    tfprobe_projector/<layer>.tsv    N rows of D tab-separated values (the reduced reference features)
    tfprobe_projector/metadata.tsv   one row per example: its index and label (a header when there are labels)
    tfprobe_projector/sprite.png     the input images in a square grid (only for image inputs)

Entries of `projector_config.pbtxt` that tfprobe did not write are kept.
Paths are relative to the run directory, as the Projector requires.

>>> import tempfile, os, numpy as np
>>> d = tempfile.mkdtemp()
>>> written = write_projector(d, {"enc/dense": np.eye(3)}, labels=np.array([0, 1, 1]))
>>> sorted(os.listdir(os.path.join(d, ASSET_DIR))), open(os.path.join(d, ASSET_DIR, "metadata.tsv")).read()
(['enc_dense.tsv', 'metadata.tsv'], 'example\\tlabel\\n0\\t0\\n1\\t1\\n2\\t1\\n')
"""

from __future__ import annotations

import os
import re
import struct
import zlib

import numpy as np

ASSET_DIR = "tfprobe_projector"
CONFIG_NAME = "projector_config.pbtxt"  # tensorboard.plugins.projector.metadata.PROJECTOR_FILENAME
MAX_SPRITE_PIXELS = 8192  # the Projector's largest sprite side


def _file_name(series):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", series) + ".tsv"


def _write_tsv(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write("\t".join(row) + "\n")


def _png(path, pixels):
    """Writes an 8-bit grey (H, W) or RGB (H, W, 3) array as a PNG, without an imaging library."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width = pixels.shape[:2]
    colour = 2 if pixels.ndim == 3 else 0
    raw = b"".join(b"\x00" + pixels[row].tobytes() for row in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(
            b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
        )


def as_images(x):
    """`x` as `[N, H, W]` grey or `[N, H, W, 3]` RGB uint8 images, or None if it does not look like images.

    >>> as_images(np.zeros((2, 8, 8, 1))).shape, as_images(np.zeros((2, 10))) is None
    ((2, 8, 8), True)
    """
    x = np.asarray(x)
    if x.dtype.kind not in "uif" or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
        return None
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    x = x.astype(np.float64)
    finite = x[np.isfinite(x)]
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    scaled = (np.nan_to_num(x, nan=low) - low) / (high - low if high > low else 1.0)
    return np.clip(np.round(scaled * 255), 0, 255).astype(np.uint8)


def sprite(images):
    """The images in a square grid (row-major, as the Projector reads it) and the side of one cell."""
    n, height, width = images.shape[:3]
    grid = int(np.ceil(np.sqrt(n)))
    side = max(height, width)
    step = int(np.ceil(side * grid / MAX_SPRITE_PIXELS))  # keep every `step`-th pixel if the sheet is too big
    images = images[:, ::step, ::step]
    cell = int(np.ceil(side / step))
    sheet = np.zeros((grid * cell, grid * cell) + images.shape[3:], dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, grid)
        sheet[r * cell : r * cell + image.shape[0], c * cell : c * cell + image.shape[1]] = image
    return sheet, cell


def write_projector(run_dir, embeddings, labels=None, images=None):
    """Writes the Projector files for `{series: [N, D]}` (see the module docstring); returns the config path."""
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    assets = os.path.join(run_dir, ASSET_DIR)
    os.makedirs(assets, exist_ok=True)
    n = len(next(iter(embeddings.values())))
    if labels is not None:
        _write_tsv(
            os.path.join(assets, "metadata.tsv"),
            [("example", "label")] + [(str(i), str(y)) for i, y in enumerate(np.ravel(labels)[:n])],
        )
    else:
        _write_tsv(os.path.join(assets, "metadata.tsv"), [(str(i),) for i in range(n)])
    grid = as_images(images) if images is not None else None
    cell = None
    if grid is not None:
        sheet, cell = sprite(grid[:n])
        _png(os.path.join(assets, "sprite.png"), sheet)
    config_path = os.path.join(run_dir, CONFIG_NAME)
    config = ProjectorConfig()
    if os.path.exists(config_path):
        with open(config_path) as f:
            text_format.Parse(f.read(), config)
        keep = [e for e in config.embeddings if not e.tensor_path.startswith(ASSET_DIR + "/")]
        del config.embeddings[:]
        config.embeddings.extend(keep)
    for series, values in embeddings.items():
        name = _file_name(series)
        _write_tsv(os.path.join(assets, name), ([f"{v:.6g}" for v in row] for row in np.asarray(values)))
        entry = config.embeddings.add(
            tensor_name=series, tensor_path=f"{ASSET_DIR}/{name}", metadata_path=f"{ASSET_DIR}/metadata.tsv"
        )
        entry.tensor_shape.extend(np.shape(values))
        if cell is not None:
            entry.sprite.image_path = f"{ASSET_DIR}/sprite.png"
            entry.sprite.single_image_dim.extend([cell, cell])
    with open(config_path, "w") as f:
        f.write(text_format.MessageToString(config))
    return config_path
