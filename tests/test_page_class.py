"""The page in a real classroom: a capped list, bursts of joins, renames, and the teacher's page.

Each test starts its own ChatServer on a free port and opens one browser
context per person (each with its own storage, like separate laptops) in
Debian's Chromium.  Every wait is bounded (Playwright's ``expect`` with
TIMEOUT); none is a sleep.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from chat_lesson.chat.client import ChatClient
from chat_lesson.chat.server import ChatServer

pytestmark = pytest.mark.browser

TIMEOUT = 10_000  # ms, for every wait on the page
MAX_ITEMS = 500   # static/app.js keeps at most this many lines in the list

expect.set_options(timeout=TIMEOUT)


class Person:
    """One browser context with one page, and what it reported."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []     # console errors and uncaught exceptions
        self.dialogs: list[str] = []    # alert/confirm/prompt (the page should use none)
        self.sent: list[str] = []       # WebSocket frames the page sent
        self.requests: list[str] = []   # every URL the page asked for
        page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("dialog", self._dialog)
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("websocket", lambda ws: ws.on("framesent", lambda payload: self.sent.append(
            payload if isinstance(payload, str) else payload.decode())))

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def join(self, name: str) -> Person:
        page = self.page
        page.fill("#username", name)
        page.click("#join")
        expect(page.locator("#status")).to_have_attribute("data-state", "online")
        expect(page.locator("#online .person.me")).to_have_count(1)
        return self

    def say(self, text: str) -> None:
        self.page.fill("#message", text)
        self.page.press("#message", "Enter")
        expect(self.page.locator("#message")).to_have_value("")

    def row(self, name: str):
        """The row of ``name`` in the online list."""
        return self.page.locator(f"#online .person[data-user={json.dumps(name)}]")

    def lines(self, testid: str):
        return self.page.locator(f"#messages [data-testid={testid}]")

    def assert_clean(self, allow=lambda text: False) -> None:
        errors = [e for e in self.errors if not allow(e)]
        assert errors == [], f"errors on the page: {errors}"
        assert self.dialogs == [], f"dialogs fired: {self.dialogs}"


@pytest.fixture
def people(browser: Browser) -> Iterator[Any]:
    """people(url, name=None, viewport=None) -> a Person whose page is open at ``url`` (and has joined)."""
    with ExitStack() as stack:
        def open_person(url: str, name: str | None = None, viewport: dict[str, int] | None = None) -> Person:
            context = browser.new_context(viewport=viewport or {"width": 1100, "height": 720},
                                          reduced_motion="reduce")
            stack.callback(context.close)
            person = Person(context.new_page())
            person.page.goto(url)
            if name is not None:
                person.join(name)
            return person

        yield open_person


def at_bottom(page: Page) -> bool:
    return page.evaluate("() => { const l = document.getElementById('messages');"
                         " return l.scrollHeight - l.scrollTop - l.clientHeight <= 16; }")


# -- the list stays capped while a reader is scrolled up ---------------------------------------------


def next_frames(page: Page) -> None:
    """Wait until the page has drawn two more frames."""
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")


def line_top(page: Page, text: str) -> float:
    """Where the line that says ``text`` is, in px from the top of the list's view."""
    return page.evaluate("""(text) => {
        const list = document.getElementById('messages');
        const line = [...list.querySelectorAll('.msg-text')].find(p => p.textContent === text);
        return line.closest('li').getBoundingClientRect().top - list.getBoundingClientRect().top;
    }""", text)


