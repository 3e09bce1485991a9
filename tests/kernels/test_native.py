"""The native kernel computes exactly what the graph ops compute; `kernel=` chooses, falls back and refuses clearly."""

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers.data import CNN_BATCH as BATCH
from helpers.data import OFFSET_FIRST, activation_cases, cnn_data, offset_activation
from helpers.models import frozen_cnn
from helpers.oracle import assert_float64_accurate

import tfprobe
from tfprobe import metadata
from tfprobe.kernels import graph, native, stats

pytestmark = pytest.mark.native  # the whole module (skipped without a C++ compiler: tests/conftest.py)

NEAR = 1e-3
CASES, _ = activation_cases()
rng = np.random.default_rng(7)

# Tests of what the kernel computes need a C++ compiler; without one they are skipped (the fallback is tested below).
needs_compiler = pytest.mark.skipif(native._compiler() is None, reason="no C++ compiler ($CXX, g++, c++ or clang++)")


def _nan_outside_sample():
    x = rng.normal(size=(8, 4, 8)).astype(np.float32)
    x[6, 1, 3], x[7, 0, 0] = np.nan, -np.inf
    return x


EXTRA = {
    # 16 units: the pass that folds the per-unit maxima in (units a multiple of the vector width)
    "relu_16_units": np.maximum(rng.normal(size=(12, 3, 5, 16)), 0).astype(np.float32),
    "nan_in_16_units": np.where(rng.random((6, 7, 16)) < 0.02, np.nan, rng.normal(size=(6, 7, 16))).astype(np.float32),
    # rows longer than the kernel's float chunk (4096) and not a multiple of the vector width
    "long_rows": rng.normal(size=(3, 9001)).astype(np.float32),
    "nan_outside_sample": _nan_outside_sample(),
    "tiny": (rng.normal(size=(4, 40)) * 1e-20).astype(np.float32),
    "huge": (rng.normal(size=(4, 40)) * 1e30).astype(np.float32),
}
ALL = {**CASES, **EXTRA}


def _graph(x2d, units, bounds, sample):
    sums, maxes = graph.sums_and_maxes(
        x2d,
        graph.by_unit(x2d, units),
        units is not None,
        near_zero=NEAR,
        bounds=bounds,
        saturation_margin=0.01,
        sample_size=sample,
    )
    return sums.numpy(), maxes.numpy(), graph.histogram(graph.leading(x2d, sample)).numpy()


@needs_compiler
@pytest.mark.parametrize("sample", [None, 3])
@pytest.mark.parametrize("bounds", [None, (-1.0, 1.0), (None, 1.0)], ids=["unbounded", "two_sided", "one_sided"])
@pytest.mark.parametrize("name", sorted(ALL))
def test_kernel_equals_graph_ops(name, bounds, sample):
    x = tf.constant(ALL[name])
    x2d, units = graph.as_rows(x), stats.num_units(x)
    want_sums, want_maxes, want_hist = _graph(x2d, units, bounds, sample)
    sums, maxes, hist = (
        t.numpy()
        for t in native.run_op(
            x2d, True, units=units, near_zero=NEAR, bounds=bounds, saturation_margin=0.01, sample_size=sample
        )
    )
    # Sums are added in another order (float32 lanes into float64); counts, maxima and histograms are exact.
    # Hoyer sparsity near 0 cancels sqrt(m) against L1/L2: allow 1e-6 per example there (for large_offset,
    # the float64 truth is 1.816e-5, the kernel gives 1.803e-5 and the graph ops 1.775e-5).
    hoyer = stats.S["hoyer_sum"]
    np.testing.assert_allclose(sums[hoyer], want_sums[hoyer], rtol=2e-6, atol=1e-6 * want_sums[stats.S["hoyer_n"]])
    sums[hoyer] = want_sums[hoyer]
    # A sum of values of both signs cancels: its rounding error is relative to the sum of |x|.
    atol = np.zeros_like(sums)
    atol[stats.S["sum"]] = 1e-6 * want_sums[stats.S["sum_abs"]]
    with np.errstate(invalid="ignore"):  # equal infinities (huge: x**2 overflows) are equal, not NaN apart
        error = np.where(sums == want_sums, 0.0, np.abs(sums - want_sums))
    assert np.all(error <= atol + 2e-6 * np.abs(want_sums)), (sums, want_sums)
    counts = [stats.S[k] for k in ("steps", "count", "finite", "zeros", "near", "nan", "inf", "hoyer_n", "saturated")]
    np.testing.assert_array_equal(sums[counts], want_sums[counts])
    np.testing.assert_array_equal(maxes, want_maxes)
    np.testing.assert_array_equal(hist, want_hist)


