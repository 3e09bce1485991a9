"""Argument checks of `LayerProbe`, kept apart from its behaviour (as Keras keeps its own).

Each check returns the normalised value or raises with a message that names
the argument and echoes the value, Keras-style.

>>> frequency("log_freq", 100)
100
>>> frequency("log_freq", 0)
Traceback (most recent call last):
...
ValueError: `log_freq` must be a positive integer below 2**62. Received: log_freq=0
"""

from __future__ import annotations

import numbers
import os

from tfprobe.logs import _fs

MAX_FREQ = 2**62  # step counters are int64 in the graph


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def frequency(name, value, allow_zero=False):
    """A step frequency: a positive integer (or 0 with `allow_zero`), small enough for int64 step arithmetic."""
    if not _is_int(value) or not (0 if allow_zero else 1) <= value < MAX_FREQ:
        need = "a non-negative integer (0 turns it off)" if allow_zero else "a positive integer"
        raise ValueError(f"`{name}` must be {need} below 2**62. Received: {name}={value!r}")
    return int(value)


def number(name, value, low, high=None, high_open=True):
    """A real number (not a bool) in `[low, high)` (`[low, high]` with `high_open=False`; no upper bound for None)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        where = f"a number >= {low}" if high is None else f"a number in [{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"`{name}` must be {where}. Received: {name}={value!r}")
    return float(value)


def integer(name, value, low, high, what=""):
    """An integer (not a bool) in `[low, high]`.

    >>> integer("looks_examples", 1000, 0, 100, " (0 turns it off)")
    Traceback (most recent call last):
    ...
    ValueError: `looks_examples` must be an integer in [0, 100] (0 turns it off). Received: looks_examples=1000
    """
    if not _is_int(value) or not low <= value <= high:
        raise ValueError(f"`{name}` must be an integer in [{low}, {high}]{what}. Received: {name}={value!r}")
    return int(value)


def optional_positive_int(name, value):
    if value is not None and (not _is_int(value) or value < 1):
        raise ValueError(f"`{name}` must be None or a positive integer. Received: {name}={value!r}")
    return None if value is None else int(value)


def boolean(name, value):
    """A real bool (`'false'` is not False)."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return value


def choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(map(repr, choices))}. Received: {name}={value!r}")
    return value


LOOKS_INPUT_KINDS = ("auto", "image", "spectrogram", "waveform")
"""How the Looks draw inputs (`LooksAnalysis(input_kind=...)`, `LayerProbe(looks_input_kind=...)`)."""


def looks_input_kind(value, name="looks_input_kind"):
    """How the Looks draw inputs: one of `LOOKS_INPUT_KINDS` (the check of `LayerProbe` and `LooksAnalysis`).

    >>> looks_input_kind("spectrogram")
    'spectrogram'
    >>> looks_input_kind("audio")
    Traceback (most recent call last):
    ...
    ValueError: `looks_input_kind` must be one of 'auto', 'image', 'spectrogram', 'waveform'. Received: looks_input_kind='audio'
    """
    return choice(name, value, LOOKS_INPUT_KINDS)


def log_dir(value):
    """A path of a directory that exists or can be created and written; a URL (`gs://...`) is taken as is."""
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise TypeError(f"`log_dir` must be a non-empty path. Received: log_dir={value!r}")
    if _fs.is_remote(value):  # written through tf.io.gfile; checked when the event file is created
        return _fs.check_url(os.fspath(value), "log_dir")
    path = os.path.abspath(os.fspath(value))
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"`log_dir` is not a directory. Received: log_dir={value!r}")
    if not (os.path.isdir(probe) and os.access(probe, os.W_OK | os.X_OK)):
        raise ValueError(f"`log_dir` cannot be written ({probe} is not writable). Received: log_dir={value!r}")
    return os.fspath(value)


def layers(value):
    """None, or one or a list of layer names, classes, compiled regular expressions and predicates.

    Names are checked against the model when `fit` starts (the model is not known before); the kinds of
    entries here.

    >>> layers([3.5])
    Traceback (most recent call last):
    ...
    TypeError: Each entry of `layers` must be a layer name, a layer class, a compiled regular expression or a predicate. Received: layers=[3.5] (entry 3.5 of type float)
    """
    import re

    if value is None:
        return None
    items = value if isinstance(value, (list, tuple, set)) else [value]
    if not items:
        raise ValueError(f"`layers` must be None or name at least one layer. Received: layers={value!r}")
    for item in items:
        if not (isinstance(item, (str, type, re.Pattern)) or callable(item)) or isinstance(item, str) and not item:
            raise TypeError(
                "Each entry of `layers` must be a layer name, a layer class, a compiled regular "
                f"expression or a predicate. Received: layers={value!r} (entry {item!r} of type "
                f"{type(item).__name__})"
            )
    return value


def reference_data(value):
    """None, or anything `tfprobe.reference.ReferenceData` takes (its errors name `reference_data`)."""
    if value is None:
        return None
    from tfprobe.reference import ReferenceData

    return value if isinstance(value, ReferenceData) else ReferenceData(value)


def reference_embeddings(value, reference):
    """None, or a layer name or list of them; needs `reference_data`."""
    if value is None:
        return ()
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(
            f"`reference_embeddings` must be None, a layer name or a list of layer names. "
            f"Received: reference_embeddings={value!r}"
        )
    if reference is None:
        raise ValueError(
            f"`reference_embeddings` needs `reference_data` (the examples to embed). "
            f"Received: reference_embeddings={value!r} and reference_data=None"
        )
    return tuple(names)