def test_list_stays_capped_while_scrolled_up(people) -> None:
    with ChatServer(port=0, quiet=True, rate_limit=0) as server, ChatClient(server, "flood") as flood:
        reader = people(server.url, "reader", viewport={"width": 800, "height": 520})
        page = reader.page
        shown = lambda text: page.locator("#messages .msg-text").filter(has_text=re.compile(f"^{text}$"))  # noqa: E731
        for i in range(300):
            flood.send(f"before {i}")
        expect(shown("before 299")).to_have_count(1)

        # scrolled up to read "before 250"
        page.evaluate("""() => {
            const list = document.getElementById('messages');
            const line = [...list.querySelectorAll('.msg-text')].find(p => p.textContent === 'before 250');
            list.scrollTop += line.closest('li').getBoundingClientRect().top - list.getBoundingClientRect().top;
        }""")
        next_frames(page)
        assert not at_bottom(page)
        top = line_top(page, "before 250")
        assert abs(top) <= 2, top

        # 250 more: the oldest lines go, the line being read stays where it was
        for i in range(250):
            flood.send(f"flood {i}")
        expect(shown("flood 249")).to_have_count(1)
        page.wait_for_function("() => document.getElementById('messages').children.length === 500")
        assert shown("before 0").count() == 0
        next_frames(page)                                 # a burst's view is put right on the next frame
        assert abs(line_top(page, "before 250") - top) <= 2
        assert not at_bottom(page)
        expect(page.locator("#new-messages")).to_be_visible()

        # 700 more while still scrolled up (what a reconnect flood looks like): still at most 500
        for i in range(250, 950):
            flood.send(f"flood {i}")
        expect(shown("flood 949")).to_have_count(1)
        count = page.evaluate("document.getElementById('messages').children.length")
        assert count == MAX_ITEMS, count                  # the newest lines; the oldest dropped
        assert not at_bottom(page)
        expect(page.locator("#new-messages")).to_contain_text("new messages")
        page.click("#new-messages")
        page.wait_for_function("() => { const l = document.getElementById('messages');"
                               " return l.scrollHeight - l.scrollTop - l.clientHeight <= 2; }", timeout=TIMEOUT)
        assert page.evaluate("document.getElementById('messages').children.length") == MAX_ITEMS
        reader.assert_clean()


# -- a burst of joins and leaves is one line ---------------------------------------------------------


def test_burst_of_joins_collapses_to_one_line(people) -> None:
    with ChatServer(port=0, quiet=True) as server:
        watcher = people(server.url, "watcher")
        page = watcher.page
        names = [f"kid{i:02d}" for i in range(12)]     # distinct skeletons (0 and o look alike, 1 and l ...)
        clients = [ChatClient(server, name).connect() for name in names]
        try:
            expect(page.locator("#online-count")).to_have_text("13")
            churn = watcher.lines("churn")
            expect(churn).to_have_count(1)
            expect(churn).to_have_text(re.compile(r"^kid00, kid01 and 10 others joined"))
            assert page.locator("#messages .sys").filter(has_text="kid05").count() == 0   # not one line each
            expect(churn).to_have_attribute("title", re.compile("kid11"))           # every name, on hover
        finally:
            for client in clients:
                client.close()
        expect(page.locator("#online-count")).to_have_text("1")
        expect(churn).to_have_count(1)
        expect(churn).to_contain_text("12 people left")
        # something said in between: the next join is a line of its own
        watcher.say("hello")
        with ChatClient(server, "late"):
            expect(watcher.lines("churn")).to_have_count(2)
            expect(watcher.lines("churn").last).to_have_text(re.compile(r"^late joined"))
        watcher.assert_clean()


# -- the teacher's page --------------------------------------------------------------------------------


def test_teacher_link_gives_controls_and_can_kick(people) -> None:
    with ChatServer(port=0, quiet=True) as server:
        secret = server.teacher_url.rpartition("#teacher=")[2]
        assert secret and server.teacher_url.startswith(server.url)

        teacher = people(server.teacher_url)
        # the secret leaves the address bar at once and stays in this tab's sessionStorage
        expect(teacher.page).not_to_have_url(re.compile("teacher="))
        assert teacher.page.evaluate("sessionStorage.getItem('chat_lesson.teacher')") == secret
        assert teacher.page.evaluate("localStorage.getItem('chat_lesson.teacher')") is None
        teacher.join("Ms Smith")
        bob = people(server.url, "bob")

        # the join carried the secret; no HTTP request ever did
        hello = json.loads(teacher.sent[0])
        assert hello == {"type": "join", "username": "Ms Smith", "email": "", "teacher": secret}
        assert all(secret not in url for url in teacher.requests), teacher.requests
        assert "teacher" not in json.loads(bob.sent[0])

        tools = teacher.page.locator("[data-testid=teacher-tools]")
        expect(tools).to_be_visible()
        expect(tools.locator("[data-testid=lock-room]")).to_be_visible()
        expect(tools.locator("[data-testid=clear-chat]")).to_be_visible()
        expect(teacher.row("bob").locator("[data-testid=kick]")).to_be_visible()
        expect(teacher.row("bob").locator("[data-testid=mute]")).to_be_visible()
        expect(teacher.row("bob").locator("[data-testid=ban]")).to_be_visible()
        expect(teacher.row("Ms Smith").locator(".person-tools")).to_have_count(0)  # not for herself
        # everyone sees who the teacher is: a badge nobody else can get
        expect(bob.row("Ms Smith").locator("[data-testid=teacher-badge]")).to_have_count(1)
        expect(bob.row("bob").locator("[data-testid=teacher-badge]")).to_have_count(0)
        teacher.say("Good morning :wave:")
        greeting = bob.page.locator("#messages .msg").filter(has_text="Good morning")
        expect(greeting.locator(".msg-teacher")).to_have_text("teacher")
        bob.say("morning")
        expect(teacher.page.locator("#messages .msg").filter(has_text="morning").last.locator(".msg-teacher")) \
            .to_have_count(0)

        # kick: bob's page says so and does not come back on its own
        teacher.row("bob").locator("[data-testid=kick]").click()
        expect(bob.page.locator("[data-testid=removed]")).to_be_visible()
        expect(bob.page.locator("[data-testid=removed]")).to_contain_text("removed")
        expect(bob.page.locator("#messages [data-testid=system][data-action=kick]")).to_contain_text("bob")
        expect(bob.page.locator("#message")).to_be_disabled()
        expect(bob.page.locator("#status")).to_have_attribute("data-state", "idle")
        expect(teacher.page.locator("#online-count")).to_have_text("1")
        expect(teacher.page.locator("#messages [data-testid=system][data-action=kick]")).to_contain_text("bob")
        assert server.clients == ["Ms Smith"]
        bob.page.wait_for_timeout(1500)                  # longer than the first reconnect delay
        assert server.clients == ["Ms Smith"]
        expect(bob.page.locator("#status")).to_have_attribute("data-state", "idle")

        # a kick is not a ban: "Join again" works
        bob.page.click("[data-testid=rejoin]")
        expect(bob.page.locator("#status")).to_have_attribute("data-state", "online")
        expect(teacher.row("bob")).to_have_count(1)
        expect(bob.page.locator("[data-testid=removed]")).to_be_hidden()
        expect(bob.page.locator("#message")).to_be_enabled()

        for person in (teacher, bob):
            person.assert_clean()


