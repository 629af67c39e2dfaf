"""The class chat from a notebook: bots, a live view of the room, and the measurements of lessons 05 and 06.

Lesson 05 uses the first half: bots that join and talk through
:class:`~chat_lesson.client.ChatClient`, :class:`RoomView` (who is online, the
last messages and the message rate, redrawn live in the notebook), and
:func:`headroom` (how many deliveries per second this machine's server can make).

Lesson 06 uses the second half: each flaw of the Go original reproduced on
:class:`~chat_lesson.naive.NaiveServer` and measured the same way on
:class:`~chat_lesson.server.ChatServer`: :func:`stall_timeline` (a client that
stops reading), :func:`flood`, :func:`big_message`, :func:`origin_probe`,
:func:`email_probe`, :func:`browser_xss` (an ``<img onerror>`` in headless
Chromium) and :func:`bad_handshakes` (the requests that made the original exit).

Every function here is bounded: each wait has a timeout, each loop an end.
The async functions run on the caller's loop (``await`` them in a cell), so
the clients live on the kernel's loop while the servers run on their own threads.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import html
import json
import re
import socket
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ..browser import CHROMIUM, launch
from ..chat.client import ChatClient
from ..protocol.handshake import accept_key, build_request, make_key
from ..chat.server import STATIC_DIR, ChatServer

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
        online = self.server.clients
        rows = "".join(
            f"<tr><td style='color:#666'>{t:5.1f} s</td><td><b>{html.escape(str(e['username']))}</b></td>"
            f"<td>{html.escape(str(e['message']))}</td></tr>"
            for t, e in self.messages()[-last:])
        return (f"<div><b>online ({len(online)}):</b> {html.escape(', '.join(online)) or '-'}<br>"
                f"<b>messages so far:</b> {self.server.stats.messages} · "
                f"<b>frames written (deliveries):</b> {self.server.stats.deliveries}"
                f"<table style='margin-top:4px'>{rows}</table></div>")

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
    with ChatServer(port=0, quiet=True, rate_limit=0) as server:
        clients = [await ChatClient(server, f"u{i:02d}").aconnect() for i in range(n_clients)]
        try:
            for c in clients:     # everyone has seen everyone join
                await c.await_for(lambda e: e["type"] == "presence" and len(e["online"]) == n_clients, timeout)
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


def show_code(source: str, language: str = "python") -> Any:
    """Display ``source`` with syntax colouring in Jupyter (``IPython.display.Code``)."""
    from IPython.display import Code

    return Code(source, language=language)


# --------------------------------------------------------------------------------
# Lesson 06: the flaws, measured
# --------------------------------------------------------------------------------


def _port(server: Any) -> int:
    return int(server.port)


def stuck_client(server: Any, rcvbuf: int = 4096, subprotocols: Iterable[str] = ()) -> socket.socket:
    """A WebSocket client that completes the handshake on a raw socket, then never reads again.

    Its small receive buffer (``SO_RCVBUF``, set before connecting so that TCP
    advertises a small window) makes its kernel stop accepting data early.
    Close it with ``.close()``.
    """
    port = _port(server)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    key = make_key()
    sock.sendall(build_request(f"127.0.0.1:{port}", "/ws", key=key, protocols=list(subprotocols)))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("the server closed the connection during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101") or accept_key(key).encode() not in head:
        status_line = head.split(b"\r\n")[0].decode("latin-1")
        raise ConnectionError(f"handshake refused: {status_line}")
    return sock


async def settle(value: Any, quiet: float = 0.3, timeout: float = 3.0) -> Any:
    """Wait until ``value()`` has not changed for ``quiet`` s (at most ``timeout`` s); return its last value."""
    deadline = time.monotonic() + timeout
    last, since = value(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        await asyncio.sleep(0.02)
        now = value()
        if now != last:
            last, since = now, time.monotonic()
    return last


async def _drop(clients: Iterable[ChatClient]) -> None:
    """Cut each client's TCP connection now, without a closing handshake.

    ``abort()`` closes the socket in a callback on the loop, so let the loop run
    that callback before returning: a caller that then blocks (``server.stop()``)
    would otherwise keep the sockets open and the server waiting.
    """
    for c in clients:
        if c.ws is not None and c.ws.protocol.state.name != "CLOSED":
            c.ws.transport.abort()
    for _ in range(3):
        await asyncio.sleep(0)


def _is_chat_message(raw: str | bytes) -> bool:
    """A relayed chat message: the naive server's ``{email, username, message}`` or our ``type: message``."""
    try:
        event = json.loads(raw)
    except ValueError:
        return False
    return isinstance(event, dict) and "message" in event and event.get("type", "message") == "message"