@needs_compiler
@pytest.mark.parametrize("first", OFFSET_FIRST.values(), ids=OFFSET_FIRST.keys())
def test_large_offset_activation_matches_float64(first):
    x = offset_activation(first)
    sums, maxes, _ = native.run_op(graph.as_rows(tf.constant(x)), False, units=x.shape[-1], near_zero=NEAR)
    assert_float64_accurate(sums.numpy(), maxes.numpy(), x)


@needs_compiler
def test_histogram_off_and_histogram_only():
    x2d = graph.as_rows(tf.constant(CASES["normal"]))
    sums, _, hist = native.run_op(x2d, tf.constant(False), units=3, near_zero=NEAR)
    assert not hist.numpy().any() and sums.numpy()[stats.S["count"]] == x2d.shape.num_elements()
    sums, maxes, hist = native.run_op(x2d, True, units=3, near_zero=NEAR, sample_size=2, stats_=False)
    assert not sums.numpy().any() and np.all(maxes.numpy() == -np.inf)
    np.testing.assert_array_equal(hist.numpy(), graph.histogram(x2d[:2]).numpy())
    assert hist.shape == (metadata.NUM_BUCKETS,)


def _histogram_rows():
    """Rows that take every path of the kernel's histogram counting (its window of 16 octaves, partial blocks)."""
    n = 9001  # more than one block of 255 vectors, not a multiple of the vector width
    wide = (rng.normal(size=n) * 2.0 ** rng.integers(-60, 60, size=n)).astype(np.float32)  # most outside the window
    wide[:50] = [0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 1e-45, -1e-42, 3e38, -3e38] * 5  # subnormals, extremes
    two_scales = np.concatenate([rng.normal(size=4500) * 1e-30, rng.normal(size=n - 4500) * 1e10]).astype(np.float32)
    late_zeros = np.concatenate([np.zeros(3000), rng.normal(size=n - 3000) * 1e-3]).astype(np.float32)
    relu = np.maximum(rng.normal(size=n), 0).astype(np.float32)
    return np.stack([wide, two_scales, late_zeros, relu, -relu, wide[::-1].copy()])


@needs_compiler
@pytest.mark.parametrize("stats_", [True, False])
def test_histogram_counts_every_value_in_its_bucket(stats_):
    """Counted in vector lanes within a window of octaves and one at a time outside it: equal to the graph's counts."""
    x2d = tf.constant(_histogram_rows())
    _, _, hist = native.run_op(x2d, True, near_zero=NEAR, stats_=stats_, gradient=stats_)
    want = graph.histogram(x2d).numpy()
    np.testing.assert_array_equal(hist.numpy(), want)
    assert want.sum() == x2d.shape.num_elements() - 20  # all but the NaNs
    for row in _histogram_rows():
        np.testing.assert_array_equal(
            native.run_op(tf.constant(row[None]), True, near_zero=NEAR)[2].numpy(),
            graph.histogram(tf.constant(row[None])).numpy(),
        )


@needs_compiler
@pytest.mark.parametrize("name", ["scalar", "vector", "images_4d", "nan_in_16_units"])
def test_any_rank_reads_as_rows(name):
    x = {
        "scalar": np.float32(-2.5),
        "vector": rng.normal(size=7).astype(np.float32),
        "images_4d": CASES["normal"].reshape(4, 2, -1, 3),
    }.get(name, ALL.get(name))
    x = tf.constant(x)
    units = stats.num_units(x)
    want = native.run_op(graph.as_rows(x), True, units=units, near_zero=NEAR, sample_size=2)
    got = native.run_op(x, True, units=units, near_zero=NEAR, sample_size=2)  # no reshape in the step
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.numpy(), w.numpy())


@needs_compiler
def test_statistics_off_at_run_time_count_only_the_histogram():
    x2d = graph.as_rows(tf.constant(CASES["normal"]))
    fn = tf.function(lambda x, on: native.run_op(x, True, units=3, near_zero=NEAR, with_stats=on))
    sums, maxes, hist = fn(x2d, tf.constant(False))
    assert not sums.numpy().any() and np.all(maxes.numpy() == -np.inf)
    np.testing.assert_array_equal(hist.numpy(), graph.histogram(x2d).numpy())
    on = fn(x2d, tf.constant(True))
    want = native.run_op(x2d, True, units=3, near_zero=NEAR)
    for g, w in zip(on, want):
        np.testing.assert_array_equal(g.numpy(), w.numpy())


