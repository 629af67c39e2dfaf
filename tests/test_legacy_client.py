"""A client that behaves like the Go original's, in Chromium, against our server.

The Go original's page must keep working against our server: a client that
offers no subprotocol is *legacy* and gets only ``message`` events, in the
original's shape (``username``, ``email``, ``message``), HTML-escaped, with no
address.  The course does not ship or copy the original's page; instead
tests/legacy_client/ holds a small page of our own (index.html and legacy.js,
plain JavaScript, no libraries) that behaves as the original's client does:

- it opens its WebSocket as the page loads, at /ws, offering no subprotocol;
- it sends one JSON object per text frame, and reads ``username``, ``email``
  and ``message`` from each frame it receives;
- it puts what it receives into the page as HTML (``innerHTML``), unescaped;
- it shows its own message only when the server echoes it;
- it never reconnects.

``ChatServer(static=tests/legacy_client)`` serves that page; nothing leaves
127.0.0.1 (any other request is aborted and reported).
"""

from __future__ import annotations

import json
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Route, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from chat_lesson.chat.client import ChatClient
from chat_lesson.chat.server import ChatServer

CLIENT = Path(__file__).resolve().parent / "legacy_client"
TIMEOUT = 10_000          # ms, for every wait on a page
NO_RECONNECT_WAIT = 3.0   # s: longer than any reconnect delay a page would plausibly use first
XSS = "<img src=x onerror=window.__xss=1>"

pytestmark = pytest.mark.browser

expect.set_options(timeout=TIMEOUT)


@dataclass
class Tab:
    """One browser (its own context) on the legacy page, and everything it reported."""

    page: Page
    errors: list[str] = field(default_factory=list)      # console errors and uncaught exceptions
    blocked: list[str] = field(default_factory=list)     # requests that tried to leave 127.0.0.1
    sent: list[str | bytes] = field(default_factory=list)       # WebSocket frames the page sent
    received: list[str | bytes] = field(default_factory=list)   # ... and received

    @property
    def posts(self):
        return self.page.locator("#feed .post")

    def post(self, username: str, email: str, text: str) -> None:
        page = self.page
        page.locator("#who").fill(username)
        page.locator("#address").fill(email)
        page.locator("#words").fill(text)
        page.get_by_role("button", name="Post").click()
        expect(page.locator("#words")).to_have_value("")

    def events(self) -> list[dict]:
        assert all(isinstance(frame, str) for frame in self.received), "the server sent a binary frame"
        return [json.loads(frame) for frame in self.received]

    def clean(self, name: str) -> None:
        assert self.blocked == [], f"{name}'s page asked for something outside 127.0.0.1: {self.blocked}"
        assert self.errors == [], f"errors on {name}'s page: {self.errors}"


def _route(tab: Tab, route: Route) -> None:
    if urllib.parse.urlsplit(route.request.url).hostname == "127.0.0.1":
        route.continue_()
    else:
        tab.blocked.append(route.request.url)
        route.abort()


def _open(browser: Browser, url: str) -> Tab:
    """A new browser context on ``url``, once its WebSocket is open."""
    page = browser.new_context().new_page()
    tab = Tab(page)
    page.route("**/*", lambda route: _route(tab, route))
    page.on("console", lambda msg: tab.errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: tab.errors.append(f"uncaught: {exc}"))

    def watch(ws) -> None:
        ws.on("framesent", lambda payload: tab.sent.append(payload))
        ws.on("framereceived", lambda payload: tab.received.append(payload))

    page.on("websocket", watch)
    page.goto(url)
    try:
        page.wait_for_function("() => window.legacyPage && window.legacyPage.socket.readyState === 1",
                               timeout=TIMEOUT)
    except PlaywrightTimeoutError:
        raise AssertionError(f"the legacy page did not open its WebSocket; errors: {tab.errors}, "
                             f"blocked: {tab.blocked}") from None
    expect(page.locator("#status")).to_have_text("open")
    return tab


@pytest.fixture
def server():
    with ChatServer(port=0, quiet=True, static=CLIENT) as s:
        yield s


@pytest.fixture
def tabs(browser: Browser, server: ChatServer):
    opened: list[Tab] = []

    def open_tab() -> Tab:
        opened.append(_open(browser, server.url))
        return opened[-1]

    yield open_tab
    for tab in opened:
        tab.page.context.close()