@dataclasses.dataclass
class StallResult:
    """What :func:`stall_timeline` measured."""

    server: str
    seconds: float
    bucket: float
    sent: int
    arrivals: list[list[float]]          # per healthy client: seconds after the start of each message received
    dropped_at: float | None             # when the server closed the stuck client (ChatServer only)

    @property
    def delivered(self) -> int:
        return sum(len(a) for a in self.arrivals)

    def per_bucket(self) -> tuple[list[float], list[int]]:
        """Messages delivered to the healthy clients in each ``bucket``-second slice."""
        n = int(round(self.seconds / self.bucket))
        counts = collections.Counter(int(t / self.bucket) for a in self.arrivals for t in a if t < self.seconds)
        return [i * self.bucket for i in range(n)], [counts.get(i, 0) for i in range(n)]

    def last_delivery(self) -> float:
        return max((a[-1] for a in self.arrivals if a), default=0.0)

    def rate_between(self, t0: float, t1: float) -> float:
        """Deliveries per second to the healthy clients between ``t0`` and ``t1`` s."""
        return sum(t0 <= t < t1 for a in self.arrivals for t in a) / (t1 - t0)


async def stall_timeline(server: Any, *, healthy: int = 3, size: int = 3000, rate: float = 400,
                         seconds: float = 4.0, bucket: float = 0.1) -> StallResult:
    """One client stops reading; ``healthy`` others keep chatting.  When do they stop getting messages?

    A raw-socket client joins and never reads (:func:`stuck_client`).  Healthy
    clients (like the Go original's Vue client: no subprotocol) read
    everything; one of them sends a ``size``-byte message ``rate`` times a
    second for ``seconds`` seconds.  Returns when each healthy client received
    each message, and when (if ever) the server closed the stuck client.
    """
    stuck = stuck_client(server)
    clients = [await ChatClient(server, f"healthy{i}", legacy=True, compression=None).aconnect() for i in range(healthy)]
    arrivals: list[list[float]] = [[] for _ in clients]
    dropped_at: float | None = None
    closed0 = getattr(getattr(server, "stats", None), "closed_slow", None)
    start = time.monotonic()

    async def reader(i: int, c: ChatClient) -> None:
        async for raw in c.ws:
            if _is_chat_message(raw):
                arrivals[i].append(time.monotonic() - start)

    async def watch_drop() -> None:
        nonlocal dropped_at
        while closed0 is not None and server.stats.closed_slow == closed0:
            await asyncio.sleep(0.01)
        if closed0 is not None:
            dropped_at = time.monotonic() - start

    readers = [asyncio.create_task(reader(i, c)) for i, c in enumerate(clients)]
    watcher = asyncio.create_task(watch_drop())
    sent = 0
    try:
        async with asyncio.timeout(seconds):
            text = "x" * size
            while True:
                await clients[0].asend(f"{sent:06d} {text}")
                sent += 1
                await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
    except TimeoutError:
        pass
    # Give what was sent time to arrive (bounded), then stop listening.
    try:
        async with asyncio.timeout(1.0):
            while any(len(a) < sent for a in arrivals):
                await asyncio.sleep(0.02)
    except TimeoutError:
        pass
    for task in [*readers, watcher]:
        task.cancel()
    stuck.close()
    await _drop(clients)         # the naive server may be stalled: no closing handshake to wait for
    return StallResult(type(server).__name__, seconds, bucket, sent, arrivals, dropped_at)


@dataclasses.dataclass
class FloodResult:
    server: str
    seconds: float
    sent: int                    # frames the flooder sent
    relayed: int                 # of them, received by each listener (the minimum over listeners)
    errors: int                  # error events the flooder got back
    per_listener: list[int]


