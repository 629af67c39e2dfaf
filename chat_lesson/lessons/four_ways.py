"""Lesson 01's measurement: one stream of chat messages, delivered four ways.

A sender posts chat messages at random moments, ``rate`` per second on
average, each stamped with the time it was sent.  Four receivers get the same
messages at the same time, each its own way:

1. ``short_close``: short polling, a new TCP connection for every request
   (``Connection: close``, as HTTP/1.0 did by default);
2. ``short_keepalive``: short polling on one kept-alive HTTP/1.1 connection;
3. ``long_poll``: long polling on one kept-alive connection: the server holds
   each request until a message exists, the client asks again at once;
4. ``websocket``: WebSocket push: one handshake, then the server sends each
   message as one frame.

Every receiver talks through a :class:`Stream` that counts each byte its
program hands to the kernel or gets from it (TCP payload: HTTP heads and
bodies, the WebSocket handshake, frame headers and payloads; not the
TCP/IP packet headers below them).  The WebSocket receiver is written
with the course's own pure code (``handshake``, ``frames``), so nothing is
hidden in a library.  After the messages, ``idle`` seconds with nothing to
say show what each way spends on nothing.

>>> m = measure(chat, poll)            # doctest: +SKIP  (about 10 s)
>>> m                                  # doctest: +SKIP  (a table)
>>> m.table()                          # doctest: +SKIP

The figures that draw a measurement are in :mod:`chat_lesson.lessons.lesson01`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import re
import secrets
import time
import urllib.parse
from typing import Any
from collections.abc import Iterable

from ..chat.client import ChatClient
from ..protocol.frames import Frame, Opcode, encode_close, encode_frame, header_size
from ..protocol.handshake import build_request, check_response, make_key, parse_head
from ..protocol.reader import Reader
from ..notebook import BackgroundLoop
from ..chat.wire import SUBPROTOCOL
from .display import Table

USER_AGENT = "chat-lesson-poller/1.0"

WAYS = ("short_close", "short_keepalive", "long_poll", "websocket")
LABELS = {
    "short_close": "short poll, new connection each time",
    "short_keepalive": "short poll, kept-alive connection",
    "long_poll": "long poll",
    "websocket": "WebSocket push",
}
SHORT_LABELS = {
    "short_close": "short poll\n(new conn.)",
    "short_keepalive": "short poll\n(keep-alive)",
    "long_poll": "long poll",
    "websocket": "WebSocket",
}
LINESTYLES = {"short_close": "--", "short_keepalive": "-", "long_poll": "-", "websocket": "-"}
COLOURS = {"short_close": "#d62728", "short_keepalive": "#ff7f0e", "long_poll": "#9467bd", "websocket": "#2ca02c"}


# -- counting bytes ------------------------------------------------------------


@dataclasses.dataclass
class Tally:
    """What one receiver spent: bytes each way, of which payload, requests and connections."""

    sent: int = 0            # bytes written to the socket
    received: int = 0        # bytes read from the socket
    payload: int = 0         # of those read: HTTP bodies / WebSocket frame payloads
    requests: int = 0        # HTTP requests (or WebSocket handshakes) sent
    connections: int = 0     # TCP connections opened

    @property
    def total(self) -> int:
        return self.sent + self.received

    @property
    def overhead(self) -> int:
        """Everything that is not payload: HTTP heads, frame headers, the handshake."""
        return self.total - self.payload

    def __sub__(self, other: Tally) -> Tally:
        return Tally(*(a - b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    def copy(self) -> Tally:
        return dataclasses.replace(self)


class Stream:
    """A TCP connection on asyncio streams that counts every byte into a :class:`Tally`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tally: Tally) -> None:
        self.reader, self.writer, self.tally = reader, writer, tally

    @classmethod
    async def open(cls, host: str, port: int, tally: Tally) -> Stream:
        reader, writer = await asyncio.open_connection(host, port)
        tally.connections += 1
        return cls(reader, writer, tally)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        self.tally.sent += len(data)
        await self.writer.drain()

    async def read_until(self, separator: bytes) -> bytes:
        data = await self.reader.readuntil(separator)
        self.tally.received += len(data)
        return data

    async def read_exactly(self, n: int) -> bytes:
        data = await self.reader.readexactly(n)
        self.tally.received += len(data)
        return data

    async def read_some(self, n: int = 65536) -> bytes:
        data = await self.reader.read(n)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.tally.received += len(data)
        return data

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


