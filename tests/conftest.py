"""Shared fixtures: real servers on 127.0.0.1, port 0, and one Chromium per test module."""

from __future__ import annotations

import os

import pytest
from helpers import unavailable

from chat_lesson import browser as chromium
from chat_lesson.chat.server import ChatServer


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's, at /usr/bin/chromium), shared by a test module."""
    if not os.path.exists(chromium.CHROMIUM):
        unavailable(f"Chromium not found at {chromium.CHROMIUM}: install it with `apt-get install chromium` "
                    "to run the browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = chromium.launch(p)
        yield launched
        launched.close()


@pytest.fixture
def server():
    """A real chat server on a free port, stopped after the test."""
    with ChatServer(port=0, quiet=True, announce_after=0) as s:      # joins heard at once: tests wait less
        yield s
