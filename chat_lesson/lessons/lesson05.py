"""Lesson 05: the class chat from a notebook: bots, a live view of the room, the client's source, and exercises.

Bots join and talk through :class:`~chat_lesson.chat.client.ChatClient`
(:func:`conversation`, :func:`ticker`); :class:`RoomView` shows who is
online, the last messages and the message rate, redrawn live in the
notebook; :func:`headroom` measures how many deliveries per second this
machine's server can make; :func:`js_function` and :func:`js_constant` read
the browser client's source (``static/app.js``).

The exercises ``05.me_command`` and ``05.deliveries`` start a fresh
``ChatServer(port=0)`` and talk to it through ``ChatClient`` s on a private
event loop thread, so they work the same from a notebook cell or a script,
and never touch the lesson's own server.

Every function here is bounded: each wait has a timeout, each loop an end.
The async functions run on the caller's loop (``await`` them in a cell), so
the clients live on the kernel's loop while the servers run on their own threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import html
import logging
import re
import socket
import time
import urllib.parse
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

from ..chat.client import ChatClient
from ..chat.room import ChatError
from ..chat.server import ChatServer
from ..chat.static import STATIC_DIR
from ..notebook import BackgroundLoop, CellService
from ..protocol.handshake import build_request
from ..browser import unavailable as browser_unavailable  # noqa: F401  (re-exported for the notebook)
from .exercises import Wrong, exercise, expect, need_dict, need_function

APP_JS = STATIC_DIR / "app.js"

# --------------------------------------------------------------------------------
# Lesson 05: bots and the live room
# --------------------------------------------------------------------------------

SCRIPT: list[tuple[str, str]] = [
    ("ada", "hello everyone :wave:"),
    ("grace", "hi ada! is this the WebSocket lesson?"),
    ("linus", "it is. nobody polled for this message: the server pushed it"),
    ("ada", "one TCP connection each, open the whole time"),
    ("grace", "and every message goes to all of us, me included"),
    ("linus", "<b>bold?</b> no: it shows as text in our client"),
    ("ada", "see you in lesson 06 :rocket:"),
]


async def conversation(server: Any, script: Sequence[tuple[str, str]] = SCRIPT, gap: float = 0.3) -> int:
    """Bots named in ``script`` join, say their lines in order (``gap`` s apart) and leave.

    Returns how many lines were sent.
    """
    names = list(dict.fromkeys(name for name, _ in script))
    bots = {}
    try:
        for name in names:
            bots[name] = await ChatClient(server, name, f"{name}@class.example").aconnect()
        for name, text in script:
            await bots[name].asend(text)
            await asyncio.sleep(gap)
    finally:
        for bot in bots.values():
            await bot.aclose()
    return len(script)


async def ticker(server: Any, name: str = "clock", every: float = 0.5, limit: int = 200) -> None:
    """A bot that says the time every ``every`` seconds (at most ``limit`` times) until cancelled."""
    async with ChatClient(server, name) as bot:
        for _ in range(limit):
            await bot.asend(f"tick {time.strftime('%H:%M:%S')}")
            await asyncio.sleep(every)


_EMOJI: dict[str, str] | None = None


def emoji_table(path: Path = STATIC_DIR / "emoji.js") -> dict[str, str]:
    """The page's shortcode table (static/emoji.js): ``{"rocket": "🚀", ...}``, read once."""
    global _EMOJI
    if _EMOJI is None:
        _EMOJI = dict(re.findall(r'"([a-z0-9_+-]+)":\s*"([^"]+)"', path.read_text(encoding="utf-8")))
    return _EMOJI


def with_emoji(text: str) -> str:
    """``text`` with each known ``:shortcode:`` replaced by its emoji, as the page draws it."""
    table = emoji_table()
    return re.sub(r":([a-z0-9_+-]+):", lambda m: table.get(m.group(1), m.group(0)), text)


