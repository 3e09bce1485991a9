# Sourced by demo.sh and test.sh: creates .venv and installs tfprobe with its dependencies.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# TensorFlow is the user's choice in a real project; the CPU build is enough here.
python -m pip install -q "tensorflow-cpu==2.21.*" "tensorboard==2.21.*" -e ".[test,docs]"
