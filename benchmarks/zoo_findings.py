"""Precision and recall of `tfprobe.diagnose` over the model zoos of the tests.

    python benchmarks/zoo_findings.py          # pathology zoo + the fast healthy models
    python benchmarks/zoo_findings.py --slow   # and the twelve keras.applications models

One row per case: planted (layer, kind) pairs, how many were found (true positives), warnings or
errors anywhere else (false positives), and the info notes. Precision = TP / (TP + FP) over
warnings and errors; recall = TP / planted. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "findings"))


def row(name, findings, planted):
    serious = findings[findings["severity"] != "info"]
    pairs = set(zip(serious["layer"], serious["kind"]))
    tp = len(set(planted.items()) & pairs)
    fp = len(pairs - set(planted.items()))
    precision = f"{tp / (tp + fp):.2f}" if tp + fp else "-"
    recall = f"{tp / len(planted):.2f}" if planted else "-"
    return f"| {name} | {len(planted)} | {tp} | {fp} | {len(findings) - len(serious)} | {precision} | {recall} |"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--slow", action="store_true", help="also the twelve keras.applications models")
    args = parser.parse_args()
    import test_zoo_healthy as healthy
    import test_zoo_pathology as pathology
    from helpers.zoo import run_healthy, run_pathology

    print("| case | planted | found | false (warning/error) | info | precision | recall |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for case in pathology.CASES:
        build, planted = case.values
        print(row(case.id, run_pathology(build, tempfile.mkdtemp() + "/run")[0], planted), flush=True)
    for build in healthy.FAST + (healthy.SLOW if args.slow else []):
        print(row(build.__name__, run_healthy(build, tempfile.mkdtemp() + "/run")[0], {}), flush=True)


if __name__ == "__main__":
    main()
