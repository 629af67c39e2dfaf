"""The browser client (static/) driven in Debian's Chromium through Playwright.

Each test starts a real ChatServer on a free port and opens one browser
context per student, so every page has its own localStorage, like separate
laptops.  Tests wait on conditions (Playwright's ``expect``), never on sleeps.

Chromium comes from the system (``apt-get install chromium``), not from
``playwright install``.  Without it these tests are skipped, except in CI
(``CI=true``), where a missing browser is a failure.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

import pytest

OUTPUT = Path(__file__).resolve().parent / "output"
TIMEOUT = 10_000  # ms, for every wait on the page

pytestmark = pytest.mark.browser


from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from chat_lesson.chat.server import ChatServer

expect.set_options(timeout=TIMEOUT)


# -- fixtures ----------------------------------------------------------------


@dataclass
class Student:
    """One browser context with one page, and everything it reported."""

    page: Page
    errors: list[str] = field(default_factory=list)     # console errors and uncaught exceptions
    dialogs: list[str] = field(default_factory=list)    # alert/confirm/prompt that fired
    sent: list[str] = field(default_factory=list)       # WebSocket frames the page sent
    requests: list[str] = field(default_factory=list)   # every URL the page asked for

    def join(self, name: str, email: str = "") -> Student:
        page = self.page
        page.fill("#username", name)
        page.fill("#email", email)
        page.click("#join")
        expect(page.locator("#status")).to_have_attribute("data-state", "online")
        expect(page.locator("#online")).to_contain_text(name)
        return self

    def say(self, text: str, *, button: bool = False) -> None:
        self.page.fill("#message", text)
        if button:
            self.page.click("#send")
        else:
            self.page.press("#message", "Enter")
        expect(self.page.locator("#message")).to_have_value("")

    def message(self, text: str):
        """The one .msg whose text contains ``text``."""
        return self.page.locator("#messages .msg").filter(has_text=text)

    def assert_clean(self, allow: Callable[[str], bool] = lambda text: False) -> None:
        errors = [e for e in self.errors if not allow(e)]
        assert errors == [], f"errors on the page: {errors}"
        assert self.dialogs == [], f"dialogs fired: {self.dialogs}"


OpenStudent = Callable[..., Student]


def _open(browser: Browser, url: str, contexts: list, viewport: dict[str, int] | None = None,
          name: str | None = None, email: str = "") -> Student:
    context = browser.new_context(viewport=viewport or {"width": 1100, "height": 720},
                                  reduced_motion="reduce")
    contexts.append(context)
    page = context.new_page()
    student = Student(page)

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            student.errors.append(msg.text)

    def on_dialog(dialog: Any) -> None:
        student.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("console", on_console)
    page.on("pageerror", lambda exc: student.errors.append(f"uncaught: {exc}"))
    page.on("dialog", on_dialog)
    page.on("request", lambda request: student.requests.append(request.url))
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: student.sent.append(
        payload if isinstance(payload, str) else payload.decode())))
    page.goto(url)
    if name is not None:
        student.join(name, email)
    return student


@pytest.fixture
def open_student(browser: Browser, server: ChatServer) -> Iterator[OpenStudent]:
    """open_student("alice") -> a Student whose page has joined the chat as alice."""
    contexts: list = []
    yield lambda name=None, email="", viewport=None: _open(browser, server.url, contexts, viewport, name, email)
    for context in contexts:
        context.close()


def at_bottom(page: Page) -> bool:
    return page.evaluate(
        "() => { const l = document.getElementById('messages');"
        " return l.scrollHeight - l.scrollTop - l.clientHeight <= 2; }")


def wait_at_bottom(page: Page) -> None:
    page.wait_for_function(
        "() => { const l = document.getElementById('messages');"
        " return l.scrollHeight - l.scrollTop - l.clientHeight <= 2; }", timeout=TIMEOUT)


def expected_identicon(email: str) -> set[tuple[int, int]]:
    """The filled cells of the 5x5 mirrored identicon that app.js draws for this address."""
    digest = hashlib.md5(email.strip().lower().encode()).hexdigest()
    cells = set()
    for col in range(3):
        for row in range(5):
            if int(digest[col * 5 + row], 16) % 2 == 0:
                cells |= {(col, row), (4 - col, row)}
    return cells


def identicon_cells(message) -> set[tuple[int, int]]:
    """The filled cells of the identicon inside a .msg locator."""
    rects = message.locator(".avatar svg rect[fill]")
    return {(int(r.get_attribute("x")), int(r.get_attribute("y"))) for r in rects.all()}


# -- 1. two students chat ---------------------------------------------------------


def test_two_students_chat(open_student: OpenStudent, server: ChatServer) -> None:
    alice = open_student("alice", "alice@example.org")
    bob = open_student("bob")

    # alice sees bob arrive, both in the list and as a notice
    expect(alice.page.locator("#messages .sys").filter(has_text="bob joined")).to_have_count(1)
    for student in (alice, bob):
        expect(student.page.locator("#online .person")).to_have_count(2)
        expect(student.page.locator("#online")).to_contain_text("alice")
        expect(student.page.locator("#online")).to_contain_text("bob")
        expect(student.page.locator("#online-count")).to_have_text("2")
    assert server.clients == ["alice", "bob"]

    alice.say("hello bob :tada:")
    seen = bob.message("hello bob")
    expect(seen).to_have_count(1)
    expect(seen.locator(".msg-text")).to_have_text("hello bob 🎉")
    expect(seen.locator(".msg-name")).to_have_text("alice")
    expect(seen.locator(".msg-time")).to_have_text(re.compile(r"^\d\d:\d\d$"))
    assert identicon_cells(seen) == expected_identicon("alice@example.org")

    bob.say("hi alice :wave: :not_an_emoji:", button=True)
    reply = alice.message("hi alice")
    expect(reply.locator(".msg-text")).to_have_text("hi alice 👋 :not_an_emoji:")
    expect(reply.locator(".msg-name")).to_have_text("bob")
    expect(reply.locator(".avatar")).to_have_text("B")                  # no email: initials

    # what went over the wire is what was typed, shortcodes and all
    frames = [json.loads(f) for f in alice.sent]
    assert frames[0] == {"type": "join", "username": "alice", "email": "alice@example.org"}
    assert {"username": "alice", "email": "alice@example.org", "message": "hello bob :tada:"} in frames

    # the hook for lessons
    state = bob.page.evaluate("window.chat.state")
    assert state["status"] == "online" and state["username"] == "bob"
    assert state["protocol"] == "chat-lesson.v1"
    assert bob.page.evaluate("window.chat.socket.protocol") == "chat-lesson.v1"

    # bob leaves: alice is told, and the list shrinks
    bob.page.click("#leave")
    expect(alice.page.locator("#messages .sys").filter(has_text="bob left")).to_have_count(1)
    expect(alice.page.locator("#online .person")).to_have_count(1)
    expect(bob.page.locator("#join")).to_be_visible()

    # no request left this server: no CDN, no Gravatar
    for student in (alice, bob):
        assert all(url.startswith(server.url) or url.startswith(server.ws_url) for url in student.requests), \
            student.requests
        student.assert_clean()


def test_gravatar_is_opt_in_and_falls_back(open_student: OpenStudent, server: ChatServer) -> None:
    """With the box ticked the page asks Gravatar; when that fails it draws the identicon."""
    erin = open_student()
    asked: list[str] = []

    def refuse(route: Any) -> None:           # never reach the internet from a test
        asked.append(route.request.url)
        route.abort()

    erin.page.context.route("https://www.gravatar.com/**", refuse)
    erin.page.check("#gravatar")
    erin.join("erin", "erin@example.org")
    erin.say("hello :wave:")
    message = erin.message("hello")
    expect(message.locator(".avatar svg")).to_have_count(1)
    assert identicon_cells(message) == expected_identicon("erin@example.org")
    digest = hashlib.md5(b"erin@example.org").hexdigest()
    assert asked and all(url.startswith(f"https://www.gravatar.com/avatar/{digest}?") for url in asked)
    erin.assert_clean(allow=lambda text: "Failed to load resource" in text)


def test_reload_rejoins(open_student: OpenStudent, server: ChatServer) -> None:
    alice = open_student("alice", "a@example.org")
    alice.page.reload()
    expect(alice.page.locator("#status")).to_have_attribute("data-state", "online")
    expect(alice.page.locator("#online")).to_contain_text("alice")
    expect(alice.page.locator("#join-view")).to_be_hidden()
    assert alice.page.evaluate("window.chat.state.email") == "a@example.org"
    alice.assert_clean()


def test_join_form_validates(open_student: OpenStudent) -> None:
    carol = open_student()
    carol.page.fill("#username", "   ")
    carol.page.click("#join")
    expect(carol.page.locator("#username-error")).to_contain_text("choose a name")
    expect(carol.page.locator("#chat-view")).to_be_hidden()
    carol.join("  carol  ")
    assert carol.page.evaluate("window.chat.state.username") == "carol"
    carol.page.fill("#message", "   ")
    carol.page.press("#message", "Enter")
    assert carol.page.locator("#messages .msg").count() == 0
    assert carol.page.get_attribute("#message", "maxlength") == "4096"
    # a 4096-byte message of quotes is 8192+ bytes as JSON: refused here, not closed (1009) there
    assert carol.page.evaluate("""window.chat.send('"'.repeat(4096))""") is False
    expect(carol.page.locator(".notice").filter(has_text="JSON")).to_be_visible()
    expect(carol.page.locator("#status")).to_have_attribute("data-state", "online")
    carol.assert_clean()


# -- 2. HTML in a message is text ------------------------------------------------------


XSS = [
    "<img src=x onerror=alert(1)>",
    '<img src=x onerror="window.__xss=1">',
    "<script>window.__xss=2</script>",
    '<svg onload="window.__xss=3"></svg>',
]


def test_html_is_shown_as_text(open_student: OpenStudent) -> None:
    mallory = open_student("<img src=x onerror=alert(1)>")       # a hostile name, too
    bob = open_student("bob")
    for payload in XSS:
        mallory.say(payload)
    for student in (bob, mallory):
        page = student.page
        expect(page.locator("#messages .msg-text")).to_have_text(XSS)
        expect(page.locator("#messages .msg-name").first).to_have_text("<img src=x onerror=alert(1)>")
        expect(page.locator("#online")).to_contain_text("<img src=x onerror=alert(1)>")
        for tag in ("img", "script", "svg foreignObject"):
            assert page.locator(f"#messages {tag}").count() == 0, tag
        assert page.locator("#online img").count() == 0
        # the only <svg> in the list are identicons we drew (none here: no emails)
        assert page.locator("#messages svg").count() == 0
        assert page.evaluate("typeof window.__xss") == "undefined"
        student.assert_clean()


# -- 3. screenshots ------------------------------------------------------------------------


def _conversation(alice: Student, bob: Student, carol: Student) -> None:
    alice.say("Good morning everyone :wave: today: WebSockets!")
    bob.say("Morning :coffee: is the server running on the projector?")
    alice.say("Yes: open the link on the board and say hi :smile:")
    carol.say("hi :tada: :tada:")
    bob.say("Every message here is one text frame, about 100 bytes :zap:")
    alice.say(":+1:")
    carol.say("And <b>this</b> stays plain text :sunglasses:")
    expect(alice.message("stays plain text")).to_have_count(1)
    expect(carol.message("stays plain text")).to_have_count(1)


def test_screenshots(open_student: OpenStudent) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    alice = open_student("alice", "alice@example.org")
    bob = open_student("bob", "bob@example.org")
    carol = open_student("carol", viewport={"width": 375, "height": 667})
    _conversation(alice, bob, carol)

    desktop = OUTPUT / "chat.png"
    alice.page.mouse.move(0, 0)                     # no hover highlight in the picture
    alice.page.screenshot(path=str(desktop))
    assert desktop.stat().st_size > 20_000

    # phone width: the online list folds into a button, and nothing scrolls sideways
    page = carol.page
    expect(page.locator("#online-panel")).to_be_hidden()
    expect(page.locator("#online-toggle")).to_be_visible()
    expect(page.locator("#online-toggle")).to_contain_text("3")
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    phone = OUTPUT / "chat-phone.png"
    page.screenshot(path=str(phone))
    assert phone.stat().st_size > 10_000

    page.click("#online-toggle")
    expect(page.locator("#online-panel")).to_be_visible()
    expect(page.locator("#online .person")).to_have_count(3)
    page.screenshot(path=str(OUTPUT / "chat-phone-online.png"))
    page.keyboard.press("Escape")
    expect(page.locator("#online-panel")).to_be_hidden()

    # the narrowest phones still fit
    page.set_viewport_size({"width": 320, "height": 568})
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    expect(page.locator("#send")).to_be_in_viewport()

    # and the join form
    dave = open_student(viewport={"width": 375, "height": 667})
    dave.page.screenshot(path=str(OUTPUT / "join-phone.png"))
    for student in (alice, bob, carol, dave):
        student.assert_clean()


# -- 4. no console errors, and server errors reach the student ----------------------------------


def test_no_console_errors_and_error_notices(open_student: OpenStudent) -> None:
    alice = open_student("alice", "alice@example.org")
    bob = open_student("bob")
    _conversation(alice, bob, bob)

    # the emoji picker inserts a shortcode
    alice.page.click("#emoji-button")
    alice.page.click("#emoji-picker [title=':rocket:']")
    expect(alice.page.locator("#message")).to_have_value(":rocket: ")
    alice.page.press("#message", "Enter")
    expect(bob.message("🚀")).to_have_count(1)

    # a frame the server cannot read: an error event, shown, and the connection stays
    alice.page.evaluate("window.chat.socket.send('this is not JSON')")
    expect(alice.page.locator(".notice")).to_contain_text("could not read")
    expect(alice.page.locator("#status")).to_have_attribute("data-state", "online")

    # too many too fast: the server's rate limit, shown as a notice
    alice.page.evaluate("for (let i = 0; i < 30; i++) window.chat.send('spam ' + i)")
    expect(alice.page.locator(".notice").filter(has_text="too fast").first).to_be_visible()
    expect(alice.page.locator("#status")).to_have_attribute("data-state", "online")

    # a message over 4096 bytes never leaves the page
    assert alice.page.evaluate("window.chat.send('é'.repeat(3000))") is False
    expect(alice.page.locator(".notice").filter(has_text="Too long")).to_be_visible()

    for student in (alice, bob):
        student.assert_clean()


# -- 5. auto-scroll only when at the bottom -----------------------------------------------------


def test_autoscroll(open_student: OpenStudent) -> None:
    small = {"width": 800, "height": 520}
    alice = open_student("alice", viewport=small)
    bob = open_student("bob", viewport=small)
    page = bob.page
    for i in range(14):
        alice.say(f"message {i}: " + "a fairly long line of chat text that wraps " * 3)
    expect(bob.message("message 13:")).to_have_count(1)
    assert page.evaluate("document.getElementById('messages').scrollHeight > "
                         "2 * document.getElementById('messages').clientHeight")

    # at the bottom, a new message keeps the view at the bottom
    wait_at_bottom(page)
    alice.say("still following?")
    expect(bob.message("still following?")).to_have_count(1)
    assert at_bottom(page)
    expect(page.locator("#new-messages")).to_be_hidden()

    # scrolled up to read: a new message does not move the view
    page.evaluate("document.getElementById('messages').scrollTop = 120")
    expect(page.locator("#messages")).to_have_js_property("scrollTop", 120)
    alice.say("look up here")
    expect(bob.message("look up here")).to_have_count(1)
    assert page.evaluate("document.getElementById('messages').scrollTop") == 120
    expect(page.locator("#new-messages")).to_be_visible()
    expect(page.locator("#new-messages")).to_contain_text("1 new message")

    # the button takes you down and goes away
    page.click("#new-messages")
    wait_at_bottom(page)
    expect(page.locator("#new-messages")).to_be_hidden()

    # your own message always scrolls you down
    page.evaluate("document.getElementById('messages').scrollTop = 0")
    bob.say("my own")
    expect(bob.message("my own")).to_have_count(1)
    wait_at_bottom(page)
    for student in (alice, bob):
        student.assert_clean()


# -- 6. the server goes away and comes back -------------------------------------------------------


def test_reconnects_and_rejoins(browser: Browser) -> None:
    first = ChatServer(port=0, quiet=True).start()
    port = first.port
    contexts: list = []
    second = None
    try:
        alice = _open(browser, first.url, contexts, name="alice")
        status = alice.page.locator("#status")
        first.stop()
        expect(status).to_have_attribute("data-state", re.compile("offline|connecting"))
        expect(alice.page.locator("#messages .sys-conn")).to_contain_text("1001")
        expect(status).to_have_attribute("data-state", "offline")
        expect(alice.page.locator("#status-text")).to_contain_text(
            re.compile(r"reconnecting (in \d+ s|now)"), use_inner_text=True)

        # offline, Enter keeps the text in the box and says why
        alice.page.fill("#message", "anyone there?")
        alice.page.press("#message", "Enter")
        expect(alice.page.locator(".notice").filter(has_text="Not connected")).to_be_visible()
        expect(alice.page.locator("#message")).to_have_value("anyone there?")

        second = ChatServer(port=port, quiet=True).start()
        expect(status).to_have_attribute("data-state", "online", timeout=20_000)
        expect(alice.page.locator("#online")).to_contain_text("alice")
        assert second.clients == ["alice"]
        expect(alice.page.locator("#messages .sys-conn").last).to_contain_text("Reconnected")

        alice.say("back again :rocket:")
        expect(alice.message("back again 🚀")).to_have_count(1)
        # Chromium logs each refused connection attempt; nothing else may appear
        alice.assert_clean(allow=lambda text: text.startswith("WebSocket connection to"))
    finally:
        for context in contexts:
            context.close()
        first.stop()
        if second is not None:
            second.stop()


def test_too_big_frame_closes_1009_then_reconnects(open_student: OpenStudent, server: ChatServer) -> None:
    """A frame over the server's limit (sent by hand, past the page's own checks) closes with 1009."""
    alice = open_student("alice")
    bob = open_student("bob")
    alice.page.evaluate("window.chat.socket.send('x'.repeat(9000))")
    expect(alice.page.locator("#messages .sys-conn").first).to_contain_text("1009")
    expect(alice.page.locator(".notice").filter(has_text="too big")).to_be_visible()
    expect(alice.page.locator("#status")).to_have_attribute("data-state", "online")
    expect(alice.page.locator("#messages .sys-conn").last).to_contain_text("Reconnected")
    assert alice.page.evaluate("window.chat.state.lastClose.code") == 1009
    alice.say("still here :smile:")
    expect(bob.message("still here 😄")).to_have_count(1)
    # bob saw alice leave and come back
    expect(bob.page.locator("#messages .sys").filter(has_text="alice left")).to_have_count(1)
    for student in (alice, bob):
        student.assert_clean()


@pytest.mark.browser
def test_latecomer_sees_what_was_said_once(open_student: OpenStudent) -> None:
    alice = open_student("alice")
    alice.say("said before bob came")
    bob = open_student("bob")
    expect(bob.message("said before bob came")).to_have_count(1)
    expect(bob.message("said before bob came")).to_have_class(re.compile(r"\bearlier\b"))
    alice.say("said after")
    expect(bob.message("said after")).to_have_count(1)
    bob.page.reload()                                   # history again: each message still once
    expect(bob.page.locator("#status")).to_have_attribute("data-state", "online")
    expect(bob.message("said after")).to_have_count(1)
    expect(bob.message("said before bob came")).to_have_count(1)
    alice.assert_clean()
    bob.assert_clean()
