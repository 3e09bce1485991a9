"""Debian's chromium through playwright: the launch arguments, the `browser` and `page` fixtures (registered in
`conftest.py`) and the steps every dashboard test takes.

A module whose every test drives chromium starts with `pytestmark = chromium.MARKS` (marked `browser`, skipped
when chromium is absent); a module with a single browser test puts `@pytest.mark.browser` and
`@chromium.needs_chromium` on that test. Never `playwright install`: the tests use /usr/bin/chromium.
"""

from __future__ import annotations

import os

import pytest

from tfprobe import metadata

from .tensorboard import artifacts_dir

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IFRAME = f'iframe[src="data/plugin_entry.html?name={metadata.PLUGIN_NAME}"]'  # the plugin's frame in TensorBoard
TIMEOUT = 60_000  # ms, for every wait on the dashboard
VIEWPORT = {"width": 1280, "height": 900}

needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no chromium at {CHROMIUM}")
MARKS = [pytest.mark.browser, needs_chromium]


@pytest.fixture(scope="module")
def browser():
    """One headless chromium per test module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh page (own context) that collects `page.dialogs` (dismissed) and `page.errors` (uncaught
    exceptions); a test that checks console messages too listens with `console_errors(page)`."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.dialogs, page.errors = [], []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    yield page
    context.close()


def console_errors(page):
    """A live list of the text of every console message of type error on `page`."""
    seen = []
    page.on("console", lambda m: seen.append(m.text) if m.type == "error" else None)
    return seen


def shot(page, name, **kwargs):
    """Saves a screenshot of `page` as `browser_<name>.png` in the artifacts folder."""
    page.screenshot(path=os.path.join(artifacts_dir(), f"browser_{name}.png"), **kwargs)


def open_dashboard(page, base):
    """Opens tfprobe's tab of the TensorBoard at `base`; returns the plugin's frame once it is ready."""
    page.goto(base + "/#" + metadata.PLUGIN_NAME)
    frame = page.frame_locator(IFRAME)
    frame.locator("body[data-status=ready]").wait_for(timeout=TIMEOUT)
    return frame


def switch(frame, view):
    """Clicks the tab of `view` and waits until it is drawn."""
    frame.locator(f"nav.tabs button[data-view={view}]").click()
    frame.locator(f"body[data-view={view}][data-status=ready]").wait_for(timeout=TIMEOUT)


def plugin_requests(page):
    """A live list of the URLs of every request to the plugin's routes made by `page`."""
    seen = []
    page.on("request", lambda r: seen.append(r.url) if f"/data/plugin/{metadata.PLUGIN_NAME}/" in r.url else None)
    return seen
