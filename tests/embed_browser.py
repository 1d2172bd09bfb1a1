"""What the embed player's browser tests share: Debian's Chromium under Playwright, the local
stand-in of Spotify's iFrame API script, and a guard that no request leaves 127.0.0.1."""
from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = "/usr/bin/chromium"
# No background connections to the (closed) network, and every request beyond loopback goes to a
# proxy that is not there (Chromium never proxies 127.0.0.1), so it fails at once.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--proxy-server=http://127.0.0.1:9"]
STANDIN_DIR = Path(__file__).parent / "embed_standin"
LOOPBACK = {"127.0.0.1", "localhost"}


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the standard library's name
        pass


@pytest.fixture(scope="session")
def standin_origin() -> Iterator[str]:
    """http://127.0.0.1:PORT serving tests/embed_standin/ (the stand-in script is iframe_api_standin.js)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(STANDIN_DIR)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def standin_url(origin: str, **settings: object) -> str:
    """The stand-in script's URL with its settings (speed, tick, preview) in the query."""
    query = "&".join(f"{key}={value}" for key, value in settings.items())
    return f"{origin}/iframe_api_standin.js" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless (Playwright's own browser download is not reachable here)."""
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh page; the test fails if it asked for anything beyond 127.0.0.1.

    Requests are watched, not routed: a routed request waits for this (single) thread to serve
    it, and the tests spend their time waiting on the listener's thread."""
    context = browser.new_context(viewport={"width": 1100, "height": 640})
    outside: list[str] = []
    context.on("request", lambda request: None if urlsplit(request.url).hostname in LOOPBACK
               or request.url.startswith(("data:", "about:", "blob:")) else outside.append(request.url))
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: print(f"console: {message.text}"))  # shown when a test fails
    page.set_default_timeout(10_000)
    yield page
    context.close()
    assert not outside, f"the page tried to reach beyond 127.0.0.1: {outside}"
    assert not errors, f"the page raised: {errors}"