def poll_request(host: str, path: str, close: bool) -> bytes:
    """The bytes of one poll request: a modest head (a browser would add more fields)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", f"User-Agent: {USER_AGENT}", "Accept: application/json"]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def http_get(stream: Stream, host: str, path: str, close: bool) -> tuple[bytes, bytes, bytes]:
    """Send one GET on ``stream``; return (request bytes, response head bytes, body)."""
    request = poll_request(host, path, close)
    await stream.write(request)
    stream.tally.requests += 1
    head = await stream.read_until(b"\r\n\r\n")
    length = int(parse_head(head).headers.get("Content-Length", "0"))
    body = await stream.read_exactly(length)
    stream.tally.payload += len(body)
    return request, head, body


# -- one run ---------------------------------------------------------------------


@dataclasses.dataclass
class Way:
    """One receiver's record of a run."""

    name: str
    tally: Tally = dataclasses.field(default_factory=Tally)
    latencies: list[float] = dataclasses.field(default_factory=list)   # seconds, one per message
    seen: set[int] = dataclasses.field(default_factory=set)
    request_heads: list[int] = dataclasses.field(default_factory=list)
    response_heads: list[int] = dataclasses.field(default_factory=list)
    handshake: int = 0               # WebSocket: bytes of the opening handshake, both ways
    example: tuple[bytes, bytes] | None = None   # one (request, response) as sent
    busy: Tally | None = None        # spent while messages flowed (handshake excluded)
    idle: Tally | None = None        # spent during the idle window

    @property
    def label(self) -> str:
        return LABELS[self.name]

    @property
    def delivered(self) -> int:
        return len(self.latencies)


class _Run:
    """The shared state of one measurement: the tag that marks this run's messages."""

    def __init__(self, n: int) -> None:
        self.tag = "m" + secrets.token_hex(3)
        self.n = n
        self.pattern = re.compile(rf"^{self.tag} #(\d+) sent=([0-9.]+)$")
        self.ws_ready = asyncio.Event()

    def text(self, i: int) -> str:
        return f"{self.tag} #{i} sent={time.time():.6f}"

    def deliver(self, way: Way, events: Iterable[dict[str, Any]]) -> int:
        """Record this run's messages among ``events``; return the highest message id seen."""
        now, top = time.time(), 0
        for event in events:
            if event.get("type") != "message":
                continue
            top = max(top, event.get("id", 0))
            found = self.pattern.match(event.get("message", ""))
            if found and int(found[1]) not in way.seen:
                way.seen.add(int(found[1]))
                way.latencies.append(now - float(found[2]))
        return top

    def complete(self, ways: Iterable[Way]) -> bool:
        return all(len(w.seen) >= self.n for w in ways)


async def _poll_once(run: _Run, way: Way, stream: Stream, host: str, since: int, extra: str, close: bool) -> int:
    """One GET /poll?since=N(extra): count its heads, deliver its messages; returns the new N."""
    request, head, body = await http_get(stream, host, f"/poll?since={since}{extra}", close=close)
    way.request_heads.append(len(request))
    way.response_heads.append(len(head))
    events = json.loads(body)
    if events and way.example is None:
        way.example = (request, head + body)
    return max(since, run.deliver(way, events))


async def _short_poll(run: _Run, way: Way, host: str, port: int, since: int, interval: float, keep_alive: bool,
                      phase: float = 0.0) -> None:
    loop = asyncio.get_running_loop()
    stream, tick = None, loop.time() + phase
    await asyncio.sleep(phase)
    try:
        while True:
            if stream is None:
                stream = await Stream.open(host, port, way.tally)
            since = await _poll_once(run, way, stream, f"{host}:{port}", since, "", close=not keep_alive)
            if not keep_alive:
                await stream.close()          # the server closes its side too
                stream = None
            tick += interval
            await asyncio.sleep(max(0.0, tick - loop.time()))
    finally:
        if stream is not None:
            await stream.close()