class RoomView:
    """Watch a ChatServer's room from a notebook: who is online, the last messages, the message rate.

    It registers a listener (``server.add_listener``) that records every
    broadcast event with its time; the listener runs on the server's thread and
    only appends to a list.  ``await view.watch(seconds)`` redraws the view in
    place every ``every`` seconds through IPython display handles, and returns.
    """

    def __init__(self, server: ChatServer, bucket: float = 0.25) -> None:
        self.server, self.bucket = server, bucket
        self.t0 = time.monotonic()
        self.events: list[tuple[float, dict[str, Any]]] = []
        server.add_listener(self._record)

    def _record(self, event: dict[str, Any]) -> None:
        self.events.append((time.monotonic() - self.t0, event))

    def close(self) -> None:
        """Stop recording (remove the listener)."""
        if self._record in self.server.listeners:
            self.server.listeners.remove(self._record)

    def messages(self) -> list[tuple[float, dict[str, Any]]]:
        return [(t, e) for t, e in list(self.events) if e["type"] == "message"]

    def rate(self, window: float = 1.0) -> tuple[list[float], list[float]]:
        """Messages per second over the last ``window`` s, sampled every ``bucket`` s since the view started."""
        now = time.monotonic() - self.t0
        times = [t for t, _ in self.messages()]
        xs = [i * self.bucket for i in range(int(now / self.bucket) + 1)] + [now]     # ending now
        return xs, [sum(x - window < t <= x for t in times) / window for x in xs]

    def html(self, last: int = 8) -> str:
        """The view as HTML: left-aligned (JupyterLab right-aligns table cells), emoji shortcodes drawn."""
        online = self.server.clients
        cell = "text-align:left;padding:1px 8px 1px 0;vertical-align:top"
        rows = "".join(
            f"<tr><td style='{cell};color:#666;white-space:nowrap'>{t:5.1f} s</td>"
            f"<td style='{cell}'><b>{html.escape(str(e['username']))}</b></td>"
            f"<td style='{cell}'>{with_emoji(html.escape(str(e['message'])))}</td></tr>"
            for t, e in self.messages()[-last:])
        return (f"<div style='text-align:left'><b>online ({len(online)}):</b> {html.escape(', '.join(online)) or '-'}<br>"
                f"<b>messages so far:</b> {self.server.stats.messages} · "
                f"<b>frames written (deliveries):</b> {self.server.stats.deliveries}"
                f"<table style='margin:4px 0 0 0;border-collapse:collapse'>{rows}</table></div>")

    def draw(self, ax: Any) -> None:
        xs, ys = self.rate()
        ax.clear()
        ax.plot(xs, ys, color="tab:blue", marker=".")
        ax.fill_between(xs, ys, alpha=0.2, color="tab:blue")
        ax.set_xlabel("seconds since the view started")
        ax.set_ylabel("messages / s")
        ax.set_title("message rate in the room: messages in the last second, measured live")
        ax.set_xlim(0, max(4.0, xs[-1]))
        ax.set_ylim(0, max([4.0, *ys]) * 1.2)
        ax.grid(alpha=0.3)

    async def watch(self, seconds: float = 5, every: float = 0.5) -> None:
        """Show the room and redraw it every ``every`` s for ``seconds`` s (the kernel's loop keeps running)."""
        import matplotlib.pyplot as plt
        from IPython.display import HTML, display

        fig, ax = plt.subplots(figsize=(7.5, 2.6), layout="constrained")
        plt.close(fig)                       # shown through the handle only, not again at the cell's end
        self.draw(ax)
        text = display(HTML(self.html()), display_id=True)
        chart = display(fig, display_id=True)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.sleep(min(every, max(0.0, end - time.monotonic())))
            self.draw(ax)
            text.update(HTML(self.html()))
            chart.update(fig)
        self.figure = fig


