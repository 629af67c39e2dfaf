"""The Go original's own Vue client, unchanged, chatting through our server.

DESIGN.md ("Wire protocol") promises: "The original client must keep working
unchanged against our server: served with ``--static`` pointing at its files,
two browsers chat through it with no console error."  This test keeps that
promise honest.

tests/legacy_client/ holds the client: app.js is the article's listing (two
lines the printing mangled are restored, see its header), index.html a faithful
reconstruction of the original page, style.css the original's.  The page loaded
Vue 2, jQuery, Materialize, emojione 2 and CryptoJS from CDNs; here the same
versions come from the npm registry, fetched once with ``npm pack`` into
tests/output/legacy-client/npm/ (git-ignored, never committed) and copied next
to the page in tests/output/legacy-client/site/, which ``ChatServer(static=...)``
serves.  At test time nothing leaves 127.0.0.1: every other request is answered
by the test (a 1x1 PNG for Gravatar and emojione images) or aborted (and then
reported).

Without npm, the registry, Chromium or the playwright package the test is
skipped, except in CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import unavailable

HERE = Path(__file__).resolve().parent
CLIENT = HERE / "legacy_client"
OUTPUT = HERE / "output" / "legacy-client"
NPM_CACHE = OUTPUT / "npm"
SITE = OUTPUT / "site"

TIMEOUT = 10_000  # ms, for every wait on a page

# The versions the 2016 tutorial loaded from its CDNs, pinned exactly, with the
# registry's integrity for each tarball.  ``files`` maps a path in the package
# (a folder when it ends in "/") to its place under site/lib/.
PACKAGES = [
    {"name": "vue", "version": "2.1.3",
     "integrity": "sha512-VApucW3CgbZnnVRkfjvMbaA4Z8R7bCE8spPetDV6zzK9q1etjwlxadWrvMrdPCF+afRdWYM+RoEYI+K3R7xqlg==",
     "files": {"dist/vue.min.js": "vue.min.js"}},
    {"name": "jquery", "version": "2.1.1",
     "integrity": "sha512-y+iOyLV9My82vtN1cc96DLlklSv15h5Jjug52TK+vXmgtN/dE89WvmP1W/g7lL+RWFzdsTmBwJgX/yf4RY9mPA==",
     "files": {"dist/jquery.min.js": "jquery.min.js", "dist/jquery.min.map": "jquery.min.map"}},
    {"name": "crypto-js", "version": "3.1.2",
     "integrity": "sha512-egolhMvFgIelOG34Goj51J6MUEMr2X8mSam6+54pXiPxcOAfRU68CgsELFsEI5hXZLk0hvUwc7y1VuHi+5RMIQ==",
     "files": {"core.js": "crypto-js/core.js", "md5.js": "crypto-js/md5.js"}},
    {"name": "emojione", "version": "2.2.6",
     "integrity": "sha512-h62CPc30XFRlywLLTQ5sw/7wWmJdxSdTtbqXC/y6/pM6HmnFW+oe8ZzUIRBq/WSq9xGtancAbTaodtbWxKHULQ==",
     "files": {"lib/js/emojione.min.js": "emojione/emojione.min.js",
               "assets/css/emojione.min.css": "emojione/emojione.min.css"}},
    {"name": "materialize-css", "version": "0.97.8",
     "integrity": "sha512-9SVJXuRX53M39PS+NFsQHWRw+f8ubO3IPg6o6OYDVyqiKXc3FY+nCZi38gGKV34ddisN5nAcrQmcNv2ESjUJgQ==",
     "files": {"dist/js/materialize.min.js": "materialize/js/materialize.min.js",
               "dist/css/materialize.min.css": "materialize/css/materialize.min.css",
               "dist/fonts/roboto/": "materialize/fonts/roboto/"}},  # the CSS asks for ../fonts/roboto/
]

# A valid 1x1 transparent PNG: what Gravatar and emojione's CDN "return" here.
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6364f8cfc0000003010100c9fe92ef0000000049454e44ae426082")
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"   # md5(""): the server never sends an address
XSS = "<img src=x onerror=window.__xss=1>"

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]   # the first run downloads ~70 MB


from playwright.sync_api import Browser, Page, Route, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from websockets.sync.client import connect

from chat_lesson.chat.server import ChatServer

expect.set_options(timeout=TIMEOUT)


# -- the libraries, from the npm registry, cached outside git -----------------------


def _fetch(package: dict) -> Path:
    """tests/output/legacy-client/npm/NAME-VERSION/, holding just the files we use.

    ``npm pack NAME@VERSION`` downloads the registry's tarball (npm checks it
    against the registry's integrity; we check that against our pin), and only
    the listed files are extracted.  The folder appears atomically, so an
    interrupted run leaves nothing half-made behind.
    """
    spec = f"{package['name']}@{package['version']}"
    target = NPM_CACHE / spec.replace("@", "-")
    if target.is_dir():
        return target
    npm = shutil.which("npm")
    if npm is None:
        unavailable("npm not found: the legacy-client test fetches Vue 2, jQuery, Materialize, emojione "
                     "and CryptoJS from the npm registry (install Node.js and npm to run it)")
    NPM_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=NPM_CACHE, prefix=".tmp-") as tmp:
        command = [npm, "pack", spec, "--json", "--ignore-scripts", "--loglevel=error",
                   "--pack-destination", tmp]
        try:
            done = subprocess.run(command, cwd=tmp, capture_output=True, text=True, timeout=300,
                                  env={**os.environ, "npm_config_update_notifier": "false"})
        except subprocess.TimeoutExpired:
            unavailable(f"`npm pack {spec}` took more than 300 s: is the npm registry reachable?")
        if done.returncode != 0:
            try:   # with --json, npm reports its error on stdout too
                why = json.loads(done.stdout)["error"]["summary"]
            except (ValueError, KeyError, TypeError):
                why = "\n".join(done.stderr.strip().splitlines()[:4])
            unavailable(f"`npm pack {spec}` failed (is the npm registry reachable?): {why}")
        [info] = json.loads(done.stdout)
        assert info["integrity"] == package["integrity"], f"{spec}: the registry's tarball is not the pinned one"
        extracted = Path(tmp) / "extracted"
        with tarfile.open(Path(tmp) / info["filename"]) as tar:
            wanted = [m for m in tar.getmembers() if m.isfile() and any(
                m.name == f"package/{path}" or (path.endswith("/") and m.name.startswith(f"package/{path}"))
                for path in package["files"])]
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}   # Python >= 3.11.4
            tar.extractall(extracted, members=wanted, **safe)
        for path in package["files"]:
            assert (extracted / "package" / path).exists(), f"{spec} has no {path}"
        try:
            os.replace(extracted / "package", target)
        except OSError:
            if not target.is_dir():   # else a parallel run got there first
                raise
    return target


def _build_site() -> Path:
    """site/: our index.html, app.js and style.css, with the libraries under lib/."""
    packages = [(package, _fetch(package)) for package in PACKAGES]
    if SITE.exists():
        shutil.rmtree(SITE)
    shutil.copytree(CLIENT, SITE)
    for package, folder in packages:
        for path, dest in package["files"].items():
            if path.endswith("/"):
                shutil.copytree(folder / path, SITE / "lib" / dest)
            else:
                (SITE / "lib" / dest).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folder / path, SITE / "lib" / dest)
    return SITE


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site() -> Path:
    return _build_site()


@dataclass
class Tab:
    """One browser (its own context) on the original page, and everything it reported."""

    page: Page
    errors: list[str] = field(default_factory=list)      # console errors and uncaught exceptions
    blocked: list[str] = field(default_factory=list)     # requests that tried to leave 127.0.0.1
    received: list[str] = field(default_factory=list)    # WebSocket frames the page received

    @property
    def chat(self):
        return self.page.locator("#chat-messages")

    def join(self, email: str, username: str) -> None:
        page = self.page
        page.get_by_placeholder("Email").fill(email)
        page.get_by_placeholder("Username").fill(username)
        page.get_by_role("button", name="Join").click()
        expect(page.get_by_role("button", name="Send")).to_be_visible()

    def say(self, text: str) -> None:
        box = self.page.locator("#app input[type=text]")   # after joining, the only text input
        box.fill(text)
        box.press("Enter")                                   # @keyup.enter="send"
        expect(box).to_have_value("")                        # send() empties newMsg


def _route(tab: Tab, route: Route) -> None:
    url = urllib.parse.urlsplit(route.request.url)
    if url.hostname == "127.0.0.1":
        route.continue_()
    elif (url.hostname == "www.gravatar.com" and url.path.startswith("/avatar/")) or (
            url.hostname == "cdn.jsdelivr.net" and url.path.startswith("/emojione/assets/png/")):
        route.fulfill(status=200, content_type="image/png", body=PIXEL)
    else:
        tab.blocked.append(route.request.url)
        route.abort()


def _open(browser: Browser, url: str) -> Tab:
    context = browser.new_context(viewport={"width": 1000, "height": 700})
    page = context.new_page()
    tab = Tab(page)
    page.route("**/*", lambda route: _route(tab, route))
    page.on("console", lambda msg: tab.errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: tab.errors.append(f"uncaught: {exc}"))
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: tab.received.append(
        payload if isinstance(payload, str) else payload.decode())))
    page.goto(url)
    # Vue has mounted and app.js's WebSocket is open (Vue 2 keeps the instance on its element).
    try:
        page.wait_for_function("() => { const el = document.getElementById('app');"
                               " return !!(el && el.__vue__ && el.__vue__.ws.readyState === 1); }", timeout=TIMEOUT)
    except PlaywrightTimeoutError:
        raise AssertionError(f"the original page did not start (Vue app with an open WebSocket); "
                             f"errors on the page: {tab.errors}, blocked: {tab.blocked}") from None
    return tab


# -- the test --------------------------------------------------------------------------


def test_original_client_chats_through_our_server(site: Path, browser: Browser) -> None:
    with ChatServer(port=0, quiet=True, static=site) as server:
        alice = _open(browser, server.url)
        bob = _open(browser, server.url)
        try:
            for tab in (alice, bob):
                # It offered no subprotocol: a legacy client.
                assert tab.page.evaluate("() => document.getElementById('app').__vue__.ws.protocol") == ""

            # Materialize loaded: join() refuses an empty form with its toast.
            alice.page.get_by_role("button", name="Join").click()
            expect(alice.page.locator(".toast")).to_contain_text("You must enter an email")

            alice.join("alice@example.org", "alice")
            bob.join("bob@example.org", "bob")

            # The original names a client with its first message, so does our server.
            alice.say("hello from alice :smile:")
            for tab in (alice, bob):
                expect(tab.chat).to_contain_text("hello from alice")
                # emojione 2 turned the shortname into its image
                expect(tab.chat.locator("img.emojione")).to_have_count(1)
            bob.say("hi alice, bob here")
            for tab in (alice, bob):
                expect(tab.chat).to_contain_text("hi alice, bob here")
                expect(tab.chat.locator(".chip")).to_have_text(["alice", "bob"])
                # The avatar is md5 of "": the server never hands out an address.
                for img in tab.chat.locator(".chip img").all():
                    assert img.get_attribute("src") == f"http://www.gravatar.com/avatar/{EMPTY_MD5}"
            assert server.clients == ["alice", "bob"]

            # HTML in a message reaches the page as text.  The page's own "strip out
            # html" decodes entities, so this sends exactly XSS to the server ...
            alice.say(XSS.replace("<", "&lt;").replace(">", "&gt;"))
            # ... and a client that skips the page (a script; it offers no subprotocol
            # either, so it is legacy too) sends it as it is.
            with connect(server.ws_url, open_timeout=5) as mallory:
                mallory.send(json.dumps({"username": "mallory", "email": "", "message": f"mallory says {XSS}"}))
                for tab in (alice, bob):
                    expect(tab.chat).to_contain_text(f"mallory says {XSS}")
                    expect(tab.chat.locator(".chip")).to_have_text(["alice", "bob", "alice", "mallory"])
                # one more message after both, so any onerror had its chance to fire
                bob.say("bye")
                for tab in (alice, bob):
                    expect(tab.chat.locator(".chip").last).to_have_text("bob")
                    assert tab.chat.locator("img[src='x']").count() == 0
                    assert tab.page.evaluate("() => window.__xss") is None
                assert server.clients == ["alice", "bob", "mallory"]

            # Our server sent these pages only messages, with no address, escaped.
            for tab in (alice, bob):
                events = [json.loads(frame) for frame in tab.received]
                assert [e["type"] for e in events] == ["message"] * 5, events
                assert all(e["email"] == "" for e in events)
                assert [e["username"] for e in events] == ["alice", "bob", "alice", "mallory", "bob"]
                assert events[2]["message"] == "&lt;img src=x onerror=window.__xss=1&gt;"

            for name, tab in (("alice", alice), ("bob", bob)):
                assert tab.blocked == [], f"{name}'s page asked for something outside 127.0.0.1: {tab.blocked}"
                assert tab.errors == [], f"errors on {name}'s page: {tab.errors}"
        finally:
            for tab in (alice, bob):
                tab.page.context.close()