async def _long_poll(run: _Run, way: Way, host: str, port: int, since: int, wait: float) -> None:
    stream = await Stream.open(host, port, way.tally)
    try:
        while True:
            since = await _poll_once(run, way, stream, f"{host}:{port}", since, f"&wait={wait:g}", close=False)
    finally:
        await stream.close()


async def _websocket(run: _Run, way: Way, host: str, port: int) -> None:
    """A WebSocket client in a dozen lines of the course's own pure code."""
    stream = await Stream.open(host, port, way.tally)
    try:
        key = make_key()
        request = build_request(f"{host}:{port}", "/ws", key=key, protocols=[SUBPROTOCOL])
        await stream.write(request)
        way.tally.requests += 1
        head = await stream.read_until(b"\r\n\r\n")
        check_response(key, head, protocols=[SUBPROTOCOL])
        way.handshake = way.tally.total
        way.request_heads.append(len(request))
        way.response_heads.append(len(head))
        run.ws_ready.set()
        reader = Reader(masked=False)                    # a server's frames are never masked (RFC 6455 §5.1)
        while True:
            frame = reader.next_frame()
            if frame is None:                            # not a whole frame yet: read more
                reader.receive_data(await stream.read_some())
                continue
            if way.example is None and frame.opcode == Opcode.TEXT and b'"message"' in frame.payload[:20]:
                way.example = (request + head, encode_frame(frame))   # the shortest length form: its very bytes
            if frame.opcode == Opcode.TEXT:
                way.tally.payload += len(frame.payload)
                run.deliver(way, [json.loads(frame.payload)])
            elif frame.opcode == Opcode.PING:   # answer the server's heartbeat, masked as a client must
                await stream.write(encode_frame(Frame(True, Opcode.PONG, frame.payload), os.urandom(4)))
            elif frame.opcode == Opcode.CLOSE:
                return
    except asyncio.CancelledError:
        try:   # leave politely: a masked close frame, 1000 (normal closure)
            await asyncio.wait_for(stream.write(encode_frame(Frame(True, Opcode.CLOSE, encode_close(1000)), os.urandom(4))), 1)
        except (ConnectionError, TimeoutError):
            pass
        raise
    finally:
        await stream.close()


@dataclasses.dataclass
class Measurement:
    """The result of :func:`measure`: per way, bytes, latencies and idle cost."""

    ways: dict[str, Way]
    rate: float
    duration: float
    interval: float
    wait: float
    idle_seconds: float
    messages: int
    busy_seconds: float
    ping_interval: float | None = None

    # -- the numbers ------------------------------------------------------------

    def bytes_per_message(self, name: str) -> dict[str, float]:
        """Bytes on the wire per delivered message: payload, overhead, handshake (amortised), total."""
        way = self.ways[name]
        busy, n = way.busy, max(1, way.delivered)
        parts = {"payload": busy.payload / n, "overhead": busy.overhead / n, "handshake": way.handshake / n}
        parts["total"] = sum(parts.values())
        return parts

    def latency_ms(self, name: str) -> tuple[float, float]:
        """(median, p95) delivery latency in milliseconds."""
        import numpy as np

        lat = np.array(self.ways[name].latencies) * 1000
        if lat.size == 0:
            return float("nan"), float("nan")
        return float(np.percentile(lat, 50)), float(np.percentile(lat, 95))

    def idle_per_minute(self, name: str) -> tuple[float, float]:
        """(requests, bytes) per minute spent while nothing was said, scaled from the idle window."""
        idle = self.ways[name].idle
        scale = 60 / self.idle_seconds
        return idle.requests * scale, idle.total * scale

    @property
    def request_head(self) -> float:
        """The mean size of a poll request head, measured (short poll, keep-alive)."""
        heads = self.ways["short_keepalive"].request_heads
        return sum(heads) / len(heads)

    @property
    def response_head(self) -> float:
        """The mean size of a poll response head, measured (short poll, keep-alive)."""
        heads = self.ways["short_keepalive"].response_heads
        return sum(heads) / len(heads)

    @property
    def message_payload(self) -> float:
        """The mean size of one message event as JSON (the WebSocket frames' payload)."""
        return self.bytes_per_message("websocket")["payload"]

    def heartbeat_bytes_per_minute(self) -> float:
        """What the server's WebSocket heartbeat costs per minute: a 4-byte ping and its masked pong."""
        if not self.ping_interval:
            return 0.0
        per_ping = (header_size(4, False) + 4) + (header_size(4, True) + 4)
        return per_ping * 60 / self.ping_interval

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for name, way in self.ways.items():
            b = self.bytes_per_message(name)
            med, p95 = self.latency_ms(name)
            req_min, bytes_min = self.idle_per_minute(name)
            rows.append({
                "way": way.label, "delivered": f"{way.delivered}/{self.messages}",
                "bytes/msg": round(b["total"]), "payload": round(b["payload"]),
                "overhead": round(b["overhead"] + b["handshake"]),
                "median ms": fmt_ms(med), "p95 ms": fmt_ms(p95),
                "requests": way.busy.requests, "new TCP conns": way.busy.connections,
                "idle req/min": round(req_min), "idle B/min": round(bytes_min),
            })
        return rows

    def table(self) -> Table:
        return Table(self.rows())

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()

    def __str__(self) -> str:
        return str(self.table())

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


