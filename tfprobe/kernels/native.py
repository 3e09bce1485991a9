"""The native statistics kernel: every partial of an activation from one pass over it.

`tfprobe/kernels/partials.cc` computes what `graph.sums_and_maxes` (and,
on histogram steps, `graph.histogram` of the sampled rows) computes, reading
each value once on TensorFlow's CPU thread pool instead of once per
statistic. It is compiled with the machine's C++ compiler (`$CXX`, `g++`,
`c++` or `clang++`) against the installed TensorFlow the first time a step
needs it, and cached in `$TFPROBE_CACHE_DIR` (default `~/.cache/tfprobe`) under
`cache_key`: the source, TensorFlow's version and ABI flags, the compiler's
version and the CPU (not the install location: environments with the same
TensorFlow share a build). Concurrent processes build it once (a lock file);
a failed build is recorded (`*.failed.json`) and later processes fall back
at once with its reason until the key changes.
`python -m tfprobe.kernels.native` builds it ahead of time.

The graph ops stay the reference and the fallback: `LayerProbe(kernel="auto")`
uses the kernel where it can run (a step that is not XLA-compiled, no GPU)
and the graph ops elsewhere or if the kernel cannot be built.

>>> import tensorflow as tf
>>> sums, maxes, hist = run_op(tf.constant([[0.0, 1.0], [2.0, -3.0]]), False, units=2, near_zero=1e-3)
>>> maxes.numpy().tolist()  # max, -min, then max|x| of each unit
[2.0, 3.0, 2.0, 3.0]
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: builds are not locked across processes
    fcntl = None

import tensorflow as tf

from tfprobe import metadata
from tfprobe.kernels import graph, stats

logger = logging.getLogger("tfprobe")

SOURCE = Path(__file__).parent / "partials.cc"
OP_NAME = "TfprobePartials"

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


@functools.cache
def _compiler_version(cxx) -> str:
    """The first line of `cxx --version` (the compiler's identity and version), or why it could not be read."""
    try:
        done = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({type(e).__name__})"
    return (done.stdout.strip().splitlines() or ["unknown"])[0]


def _cpu():
    """What `-march=native` depends on: the CPU's model and flags."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags", "Features"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


# -Wall -Wextra for tfprobe's source; TensorFlow's headers are system headers (-isystem), their warnings are not ours.
FLAGS = ("-std=c++17", "-shared", "-fPIC", "-O3", "-Wall", "-Wextra")


def _abi_flags():
    """TensorFlow's compile flags that shape the binary (macros such as the C++ ABI): all but include paths."""
    return [f for f in tf.sysconfig.get_compile_flags() if not f.startswith(("-I", "--std"))]


@functools.cache
def _native_arch_flags(cxx) -> tuple:
    """`-march=native`, without AVX512-FP16 where the compiler can say so: TensorFlow's Eigen headers do not
    compile with it (g++ 12 on a Sapphire Rapids CPU), and the kernel has no half-precision vectors."""
    probe = subprocess.run(
        [cxx, "-mno-avx512fp16", "-x", "c++", "-fsyntax-only", "-"],
        input="",
        text=True,
        capture_output=True,
        timeout=60,
    )
    return ("-march=native", "-mno-avx512fp16") if probe.returncode == 0 else ("-march=native",)


def _command(cxx, source, output, native_arch):
    includes = [f"-isystem{f[2:]}" for f in tf.sysconfig.get_compile_flags() if f.startswith("-I")]
    arch = list(_native_arch_flags(cxx)) if native_arch else []
    return [
        cxx,
        *FLAGS,
        *arch,
        *includes,
        *_abi_flags(),
        str(source),
        "-o",
        str(output),
        *tf.sysconfig.get_link_flags(),
    ]


def cache_key(cxx) -> str:
    """What a built kernel depends on: its source and build flags, TensorFlow's version and ABI, the compiler, the CPU.

    Not where TensorFlow is installed: every environment with the same
    TensorFlow, compiler and CPU shares one build.
    """
    key = hashlib.sha256()
    for part in (
        SOURCE.read_bytes(),
        tf.__version__,
        _abi_flags(),
        FLAGS,
        _native_arch_flags(cxx),
        _compiler_version(cxx),
        _cpu(),
    ):
        key.update(repr(part).encode() if not isinstance(part, bytes) else part)
        key.update(b"\0")
    return key.hexdigest()[:16]


def library_path(cxx=None) -> Path:
    """Where the kernel built by `cxx` (default: the compiler found) for this TensorFlow and CPU is cached."""
    cxx = cxx or _compiler()
    if cxx is None:
        raise NativeUnavailable("no C++ compiler found ($CXX, g++, c++ or clang++)")
    return cache_dir() / f"partials-{cache_key(cxx)}.so"


def _failure_path(path):
    return path.with_suffix(".failed.json")


BUILD_TIMEOUT = 300  # s per compiler run: the build takes 15-60 s; far longer means stuck, so fall back instead


def build(path=None, cxx=None) -> Path:
    """Compiles the kernel to `path` (default `library_path()`); raises `NativeUnavailable` with the reason.

    A failed compilation is recorded next to `path` (`*.failed.json`) and
    `load` reports it without compiling again until the key changes.
    """
    cxx = cxx or _compiler()
    if cxx is None:
        raise NativeUnavailable("no C++ compiler found ($CXX, g++, c++ or clang++)")
    path = Path(path or library_path(cxx))
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    error = ""
    for native_arch in (True, False):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp.so")
        os.close(fd)
        try:
            done = subprocess.run(
                _command(cxx, SOURCE, tmp, native_arch), capture_output=True, text=True, timeout=BUILD_TIMEOUT
            )
            if done.returncode == 0:
                os.replace(tmp, path)  # atomic: a concurrent load sees no file or the whole one
                logger.info("tfprobe: built %s in %.1f s", path, time.perf_counter() - started)
                return path
            error = done.stderr.strip()[-2000:]
        except (OSError, subprocess.TimeoutExpired) as e:
            raise NativeUnavailable(f"{cxx} failed to run: {e}") from e
        finally:  # also on KeyboardInterrupt
            if os.path.exists(tmp):
                os.unlink(tmp)
    reason = f"{cxx} could not compile {SOURCE.name}:\n{error}"
    _write_json(
        _failure_path(path), {"reason": reason, "compiler": _compiler_version(cxx), "tensorflow": tf.__version__}
    )
    raise NativeUnavailable(reason)


def _write_json(path, value):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(value, f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _recorded_failure(path):
    """The reason of an earlier failed build of `path`, or None."""
    try:
        reason = json.loads(_failure_path(path).read_text())["reason"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return f"{reason}\n(recorded in {_failure_path(path)}: delete it to build again)"


@contextlib.contextmanager
def _build_lock(path, timeout):
    """Holds an exclusive lock on `path`'s lock file: one process builds, the others wait for its result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as f:
        deadline = time.monotonic() + timeout
        while fcntl is not None:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise NativeUnavailable(f"another process has been building {path} for over {timeout} s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_UN)


def ensure_built(cxx=None) -> Path:
    """The path of the built kernel: cached, built by another process meanwhile, or built now; raises `NativeUnavailable`."""
    cxx = cxx or _compiler()
    path = library_path(cxx)
    if not path.exists():
        with _build_lock(path, timeout=2 * BUILD_TIMEOUT + 60):
            failure = _recorded_failure(path)
            if failure:
                raise NativeUnavailable(failure)
            if not path.exists():  # else another process built it while this one waited
                logger.warning("tfprobe: compiling its statistics kernel (once per machine and TensorFlow version)")
                build(path, cxx)
    return path


def _load_or_build():
    module = tf.load_op_library(str(ensure_built()))
    tf.no_gradient(OP_NAME)
    return module


def load():
    """The loaded op library, building it first if needed; raises `NativeUnavailable` (the same reason every time)."""
    with _lock:
        if "module" in _loaded:
            return _loaded["module"]
        if "error" in _loaded:
            raise NativeUnavailable(_loaded["error"])
        try:
            module = _load_or_build()
        except NativeUnavailable as e:
            _loaded["error"] = str(e)
            raise
        except Exception as e:
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


def run_op(
    x,
    with_histogram,
    *,
    units=None,
    near_zero,
    bounds=None,
    saturation_margin=0.01,
    sample_size=None,
    stats_=True,
    with_stats=True,
    gradient=False,
):
    """The op's `(sums, maxes, histogram)` tensors for a float32 `x` of any rank (rows on its first axis, as
    `graph.as_rows(x)`), as `graph.sums_and_maxes` and `graph.histogram` define them.

    `bounds` as in `graph.partials` (`(None, high)`: one-sided).
    `with_histogram` (a bool or boolean tensor) turns the histogram of the
    sampled rows on; without it the histogram output is zeros. `stats_=False`
    computes the histogram only (sums zero, maxes -inf); `with_stats` (a bool
    or boolean tensor) does the same when false, decided when the op runs.
    `gradient=True` computes only what gradient statistics read, as
    `graph.gradient_partials` defines it (no `units` nor `bounds`).
    """
    below, above = (0.0, 0.0) if bounds is None else stats.saturation_thresholds(bounds, saturation_margin)
    return load().tfprobe_partials(
        x=x,
        with_histogram=tf.convert_to_tensor(with_histogram, tf.bool),
        with_stats=tf.convert_to_tensor(with_stats, tf.bool),
        fields=list(stats.SUM_FIELDS),
        units=units or 0,
        sample_rows=-1 if sample_size is None else int(sample_size),
        near_zero=float(near_zero),
        bounded=bounds is not None,
        saturated_below=below,
        saturated_above=above,
        stats=stats_,
        gradient=gradient,
        **_HIST,
    )


class NativeKernel(graph.GraphKernel):
    """`graph.GraphKernel`'s methods on the native kernel; `partials` counts the histogram in the same pass."""

    name = "native"
    fuses_histogram = True

    def rows(self, x):
        # The op takes any rank and has no gradient (`tf.no_gradient`): no reshape, no stop_gradient per series.
        return tf.cast(x, tf.float32)

    def partials(self, x2d, units, bounds, with_histogram, with_stats=True):
        return run_op(
            x2d,
            with_histogram,
            with_stats=with_stats,
            units=units,
            near_zero=self.near_zero,
            bounds=bounds,
            saturation_margin=self.saturation_margin,
            sample_size=self.sample_size,
        )

    def gradient_partials(self, x2d, with_histogram, with_stats=True):
        return run_op(
            x2d,
            with_histogram,
            with_stats=with_stats,
            near_zero=self.near_zero,
            sample_size=self.sample_size,
            gradient=True,
        )

    def histogram(self, x2d):
        return run_op(x2d, True, near_zero=self.near_zero, sample_size=self.sample_size, stats_=False)[2]

    def input_sums(self, x2d, with_stats=True):
        sums, _, _ = run_op(x2d, False, near_zero=self.near_zero, sample_size=self.sample_size, with_stats=with_stats)
        return stats.as_input_sums(sums)


def main() -> int:
    """`python -m tfprobe.kernels.native`: builds (or finds) the kernel; exit status 1 with the reason if it cannot."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    try:
        load()
    except NativeUnavailable as e:
        print(f"tfprobe native kernel unavailable: {e}")
        return 1
    print(f"tfprobe native kernel: {library_path()} (ready in {time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
