"""Browser tests: Debian's Chromium driven by Playwright against a live Daphne server.

Never ``playwright install``: the browser is the system's (CHROMIUM, default
``/usr/bin/chromium``; `.ci/run` installs it). Each test module gets its own
browser, so Playwright's event loop never meets the loops of the async tests.
Screenshots go to ``var/artifacts/screenshots`` (ARTIFACTS_DIR) for people to look at.
"""

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from common.testing import ROOT, LiveServer

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
]  # fmt: skip
ARTIFACTS = Path(os.environ.get("ARTIFACTS_DIR", ROOT / "var" / "artifacts"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: `apt-get install chromium` (see README)")
    # Playwright's sync API keeps an event loop in this thread; Django's ORM refuses to
    # run next to one unless told that this test process knows what it is doing.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@dataclass
class PageErrors:
    """Console errors and uncaught exceptions of a page: a test fails on any."""

    messages: list[str] = field(default_factory=list)

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            # The resource's address says which request failed ("Failed to load
            # resource" alone does not).
            where = message.location.get("url") or ""
            self.messages.append(f"console: {message.text} ({where})")

    def exception(self, error: Exception) -> None:
        self.messages.append(f"pageerror: {error}")


@dataclass
class Site:
    """The live server and a way to open browser contexts on it."""

    server: LiveServer
    browser: Browser
    contexts: list[BrowserContext] = field(default_factory=list)
    errors: PageErrors = field(default_factory=PageErrors)

    def new_page(self, *, width: int = 1280, height: int = 800) -> Page:
        """A page in a fresh context: another browser, as far as the site can tell."""
        context = self.browser.new_context(
            base_url=self.server.url, viewport={"width": width, "height": height}
        )
        context.set_default_timeout(15_000)
        self.contexts.append(context)
        page = context.new_page()
        page.on("console", self.errors.console)
        page.on("pageerror", self.errors.exception)
        return page

    def screenshot(self, page: Page, name: str) -> Path:
        path = ARTIFACTS / "screenshots" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def site(browser: Browser, daphne_server: LiveServer, transactional_db: None) -> Iterator[Site]:
    site = Site(daphne_server, browser)
    yield site
    for context in site.contexts:
        context.close()
    assert not site.errors.messages, "\n".join(site.errors.messages)