def test_two_legacy_pages_chat(server: ChatServer, tabs) -> None:
    alice, bob = tabs(), tabs()
    for tab in (alice, bob):
        # Connected at load, with no subprotocol: the server chose none.
        assert tab.page.evaluate("() => window.legacyPage.socket.protocol") == ""
        assert tab.page.evaluate("() => window.legacyPage.socket.url") == server.ws_url
    assert server.stats.connections_total == 2

    alice.post("alice", "alice@example.org", "hello from alice")
    for tab in (alice, bob):
        expect(tab.posts).to_have_count(1)
    bob.post("bob", "bob@example.org", "hi alice, bob here")
    for tab in (alice, bob):
        expect(tab.posts).to_have_count(2)
        expect(tab.posts.locator(".author")).to_have_text(["alice", "bob"])
        expect(tab.posts.locator(".text")).to_have_text(["hello from alice", "hi alice, bob here"])
        # The server never hands a legacy client an address: no avatar to draw.
        expect(tab.posts.locator(".avatar")).to_have_text(["[?]", "[?]"])
    # The original names a client by its first message, so does our server.
    assert server.clients == ["alice", "bob"]

    # One JSON object per text frame, with exactly the original's three keys.
    assert [json.loads(f) for f in alice.sent] == [
        {"username": "alice", "email": "alice@example.org", "message": "hello from alice"}]
    assert [json.loads(f) for f in bob.sent] == [
        {"username": "bob", "email": "bob@example.org", "message": "hi alice, bob here"}]
    # Treated as legacy: messages only (no welcome, presence or join), each without its address.
    for tab in (alice, bob):
        events = tab.events()
        assert [e["type"] for e in events] == ["message", "message"], events
        assert [(e["username"], e["email"], e["message"]) for e in events] == [
            ("alice", "", "hello from alice"), ("bob", "", "hi alice, bob here")]
    alice.clean("alice")
    bob.clean("bob")


def test_html_in_a_message_is_shown_as_text_never_run(server: ChatServer, tabs) -> None:
    alice, bob = tabs(), tabs()
    mallory = ChatClient(server, "mallory").connect()      # a modern client: it sends the text as typed
    try:
        mallory.send(f"mallory says {XSS}")
        # The legacy page itself posts raw HTML too (it strips nothing before sending).
        alice.post("alice", "", XSS)
        bob.post("<i>bob</i>", "", "bye")                  # one more, so any onerror had its chance to fire
        for tab in (alice, bob):
            expect(tab.posts).to_have_count(3)
            expect(tab.posts.locator(".text")).to_have_text([f"mallory says {XSS}", XSS, "bye"])
            expect(tab.posts.locator(".author")).to_have_text(["mallory", "alice", "<i>bob</i>"])
            assert tab.page.locator("#feed img").count() == 0
            assert tab.page.locator("#feed i").count() == 0
            assert tab.page.evaluate("() => window.__xss") is None
            # What made that so: the server escaped the text for legacy clients.
            events = tab.events()
            assert events[0]["message"] == "mallory says &lt;img src=x onerror=window.__xss=1&gt;"
            assert events[2]["username"] == "&lt;i&gt;bob&lt;/i&gt;"
        # A modern client gets the text as typed; our own page shows it with textContent.
        got = mallory.recv(type="message")
        assert got["message"] == f"mallory says {XSS}"
    finally:
        mallory.close()
    alice.clean("alice")
    bob.clean("bob")


def test_own_message_appears_only_when_the_server_echoes_it(server: ChatServer, tabs) -> None:
    alice, bob = tabs(), tabs()
    # Posting adds nothing at once: right after the frame leaves, the page is unchanged.
    shown_at_once = alice.page.evaluate("""() => {
        document.getElementById('who').value = 'alice';
        document.getElementById('words').value = 'first';
        document.getElementById('composer').requestSubmit();
        return [window.legacyPage.framesOut, document.querySelectorAll('#feed .post').length];
    }""")
    assert shown_at_once == [1, 0]
    expect(alice.posts.locator(".text")).to_have_text(["first"])      # ... until the echo came

    # A message the server refuses (over its 4 KiB text limit) is never echoed,
    # and a legacy client hears no error: the page never shows it.
    too_long = "x" * (server.limits.max_message + 1)
    alice.post("alice", "", too_long)
    alice.post("alice", "", "second")
    for tab in (alice, bob):
        expect(tab.posts.locator(".text")).to_have_text(["first", "second"])
    assert len(alice.sent) == 3 and json.loads(alice.sent[1])["message"] == too_long
    assert server.stats.errors == 1
    alice.clean("alice")
    bob.clean("bob")


def test_the_page_never_reconnects(browser: Browser) -> None:
    with ChatServer(port=0, quiet=True, static=CLIENT) as first:
        port = first.port
        tab = _open(browser, first.url)
        try:
            assert first.stats.connections_total == 1
            tab.post("alice", "", "before the restart")
            expect(tab.posts).to_have_count(1)
            first.stop()
            expect(tab.page.locator("#status")).to_have_text("closed")
            assert tab.page.evaluate("() => window.legacyPage.socket.readyState") == 3   # CLOSED

            with ChatServer(port=port, quiet=True, static=CLIENT) as second:
                deadline = time.monotonic() + NO_RECONNECT_WAIT
                while time.monotonic() < deadline:
                    assert second.stats.connections_total == 0, "the legacy page reconnected"
                    time.sleep(0.1)
                expect(tab.page.locator("#status")).to_have_text("closed")
                # The same socket object, still closed: no new one was made.
                assert tab.page.evaluate("() => window.legacyPage.socket.readyState") == 3
                # The server is back and reachable: the page simply did not come.
                with ChatClient(second, "probe"):
                    pass
                assert second.stats.connections_total == 1
            tab.clean("alice")
        finally:
            tab.page.context.close()