def _at_once() -> dict[str, float]:
    """Settings that announce each join at once (where the room delays them), so a measurement need not wait."""
    from ..chat.wire import Limits
    return {"announce_after": 0} if "announce_after" in {f.name for f in dataclasses.fields(Limits)} else {}


async def _server_thread_time(server: Any) -> float:
    """CPU seconds used so far by the server's thread (read on that thread)."""

    async def cpu() -> float:
        return time.thread_time()

    return asyncio.run_coroutine_threadsafe(cpu(), server.loop).result(5)


async def headroom(n_clients: int = 50, n_messages: int = 200, size: int = 100, timeout: float = 20) -> dict[str, float]:
    """Measure a ChatServer's fan-out: ``n_clients`` in a room, ``n_messages`` sent as fast as they go.

    The server runs on its own thread; the clients run on the caller's loop in
    the same process.  Returns the deliveries (frames written), the wall time
    from the first send to the last delivery, the server thread's CPU time, and
    from those deliveries per second and CPU microseconds per delivery.
    """
    with ChatServer(port=0, quiet=True, rate_limit=0, **_at_once()) as server:
        clients = [await ChatClient(server, f"u{i:02d}").aconnect() for i in range(n_clients)]
        try:
            last = clients[-1].username
            for c in clients:     # everyone has seen the last one join, so every earlier join too
                await c.await_for(lambda e: e["type"] == "join" and e["username"] == last, timeout)
            deliveries0, cpu0 = server.stats.deliveries, await _server_thread_time(server)
            text = "x" * size

            async def reader(c: ChatClient) -> None:
                got = 0
                while got < n_messages:
                    if (await c.arecv(timeout, type="message")):
                        got += 1

            readers = [asyncio.create_task(reader(c)) for c in clients]
            start = time.perf_counter()
            for i in range(n_messages):
                await clients[i % n_clients].asend(text)
            async with asyncio.timeout(timeout):
                await asyncio.gather(*readers)
            wall = time.perf_counter() - start
            cpu = await _server_thread_time(server) - cpu0
            deliveries = server.stats.deliveries - deliveries0
        finally:
            for c in clients:
                await c.aclose()
    return {"clients": n_clients, "messages": n_messages, "deliveries": deliveries, "wall_s": wall,
            "server_cpu_s": cpu, "deliveries_per_s": deliveries / wall,
            "cpu_us_per_delivery": cpu / deliveries * 1e6, "wall_us_per_delivery": wall / deliveries * 1e6}


# --------------------------------------------------------------------------------
# Lesson 05: showing the code
# --------------------------------------------------------------------------------


def js_function(name: str, path: Path = APP_JS) -> str:
    """The source of ``function name(...) {...}`` in static/app.js (found by brace matching)."""
    source = path.read_text(encoding="utf-8")
    match = re.search(rf"^([ \t]*)function {re.escape(name)}\(", source, re.M)
    if match is None:
        raise KeyError(f"no function {name!r} in {path.name}")
    depth, i = 0, source.index("{", match.end())
    while True:
        if source[i] == "{":
            depth += 1
        elif source[i] == "}":
            depth -= 1
            if depth == 0:
                break
        i += 1
    indent = match.group(1)
    lines = source[match.start(): i + 1].splitlines()
    return "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines)


def js_constant(name: str, path: Path = APP_JS) -> float:
    """The number a ``var NAME = number;`` line of static/app.js sets."""
    match = re.search(rf"\bvar {re.escape(name)} = ([0-9.e]+);", path.read_text(encoding="utf-8"))
    if match is None:
        raise KeyError(f"no numeric var {name!r} in {path.name}")
    return float(match.group(1))


# =============================================================================
# Lesson 05: the live chat
# =============================================================================


def _live(scenario: Callable[[], Any], timeout: float = 20) -> Any:
    """Run ``scenario()`` (a coroutine function) on a private loop thread and return its result."""
    loop = BackgroundLoop("exercise-check")
    try:
        return loop.call(scenario(), timeout=timeout)
    finally:
        loop.stop()


