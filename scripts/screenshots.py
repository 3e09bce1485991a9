"""Takes the README's screenshots of the worked examples: a real TensorBoard serving each example's log
directory, opened in Debian's chromium through playwright (never `playwright install`).

    python scripts/screenshots.py --train                 # train every example into logs/<example>, then shoot
    python scripts/screenshots.py --logs logs find_the_bug   # reuse logs/find_the_bug

Writes `docs/images/<example>.png` (1280 wide, the dashboard view that shows the example's answer;
find_the_bug also `find_the_bug_gradients.png`). An image over 300 KB is saved with a 256-colour palette
(the dashboard's flat colours and text survive it; scaling down would blur the text).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
IFRAME = 'iframe[src="data/plugin_entry.html?name=tfprobe"]'
TIMEOUT = 90_000
MAX_BYTES = 300_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def tensorboard(logdir, runs):
    """A `tensorboard` subprocess on 127.0.0.1 serving `logdir`; yields its base URL once `runs` are listed."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(base + "/data/plugin/tfprobe/runs", timeout=10) as r:
                    if {run["name"] for run in json.loads(r.read())["runs"]} >= set(runs):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tensorboard on {logdir} did not list the runs {sorted(runs)}")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        proc.wait(20)


def switch(frame, view):
    frame.locator(f"nav.tabs button[data-view={view}]").click()
    frame.locator(f"body[data-view={view}][data-status=ready]").wait_for(timeout=TIMEOUT)


def sparse_codes(frame):
    """Layer detail of the bottleneck `code`: its sparsity statistics over training, the three runs overlaid."""
    frame.locator("#overview .heatmap-label", has_text=re.compile("^code$")).first.click()
    frame.locator("body[data-view=layer][data-status=ready]").wait_for(timeout=TIMEOUT)
    wanted = {"hoyer_sparsity", "zero_fraction", "dead_unit_fraction", "mean_abs"}
    for box in frame.locator("#stat-picker input").all():
        if (box.get_attribute("value") in wanted) != box.is_checked():
            box.click()
    for stat in sorted(wanted):
        frame.locator(f".chart-card[data-stat={stat}]").wait_for(timeout=TIMEOUT)


def pooling_information(frame):
    """The Pooling view: mass and energy retention per pooling layer over training, and the depth funnel."""
    switch(frame, "pooling")


def find_the_bug(frame):
    """The Health view without the info findings: the warnings and errors of the broken runs, by kind, down to
    `nan_weights` (the exploding run's weights turning NaN at step 20)."""
    switch(frame, "health")
    frame.locator("#severity-filter input[value=info]").uncheck()
    frame.locator("body[data-view=health][data-status=ready]").wait_for(timeout=TIMEOUT)
    frame.locator("details.finding-group[data-kind=nan_weights]").wait_for(timeout=TIMEOUT)


def find_the_bug_gradients(frame):
    """Gradient flow at the second window (step 10), before the exploding run turns to NaN."""
    switch(frame, "gradients")
    frame.locator("#grad-step").evaluate("(e) => { e.value = '1'; e.dispatchEvent(new Event('input', {bubbles: true})); }")
    frame.locator("#grad-charts[data-step='10']").wait_for(timeout=TIMEOUT)


EXAMPLES = {  # example: its runs, then (image name, what to show, the image's height) for each image
    "sparse_codes": (["l1_none", "l1_weak", "l1_strong"], [("sparse_codes", sparse_codes, 800)]),
    "pooling_information": (["max_pool", "avg_pool", "strided"], [("pooling_information", pooling_information, 1250)]),
    "find_the_bug": (["healthy", "dying_relu", "saturated_sigmoid", "exploding_lr"],
                     [("find_the_bug", find_the_bug, 1922), ("find_the_bug_gradients", find_the_bug_gradients, 1000)]),
}


def keep_small(path):
    """Re-saves the PNG at `path` with a 256-colour palette if it is over `MAX_BYTES`."""
    if os.path.getsize(path) > MAX_BYTES:
        from PIL import Image

        Image.open(path).convert("RGB").quantize(colors=256).save(path, optimize=True)


def shoot(name, logdir, out_dir):
    """Writes the images of example `name` from its logs in `logdir` to `out_dir`."""
    from playwright.sync_api import sync_playwright

    runs, images = EXAMPLES[name]
    with tensorboard(logdir, runs) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        for image, action, height in images:
            page = browser.new_page(viewport={"width": 1280, "height": height})
            page.goto(base + "/#tfprobe")
            frame = page.frame_locator(IFRAME)
            frame.locator("body[data-status=ready]").wait_for(timeout=TIMEOUT)
            action(frame)
            page.wait_for_timeout(1000)  # the last chart's paint
            out = os.path.join(out_dir, f"{image}.png")
            page.screenshot(path=out)
            page.close()
            keep_small(out)
            print(f"{out}: {os.path.getsize(out) // 1024} KB")
        browser.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("examples", nargs="*", help=f"some of {', '.join(EXAMPLES)} (default: all)")
    parser.add_argument("--logs", default="logs", help="parent of the examples' log directories (<logs>/<example>)")
    parser.add_argument("--train", action="store_true", help="run each example into <logs>/<example> first")
    parser.add_argument("--out", default=os.path.join(REPO, "docs", "images"))
    args = parser.parse_args(argv)
    unknown = sorted(set(args.examples) - set(EXAMPLES))
    if unknown:
        parser.error(f"unknown example {unknown[0]!r}; choose from {', '.join(EXAMPLES)}")
    os.makedirs(args.out, exist_ok=True)
    for name in args.examples or EXAMPLES:
        logdir = os.path.join(args.logs, name)
        if args.train:
            subprocess.run([sys.executable, os.path.join(REPO, "examples", f"{name}.py"), "--logdir", logdir],
                           check=True)
        shoot(name, logdir, args.out)


if __name__ == "__main__":
    main()
