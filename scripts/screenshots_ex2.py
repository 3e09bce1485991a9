"""Screenshots of the worked examples "Hierarchical audio features" and "Frozen backbone" for the README.

    python scripts/screenshots_ex2.py                # runs both examples into a temporary directory first
    python scripts/screenshots_ex2.py --audio-logdir logs/audio --backbone-logdir logs/backbone   # existing runs

Serves each log directory with a real TensorBoard (tfprobe tab), drives Debian's
chromium through playwright (never `playwright install`) and writes
`docs/images/audio_features.png` (the Looks view: Grad-CAM of a noise burst,
waveform model above, spectrogram model below) and `docs/images/frozen_backbone.png`
(the Representations view: probe accuracy and label information against depth,
both runs overlaid). Each image is kept under 300 KB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[1]
IMAGES = REPO / "docs" / "images"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
IFRAME = 'iframe[src="data/plugin_entry.html?name=tfprobe"]'
TIMEOUT = 90_000
BURST_EXAMPLE = "2"  # the reference clips alternate tone, chirp, burst: example 2 is a noise burst
MAX_BYTES = 300_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def tensorboard(logdir, ready):
    """A TensorBoard on 127.0.0.1 serving `logdir`, stopped by pid; yields its base URL once `ready(base)`."""
    port = free_port()
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
           "--port", str(port), "--samples_per_plugin=images=0"]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.PIPE)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if ready(base):
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"tensorboard did not serve {logdir}: {log.read().decode()[-2000:]}")
                time.sleep(1)
            yield base
        finally:
            proc.terminate()
            proc.wait(20)


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def open_view(page, base, view):
    page.goto(base + "/#tfprobe")
    frame = page.frame_locator(IFRAME)
    frame.locator("body[data-status=ready]").wait_for(timeout=TIMEOUT)
    frame.locator(f"nav.tabs button[data-view={view}]").click()
    frame.locator(f"body[data-view={view}][data-status=ready]").wait_for(timeout=TIMEOUT)
    return frame


def save(locator, name):
    """A PNG screenshot of `locator`, or a JPEG-free smaller PNG (scaled) if it is over MAX_BYTES."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    path = IMAGES / f"{name}.png"
    locator.screenshot(path=str(path))
    if path.stat().st_size > MAX_BYTES:
        from PIL import Image

        image = Image.open(path)
        while path.stat().st_size > MAX_BYTES:
            image = image.resize((image.width * 4 // 5, image.height * 4 // 5), Image.LANCZOS)
            image.save(path, optimize=True)
    print(f"{path.relative_to(REPO)}: {path.stat().st_size // 1000} KB")


def audio_screenshot(browser, logdir):
    def ready(base):
        return all(get_json(f"{base}/data/plugin/tfprobe/looks?run={run}")["steps"]
                   for run in ("waveform", "spectrogram"))

    with tensorboard(logdir, ready) as base:
        page = browser.new_page(viewport={"width": 1300, "height": 1100})
        frame = open_view(page, base, "looks")
        for run in ("waveform", "spectrogram"):
            block = frame.locator(f'.looks-run[data-run="{run}"]')
            block.locator("select.looks-example").select_option(BURST_EXAMPLE)
            for cls in ("looks-input", "looks-gradcam", "looks-features"):
                block.locator(f"img.{cls}").evaluate("async (img) => { await img.decode(); }")
        save(frame.locator("#looks"), "audio_features")
        page.close()


def backbone_screenshot(browser, logdir):
    def ready(base):
        body = get_json(f"{base}/data/plugin/tfprobe/representations?run=pretrained&run=random")
        return json.dumps(body).count("probe_accuracy") > 0 and {r["name"] for r in get_json(
            f"{base}/data/plugin/tfprobe/runs")["runs"]} >= {"pretrained", "random"}

    with tensorboard(logdir, ready) as base:
        page = browser.new_page(viewport={"width": 1300, "height": 1100})
        frame = open_view(page, base, "representations")
        overlay = frame.locator(".runs-overlay")
        overlay.locator(".overlay-card").first.wait_for(timeout=TIMEOUT)
        save(overlay, "frozen_backbone")
        page.close()


SHOTS = {"audio_features": audio_screenshot, "frozen_backbone": backbone_screenshot}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio-logdir", help="runs of examples/audio_features.py (default: run it now)")
    parser.add_argument("--backbone-logdir", help="runs of examples/frozen_backbone.py (default: run it now)")
    parser.add_argument("--only", choices=sorted(SHOTS), help="one screenshot only")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    given = {"audio_features": args.audio_logdir, "frozen_backbone": args.backbone_logdir}
    names = [args.only] if args.only else list(SHOTS)
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        for name in names:
            logdir = given[name] or os.path.join(tmp, name)
            if given[name] is None:
                subprocess.run([sys.executable, str(REPO / "examples" / f"{name}.py"), "--logdir", logdir],
                               check=True)
            SHOTS[name](browser, logdir)
        browser.close()


if __name__ == "__main__":
    main()