async def _joined(server: ChatServer, name: str) -> ChatClient:
    client = await ChatClient(server, name).aconnect()
    await client.await_for(lambda e: e["type"] == "join" and e["username"] == name)
    return client


@exercise("05.me_command", hint="def me(username, args): return f\"* {username} {args}\" — and when args is empty "
          "(after .strip()), raise ChatError(\"bad_command\", \"...\") instead of returning a text.")
def _me_command(answer: Any) -> str:
    """Write the handler of a /me command: '/me waves' from alice is broadcast as '* alice waves'."""
    handler = need_function(answer, "me")
    # First on its own, for clear messages; then inside a real server.
    got = handler("alice", "waves")
    expect(isinstance(got, str), f"me('alice', 'waves') returned {got!r}; return the text to broadcast, a str")
    expect(got == "* alice waves", f"me('alice', 'waves') returned {got!r}; expected '* alice waves'",
           "a star, a space, the username, a space, then the action")
    try:
        handler("alice", "   ")
    except ChatError:
        pass
    except Exception as error:
        raise Wrong(f"me('alice', '   ') raised {type(error).__name__}; raise chat_lesson.server.ChatError(code, detail) "
                    "so that the server turns it into an error event", "from chat_lesson.server import ChatError") from None
    else:
        raise Wrong("me('alice', '   ') returned instead of raising: a /me with nothing to do should be refused",
                    "if not args.strip(): raise ChatError(\"bad_command\", \"usage: /me <action>\")")

    async def scenario() -> tuple[str, dict[str, Any], list[str]]:
        with ChatServer(port=0, quiet=True) as server:
            server.add_command("me", handler)
            alice, bob = await _joined(server, "alice"), await _joined(server, "bob")
            await alice.asend("/me waves :wave:")
            seen = (await bob.await_for(lambda e: e["type"] == "message"))["message"]
            await alice.asend("/me")
            error = await alice.await_for(lambda e: e["type"] == "error")
            await alice.asend("plain text")
            after = [e["message"] async for e in bob.aevents(timeout=0.5) if e["type"] == "message"]
            await alice.aclose()
            await bob.aclose()
            return seen, error, after

    seen, error, after = _live(scenario)
    expect(seen == "* alice waves :wave:", f"in a real server, bob saw {seen!r} for alice's '/me waves :wave:'")
    expect(after == ["plain text"], f"after the refused '/me', bob saw {after!r}; expected only 'plain text'",
           "a refused command must broadcast nothing")
    return (f"bob saw {seen!r}; alice's empty '/me' came back to her alone as an error event "
            f"(code {error['code']!r}: {error['detail']!r}), and the room saw nothing of it")


DELIVERY_CASES = {
    "message": "5 clients (our subprotocol) are in the room, all joined; one of them sends a chat message",
    "join": "then a 6th client connects and joins (our subprotocol)",
}
"""The questions of ``05.deliveries``: how many frames does the server write for each?"""


async def _count_deliveries() -> dict[str, int]:
    """Measure, on a real server, the frames written for each case of DELIVERY_CASES."""
    with ChatServer(port=0, quiet=True, rate_limit=0) as server:
        clients = [await _joined(server, f"c{i}") for i in range(5)]
        for c in clients[:-1]:            # everyone has seen the last join (c4 saw its own in _joined)
            await c.await_for(lambda e: e["type"] == "join" and e["username"] == "c4")
        before = server.stats.deliveries
        await clients[0].asend("hello")
        for c in clients:
            await c.await_for(lambda e: e["type"] == "message")
        message = server.stats.deliveries - before
        before = server.stats.deliveries
        clients.append(await ChatClient(server, "c5").aconnect())
        for c in clients:
            await c.await_for(lambda e: e["type"] == "join" and e["username"] == "c5")
        join = server.stats.deliveries - before
        for c in clients:
            await c.aclose()
    return {"message": message, "join": join}


