"""Headless Chromium, for the lessons and the tests: Debian's browser, driven by playwright.

:func:`run_chromium` opens the chat page, joins and types messages like a
student; lessons 03 and 04 use it to show a real browser's frames and pongs.

The course never downloads a browser (``playwright install``): it drives the
Chromium that the system's package manager installed.  The flags keep it
quiet on a machine without a network: no sandbox (containers run as root), no
GPU, and none of Chromium's own background connections.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any
from collections.abc import Iterable

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def unavailable() -> str | None:
    """None if headless Chromium can be driven here; else the reason it cannot."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    if not os.path.exists(CHROMIUM):
        return f"Chromium not found at {CHROMIUM}: install it with `apt-get install chromium`"
    return None


def launch(playwright: Any, **options: Any) -> Any:
    """``playwright.chromium.launch`` with the quiet flags, on Debian's Chromium where it is.

    Elsewhere (a laptop where ``playwright install`` was run) playwright's own
    Chromium is used.
    """
    if os.path.exists(CHROMIUM):
        options.setdefault("executable_path", CHROMIUM)
    return playwright.chromium.launch(args=CHROMIUM_ARGS, **options)


class BrowserUnavailable(RuntimeError):
    """No browser could be driven (playwright or Chromium missing, or it failed)."""


def run_chromium(url: str, username: str = "headless-chromium", messages: Iterable[str] = (),
                 stay: float = 0.0, timeout: float = 10.0) -> dict[str, Any]:
    """Open ``url`` in headless Chromium, join as ``username``, send ``messages``, stay ``stay`` s, quit.

    Runs Playwright's synchronous API on a thread of its own (it refuses to
    run on a thread whose asyncio loop is running, as a notebook's is).
    Each message is sent by typing it into ``#message`` and clicking
    ``#send``, like a student, and is awaited in ``#messages``.  Returns
    {"user_agent": ..., "seconds": ...}; raises BrowserUnavailable when
    Playwright or Chromium is missing or the page misbehaves.
    """
    messages = list(messages)
    result: dict[str, Any] = {}

    def job() -> None:
        start = time.monotonic()
        try:
            from playwright.sync_api import sync_playwright

            with sync_playwright() as p:
                browser = launch(p, timeout=timeout * 1000)
                try:
                    page = browser.new_page()
                    page.set_default_timeout(timeout * 1000)
                    page.goto(url)
                    page.fill("#username", username)
                    page.click("#join")
                    page.wait_for_function("() => window.chat && window.chat.state.status === 'online'")
                    for i, text in enumerate(messages):
                        page.fill("#message", text)
                        page.click("#send")
                        count = messages[: i + 1].count(text)
                        page.wait_for_function(
                            "([t, n]) => document.getElementById('messages').textContent.split(t).length - 1 >= n",
                            arg=[text, count])
                    if stay:
                        page.wait_for_timeout(stay * 1000)
                    result["user_agent"] = page.evaluate("navigator.userAgent")
                finally:
                    browser.close()
            result["seconds"] = time.monotonic() - start
        except BaseException as error:  # noqa: BLE001 - reported to the caller
            result["error"] = error

    thread = threading.Thread(target=job, name="headless-chromium", daemon=True)
    thread.start()
    limit = 2 * timeout + stay + 5
    thread.join(limit)
    if thread.is_alive():
        raise BrowserUnavailable(f"headless Chromium did not finish within {limit:g} s")
    if "error" in result:
        error = result["error"]
        raise BrowserUnavailable(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from error
    return result
