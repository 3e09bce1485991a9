"""Takes the screenshots of the worked examples (docs/examples/): a real TensorBoard serving each example's log
directory, opened in Debian's chromium through playwright (never `playwright install`).

    python scripts/screenshots.py --train                      # train every example, then shoot them all
    python scripts/screenshots.py --only audio_features        # reuse logs/audio (examples/audio_features.py's)
    python scripts/screenshots.py --logs /tmp/l --train --only sparse_codes find_the_bug

Each example's logs are `<logs>/<dir>`, `<dir>` being its script's default (`logs/sparse_codes`, `logs/audio`,
...): `--train` first runs `examples/<example>.py --logdir <logs>/<dir>`, else the logs already there are
used. Writes `docs/images/<image>.png` (or under `--out`), the dashboard view that shows the example's answer:
the whole page (1280 wide), or one element of it (audio_features: the Looks panel, frozen_backbone: the
runs overlay). An image over 300 KB is re-saved with a 256-colour palette (the dashboard's flat colours and
text survive it), and only if still too big scaled down by 4/5 steps (scaling blurs the text).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
from helpers.chromium import ARGS, CHROMIUM, IFRAME  # noqa: E402  (as the browser tests launch and find it)

TIMEOUT = 90_000
MAX_BYTES = 300_000
BURST_EXAMPLE = "2"  # audio_features' reference clips alternate tone, chirp, burst: example 2 is a noise burst


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def tensorboard(logdir, runs, ready=None):
    """A `tensorboard` subprocess on 127.0.0.1 serving `logdir`; yields its base URL once `runs` are listed
    and `ready(base)` (if given) is true."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        logdir,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--samples_per_plugin=images=0",
    ]
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    listed = {run["name"] for run in get_json(base + "/data/plugin/tfprobe/runs")["runs"]}
                    if listed >= set(runs) and (ready is None or ready(base)):
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(
                        f"tensorboard on {logdir} did not serve the runs {sorted(runs)}: "
                        f"{log.read().decode(errors='replace')[-2000:]}"
                    )
                time.sleep(0.5)
            yield base
        finally:
            proc.terminate()
            proc.wait(20)


def switch(frame, view):
    frame.locator(f"nav.tabs button[data-view={view}]").click()
    frame.locator(f"body[data-view={view}][data-status=ready]").wait_for(timeout=TIMEOUT)


# What each screenshot shows: `show(frame)` brings the dashboard to it and returns the element to crop to,
# or None for the whole page.


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
    frame.locator("#grad-step").evaluate(
        "(e) => { e.value = '1'; e.dispatchEvent(new Event('input', {bubbles: true})); }"
    )
    frame.locator("#grad-charts[data-step='10']").wait_for(timeout=TIMEOUT)


def audio_features(frame):
    """The Looks panel on a noise burst: input, Grad-CAM and features, waveform model above, spectrogram below."""
    switch(frame, "looks")
    for run in ("waveform", "spectrogram"):
        block = frame.locator(f'.looks-run[data-run="{run}"]')
        block.locator("select.looks-example").select_option(BURST_EXAMPLE)
        for cls in ("looks-input", "looks-gradcam", "looks-features"):
            block.locator(f"img.{cls}").evaluate("async (img) => { await img.decode(); }")
    return frame.locator("#looks")


def frozen_backbone(frame):
    """The Representations runs overlay: probe accuracy and label information against depth, both runs."""
    switch(frame, "representations")
    overlay = frame.locator(".runs-overlay")
    overlay.locator(".overlay-card").first.wait_for(timeout=TIMEOUT)
    return overlay


def looks_recorded(base):
    return all(get_json(f"{base}/data/plugin/tfprobe/looks?run={run}")["steps"] for run in ("waveform", "spectrogram"))


def probes_recorded(base):
    body = get_json(f"{base}/data/plugin/tfprobe/representations?run=pretrained&run=random")
    return "probe_accuracy" in json.dumps(body)


@dataclasses.dataclass(frozen=True)
class Shot:
    image: str  # docs/images/<image>.png
    show: Callable  # frame -> the element to crop to, or None for the whole page
    height: int  # of the viewport
    width: int = 1280