def fmt_ms(value: float) -> str:
    return "-" if value != value else f"{value:.1f}" if value < 100 else f"{value:.0f}"


async def ameasure(host: str, chat_port: int, poll_port: int, *, rate: float = 8, duration: float = 5,
                   interval: float = 0.5, wait: float = 2, idle: float = 4, since: int = 0,
                   seed: int | None = None) -> Measurement:
    """Run the measurement on the current loop (see :func:`measure`)."""
    n = max(1, round(rate * duration))
    run = _Run(n)
    ways = {name: Way(name) for name in WAYS}
    sender = await ChatClient(f"ws://{host}:{chat_port}/ws", "ticker", compression=None).aconnect()
    tasks = []
    try:
        await sender.await_for(lambda e: e.get("type") == "join" and e.get("username") == "ticker")
        tasks = [
            asyncio.create_task(_short_poll(run, ways["short_close"], host, poll_port, since, interval, False)),
            asyncio.create_task(_short_poll(run, ways["short_keepalive"], host, poll_port, since, interval, True,
                                            phase=interval / 3)),   # two independent pollers, out of step
            asyncio.create_task(_long_poll(run, ways["long_poll"], host, poll_port, since, wait)),
            asyncio.create_task(_websocket(run, ways["websocket"], host, chat_port)),
        ]
        await asyncio.wait_for(run.ws_ready.wait(), 5)
        await asyncio.sleep(0.3)                      # let the first polls and any greeting frames pass
        start = {name: way.tally.copy() for name, way in ways.items()}
        t0 = time.monotonic()
        rng = random.Random(seed)
        for i in range(n):                            # random gaps, so no poll can fall into step with them
            await sender.asend(run.text(i))
            if i < n - 1:
                await asyncio.sleep(rng.uniform(0.5, 1.5) / rate)
        deadline = time.monotonic() + interval + 2
        while not run.complete(ways.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)                     # the long poll's re-request belongs to its last message
        busy_seconds = time.monotonic() - t0
        middle = {name: way.tally.copy() for name, way in ways.items()}
        await asyncio.sleep(idle)
        for name, way in ways.items():
            way.busy = middle[name] - start[name]
            way.idle = way.tally - middle[name]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sender.aclose()
    return Measurement(ways, rate, duration, interval, wait, idle, n, busy_seconds)


def measure(chat: Any, poll: Any, **options: Any) -> Measurement:
    """Measure the four ways against a running ChatServer and its PollServer (about 6 s + ``idle``).

    Options: ``rate`` (messages per second, default 8), ``duration`` (seconds
    of sending, 5), ``interval`` (short-poll interval, 0.5 s), ``wait``
    (long-poll hold, 2 s), ``idle`` (the idle window, 4 s), ``seed``.  Runs on
    a loop of its own in a thread, so the kernel stays free.
    """
    parts = urllib.parse.urlsplit(chat.url)
    loop = BackgroundLoop("lesson01-measure")
    try:
        result = loop.call(ameasure(parts.hostname, chat.port, poll.port, since=poll.last_id, **options), timeout=120)
    finally:
        loop.stop()
    result.ping_interval = getattr(chat, "ping_interval", None)
    return result