@exercise("05.deliveries", hint="A message goes to everyone, the sender included. For a join, read Room.connect "
          "(what does a new connection hear before it has joined, when something was already said?) and "
          "Room.receive (which events does a join broadcast?).")
def _deliveries(answer: Any) -> str:
    """Predict how many frames (server.stats.deliveries) the server writes in two moments of a chat."""
    answer = need_dict(answer, list(DELIVERY_CASES))
    truth = _live(_count_deliveries)
    wrong = []
    for case in DELIVERY_CASES:
        try:
            given = float(answer[case])       # "5" and 13.0 are fine; 5.5 frames is not 5
        except (TypeError, ValueError):
            raise Wrong(f"{case}: give a number of frames, not {answer[case]!r}") from None
        if given != truth[case]:
            wrong.append(case)
    hints = {
        "message": "the sender gets its own message back too: that is how it knows the server took it",
        "join": "as it connects the newcomer hears a welcome, a presence (the whole list, to it alone) and, "
                "since something was said before, a history (3); then its join is broadcast as one event to "
                "everyone now in the room, the newcomer included: the others update their lists from it",
    }
    expect(not wrong, "measured on a real server, not right yet: " + ", ".join(f"{c} (you said {answer[c]})" for c in wrong),
           " · ".join(hints[c] for c in wrong))
    return (f"measured: {truth['message']} frames for the message, {truth['join']} for the join. "
            "Fan-out is the server's whole job: one message in, N frames out")


# =============================================================================
# Lesson 05: the browser's side: the WebSocket API as a page sees it
# =============================================================================

_ECHO_PAGE = b"<!doctype html><meta charset='utf-8'><title>echo</title><p>A blank page: lesson 05 drives it.</p>"


REFUSED_PATH = "/refused"


