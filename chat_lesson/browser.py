"""Headless Chromium, for the lessons and the tests: Debian's browser, driven by playwright.

The course never downloads a browser (``playwright install``): it drives the
Chromium that the system's package manager installed.  The flags keep it
quiet on a machine without a network: no sandbox (containers run as root), no
GPU, and none of Chromium's own background connections.
"""

from __future__ import annotations

import os
from typing import Any

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