async def flood(server: Any, seconds: float = 1.0, listeners: int = 2, settle: float = 0.5) -> FloodResult:
    """One client sends short messages as fast as it can for ``seconds`` s; count what the others get.

    The listeners count chat messages until none has arrived for ``settle`` s
    (at most 10 s); the flooder counts the ``error`` events it gets back.
    """
    # Our server sends error events only to clients that speak its subprotocol
    # (the Go original's client would render one as a message); the naive
    # server knows no subprotocol.
    flooder = await ChatClient(server, "flooder", legacy=not isinstance(server, ChatServer)).aconnect()
    others = [await ChatClient(server, f"listener{i}", legacy=True).aconnect() for i in range(listeners)]
    counts = [0] * listeners
    errors = 0
    last = time.monotonic()

    async def listen(i: int, c: ChatClient) -> None:
        nonlocal last
        async for raw in c.ws:
            if _is_chat_message(raw):
                counts[i] += 1
                last = time.monotonic()

    async def flooder_reads() -> None:
        nonlocal errors, last
        async for raw in flooder.ws:
            if '"error"' in raw and json.loads(raw).get("type") == "error":
                errors += 1
                last = time.monotonic()

    tasks = [asyncio.create_task(listen(i, c)) for i, c in enumerate(others)]
    tasks.append(asyncio.create_task(flooder_reads()))
    sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await flooder.asend(f"spam {sent}")
        sent += 1
        if sent % 50 == 0:
            await asyncio.sleep(0)   # let the readers run, as a real client's loop would
    try:
        async with asyncio.timeout(10):
            while time.monotonic() - last < settle:
                await asyncio.sleep(0.05)
    except TimeoutError:
        pass
    for t in tasks:
        t.cancel()
    await _drop([flooder, *others])
    return FloodResult(type(server).__name__, seconds, sent, min(counts), errors, counts)


@dataclasses.dataclass
class BigResult:
    server: str
    size: int                          # bytes of chat text sent
    received: dict[str, int]           # client -> bytes of chat text received in that message
    seconds: float                     # from the send to the last receipt (or to the close)
    sender_close: int | None           # the close code the sender got, if closed
    others_still_chatting: bool        # a small message afterwards reached every other client