class EchoServer(CellService):
    """A plain WebSocket echo server (``websockets``), so that a page's own traffic is all there is on the wire.

    It sends back every message of up to ``echo_limit`` bytes (bigger ones
    are read and dropped), accepts any Origin, offers no compression, and
    serves a blank page at ``/`` that a browser can open to get an origin.
    A handshake on :data:`REFUSED_PATH` is refused with 403.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, echo_limit: int = 1024) -> None:
        self.host, self.port, self.echo_limit = host, port, echo_limit
        self._server: Any = None

    async def _echo(self, connection: Any) -> None:
        try:
            async for message in connection:
                if len(message) <= self.echo_limit:
                    await connection.send(message)
        except ConnectionClosed:
            pass

    def _page(self, connection: Any, request: Any) -> Any:
        path = urllib.parse.urlsplit(request.path).path
        if path == "/ws":
            return None
        if path == REFUSED_PATH:        # a handshake this server refuses, as a server refuses a foreign Origin
            body = b"refused: this path takes no WebSocket\n"
            return Response(403, "Forbidden", Headers([("Content-Type", "text/plain"),
                                                       ("Content-Length", str(len(body)))]), body)
        return Response(200, "OK", Headers([("Content-Type", "text/html; charset=utf-8"),
                                            ("Content-Length", str(len(_ECHO_PAGE)))]), _ECHO_PAGE)

    async def astart(self) -> EchoServer:
        self._server = await serve(self._echo, self.host, self.port, process_request=self._page,
                                   compression=None, max_size=None, logger=_quiet_log)
        self.port = self._server.sockets[0].getsockname()[1]
        self._claim_port()
        return self

    async def astop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            self._release_port()


_quiet_log = logging.getLogger(__name__ + ".echo")
_quiet_log.propagate = False
_quiet_log.addHandler(logging.NullHandler())

READY_STATES = {0: "CONNECTING", 1: "OPEN", 2: "CLOSING", 3: "CLOSED"}

# Each step runs in the page (page.evaluate) and returns plain data.
_JS_LIFE = """async ([url, code, reason]) => {
  const seen = [];
  const note = (moment, ws) => seen.push([moment, ws.readyState, ws.bufferedAmount]);
  const ws = new WebSocket(url);
  note("after new WebSocket(url)", ws);
  await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = fail; });
  note("in onopen", ws);
  ws.send("hello from the page");
  note("right after send()", ws);
  const echo = await new Promise(ok => ws.onmessage = e => ok(e.data));
  note("in onmessage (the echo)", ws);
  const closed = new Promise(ok => ws.onclose = e => ok({code: e.code, reason: e.reason, wasClean: e.wasClean}));
  ws.close(code, reason);
  note(`right after close(${code}, "${reason}")`, ws);
  const event = await closed;
  note("in onclose", ws);
  return {seen, echo, close: event};
}"""

_JS_BROKEN = """async ([url]) => {
  // Open, then wait for whatever ends it; the caller breaks it from outside.
  const ws = new WebSocket(url);
  await new Promise(ok => ws.onopen = ok);
  window.__broken = new Promise(ok => {
    let error = false;
    ws.onerror = () => { error = true; };
    ws.onclose = e => ok({code: e.code, reason: e.reason, wasClean: e.wasClean, error});
  });
  return true;
}"""

_JS_REFUSED = """async ([url]) => {
  const ws = new WebSocket(url);
  return await new Promise(ok => {
    let error = false;
    ws.onerror = () => { error = true; };
    ws.onclose = e => ok({code: e.code, reason: e.reason, wasClean: e.wasClean, error});
  });
}"""

_JS_BUFFERED = """async ([url, chunk, every, count, sample, total]) => {
  const ws = new WebSocket(url);
  await new Promise(ok => ws.onopen = ok);
  const data = "x".repeat(chunk), rows = [], t0 = performance.now();
  let given = 0;
  await new Promise(done => {
    const sender = setInterval(() => { if (given < count) { ws.send(data); given += 1; } }, every);
    const sampler = setInterval(() => {
      const t = (performance.now() - t0) / 1000;
      rows.push([t, ws.bufferedAmount, given * chunk]);
      if (t >= total) { clearInterval(sender); clearInterval(sampler); done(); }
    }, sample);
  });
  return rows;
}"""


@dataclasses.dataclass
class BrowserSide:
    """What :func:`browser_side` saw, from inside the page."""

    user_agent: str
    life: list[tuple[str, int, int]]            # (moment, readyState, bufferedAmount)
    echo: str
    close: dict[str, Any]                       # the CloseEvent of a close(code, reason) from the page
    frames: list[tuple[str, str]]               # ("sent" | "received", payload) as DevTools lists them
    cut: dict[str, Any]                         # the CloseEvent after the tap cut the TCP connection
    refused: dict[str, Any]                     # the CloseEvent of a handshake the server refused (403)
    refused_status: str                         # what the server answered, read outside the browser
    buffered: list[tuple[float, int, int]]      # (s, bufferedAmount, bytes given to send())
    limit: float                                # the tap's bandwidth limit, client to server, bytes/s

    def life_table(self) -> Any:
        from .display import Table
        return Table([{"moment": m, "readyState": f"{s} {READY_STATES.get(s, '?')}", "bufferedAmount": b}
                      for m, s, b in self.life])

    def close_table(self) -> Any:
        from .display import Table
        rows = []
        for what, e in (("the page called close(4000, ...)", self.close),
                        ("the tap cut the TCP connection", self.cut),
                        (f"the server refused the handshake ({self.refused_status})", self.refused)):
            rows.append({"what happened": what, "code": e["code"], "reason": repr(e["reason"]),
                         "wasClean": e["wasClean"], "error event first": e.get("error", False)})
        return Table(rows)


def browser_side(tap: Any, *, limit: float = 500_000, chunk: int = 512 * 1024,
                 every_ms: int = 50, seconds: float = 2.0, timeout: float = 60) -> BrowserSide:
    """Drive a WebSocket from inside headless Chromium, through ``tap`` (in front of an :class:`EchoServer`).

    1. One connection's life: ``readyState`` and ``bufferedAmount`` at each
       moment, an echo, then ``close(4000, reason)`` and the ``CloseEvent``;
       the frames as DevTools lists them (Playwright reads the same
       instrumentation: ``framesent`` / ``framereceived``).
    2. The tap cuts the TCP connection (RST): the page's ``CloseEvent``.
    3. A handshake the server refuses with 403 (on :data:`REFUSED_PATH`, as
       a server refuses a foreign Origin): the page's ``CloseEvent``.
    4. The tap limits client-to-server bandwidth to ``limit`` bytes/s while
       the page calls ``send()`` with ``chunk`` bytes every ``every_ms`` ms
       for ``seconds`` s: ``bufferedAmount`` sampled every 100 ms.

    Playwright's synchronous API refuses to run on a thread with a running
    asyncio loop (a notebook's), so it runs on a worker thread.
    """
    from ..browser import launch

    refused_url = tap.ws_url.rsplit("/", 1)[0] + REFUSED_PATH

    def status_of(url: str, origin: str) -> str:
        """The status line the server answered, read on a raw socket (the page is never told)."""
        host, port = urllib.parse.urlsplit(url).hostname, urllib.parse.urlsplit(url).port
        request = build_request(f"{host}:{port}", REFUSED_PATH, origin=origin)
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(request)
            return sock.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")

    def run() -> BrowserSide:
        from playwright.sync_api import sync_playwright

        frames: list[tuple[str, str]] = []
        with sync_playwright() as p:
            browser = launch(p)
            try:
                page = browser.new_page()
                page.set_default_timeout(15_000)

                def watch(ws: Any) -> None:
                    ws.on("framesent", lambda payload: frames.append(("sent", str(payload))))
                    ws.on("framereceived", lambda payload: frames.append(("received", str(payload))))

                page.on("websocket", watch)
                page.goto(tap.url)
                life = page.evaluate(_JS_LIFE, [tap.ws_url, 4000, "lesson over"])
                page.remove_listener("websocket", watch)
                page.evaluate(_JS_BROKEN, [tap.ws_url])
                time.sleep(0.2)
                tap.cut()
                cut = page.evaluate("() => window.__broken")
                refused = page.evaluate(_JS_REFUSED, [refused_url])
                tap.limit(limit, "c2s")
                try:
                    count = int(seconds * 1000 / every_ms)
                    buffered = page.evaluate(_JS_BUFFERED, [tap.ws_url, chunk, every_ms, count, 100, seconds])
                finally:
                    tap.limit(None, "c2s")
                    tap.cut()
                agent = page.evaluate("navigator.userAgent")
            finally:
                browser.close()
        origin = tap.url.rstrip("/")
        return BrowserSide(agent, [tuple(x) for x in life["seen"]], life["echo"], life["close"], frames, cut,
                           refused, status_of(refused_url, origin), [tuple(x) for x in buffered], limit)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result(timeout)


def plot_buffered(result: BrowserSide, ax: Any) -> None:
    """bufferedAmount against what the page gave send(), over time."""
    ts = [t for t, _, _ in result.buffered]
    ax.plot(ts, [g / 2**20 for _, _, g in result.buffered], color="tab:grey", ls="--",
            label="given to send() so far")
    ax.plot(ts, [b / 2**20 for _, b, _ in result.buffered], color="tab:red", marker=".",
            label="bufferedAmount (not yet handed to the network)")
    ax.set_xlabel("seconds since the page started sending")
    ax.set_ylabel("MiB")
    ax.set_title(f"the tap lets {result.limit / 1000:g} kB/s through; the page sends faster", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
