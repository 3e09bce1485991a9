"""The native statistics kernel: every partial of an activation from one pass over it.

`tfprobe/kernels/partials.cc` computes what `stats.partials_of_rows` (and,
on histogram steps, `stats.histogram` of the sampled rows) computes, reading
each value once on TensorFlow's CPU thread pool instead of once per
statistic. It is compiled with the machine's C++ compiler (`$CXX`, `g++`,
`c++` or `clang++`) against the installed TensorFlow the first time a step
needs it, and cached in `$TFPROBE_CACHE_DIR` (default `~/.cache/tfprobe`)
under a key of the source, TensorFlow's version and flags, and the CPU.
`python -m tfprobe.native` builds it ahead of time.

The graph ops stay the reference and the fallback: `LayerProbe(kernel="auto")`
uses the kernel where it can run (a step that is not XLA-compiled, no GPU)
and the graph ops elsewhere or if the kernel cannot be built.

>>> import tensorflow as tf
>>> sums, maxes, hist = partials(tf.constant([[0.0, 1.0], [2.0, -3.0]]), False, units=2, near_zero=1e-3)
>>> maxes.numpy().tolist()  # max, -min, then max|x| of each unit
[2.0, 3.0, 2.0, 3.0]
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfprobe import metadata, stats

logger = logging.getLogger("tfprobe")

SOURCE = Path(__file__).parent / "kernels" / "partials.cc"
OP_NAME = "TfprobePartials"
KERNELS = ("auto", "native", "graph")

_lock = threading.Lock()
_loaded = {}  # "module" or "error" (the reason it is unavailable, kept for the process)


class NativeUnavailable(RuntimeError):
    """The kernel cannot be built or loaded here; the message says why."""


def cache_dir() -> Path:
    base = os.environ.get("TFPROBE_CACHE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tfprobe"


def _compiler():
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu():
    """What `-march=native` depends on: the CPU's model and flags."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags", "Features"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _command(cxx, source, output, native_arch):
    compile_flags = [f for f in tf.sysconfig.get_compile_flags() if not f.startswith("--std")]
    arch = ["-march=native"] if native_arch else []
    return [cxx, "-std=c++17", "-shared", "-fPIC", "-O3", *arch, *compile_flags, str(source), "-o", str(output)] + list(
        tf.sysconfig.get_link_flags()
    )


def library_path() -> Path:
    """Where the built kernel for this source, TensorFlow and CPU is (or will be) cached."""
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), tf.__version__.encode(), repr(tf.sysconfig.get_compile_flags()).encode(), _cpu().encode()):
        key.update(part)
    return cache_dir() / f"partials-{key.hexdigest()[:16]}.so"


