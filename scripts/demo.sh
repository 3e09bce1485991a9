#!/usr/bin/env bash
# The demo: train examples/find_the_bug.py (four runs, three with a planted bug, about a minute on 2 CPU
# cores) with tfprobe attached, print its answer, then serve TensorBoard with the tfprobe tab on
# http://127.0.0.1:${PORT:-6006}/#tfprobe (open the Health and Gradient flow views).
set -euo pipefail
. "$(dirname "$0")/setup_env.sh"
LOGDIR=${LOGDIR:-logs/demo}
python examples/find_the_bug.py --logdir "$LOGDIR"
cat <<MSG

The other worked examples (docs/examples/), each into its own log directory:
  python examples/sparse_codes.py --logdir logs/sparse_codes                  # L1 on a bottleneck: sparsity, rank, cost
  python examples/pooling_information.py --logdir logs/pooling_information    # max vs average pooling vs strided convs
  python examples/audio_features.py --logdir logs/audio_features              # waveform vs spectrogram: depth, Grad-CAM in time
  python examples/frozen_backbone.py --logdir logs/frozen_backbone            # frozen MobileNetV2: probe accuracy per depth
  python examples/train_digits.py --logdir logs/digits                        # the CNN of the dashboard section
then: tensorboard --logdir logs/<example>

Open http://127.0.0.1:${PORT:-6006}/#tfprobe
MSG
exec tensorboard --logdir "$LOGDIR" --host 127.0.0.1 --port "${PORT:-6006}"
