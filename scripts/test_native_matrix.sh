#!/usr/bin/env bash
# The native kernel against older TensorFlow releases (not part of the default test run).
#
#   scripts/test_native_matrix.sh                 # the two minors before the current one: 2.20, 2.19
#   scripts/test_native_matrix.sh 2.20 2.19 2.18  # any list of TensorFlow minors
#
# For each minor: a throwaway virtual environment with the newest tensorflow-cpu of that minor,
# tfprobe's dependencies, a build of tfprobe/kernels/partials.cc against it (in a throwaway
# cache directory, with -Wall -Wextra), then tests/kernels/test_native.py. Needs a C++ compiler and
# about 1.5 GB of disk and 5-15 minutes per minor. Exits non-zero if any minor fails.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
MINORS=("$@")
[ ${#MINORS[@]} -gt 0 ] || MINORS=(2.20 2.19)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tfprobe-matrix.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
failed=()
for minor in "${MINORS[@]}"; do
  echo "=== TensorFlow $minor"
  venv="$WORK/venv-$minor"
  if ! { "$PYTHON" -m venv "$venv" &&
    "$venv/bin/python" -m pip install -q --upgrade pip &&
    "$venv/bin/python" -m pip install -q "tensorflow-cpu==$minor.*" "tensorboard==$minor.*" google-crc32c pandas pytest; }; then
    echo "--- TensorFlow $minor: could not install"
    failed+=("$minor (install)")
    continue
  fi
  # The source tree, not an installed copy: what is tested is this checkout.
  if TFPROBE_CACHE_DIR="$WORK/cache-$minor" PYTHONPATH="$PWD:$PWD/tensorboard_plugin" TF_CPP_MIN_LOG_LEVEL=2 \
    "$venv/bin/python" -m tfprobe.kernels.native &&
    TFPROBE_CACHE_DIR="$WORK/cache-$minor" PYTHONPATH="$PWD:$PWD/tensorboard_plugin" TF_CPP_MIN_LOG_LEVEL=2 \
      "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/kernels/test_native.py; then
    echo "--- TensorFlow $minor: passed ($("$venv/bin/python" -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null))"
  else
    failed+=("$minor")
  fi
  rm -rf "$venv"  # one environment at a time on disk
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "all passed: ${MINORS[*]}"