@needs_compiler
def test_no_gradient_flows_through_the_kernel():
    x = tf.Variable(np.ones((2, 3), np.float32))
    with tf.GradientTape() as tape:
        sums, _, _ = native.run_op(x, False, near_zero=NEAR)
        loss = tf.reduce_sum(x) + tf.cast(sums[stats.S["sum"]], tf.float32)
    np.testing.assert_array_equal(tape.gradient(loss, x).numpy(), np.ones((2, 3)))


def _fit(tmp_path, name, weights=None, **kwargs):
    model = frozen_cnn()
    if weights is not None:
        model.set_weights(weights)
    x, y = cnn_data(8)
    probe = tfprobe.LayerProbe(tmp_path / name, record_freq=1, log_freq=4, histogram_freq=2, **kwargs)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[probe])
    return probe


@needs_compiler
def test_native_and_graph_kernels_log_the_same_windows(tmp_path):
    weights = frozen_cnn().get_weights()
    native_probe = _fit(tmp_path, "native", weights, kernel="native", sample_size=5, gradients=True)
    graph_probe = _fit(tmp_path, "graph", weights, kernel="graph", sample_size=5, gradients=True)
    assert native_probe._recorder.kernel.name == "native" and graph_probe._recorder.kernel.name == "graph"
    a = tfprobe.read_logdir(tmp_path / "native").drop(columns=["run", "wall_time"])
    b = tfprobe.read_logdir(tmp_path / "graph").drop(columns=["run", "wall_time"])
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a["value"], b["value"], rtol=1e-5, atol=1e-7)
    assert (a.drop(columns="value").values == b.drop(columns="value").values).all()
    assert "grad_rms" in set(a["stat"])
    ha = tfprobe.read_histograms(tmp_path / "native", quantity="all").drop(columns=["run", "wall_time"])
    hb = tfprobe.read_histograms(tmp_path / "graph", quantity="all").drop(columns=["run", "wall_time"])
    assert len(ha) > 0 and ha.equals(hb) and set(ha["quantity"]) == {"activation", "gradient"}


def test_auto_falls_back_to_graph_ops_without_a_compiler(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setattr(native, "_compiler", lambda: None)
    monkeypatch.setenv("TFPROBE_CACHE_DIR", str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="tfprobe"):
        probe = _fit(tmp_path, "auto")
    assert probe._recorder.kernel.name == "graph" and probe.windows_written == 2
    assert "no C++ compiler" in caplog.text
    assert len(tfprobe.read_logdir(tmp_path / "auto")) > 0
    with pytest.raises(RuntimeError, match="native kernel is not available: no C\\+\\+ compiler"):
        _fit(tmp_path, "native", kernel="native")


def _fake_compiler(tmp_path, name="cxx", version="fakecc 1.0", body=': > "$out"'):
    """A compiler script: `--version` prints `version`, a `-fsyntax-only` probe succeeds; a build adds a line to the returned log and runs `body` ($out: -o)."""
    script, log = tmp_path / name, tmp_path / f"{name}.log"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = --version ]; then echo "{version}"; exit 0; fi\n'
        'case " $* " in *" -fsyntax-only "*) exit 0;; esac\n'  # a flag probe (`native._native_arch_flags`), not a build
        f'echo build >> "{log}"\n'
        'out=""; prev=""; for a in "$@"; do [ "$prev" = -o ] && out="$a"; prev="$a"; done\n'
        f"{body}\n"
    )
    script.chmod(0o755)
    return str(script), log


def _builds(log):
    return log.read_text().count("build") if log.exists() else 0


def test_cache_key_ignores_where_tensorflow_is_installed(tmp_path, monkeypatch):
    cxx, _ = _fake_compiler(tmp_path)
    flags = tf.sysconfig.get_compile_flags()
    key = native.cache_key(cxx)
    elsewhere = [("-I/another/venv/site-packages/tensorflow/include" if f.startswith("-I") else f) for f in flags]
    monkeypatch.setattr(tf.sysconfig, "get_compile_flags", lambda: elsewhere)
    assert native.cache_key(cxx) == key
    monkeypatch.setattr(tf.sysconfig, "get_compile_flags", lambda: flags + ["-D_GLIBCXX_USE_CXX11_ABI=0"])
    assert native.cache_key(cxx) != key
    monkeypatch.undo()
    assert native.cache_key(_fake_compiler(tmp_path, "cxx2", version="fakecc 2.0")[0]) != key
    monkeypatch.setattr(tf, "__version__", "2.99.0")
    assert native.cache_key(cxx) != key


