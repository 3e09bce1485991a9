"""Files for the writer and readers: local paths with `os`, paths with a scheme (`gs://`, `s3://`,
`ram://`, ...) with TensorFlow's `tf.io.gfile`, imported only for those.

>>> is_remote("gs://bucket/logs"), is_remote("logs/run1"), is_remote("C:/logs")
(True, False, False)
"""

from __future__ import annotations

import os
import posixpath
import re

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
_TF_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9.]*$")  # what TensorFlow's `ParseURI` takes for a scheme
PLUGIN_SCHEMES = ("s3", "hdfs", "viewfs", "har", "az", "oss", "http", "https")
"""Schemes of TensorFlow file-system plugins (`tensorflow-io`): accepted when not registered yet, they
fail when the file is opened (and `LayerProbe` then detaches with one warning)."""


def is_remote(path: str) -> bool:
    """True for a path with a URL scheme, read and written through `tf.io.gfile`."""
    return bool(_SCHEME.match(os.fspath(path)))


def check_url(path, name="logdir"):
    """`path` if it is local or has a scheme TensorFlow can open; a clear `ValueError` naming `name` else.

    TensorFlow takes a scheme with other characters than letters, digits and `.` for part of a *local*
    path: `my-store://bucket/run` would be written to a local folder `my-store:`. Such schemes, and ones
    that no file system registered with TensorFlow (`tf.io.gfile.get_registered_schemes()`) nor a known
    plugin (`PLUGIN_SCHEMES`) handles, are refused.
    """
    match = _SCHEME.match(os.fspath(path))
    if not match:
        return path
    scheme = match.group(1)
    known = tuple(s for s in _registered_schemes() if s) + PLUGIN_SCHEMES
    if not _TF_SCHEME.match(scheme) or scheme.lower() not in known:
        why = (
            "no file system registered with TensorFlow handles it"
            if _TF_SCHEME.match(scheme)
            else f"TensorFlow would take {scheme + '://'!r} for part of a local path"
        )
        raise ValueError(
            f"`{name}` uses the URL scheme {scheme!r}, which TensorFlow cannot open ({why}); use one of "
            f"{', '.join(known)} or a local path. Received: {name}={os.fspath(path)!r}"
        )
    return path


def _registered_schemes():
    try:
        return _gfile().get_registered_schemes()
    except Exception:  # noqa: BLE001 - an older TensorFlow: the schemes it always has
        return ("file", "gs", "ram")


def open_errors():
    """The exceptions opening or writing any log dir can raise (TensorFlow's only if it is imported)."""
    import sys

    tf = sys.modules.get("tensorflow")
    errors = getattr(tf, "errors", None)
    return (OSError, errors.OpError) if errors is not None else (OSError,)


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def read_errors(path):
    """The exceptions raised for a file that is missing or cannot be read."""
    if is_remote(path):
        import tensorflow as tf

        return (OSError, tf.errors.OpError)
    return (OSError,)


def join(path, *names):
    return posixpath.join(path, *names) if is_remote(path) else os.path.join(path, *names)


def makedirs(path):
    if is_remote(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def open_file(path, mode):
    """A binary file object: `open` locally, `tf.io.gfile.GFile` for remote paths."""
    return _gfile().GFile(path, mode) if is_remote(path) else open(path, mode)


def exists(path):
    return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def isdir(path):
    return _gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def size(path):
    return _gfile().stat(path).length if is_remote(path) else os.path.getsize(path)


def walk(root):
    """Yields `(run, [file names])` for every directory under `root`, sorted, `run` relative with `/`.

    Local directories are walked without following symbolic links (a link loop
    does not invent runs); remote ones with `tf.io.gfile.walk`.
    """
    if is_remote(root):
        for dirpath, _, filenames in _gfile().walk(root):
            rel = dirpath[len(root) :].strip("/") if dirpath.startswith(root) else dirpath
            yield rel or ".", dirpath, sorted(filenames)
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        names = [n for n in sorted(filenames) if os.path.isfile(os.path.join(dirpath, n))]
        yield os.path.relpath(dirpath, root).replace(os.sep, "/"), dirpath, names
