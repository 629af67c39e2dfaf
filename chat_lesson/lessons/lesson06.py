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
import logging
import math
import socket
import textwrap
import time
from typing import Any
from collections.abc import Iterable

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from ..chat.client import ChatClient
from ..chat.server import ChatServer
from ..chat.wire import SUBPROTOCOL, Limits
from ..protocol.handshake import build_request
from ..rawclient import RawClient
from .exercises import Wrong, exercise, expect, need_choices
from .xss import INNER_HTML_PAGE, XSS, BrowserResult, browser_available, browser_xss, is_chat_message

__all__ = ["FLAWS", "INNER_HTML_PAGE", "MAX_BUFFER_CASE", "SNIPPETS", "XSS", "BigResult", "BrowserResult",
           "ChurnResult", "FloodResult", "StallResult", "TeacherClient", "bad_handshakes", "behind_reader",
           "big_message", "browser_available", "browser_xss", "churn", "email_probe", "flood", "handshake_status", "hush_server_logs",
           "naive_impersonation", "origin_probe", "say", "unbudgeted", "settle", "stall_timeline", "stuck_client", "try_names"]


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
    closed: int | None = None    # the close code the server gave the flooder, if it closed it


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
        try:
            async for raw in flooder.ws:
                if '"error"' in raw and json.loads(raw).get("type") == "error":
                    errors += 1
                    last = time.monotonic()
        except ConnectionClosed:
            pass

    tasks = [asyncio.create_task(listen(i, c)) for i, c in enumerate(others)]
    tasks.append(asyncio.create_task(flooder_reads()))
    sent = 0
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            await flooder.asend(f"spam {sent}")
            sent += 1
            if sent % 50 == 0:
                await asyncio.sleep(0)   # let the readers run, as a real client's loop would
    except ConnectionClosed:
        pass                             # the server closed the flooder
    last = max(last, time.monotonic())   # the quiet period counts from the flood's end, not its start
    try:
        async with asyncio.timeout(10):
            while time.monotonic() - last < settle:
                await asyncio.sleep(0.05)
    except TimeoutError:
        pass
    for t in tasks:
        t.cancel()
    closed = flooder.ws.close_code if flooder.ws.protocol.state.name == "CLOSED" else None
    await _drop([flooder, *others])
    return FloodResult(type(server).__name__, seconds, sent, min(counts), errors, counts, closed)


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


# --------------------------------------------------------------------------------
# Lesson 06: a class with a troll in it (identity, the teacher, budgets, Host names)
# --------------------------------------------------------------------------------


def say(*parts: Any, width: int = 96) -> None:
    """print(), wrapped at word boundaries: JupyterLab would fold a long line in the middle of a word."""
    text = " ".join(str(p) for p in parts)
    print("\n".join(textwrap.fill(line, width, subsequent_indent="    ", break_long_words=False,
                                   break_on_hyphens=False) if line.strip() else line for line in text.split("\n")))


async def naive_impersonation(server: Any) -> list[dict[str, Any]]:
    """On the naive server, Alice and a troll both write as "Alice"; what does a third student receive?"""
    alice = await ChatClient(server, "Alice", legacy=True).aconnect()
    troll = await ChatClient(server, "Alice", legacy=True).aconnect()
    reader = await ChatClient(server, "reader", legacy=True).aconnect()
    try:
        await alice.asend("hi, it's me")
        first = json.loads(await asyncio.wait_for(_next_message(reader), 5))
        await troll.asend("the test is cancelled, go home!")
        second = json.loads(await asyncio.wait_for(_next_message(reader), 5))
    finally:
        await _drop([alice, troll, reader])
    return [first, second]


async def try_names(server: Any, names: Iterable[str], timeout: float = 5) -> list[tuple[str, str]]:
    """Join ``server`` under each name in turn, keeping the accepted ones online; what did the room say?

    Returns (name, "accepted as id N" or "refused: <the error's detail>").
    """
    results, online = [], []
    try:
        for name in names:
            client = await ChatClient(server, name).aconnect()
            you = (await client.await_for(lambda e: e["type"] == "welcome", timeout))["you"]
            event = await client.await_for(lambda e, you=you: e["type"] == "error" or
                                           (e["type"] == "join" and e.get("from") == you), timeout)
            if event["type"] == "join":
                results.append((name, f"accepted as id {you}"))
                online.append(client)
            else:
                results.append((name, f"refused ({event['code']}): {event['detail']}"))
                await client.aclose()
    finally:
        for client in online:
            await client.aclose()
    return results


