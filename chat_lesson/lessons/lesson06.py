"""Lesson 06: the Go original's flaws, reproduced on the naive server and measured on ours; and exercises.

Each flaw is shown on :class:`~chat_lesson.lessons.naive.NaiveServer` and
measured the same way on :class:`~chat_lesson.chat.server.ChatServer`:
:func:`stall_timeline` (a client that stops reading: :func:`stuck_client`),
:func:`flood`, :func:`big_message`, :func:`origin_probe`, :func:`email_probe`,
:func:`browser_xss` (an ``<img onerror>`` in headless Chromium, from
:mod:`chat_lesson.lessons.xss`) and :func:`bad_handshakes` (the requests that
made the original exit).  The exercises are ``06.find_the_flaw`` and
``06.max_buffer``.

Every function here is bounded: each wait has a timeout, each loop an end.
The async functions run on the caller's loop (``await`` them in a cell).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import math
import socket
import time
from typing import Any
from collections.abc import Iterable

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ..chat.client import ChatClient
from ..chat.server import ChatServer
from ..protocol.handshake import build_request
from ..rawclient import RawClient
from .exercises import Wrong, exercise, expect, need_choices
from .xss import INNER_HTML_PAGE, XSS, BrowserResult, browser_available, browser_xss, is_chat_message

__all__ = ["FLAWS", "INNER_HTML_PAGE", "MAX_BUFFER_CASE", "SNIPPETS", "XSS", "BigResult", "BrowserResult",
           "FloodResult", "StallResult", "bad_handshakes", "big_message", "browser_available", "browser_xss",
           "email_probe", "flood", "origin_probe", "settle", "stall_timeline", "stuck_client"]


# --------------------------------------------------------------------------------
# Lesson 06: the flaws, measured
# --------------------------------------------------------------------------------


def _port(server: Any) -> int:
    return int(server.port)


def stuck_client(server: Any, rcvbuf: int = 4096, subprotocols: Iterable[str] = ()) -> RawClient:
    """A WebSocket client that completes the handshake, then never reads again: a frozen laptop.

    A :class:`~chat_lesson.rawclient.RawClient` whose small receive buffer
    (``SO_RCVBUF``, set before connecting so that TCP advertises a small
    window) makes its kernel stop accepting data early.  Close it with ``.close()``.
    """
    return RawClient(_port(server), protocols=subprotocols, rcvbuf=rcvbuf)


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
            if is_chat_message(raw):
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
            if is_chat_message(raw):
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
            if is_chat_message(raw):
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
        if is_chat_message(raw):
            return raw
    raise ConnectionError("closed before a message arrived")


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


# =============================================================================
# Lesson 06: hardening
# =============================================================================

FLAWS = {
    "stall": "one client that stops reading holds up everyone",
    "origin": "any web page may connect (no Origin check)",
    "size": "no limit on a message's size",
    "rate": "no limit on how fast one client may send",
    "html": "a message's HTML runs in the readers' pages",
    "email": "a private address is sent to everyone",
    "fatal": "one bad client stops the whole server",
    "race": "shared data changed from several threads at once",
}
"""The choices for ``06.find_the_flaw``."""

SNIPPETS = {
    "A": ("python", '''\
async def relay(text):
    for member in list(members.values()):
        await member.ws.send(text)      # returns once the bytes are written'''),
    "B": ("javascript", '''\
function show(msg) {
  const p = document.createElement("p");
  p.innerHTML = "<b>" + msg.username + "</b> " + msg.message;
  list.append(p);
}'''),
    "C": ("python", '''\
def on_message(member, data):
    broadcast({"type": "message", "from": data["username"],
               "gravatar": data["email"], "message": data["message"][:4000]})'''),
    "D": ("python", '''\
async def handler(ws):
    try:
        hello = json.loads(await ws.recv())
    except ValueError as exc:
        log.critical("bad client: %s", exc)
        sys.exit(1)'''),
}
"""Four short snippets, one flaw each: name -> (language, code)."""

_SNIPPET_TRUTH = {
    "A": ("stall", "each send is awaited in turn: while one member's buffers are full, the loop waits there, "
                   "and everyone after it (and every later message) waits too."),
    "B": ("html", "createElement is safe, but innerHTML then parses the text as HTML: use textContent."),
    "C": ("email", "look at what goes under 'gravatar': the address itself, not its hash."),
    "D": ("fatal", "sys.exit() raises SystemExit, which asyncio does not catch: it ends the event loop and the "
                   "whole server, like Go's log.Fatal. Log it and close only this connection."),
}


@exercise("06.find_the_flaw", hint="Read each snippet as an attacker (or an unlucky student) would: what input or "
          "behaviour of ONE client makes it hurt everyone else?")
def _find_the_flaw(answer: Any) -> str:
    """Name the flaw (from FLAWS) in each of four short server or client snippets."""
    need_choices(answer, _SNIPPET_TRUTH, FLAWS, "FLAWS")
    return "all four. Why:" + "".join(f"\n • {k} ({flaw}): {why}" for k, (flaw, why) in _SNIPPET_TRUTH.items())


MAX_BUFFER_CASE = {"students": 30, "messages_per_second": 20, "frame_bytes": 300, "freeze_seconds": 5}
"""The numbers of ``06.max_buffer``: the whole room's message rate, the size of one frame, the longest pause to survive."""


@exercise("06.max_buffer", hint="max_buffer is per client: it holds what is written to ONE client while that client "
          "is not reading. Bytes per second to one client × seconds of freeze.")
def _max_buffer(answer: Any) -> str:
    """The smallest max_buffer (bytes) that lets a client survive a freeze of freeze_seconds."""
    c = MAX_BUFFER_CASE
    per_second = c["messages_per_second"] * c["frame_bytes"]
    right = per_second * c["freeze_seconds"]
    try:
        given = float(answer)
    except (TypeError, ValueError):
        raise Wrong(f"give a number of bytes, not {answer!r}") from None
    expect(not math.isclose(given, right * c["students"], rel_tol=0.1),
           f"{given:,.0f} bytes is the buffer of all {c['students']} clients together",
           "each client has its own buffer; one frozen client's buffer fills with what is sent to it alone")
    expect(not math.isclose(given, per_second, rel_tol=0.1),
           f"{given:,.0f} bytes is one second of the room's traffic; the freeze lasts {c['freeze_seconds']} s")
    expect(given >= right * 0.95, f"{given:,.0f} bytes is too small: the frozen client would be closed early")
    expect(given <= right * 1.1, f"{given:,.0f} bytes would work, but what is the smallest?")
    default = 256 * 1024
    return (f"{right:,} bytes ({right / 1024:.0f} KiB): {c['messages_per_second']} × {c['frame_bytes']} B = "
            f"{per_second:,} B/s for {c['freeze_seconds']} s (the kernel's own buffers add a little slack). "
            f"ChatServer's default 256 KiB covers {default / per_second:.0f} s of this room, and if all "
            f"{c['students']} froze at once they would hold about {c['students'] * default / 2**20:.1f} MiB (plus the kernel's "
            "buffers): bounded.")


__all__ = ["FLAWS", "MAX_BUFFER_CASE", "SNIPPETS"]
