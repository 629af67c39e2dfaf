"""Lesson 06's attack in a real browser: HTML in a chat message, rendered with innerHTML or as text.

:func:`browser_xss` opens pages in headless Chromium (see
:mod:`chat_lesson.browser`), has "mallory" post :data:`XSS` from a script,
and reports whether the page ran it: :data:`INNER_HTML_PAGE`, a page of our
own, inserts messages into the page as HTML, which is what the Go original's
client does with ``v-html``; the course's client sets ``textContent``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import time
from collections.abc import Sequence

from ..browser import launch
from ..browser import unavailable as browser_available

__all__ = ["INNER_HTML_PAGE", "XSS", "BrowserResult", "browser_available", "browser_xss", "is_chat_message"]


def is_chat_message(raw: str | bytes) -> bool:
    """A relayed chat message: the naive server's ``{email, username, message}`` or our ``type: message``."""
    try:
        event = json.loads(raw)
    except ValueError:
        return False
    return isinstance(event, dict) and "message" in event and event.get("type", "message") == "message"


XSS = '<img src=x onerror="window.__pwned=1">'

# A page of our own that trusts what it receives: it builds each line of the
# log as a string of HTML and hands it to innerHTML, which is what a client
# does when it renders messages with Vue's v-html (as the Go original's does).
# Served from a temporary folder by the server under test, so it is
# same-origin with /ws.
INNER_HTML_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>a page that trusts HTML</title></head>
<body>
<section id="log"></section>
<script>
window.__pwned = 0; window.__open = 0; window.__received = 0;
var socket = new WebSocket("ws://" + location.host + "/ws");  // no subprotocol: a legacy client
socket.onopen = function () { window.__open = 1; };
socket.onmessage = function (event) {
  var data = JSON.parse(event.data);
  if (data.type && data.type !== "message") return;            // our server's other events
  var line = "<p><b>" + data.username + ":</b> " + data.message + "</p>";
  document.getElementById("log").insertAdjacentHTML("beforeend", line);   // parsed as HTML: the flaw
  window.__received += 1;
};
</script>
</body></html>
"""


@dataclasses.dataclass
class BrowserResult:
    label: str
    pwned: bool              # did window.__pwned get set (the onerror ran)?
    images: int              # <img> elements the message created in the page
    shown: str               # the message as the reader sees it (innerText)
    dom: str                 # the message's HTML in the page's DOM


def _send_as_attacker(ws_url: str, text: str) -> None:
    """A script (no Origin header, no subprotocol) posts ``text`` as user 'mallory'."""
    from websockets.sync.client import connect as sync_connect

    with sync_connect(ws_url, open_timeout=5) as ws:
        ws.send(json.dumps({"username": "mallory", "email": "", "message": text}))
        # read our own echo, so the message has surely gone out before we close
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if is_chat_message(ws.recv(timeout=max(0.01, deadline - time.monotonic()))):
                break


def _run_in_browser(targets: Sequence[tuple[str, str, str, str]], message: str, wait_ms: int) -> list[BrowserResult]:
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as p:
        browser = launch(p)
        try:
            for label, page_url, ws_url, kind in targets:
                page = browser.new_context().new_page()
                page.set_default_timeout(20_000)          # a loaded machine: be patient
                page.goto(page_url)
                if kind == "ours":      # our static client: join as "victim" first
                    page.fill("#username", "victim")
                    page.click("#join-form button[type=submit]")
                    page.wait_for_function("() => window.chat && window.chat.state.status === 'online'")
                    page.wait_for_function("() => document.querySelector('#messages .sys') !== null")
                    page.evaluate("window.__pwned = 0")
                else:
                    page.wait_for_function("() => window.__open === 1")
                _send_as_attacker(ws_url, message)
                selector = "#messages .msg .msg-text" if kind == "ours" else "#log"
                page.wait_for_function("s => document.querySelector(s) && document.querySelector(s).textContent.length > 0",
                                       arg=selector)
                node = page.query_selector(selector)
                images = len(node.query_selector_all("img"))
                if images:   # an onerror runs once the image has failed to load: give it a moment
                    try:
                        page.wait_for_function("() => window.__pwned === 1", timeout=wait_ms)
                    except Exception:
                        pass
                # No <img> element, no onerror handler that could ever run: read the flag now.
                pwned = page.evaluate("() => window.__pwned === 1")
                results.append(BrowserResult(label, pwned, images, node.inner_text(), node.inner_html()))
                page.context.close()
        finally:
            browser.close()
    return results


def browser_xss(targets: Sequence[tuple[str, str, str, str]], message: str = XSS, wait_ms: int = 1500) -> list[BrowserResult]:
    """Open each page in headless Chromium, have 'mallory' send ``message``, and see whether it ran.

    ``targets``: (label, page URL, ws URL to send through, kind) with kind
    ``"innerhtml"`` for :data:`INNER_HTML_PAGE` or ``"ours"`` for static/index.html.
    Playwright's synchronous API refuses to run on a thread with an asyncio
    loop (a notebook's), so it runs on a worker thread.
    """
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(_run_in_browser, targets, message, wait_ms).result(120)