def test_teacher_mutes_locks_and_clears(people) -> None:
    with ChatServer(port=0, quiet=True) as server:
        teacher = people(server.teacher_url, "Ms Smith")
        bob = people(server.url, "bob")
        bob.say("first words")
        expect(teacher.page.locator("#messages .msg").filter(has_text="first words")).to_have_count(1)

        # mute: bob is told and cannot send; unmute gives the box back
        teacher.row("bob").locator("[data-testid=mute]").click()
        expect(bob.page.locator("[data-testid=muted]")).to_be_visible()
        expect(bob.page.locator("#message")).to_be_disabled()
        expect(bob.page.locator("#send")).to_be_disabled()
        sent = json.loads(teacher.sent[-1])
        assert sent["type"] == "mute" and sent["seconds"] == 300
        expect(teacher.row("bob")).to_have_class(re.compile(r"\bmuted\b"))
        teacher.row("bob").locator("[data-testid=unmute]").click()
        expect(bob.page.locator("[data-testid=muted]")).to_be_hidden()
        expect(bob.page.locator("#message")).to_be_enabled()
        bob.say("can I talk?")
        expect(teacher.page.locator("#messages .msg").filter(has_text="can I talk?")).to_have_count(1)

        # lock: both pages show the room's state; the student's box is off
        teacher.page.click("[data-testid=lock-room]")
        for person in (teacher, bob):
            expect(person.page.locator("[data-testid=room-state]")).to_be_visible()
        expect(teacher.page.locator("[data-testid=lock-room]")).to_have_text("Unlock room")
        expect(bob.page.locator("#message")).to_be_disabled()
        expect(teacher.page.locator("#message")).to_be_enabled()
        teacher.page.click("[data-testid=lock-room]")
        for person in (teacher, bob):
            expect(person.page.locator("[data-testid=room-state]")).to_be_hidden()
        expect(bob.page.locator("#message")).to_be_enabled()

        # clear asks first; Cancel changes nothing, OK empties every page's list
        teacher.page.click("[data-testid=clear-chat]")
        expect(teacher.page.locator("[data-testid=confirm]")).to_be_visible()
        teacher.page.click("[data-testid=confirm-cancel]")
        expect(teacher.page.locator("[data-testid=confirm]")).to_be_hidden()
        assert bob.page.locator("#messages .msg").count() == 2
        teacher.page.click("[data-testid=clear-chat]")
        teacher.page.click("[data-testid=confirm-ok]")
        for person in (teacher, bob):
            expect(person.page.locator("#messages .msg")).to_have_count(0)
            expect(person.page.locator("#messages [data-testid=system][data-action=clear]")).to_have_count(1)

        # ban asks first too
        teacher.row("bob").locator("[data-testid=ban]").click()
        expect(teacher.page.locator("[data-testid=confirm]")).to_contain_text("Ban bob")
        teacher.page.click("[data-testid=confirm-ok]")
        expect(bob.page.locator("[data-testid=removed]")).to_contain_text("banned")
        expect(bob.page.locator("[data-testid=rejoin]")).to_be_hidden()
        expect(teacher.page.locator("#online-count")).to_have_text("1")

        for person in (teacher, bob):
            person.assert_clean()