@dataclasses.dataclass(frozen=True)
class Example:
    """examples/<name>.py trained with `--logdir <logs>/<logdir>` into `runs`; TensorBoard is ready once they
    are listed and `ready(base)` (if given) holds."""

    logdir: str
    runs: tuple
    shots: tuple
    ready: Callable | None = None


EXAMPLES = {
    "sparse_codes": Example(
        "sparse_codes", ("l1_none", "l1_weak", "l1_strong"), (Shot("sparse_codes", sparse_codes, 800),)
    ),
    "pooling_information": Example(
        "pooling_information",
        ("max_pool", "avg_pool", "strided"),
        (Shot("pooling_information", pooling_information, 1250),),
    ),
    "audio_features": Example(
        "audio",
        ("waveform", "spectrogram"),
        (Shot("audio_features", audio_features, 1100, width=1300),),
        ready=looks_recorded,
    ),
    "frozen_backbone": Example(
        "backbone",
        ("pretrained", "random"),
        (Shot("frozen_backbone", frozen_backbone, 1100, width=1300),),
        ready=probes_recorded,
    ),
    "find_the_bug": Example(
        "find_the_bug",
        ("healthy", "dying_relu", "saturated_sigmoid", "exploding_lr"),
        (Shot("find_the_bug", find_the_bug, 1922), Shot("find_the_bug_gradients", find_the_bug_gradients, 1000)),
    ),
}


def keep_small(path):
    """Brings the PNG at `path` under `MAX_BYTES`: a 256-colour palette first, then 4/5 scaling steps."""
    if os.path.getsize(path) <= MAX_BYTES:
        return
    from PIL import Image

    image = Image.open(path).convert("RGB")
    image.quantize(colors=256).save(path, optimize=True)
    while os.path.getsize(path) > MAX_BYTES:
        image = image.resize((image.width * 4 // 5, image.height * 4 // 5), Image.LANCZOS)
        image.quantize(colors=256).save(path, optimize=True)


def shoot(browser, example, logdir, out_dir):
    """Writes the images of `example` (an `Example`) from its logs in `logdir` to `out_dir`."""
    with tensorboard(logdir, example.runs, example.ready) as base:
        for shot in example.shots:
            page = browser.new_page(viewport={"width": shot.width, "height": shot.height})
            page.goto(base + "/#tfprobe")
            frame = page.frame_locator(IFRAME)
            frame.locator("body[data-status=ready]").wait_for(timeout=TIMEOUT)
            element = shot.show(frame)
            page.wait_for_timeout(1000)  # the last chart's paint
            out = os.path.join(out_dir, f"{shot.image}.png")
            (element or page).screenshot(path=out)
            page.close()
            keep_small(out)
            print(f"{out}: {os.path.getsize(out) // 1024} KB")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(EXAMPLES),
        metavar="NAME",
        help=f"some of {', '.join(EXAMPLES)} (default: all)",
    )
    parser.add_argument("--logs", default="logs", help="parent of the examples' log directories (default: logs)")
    parser.add_argument("--train", action="store_true", help="run each example into its log directory first")
    parser.add_argument("--out", default=os.path.join(REPO, "docs", "images"), help="default: docs/images")
    args = parser.parse_args(argv)
    names = args.only or list(EXAMPLES)
    logdirs = {name: os.path.join(args.logs, EXAMPLES[name].logdir) for name in names}
    missing = [d for d in logdirs.values() if not args.train and not os.path.isdir(d)]
    if missing:
        parser.error(
            f"no logs at {missing[0]}: train them with --train, or give their parent as --logs. "
            f"Received: --logs={args.logs}"
        )
    from playwright.sync_api import sync_playwright

    os.makedirs(args.out, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        for name in names:
            if args.train:
                script = os.path.join(REPO, "examples", f"{name}.py")
                subprocess.run([sys.executable, script, "--logdir", logdirs[name]], check=True)
            shoot(browser, EXAMPLES[name], logdirs[name], args.out)
        browser.close()


if __name__ == "__main__":
    main()