def test_concurrent_builds_compile_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TFPROBE_CACHE_DIR", str(tmp_path / "cache"))
    cxx, log = _fake_compiler(tmp_path, body='sleep 1; : > "$out"')
    paths, errors = [], []

    def build():
        try:
            paths.append(native.ensure_built(cxx))
        except Exception as e:  # noqa: BLE001 - reported by the assert below
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(3)]  # separate lock file handles: as separate processes
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and _builds(log) == 1
    assert len(paths) == 3 and len(set(paths)) == 1 and paths[0].exists()
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".lock", ".so"]  # no temporary files


def test_a_failed_build_is_recorded_until_the_key_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("TFPROBE_CACHE_DIR", str(tmp_path / "cache"))
    cxx, log = _fake_compiler(tmp_path, body="echo 'fatal: this compiler is broken' >&2; exit 1")
    with pytest.raises(native.NativeUnavailable, match="this compiler is broken"):
        native.ensure_built(cxx)
    assert _builds(log) == 2  # with and without -march=native
    with pytest.raises(native.NativeUnavailable, match="(?s)this compiler is broken.*recorded in .*failed.json"):
        native.ensure_built(cxx)
    assert _builds(log) == 2  # not compiled again
    (marker,) = (tmp_path / "cache").glob("*.failed.json")
    assert json.loads(marker.read_text())["compiler"] == "fakecc 1.0"
    assert list((tmp_path / "cache").glob("*.so")) == []
    fixed, fixed_log = _fake_compiler(tmp_path, "cxx_fixed", version="fakecc 1.1")  # another key
    assert native.ensure_built(fixed).exists() and _builds(fixed_log) == 1


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError])
def test_an_interrupted_build_leaves_no_files(tmp_path, monkeypatch, error):
    cxx, _ = _fake_compiler(tmp_path)

    def run(*args, **kwargs):
        raise error("interrupted")

    monkeypatch.setattr(native.subprocess, "run", run)
    with pytest.raises(KeyboardInterrupt if error is KeyboardInterrupt else native.NativeUnavailable):
        native.build(tmp_path / "cache" / "k.so", cxx)
    assert list((tmp_path / "cache").iterdir()) == []


@needs_compiler
@pytest.mark.parametrize("native_arch", [False, True], ids=["portable", "this_cpu"])
def test_kernel_source_compiles_without_warnings(native_arch):
    """Both builds `native.build` tries: for this CPU's vectors (AVX-512 here), and the portable fallback."""
    command = native._command(native._compiler(), native.SOURCE, "unused.so", native_arch=native_arch)
    command = command[: command.index("-o")] + ["-fsyntax-only", "-Werror"]
    assert "-Wall" in command and "-Wextra" in command
    done = subprocess.run(command, capture_output=True, text=True, timeout=native.BUILD_TIMEOUT)
    assert done.returncode == 0, done.stderr


def test_xla_steps_use_the_graph_ops(tmp_path):
    model = frozen_cnn()
    model.compile(model.optimizer, model.loss, jit_compile=True)
    x, y = cnn_data(2)
    probe = tfprobe.LayerProbe(tmp_path / "auto", record_freq=1, log_freq=2)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[probe])
    assert probe._recorder.kernel.name == "graph" and probe.windows_written == 1
    with pytest.raises(ValueError, match="kernel='native' cannot run inside an XLA-compiled step.*jit_compile=True"):
        model.fit(
            x,
            y,
            batch_size=BATCH,
            epochs=1,
            verbose=0,
            callbacks=[tfprobe.LayerProbe(tmp_path / "native", kernel="native")],
        )
    keras.backend.clear_session()


@pytest.mark.parametrize("jit_compile", [False, True])
def test_the_graph_kernel_takes_the_xla_form_under_xla_only(jit_compile):
    from tfprobe import kernels

    k = kernels.make("graph", jit_compile=jit_compile, near_zero=NEAR, saturation_margin=0.01, sample_size=None)
    assert isinstance(k, graph.GraphKernel) and k.xla is jit_compile


def test_bad_kernel_value(tmp_path):
    with pytest.raises(ValueError, match="`kernel` must be one of 'auto', 'native', 'graph'. Received: kernel='fast'"):
        tfprobe.LayerProbe(tmp_path, kernel="fast")


