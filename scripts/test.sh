#!/usr/bin/env bash
# The whole test suite on a fresh machine: virtual environment, pip packages,
# Debian's chromium for the browser tests, then pytest. Extra arguments go to pytest.
set -euo pipefail
# chromium for the browser tests; g++ builds tfprobe's native statistics kernel (tests/test_native.py).
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v g++ >/dev/null 2>&1 || missing="$missing g++"
if [ -n "$missing" ] && [ -x /usr/bin/apt-get ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
. "$(dirname "$0")/setup_env.sh"
export TF_CPP_MIN_LOG_LEVEL=2
python -m pytest -q "$@"
