#!/usr/bin/env bash
# The demo: train examples/train_digits.py with tfprobe attached, then serve
# TensorBoard with the tfprobe tab on http://127.0.0.1:${PORT:-6006}/#tfprobe
set -euo pipefail
. "$(dirname "$0")/setup_env.sh"
LOGDIR=${LOGDIR:-logs/demo}
python examples/train_digits.py --logdir "$LOGDIR"
echo "Open http://127.0.0.1:${PORT:-6006}/#tfprobe"
exec tensorboard --logdir "$LOGDIR" --host 127.0.0.1 --port "${PORT:-6006}"