class TeacherClient(ChatClient):
    """A :class:`ChatClient` whose join carries the room's secret: it joins as the teacher.

    ``secret`` is ``server.room.secret`` (the part after ``#teacher=`` in
    ``server.teacher_url``).  Its ``command(action, target)`` sends a
    teacher's command (kick, mute, ban, lock ...) as the teacher's page does.
    """

    def __init__(self, server: Any, username: str, secret: str, **options: Any) -> None:
        super().__init__(server, username, **options)
        self.secret = secret

    async def aconnect(self) -> TeacherClient:
        self._home = asyncio.get_running_loop()
        self.ws = await connect(self.url, subprotocols=[SUBPROTOCOL], **self.options)
        await self.ws.send(json.dumps({"type": "join", "username": self.username, "teacher": self.secret}))
        return self

    async def command(self, action: str, target: int | None = None, **more: Any) -> None:
        await self.asend_raw(json.dumps({"type": action, "target": target, **more}))


@dataclasses.dataclass
class ChurnResult:
    """What :func:`churn` measured: one address connecting, joining and leaving as fast as it can."""

    server: str
    address: str
    seconds: float
    tried: int                    # connect, join, close cycles attempted
    accepted: int                 # of them, upgraded to a WebSocket
    refused: collections.Counter  # HTTP status (or how it was refused) -> how many
    events: int                   # join, leave and rename events the room broadcast meanwhile (to every student)
    event_bytes: int              # and their bytes, as each student receives them
    attacker_bytes: int           # bytes of WebSocket messages the attacker sent (its joins)

    @property
    def per_second(self) -> float:
        return self.events / self.seconds


async def churn(server: ChatServer, address: str = "127.0.0.3", seconds: float = 1.5) -> ChurnResult:
    """From ``address``, connect, join and close in a loop for ``seconds``; count the news the room broadcasts.

    ``address`` is the source address of the attacker's connections
    (``local_addr=(address, 0)``): on Linux every 127.x.y.z is this
    machine, and the server budgets each of them as another computer
    (127.0.0.1 and ::1 are "this machine", the teacher's own, and are not
    budgeted).  Raises OSError where the system has no such address.
    The news (join, leave, rename events) is counted as the server
    broadcasts it (``server.add_listener``): each event goes to every student.
    """
    news = {"events": 0, "bytes": 0}

    def count(event: dict[str, Any]) -> None:
        if event.get("type") in ("join", "leave", "rename"):
            news["events"] += 1
            news["bytes"] += len(json.dumps(event, ensure_ascii=False).encode()) + 2   # + the frame's header

    server.add_listener(count)
    tried = accepted = sent = 0
    refused: collections.Counter[int | str] = collections.Counter()
    start = time.monotonic()
    try:
        while time.monotonic() - start < seconds:
            tried += 1
            join = json.dumps({"type": "join", "username": f"troll{tried}"})
            try:
                async with connect(server.ws_url, subprotocols=[SUBPROTOCOL], local_addr=(address, 0),
                                   open_timeout=5, compression=None) as ws:
                    accepted += 1
                    await ws.send(join)                   # then leave at once: the room handles the join first
                    sent += len(join.encode())
            except InvalidStatus as refusal:
                refused[refusal.response.status_code] += 1
                await asyncio.sleep(0.01)                 # an attacker retries at once; a little pause keeps the CPU for the rest
            except (ConnectionResetError, InvalidMessage):
                refused["a reset as it was accepted"] += 1    # after its 503, a looping address is not even read
        elapsed = time.monotonic() - start
        await settle(lambda: news["events"], quiet=0.3)
    finally:
        server.remove_listener(count)
    return ChurnResult(type(server).__name__, address, elapsed, tried, accepted, refused, news["events"],
                       news["bytes"], sent)


async def settle_until_quiet(value: Any, quiet: float, timeout: float = 3.0) -> Any:
    return await settle(value, quiet=quiet, timeout=timeout)


