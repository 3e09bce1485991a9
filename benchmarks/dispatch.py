"""What a step that records nothing costs: process CPU seconds per step, plain `fit` against probed `fit`.

Host-side dispatch (`tfprobe.recording.capture.Instrumentation`) runs Keras' own train function on the calls
whose steps record nothing. This measures, on the reference CNN (batch 128; `benchmarks/gpu.py`'s model),
the process CPU time (`time.process_time`: every thread of the process, so the intra-op threads too) of the
steps after the first of a short `fit`, in three configurations on the same model, interleaved, medians:

  plain        no probe
  dispatch     LayerProbe(record_freq=10**6, histogram_freq=0): only the fit's first step records
  no_dispatch  the same probe with dispatch turned off: every step runs the probed step (its predicates and
               conds, not taken), as before dispatch

and it counts which train function ran. It also times the second step of the model's first (probed) `fit`,
which builds Keras' own step (traced, and compiled under XLA) before running it: what dispatch adds to
building, once per model and `compile`, when a `fit` reaches a step that records nothing. CPU seconds, not wall-clock, so that it means something on a
loaded machine (it still varies with the load: compare the ratios, and repeat on a quiet machine):

    python benchmarks/dispatch.py                       # XLA on and off, 5 reps of 20 steps
    python benchmarks/dispatch.py --xla on --reps 9 --steps 30
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def measure(jit_compile, reps, steps):
    import keras
    import numpy as np
    from gpu import build

    import tfprobe
    from tfprobe.recording.capture import Instrumentation

    class Clock(keras.callbacks.Callback):
        """CPU seconds from the end of the first step to the end of the last (the steps that record nothing), and
        of the second step alone (on a fresh model: building Keras' own step, then running it)."""

        def on_train_batch_end(self, batch, logs=None):  # the probe's window at the end of the fit is left out
            now = time.process_time()
            if batch == 0:
                self.start = now
            elif batch == 1:
                self.second = now - self.start
            self.seconds = now - self.start

    model, batch, data = build("cnn", jit_compile)
    x, y = data(batch * steps, np.random.default_rng(0))
    log_dir = tempfile.mkdtemp(prefix="tfprobe-dispatch-")
    probe = tfprobe.LayerProbe(log_dir, record_freq=10**6, histogram_freq=0, log_freq=10**6, alerts=False)
    dispatches = Instrumentation._dispatches

    def run(config):
        clock = Clock()
        callbacks = [clock] if config == "plain" else [probe, clock]
        Instrumentation._dispatches = dispatches if config != "no_dispatch" else (lambda self, *a: False)
        try:
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False, callbacks=callbacks)
        finally:
            Instrumentation._dispatches = dispatches
        calls = dict(probe._instrumentation.calls) if config != "plain" else None
        return clock, calls

    configs = ["plain", "dispatch", "no_dispatch"]
    # The first fit of the fresh model is probed with dispatch: it traces the probed step (its first step records)
    # and, at its second step, Keras' own (the cost dispatch adds to building, once per model and `compile`).
    first, _ = run("dispatch")
    for config in configs:  # every function traced and compiled
        run(config)
    times, calls = {c: [] for c in configs}, {}
    for rep in range(reps):
        for config in configs[rep % 3 :] + configs[: rep % 3]:  # the order rotates
            clock, calls[config] = run(config)
            times[config].append(clock.seconds / (steps - 1))
    return times, calls, first.second


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--xla", choices=["on", "off"], action="append", help="default: both")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    print(
        f"reference CNN, batch 128; CPU seconds per step over steps 2..{args.steps} of a fit, "
        f"median of {args.reps} (min-max)"
    )
    for xla in args.xla or ["off", "on"]:
        times, calls, build = measure(xla == "on", args.reps, args.steps)
        plain = statistics.median(times["plain"])
        print(
            f"  jit_compile={xla:3s} the first fit's second step (builds Keras' own step, then runs it): "
            f"{build:.2f} CPU s"
        )
        for config, values in times.items():
            median = statistics.median(values)
            print(
                f"  jit_compile={xla:3s} {config:12s} {median * 1e3:7.1f} ms ({min(values) * 1e3:.1f}-"
                f"{max(values) * 1e3:.1f})  x{median / plain:.3f}  calls {calls.get(config)}"
            )


if __name__ == "__main__":
    main()