def build(path=None) -> Path:
    """Compiles the kernel to `path` (default `library_path()`); raises `NativeUnavailable` with the reason."""
    path = Path(path or library_path())
    cxx = _compiler()
    if cxx is None:
        raise NativeUnavailable("no C++ compiler found ($CXX, g++, c++ or clang++)")
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    error = ""
    for native_arch in (True, False):
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".so", delete=False) as tmp:
            pass
        try:
            done = subprocess.run(
                _command(cxx, SOURCE, tmp.name, native_arch), capture_output=True, text=True, timeout=900
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            os.unlink(tmp.name)
            raise NativeUnavailable(f"{cxx} failed to run: {e}") from e
        if done.returncode == 0:
            os.replace(tmp.name, path)  # atomic: a concurrent build or load sees the old file or the new one
            logger.info("tfprobe: built %s in %.1f s", path, time.perf_counter() - started)
            return path
        os.unlink(tmp.name)
        error = done.stderr.strip()[-2000:]
    raise NativeUnavailable(f"{cxx} could not compile {SOURCE.name}:\n{error}")


def load():
    """The loaded op library, building it first if needed; raises `NativeUnavailable` (the same reason every time)."""
    with _lock:
        if "module" in _loaded:
            return _loaded["module"]
        if "error" in _loaded:
            raise NativeUnavailable(_loaded["error"])
        try:
            path = library_path()
            if not path.exists():
                logger.warning("tfprobe: compiling its statistics kernel (once per machine and TensorFlow version)")
                build(path)
            module = tf.load_op_library(str(path))
            tf.no_gradient(OP_NAME)
        except NativeUnavailable as e:
            _loaded["error"] = str(e)
            raise
        except Exception as e:  # noqa: BLE001 - a broken cache or ABI: say so, fall back
            _loaded["error"] = f"{type(e).__name__}: {e}"
            raise NativeUnavailable(_loaded["error"]) from e
        _loaded["module"] = module
        return module


def available() -> bool:
    try:
        load()
        return True
    except NativeUnavailable:
        return False


def choose(kernel, *, jit_compile) -> bool:
    """Whether a step uses the native kernel for `LayerProbe(kernel=...)`; raises if `"native"` cannot run.

    The kernel runs on the CPU only, outside XLA: with `jit_compile=True`
    or a visible GPU, `"auto"` takes the graph ops.
    """
    if kernel == "graph":
        return False
    if jit_compile:
        if kernel == "native":
            raise ValueError(
                "kernel='native' cannot run inside an XLA-compiled step; compile the model with jit_compile=False "
                "or use kernel='auto'. Received: kernel='native' with jit_compile=True"
            )
        return False
    if kernel == "auto" and tf.config.list_logical_devices("GPU"):
        return False  # the activations live on the GPU; a CPU kernel would copy them to the host
    try:
        load()
    except NativeUnavailable as e:
        if kernel == "native":
            raise RuntimeError(f"tfprobe's native kernel is not available: {e}") from e
        if not _loaded.get("warned"):
            _loaded["warned"] = True
            logger.warning("tfprobe: using the graph statistics ops (slower): %s", str(e).splitlines()[0])
        return False
    return True


_HIST = {
    "hist_min_exp": metadata.HIST_MIN_EXP,
    "hist_max_exp": metadata.HIST_MAX_EXP,
    "hist_zero_bucket": metadata.HIST_ZERO_BUCKET,
    "num_buckets": metadata.NUM_BUCKETS,
}


def partials(x2d, with_histogram, *, units=None, near_zero, bounds=None, saturation_margin=0.01, sample_size=None, stats_=True):
    """`(sums, maxes, histogram)` of `x2d = stats.as_rows(x)`, as `stats.partials_of_rows` and `stats.histogram` define them.

    `with_histogram` (a bool or boolean tensor) turns the histogram of the
    sampled rows on; without it the histogram output is zeros. `stats_=False`
    computes the histogram only (sums zero, maxes -inf).
    """
    bounded = bounds is not None
    below = above = 0.0
    if bounded:
        low, high = bounds
        margin = saturation_margin * (high - low)
        # Rounded to float32 once, as the graph ops compare float32 values with them.
        below, above = float(np.float32(low + margin)), float(np.float32(high - margin))
    return load().tfprobe_partials(
        x=x2d,
        with_histogram=tf.convert_to_tensor(with_histogram, tf.bool),
        fields=list(stats.SUM_FIELDS),
        units=units or 0,
        sample_rows=-1 if sample_size is None else int(sample_size),
        near_zero=float(near_zero),
        bounded=bounded,
        saturated_below=below,
        saturated_above=above,
        stats=stats_,
        **_HIST,
    )


class NativeKernel(stats.GraphKernel):
    """`stats.GraphKernel`'s methods on the native kernel; `partials` counts the histogram in the same pass."""

    name = "native"
    fuses_histogram = True

    def partials(self, x2d, units, bounds, with_histogram):
        return partials(
            x2d,
            with_histogram,
            units=units,
            near_zero=self.near_zero,
            bounds=bounds,
            saturation_margin=self.saturation_margin,
            sample_size=self.sample_size,
        )

    def histogram(self, x2d):
        return partials(x2d, True, near_zero=self.near_zero, sample_size=self.sample_size, stats_=False)[2]

    def input_sums(self, x2d):
        sums, _, _ = partials(x2d, False, near_zero=self.near_zero, sample_size=self.sample_size)
        return stats.as_input_sums(sums)


def main():
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    path = library_path()
    if not path.exists():
        build(path)
    load()
    print(f"tfprobe native kernel: {path} (ready in {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