async def big_message(server: Any, size: int = 10 * 2**20, others: int = 3, timeout: float = 20,
                      via: Any = None) -> BigResult:
    """One client sends a chat message of ``size`` bytes; who receives how much, and how long does it take?

    The receivers accept messages of any size (``max_size=None``), as a browser
    does; websockets' own default (1 MiB) would otherwise close them.  ``via``:
    a :class:`~chat_lesson.tap.Tap` in front of the server, for the sender only.
    """
    sender = await ChatClient(via or server, "big", legacy=True, compression=None, max_size=None).aconnect()
    receivers = [await ChatClient(server, f"r{i}", legacy=True, compression=None, max_size=None).aconnect()
                 for i in range(others)]
    received: dict[str, int] = {}

    async def first_message(c: ChatClient) -> None:
        async for raw in c.ws:
            if _is_chat_message(raw):
                received[c.username] = len(json.loads(raw)["message"])
                return

    listening = asyncio.ensure_future(asyncio.gather(*(first_message(c) for c in receivers)))
    start = time.perf_counter()
    try:
        await sender.asend("x" * size)
    except ConnectionClosed:
        pass                                  # the server closed us while we were still sending
    closed = asyncio.ensure_future(sender.ws.wait_closed())
    await asyncio.wait([listening, closed], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    seconds = time.perf_counter() - start
    sender_close = sender.ws.close_code if closed.done() else None
    for task in (listening, closed):
        task.cancel()
    await asyncio.gather(listening, closed, return_exceptions=True)
    # Are the others still fine?  One of them says hello; do all of them get it?
    fine = True
    try:
        await receivers[0].asend("still here?")
        for c in receivers:
            await c.await_for(lambda e: e.get("message") == "still here?", timeout=5)
    except (TimeoutError, ConnectionClosed):
        fine = False
    # Close politely (the sender may still be receiving its own copy), then cut what is left.
    async def polite_close(c: ChatClient) -> None:
        try:
            await c.aclose()
        except Exception:      # already gone: _drop below handles the rest
            pass

    open_ones = [c for c in (sender, *receivers) if c.ws.protocol.state.name == "OPEN"]
    if open_ones:
        await asyncio.wait([asyncio.ensure_future(polite_close(c)) for c in open_ones], timeout=5)
    await _drop([sender, *receivers])
    return BigResult(type(server).__name__, size, received, seconds, sender_close, fine)


async def origin_probe(server: Any, origin: str = "http://evil.example") -> str:
    """Open the chat as a page from ``origin`` would; what happens?"""
    try:
        async with connect(server.ws_url, origin=origin, open_timeout=5) as ws:
            return f"accepted: connected from Origin {origin} (subprotocol {ws.subprotocol})"
    except InvalidStatus as exc:
        return f"refused: HTTP {exc.response.status_code} for Origin {origin}"


async def email_probe(server: Any, email: str = "ada.lovelace@school.example") -> dict[str, Any]:
    """Ada sends a message with her email; what does another client receive?"""
    async with ChatClient(server, "ada", email, legacy=True) as ada, ChatClient(server, "eve", legacy=True) as eve:
        # a modern client on ChatServer would get the event with "avatar"; legacy gets the message shape
        await ada.asend("hi, I am ada")
        raw = await asyncio.wait_for(_next_message(eve), 5)
    return json.loads(raw)


async def _next_message(c: ChatClient) -> str:
    async for raw in c.ws:
        if _is_chat_message(raw):
            return raw
    raise ConnectionError("closed before a message arrived")


# --------------------------------------------------------------------------------
# Lesson 06: HTML in a message, in a real browser
# --------------------------------------------------------------------------------

XSS = '<img src=x onerror="window.__pwned=1">'

# A page that renders messages the way the Go original's Vue client does:
# username and message pasted into the page as HTML (its v-html).  Served from
# a temporary folder by the server under test, so it is same-origin with /ws.
INNER_HTML_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>renders with innerHTML, like v-html</title></head>
<body>
<div id="log"></div>
<script>
window.__pwned = 0; window.__open = 0; window.__received = 0;
var ws = new WebSocket("ws://" + location.host + "/ws");     // no subprotocol: a legacy client
ws.onopen = function () { window.__open = 1; };
ws.onmessage = function (e) {
  var msg = JSON.parse(e.data);
  if (msg.type && msg.type !== "message") return;
  // The original: chatContent += '<div class="chip">' + msg.username + '</div>' + msg.message
  document.getElementById("log").innerHTML +=
      '<div class="chip">' + msg.username + '</div>' + msg.message + '<br/>';
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


def browser_available() -> str | None:
    """None if headless Chromium can be driven here; else the reason it cannot."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (Debian/Ubuntu: apt-get install chromium)"
    return None


def _send_as_attacker(ws_url: str, text: str) -> None:
    """A script (no Origin header, no subprotocol) posts ``text`` as user 'mallory'."""
    from websockets.sync.client import connect as sync_connect

    with sync_connect(ws_url, open_timeout=5) as ws:
        ws.send(json.dumps({"username": "mallory", "email": "", "message": text}))
        # read our own echo, so the message has surely gone out before we close
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if _is_chat_message(ws.recv(timeout=max(0.01, deadline - time.monotonic()))):
                break


def _run_in_browser(targets: Sequence[tuple[str, str, str, str]], message: str, wait_ms: int) -> list[BrowserResult]:
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as p:
        browser = launch(p)
        try:
            for label, page_url, ws_url, kind in targets:
                page = browser.new_context().new_page()
                page.set_default_timeout(10_000)
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


# --------------------------------------------------------------------------------
# Lesson 06: requests that made the Go original call log.Fatal
# --------------------------------------------------------------------------------


def _exchange(port: int, request: bytes, timeout: float = 5) -> str:
    """Send ``request`` on a fresh TCP connection; the first line of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0].decode("latin-1") or "(closed without an answer)"


def bad_handshakes(server: Any) -> list[tuple[str, str]]:
    """Send the requests whose failed upgrade killed the Go original; what does ``server`` answer?"""
    port = _port(server)
    host = f"127.0.0.1:{port}"
    good = build_request(host, "/ws")
    results = [
        ("a plain GET /ws (someone opens the socket's URL in a tab)",
         _exchange(port, f"GET /ws HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())),
        ("Sec-WebSocket-Version: 8 (an old client)",
         _exchange(port, good.replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"))),
        ("no Sec-WebSocket-Key",
         _exchange(port, b"\r\n".join(line for line in good.split(b"\r\n") if not line.startswith(b"Sec-WebSocket-Key")))),
    ]
    # A client that gives up: a whole, valid request, then a TCP reset (SO_LINGER 0) before the 101 comes
    # back.  The Go original's handler runs, Upgrade fails on the reset connection, and
    # log.Fatal ends the server.  (Half a request would not do: Go's HTTP server never calls the handler.)
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, (1).to_bytes(4, "little") + (0).to_bytes(4, "little"))
    sock.sendall(good)
    sock.close()
    results.append(("a valid request, then a TCP reset before the 101", "(we reset it: no answer to read)"))
    return results