def test_student_page_has_no_teacher_controls(people) -> None:
    with ChatServer(port=0, quiet=True) as server:
        alice = people(server.url, "alice")
        bob = people(server.url, "bob")
        expect(alice.row("bob")).to_have_count(1)
        for person in (alice, bob):
            page = person.page
            expect(page.locator("[data-testid=teacher-tools]")).to_be_hidden()
            assert page.locator("#online .person-tools").count() == 0
            for testid in ("kick", "mute", "unmute", "ban"):
                assert page.locator(f"[data-testid={testid}]").count() == 0, testid
            assert page.evaluate("window.chat.state.teacher") is False
        # a student who forges a command is told no by the server, and nothing happens
        alice.page.evaluate("window.chat.socket.send(JSON.stringify({type: 'kick', target: 2}))")
        expect(alice.page.locator(".notice")).to_contain_text("only the teacher")
        expect(bob.page.locator("#status")).to_have_attribute("data-state", "online")
        # the name "teacher" is kept for the teacher
        carol = people(server.url)
        carol.page.fill("#username", "Teacher")
        carol.page.click("#join")
        expect(carol.page.locator("#username-error")).to_contain_text("kept for the teacher")
        expect(carol.page.locator("#join-view")).to_be_visible()
        for person in (alice, bob, carol):
            person.assert_clean()


# -- renaming without reconnecting -----------------------------------------------------------------------


def test_rename_shows_on_both_pages(people) -> None:
    with ChatServer(port=0, quiet=True) as server:
        alice = people(server.url, "alice")
        bob = people(server.url, "bob")
        you = alice.page.evaluate("window.chat.state.you")

        alice.page.click("[data-testid=rename]")
        expect(alice.page.locator("[data-testid=rename-input]")).to_have_value("alice")
        alice.page.fill("[data-testid=rename-input]", "alicia")
        alice.page.click("[data-testid=rename-save]")
        for person in (alice, bob):
            expect(person.lines("rename-line")).to_have_count(1)
            expect(person.lines("rename-line").locator(".sys-text")).to_have_text("alice is now alicia")
            expect(person.row("alicia")).to_have_count(1)
            expect(person.row("alice")).to_have_count(0)
            expect(person.page.locator("#online .person")).to_have_count(2)
        expect(alice.page.locator("[data-testid=rename-form]")).to_be_hidden()
        expect(alice.row("alicia")).to_have_class(re.compile(r"\bme\b"))
        state = alice.page.evaluate("window.chat.state")
        assert state["username"] == "alicia" and state["you"] == you         # same connection, new name
        assert alice.page.evaluate("localStorage.getItem('chat_lesson.username')") == "alicia"
        assert json.loads(alice.sent[-1]) == {"type": "rename", "username": "alicia"}
        assert sorted(server.clients) == ["alicia", "bob"]

        # her messages now carry the new name
        alice.say("call me alicia")
        expect(bob.page.locator("#messages .msg").filter(has_text="call me alicia").locator(".msg-name")) \
            .to_have_text("alicia")

        # a name someone else has (or one that looks like it) is refused, with the server's reason
        alice.page.click("[data-testid=rename]")
        alice.page.fill("[data-testid=rename-input]", "BOB")
        alice.page.click("[data-testid=rename-save]")
        expect(alice.page.locator("[data-testid=rename-error]")).to_contain_text("taken")
        expect(alice.page.locator("[data-testid=rename-form]")).to_be_visible()
        assert alice.page.evaluate("window.chat.state.username") == "alicia"
        alice.page.click("[data-testid=rename-cancel]")
        expect(alice.page.locator("[data-testid=rename-form]")).to_be_hidden()
        expect(bob.lines("rename-line")).to_have_count(1)

        # a hostile new name is text, never HTML
        bob.page.click("[data-testid=rename]")
        bob.page.fill("[data-testid=rename-input]", "<img src=x onerror=alert(1)>")
        bob.page.click("[data-testid=rename-save]")
        expect(alice.lines("rename-line").last.locator(".sys-text")).to_have_text(
            "bob is now <img src=x onerror=alert(1)>")
        assert alice.page.locator("#messages img, #online img").count() == 0
        for person in (alice, bob):
            person.assert_clean()
