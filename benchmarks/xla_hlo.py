"""What a probed step adds to the XLA-compiled training step: op counts and memory, not timings.

For the reference CNN (batch 128, `jit_compile=True`) it compiles the plain
step and the probed step of each configuration in a subprocess with XLA's
dump flags, then reads XLA's optimized HLO and its buffer assignment:

* which steps a probed `fit` compiles: with host-side dispatch the steps
  that record nothing run Keras' own step, compared here with the plain
  `fit`'s (the same instructions and buffers: nothing added);
* the instructions of the ENTRY computation that the probed step adds to the
  plain one (the statistics are inside `conditional`s, whose branches run on
  recorded steps only; a probed call whose steps do not all record, with
  `steps_per_execution > 1`, runs them);
* XLA's total buffer size (`Total bytes used` of the memory-usage report:
  parameters and the preallocated temporary block) and, among the probed
  step's temporaries, the largest ones (activation-sized temporaries of the
  statistics' branches).

Deterministic on one machine (no timing), so it can run on a busy one:

    python benchmarks/xla_hlo.py                        # defaults and every statistic every step
    python benchmarks/xla_hlo.py --config defaults --top 20
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

CONFIGS = {
    "plain": None,
    "defaults": {},
    "every_step": {"record_freq": 1, "histogram_freq": 0},
    "histograms_every_step": {"record_freq": 1, "histogram_freq": 1},
}

_CHILD = r"""
import json, os, sys, tempfile
sys.path.insert(0, {bench!r})
sys.path.insert(0, {repo!r})
import numpy as np
from gpu import build
import tfprobe
model, batch, data = build("cnn", True)
x, y = data(batch * 2, np.random.default_rng(0))
kwargs = json.loads({kwargs!r})
callbacks = [] if kwargs is None else [tfprobe.LayerProbe(tempfile.mkdtemp(), **kwargs)]
model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=callbacks)
"""


def compile_step(config, out):
    """Dumps the optimized HLO of the reference CNN's step with `config`; returns the dump's file prefix."""
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="2",
        XLA_FLAGS=f"--xla_dump_to={out} --xla_dump_hlo_as_text --xla_dump_hlo_module_re=.*one_step_on_data.*",
    )
    code = _CHILD.format(bench=here, repo=os.path.dirname(here), kwargs=json.dumps(CONFIGS[config]))
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    found = glob.glob(os.path.join(out, "*one_step_on_data*cpu_after_optimizations.txt"))
    return [hlo[: -len("cpu_after_optimizations.txt")] for hlo in sorted(found)]


def probed_and_plain(prefixes):
    """`(probed step's prefix, [prefixes of Keras' own step])` of one fit's dumps.

    With host-side dispatch a probed `fit` compiles two steps: the probed one (for the steps that record,
    the first step of the fit among them) and Keras' own one, for the steps that record nothing (the fit
    runs two steps: the second is such a step with the defaults). The probed one holds `conditional`s.
    """
    probed = [p for p in prefixes if " conditional(" in open(p + "cpu_after_optimizations.txt").read()]
    if len(probed) != 1:
        raise RuntimeError(f"expected one probed step among {prefixes}")
    return probed[0], [p for p in prefixes if p != probed[0]]


def entry_instructions(prefix):
    """Counter of `(opcode, name without its numeric suffix, shape)` of the ENTRY computation."""
    text = open(prefix + "cpu_after_optimizations.txt").read()
    entry = next(c for c in text.split("\n\n") if c.startswith("ENTRY"))
    found = collections.Counter()
    for line in entry.splitlines()[1:]:
        m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (.+?) ([a-z][\w\-]*)\(", line)
        if m and m.group(3) not in ("parameter", "constant", "get-tuple-element"):
            found[(m.group(3), re.sub(r"(\.\d+)+$", "", m.group(1)), m.group(2)[:48])] += 1
    return found


def memory(prefix):
    """`(total bytes, [(bytes, value name)] of the largest values)` of XLA's buffer assignment."""
    report = open(prefix + "cpu_after_optimizations-memory-usage-report.txt").read()
    total = int(re.search(r"Total bytes used: (\d+)", report).group(1))
    values = []
    for line in open(prefix + "cpu_after_optimizations-buffer-assignment.txt"):
        m = re.match(r" value: <\d+ ([^ >]+)[^>]*> \(size=(\d+)", line)
        if m:
            values.append((int(m.group(2)), m.group(1)))
    return total, sorted(set(values), reverse=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=[c for c in CONFIGS if c != "plain"], action="append")
    parser.add_argument("--top", type=int, default=8, help="how many of the largest temporaries to list")
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="tfprobe-xla-hlo-")
    (plain,) = compile_step("plain", os.path.join(root, "plain"))
    base, (base_total, base_values) = entry_instructions(plain), memory(plain)
    print(f"reference CNN, batch 128, jit_compile=True; dumps under {root}")
    print(f"plain step: {sum(base.values())} ENTRY instructions, XLA buffers {base_total / 2**20:.1f} MiB")
    for config in args.config or ["defaults", "every_step"]:
        prefix, own = probed_and_plain(compile_step(config, os.path.join(root, config)))
        for other in own:
            same = entry_instructions(other) == base and memory(other)[0] == base_total
            print(
                f"\n{config}: the steps that record nothing run Keras' own step (host-side dispatch): "
                f"{sum(entry_instructions(other).values())} ENTRY instructions, XLA buffers "
                f"{memory(other)[0] / 2**20:.1f} MiB, {'identical to' if same else 'DIFFERENT from'} the plain step's"
            )
        if not own:
            print(f"\n{config}: every step of the fit ran the probed step")
        ops, (total, values) = entry_instructions(prefix), memory(prefix)
        print(
            f"\n{config}: {sum(ops.values())} ENTRY instructions, XLA buffers {total / 2**20:.1f} MiB "
            f"({(total - base_total) / 2**20:+.1f} MiB)"
        )
        print(
            "  added to the ENTRY computation (what the probed step runs on top of the plain one, conds not taken "
            "included):"
        )
        for (opcode, name, shape), n in sorted((ops - base).items()):
            print(f"    {n} x {opcode:12s} {name:28s} {shape}")
        removed = base - ops
        if removed:
            print("  of the plain step's, no longer there (split or fused differently):")
            for (opcode, name, shape), n in sorted(removed.items()):
                print(f"    {n} x {opcode:12s} {name:28s} {shape}")
        print(f"  largest values of the probed step (the plain step's largest is {base_values[0][0] / 2**20:.1f} MiB):")
        for size, name in values[: args.top]:
            print(f"    {size / 2**20:7.2f} MiB  {name}")


if __name__ == "__main__":
    main()