@needs_compiler
@pytest.mark.parametrize("sample", [None, 3])
@pytest.mark.parametrize("name", sorted(ALL))
def test_gradient_partials_equal_graph_ops(name, sample):
    """The kernel's gradient mode (what gradient statistics read, about half the work) equals the graph ops'."""
    x2d = graph.as_rows(tf.constant(ALL[name]))
    reference = graph.GraphKernel(near_zero=NEAR, saturation_margin=0.01, sample_size=sample)
    want_sums, want_maxes, none = reference.gradient_partials(x2d, True)
    assert none is None  # the graph ops count histograms on their own
    want_sums, want_maxes = want_sums.numpy(), want_maxes.numpy()
    sums, maxes, hist = (
        t.numpy()
        for t in native.NativeKernel(near_zero=NEAR, saturation_margin=0.01, sample_size=sample).gradient_partials(
            x2d, True
        )
    )
    unread = [i for i, f in enumerate(stats.SUM_FIELDS) if f not in stats.GRADIENT_FIELDS]
    assert not sums[unread].any() and not want_sums[unread].any()
    with np.errstate(invalid="ignore"):
        error = np.where(sums == want_sums, 0.0, np.abs(sums - want_sums))
    assert np.all(error <= 2e-6 * np.abs(want_sums)), (sums, want_sums)
    counts = [stats.S[k] for k in ("steps", "count", "finite", "zeros", "nan", "inf")]
    np.testing.assert_array_equal(sums[counts], want_sums[counts])
    np.testing.assert_array_equal(maxes, want_maxes)
    np.testing.assert_array_equal(hist, graph.histogram(graph.leading(x2d, sample)).numpy())


@needs_compiler
@pytest.mark.parametrize("name", ["normal", "nan_in_16_units", "nan_outside_sample", "tiny", "huge", "long_rows"])
def test_gradient_partials_give_the_same_gradient_statistics(name):
    """Only fields the gradient statistics never read are skipped: they come out as from the full partials."""
    from tfprobe.recording import backward

    x2d = graph.as_rows(tf.constant(ALL[name]))
    full = native.run_op(x2d, False, near_zero=NEAR, sample_size=3)
    lean = native.run_op(x2d, False, near_zero=NEAR, sample_size=3, gradient=True)
    got, want = ({"grad_sums": s.numpy(), "grad_maxes": m.numpy()} for s, m, _ in (lean, full))
    got, want = backward.statistics(got, NEAR), backward.statistics(want, NEAR)
    assert got.keys() == want.keys() and "grad_rms" in got
    np.testing.assert_allclose(list(got.values()), list(want.values()), rtol=2e-6)


@needs_compiler
def test_gradient_mode_takes_no_units():
    with pytest.raises(tf.errors.InvalidArgumentError, match="gradient=true takes no units; got units=3"):
        native.run_op(tf.ones([2, 3]), False, units=3, near_zero=NEAR, gradient=True)


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return set()


# The builds other CPUs get: AVX2 without AVX-512 (the CI machines), and the portable one (no -march).
VARIANTS = {"avx2": ["-march=native", "-mno-avx512f"], "portable": []}


@needs_compiler
@pytest.mark.slow  # two builds of the kernel (30-60 s each): `python -m pytest -m slow tests/kernels/test_native.py -k other_cpus`
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_kernel_builds_for_other_cpus_equal_the_graph_ops(tmp_path, monkeypatch, variant):
    """The kernel built as an AVX2-only CPU or a CPU without `-march=native` builds it (where this machine can
    run that build) passes the kernel's equality tests against the graph ops, in a process that loads it."""
    if variant == "avx2" and "avx2" not in _cpu_flags():
        pytest.skip("this CPU cannot run an AVX2 build")
    monkeypatch.setenv("TFPROBE_CACHE_DIR", str(tmp_path))
    cxx = native._compiler()
    path = native.library_path(cxx)  # where `load()` looks for it under that cache directory
    command = native._command(cxx, native.SOURCE, path, native_arch=False)
    command[1 + len(native.FLAGS) : 1 + len(native.FLAGS)] = VARIANTS[variant]
    done = subprocess.run(command, capture_output=True, text=True, timeout=native.BUILD_TIMEOUT)
    assert done.returncode == 0, done.stderr
    built = path.stat().st_mtime_ns
    chosen = "kernel_equals_graph_ops and (small or nan or huge) and unbounded or gradient_partials_equal_graph_ops"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            str(Path(__file__)),
            "-k",
            chosen,
            "-m",
            "not slow",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=Path(__file__).parents[2],
        env={**os.environ, "TFPROBE_CACHE_DIR": str(tmp_path)},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout, run.stdout[-2000:]
    assert path.stat().st_mtime_ns == built and len(list(tmp_path.glob("*.so"))) == 1  # that build, not another