def unbudgeted() -> dict[str, float]:
    """The ChatServer settings that turn off what guards against churn: as the room was before the classroom issue.

    No connect budget, no cap per address, no message budget (before the
    classroom issue it was per connection, so a new connection came with a
    full one), and joins announced at once (of these settings, those this
    version of the room has).
    """
    fields = {f.name for f in dataclasses.fields(Limits)}
    wanted = {"connect_rate": 0, "max_per_address": 0, "rate_limit": 0, "announce_after": 0}
    return {k: v for k, v in wanted.items() if k in fields}


@dataclasses.dataclass
class BehindResult:
    """What :func:`behind_reader` measured: one student that stopped reading while the room was busy."""

    messages_sent: int
    news_sent: int                # join and leave events the room broadcast meanwhile
    slow: collections.Counter     # event type -> how many the slow student received once it read again
    healthy: collections.Counter  # the same for a student that read all along
    closed_slow: int              # students the server closed as too slow


async def behind_reader(server: ChatServer, addresses: Iterable[str] = ("127.0.0.4", "127.0.0.5", "127.0.0.6"),
                        messages: int = 60, size: int = 4000, pause: float = 1.0) -> BehindResult:
    """A student stops reading while long messages and churn fill the room; what does it get when it reads again?

    The slow student is a raw socket with a small receive buffer that joins
    and then reads nothing for a moment; a healthy one reads all along.  The
    teacher (this machine) sends ``messages`` messages of ``size`` bytes, then
    a few connections from each of ``addresses`` join and leave.  Then the
    slow student reads everything it was sent.
    """
    slow = RawClient(_port(server), protocols=[SUBPROTOCOL], rcvbuf=4096)
    slow.send_text(json.dumps({"type": "join", "username": "slow"}))
    healthy = await ChatClient(server, "healthy").aconnect()
    teacher = await ChatClient(server, "talker").aconnect()
    seen: collections.Counter[str] = collections.Counter()

    async def listen() -> None:
        async for raw in healthy.ws:
            seen[json.loads(raw).get("type")] += 1

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.2)
    for i in range(messages):
        await teacher.asend(f"{i:03d} " + "x" * size)
    news = 0
    for address in addresses:
        for n in range(4):
            try:
                async with connect(server.ws_url, subprotocols=[SUBPROTOCOL], local_addr=(address, 0),
                                   open_timeout=5, compression=None) as ws:
                    await ws.send(json.dumps({"type": "join", "username": f"visitor-{address[-1]}-{n}"}))
                news += 2
            except InvalidStatus:
                pass
    await asyncio.sleep(pause)
    await settle(lambda: sum(seen.values()), quiet=0.3)
    got: collections.Counter[str] = collections.Counter()

    def read_all() -> None:
        slow.sock.settimeout(1.0)
        while True:
            try:
                message = slow.recv_message(timeout=1.0)
            except (TimeoutError, OSError, ConnectionError):
                return
            got[json.loads(message.data).get("type")] += 1

    await asyncio.to_thread(read_all)
    listener.cancel()
    await teacher.aclose()
    await healthy.aclose()
    slow.close()
    return BehindResult(messages, news, got, seen, server.stats.closed_slow)


def handshake_status(server: Any, host: str, origin: str | None = None) -> str:
    """A WebSocket handshake on a raw socket with ``Host: host`` (and ``Origin``); the answer's status line.

    The TCP connection goes to the server's real address, as a browser's
    does once an attacker's DNS name resolves to it (DNS rebinding).  A
    refusal's first line of body (the reason the server gives) follows the
    status line, after " | ".
    """
    request = build_request(host, "/ws", origin=origin)
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        if not status.startswith("HTTP/1.1 101"):
            sock.settimeout(1)
            try:
                while b"\n" not in body:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    body += chunk
            except OSError:
                pass
            reason = body.decode("utf-8", "replace").strip().split("\n", 1)[0]
            return f"{status} | {reason}" if reason else status
    return status


def hush_server_logs() -> None:
    """Keep the servers' log lines (refusals, drops) out of the notebook: the cells print what matters.

    Python prints a warning that no handler takes to stderr, which a
    notebook shows in pink under whichever cell is running.  A do-nothing
    handler on the package's logger stops that; the lesson shows each
    refusal's reason itself.
    """
    logger = logging.getLogger("chat_lesson")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


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

