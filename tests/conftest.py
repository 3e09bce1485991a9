"""The suite's fixtures and its one hook. Helpers live in `tests/helpers/` (a package: import what you use,
`from helpers import synthetic`); this file only registers fixtures.

Markers are explicit in each test module (`pytestmark = ...` for a whole module, a decorator for one test; see
CONTRIBUTING.md, "Markers"). The hook below marks the one doctest that builds the native kernel (a doctest
cannot carry a marker), and skips the `native` tests without a C++ compiler and the `gpu` tests without a GPU,
saying why.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.chromium import browser, page  # noqa: F401 - the chromium fixtures, for every browser test
from helpers.synthetic import make_synthetic_logdir


@pytest.fixture(scope="session")
def synthetic_logdir(tmp_path_factory):
    """The synthetic runs of `helpers/synthetic.py` (train, eval, xss and other), written once per session."""
    return make_synthetic_logdir(tmp_path_factory.mktemp("logs"))


# Doctests cannot carry `pytestmark`: these files' doctests are marked here (paths from the repository root).
DOCTEST_MARKERS = {"tfprobe/kernels/native.py": "native"}  # its doctest builds the kernel
REPO = Path(__file__).resolve().parents[1]


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    """Marks the doctests of DOCTEST_MARKERS; without a C++ compiler the `native` tests are skipped, saying what
    to install; without a GPU the `gpu` ones."""
    for item in items:
        if isinstance(item, pytest.DoctestItem):
            marker = DOCTEST_MARKERS.get(Path(item.path).resolve().relative_to(REPO).as_posix())
            if marker:
                item.add_marker(marker)
    native_items = [item for item in items if item.get_closest_marker("native")]
    if native_items:
        from tfprobe.kernels import native

        if native._compiler() is None:
            skip = pytest.mark.skip(reason="no C++ compiler ($CXX, g++, c++ or clang++): apt-get install g++")
            for item in native_items:
                item.add_marker(skip)
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_items:  # `gpu` tests need a CUDA GPU
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            skip = pytest.mark.skip(reason="no CUDA GPU visible to TensorFlow")
            for item in gpu_items:
                item.add_marker(skip)
