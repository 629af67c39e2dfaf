"""Lesson 01's measurement: one stream of chat messages, delivered five ways.

A sender posts chat messages at random moments, ``rate`` per second on
average, each stamped with the time it was sent.  Five receivers get the same
messages at the same time, each its own way:

1. ``short_close``: short polling, a new TCP connection for every request
   (``Connection: close``, as HTTP/1.0 did by default);
2. ``short_keepalive``: short polling on one kept-alive HTTP/1.1 connection;
3. ``long_poll``: long polling on one kept-alive connection: the server holds
   each request until a message exists, the client asks again at once;
4. ``sse``: server-sent events: one GET /events whose response never ends;
   the server writes each message into it as an ``id:`` and a ``data:`` line
   (what a browser's ``EventSource`` reads);
5. ``websocket``: WebSocket push: one handshake, then the server sends each
   message as one frame.

Every receiver talks through a :class:`Stream` that counts each byte its
program hands to the kernel or gets from it (TCP payload: HTTP heads and
bodies, the WebSocket handshake, frame headers and payloads; not the
TCP/IP packet headers below them).  The WebSocket receiver is written
with the course's own pure code (``handshake``, ``frames``), so nothing is
hidden in a library; so is the event-stream reader.  After the messages,
``idle`` seconds with nothing to say show what each way spends on nothing.

``delay_ms`` puts a :class:`~chat_lesson.tap.Tap` in front of each server
that holds every chunk that long in each direction, as a real network would:
:func:`measure_delayed` uses it to show the gap a long poller leaves open
after each answer, which loopback hides.

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

WAYS = ("short_close", "short_keepalive", "long_poll", "sse", "websocket")
LABELS = {
    "short_close": "short poll, new connection each time",
    "short_keepalive": "short poll, kept-alive connection",
    "long_poll": "long poll",
    "sse": "server-sent events",
    "websocket": "WebSocket push",
}
SHORT_LABELS = {
    "short_close": "short poll\n(new conn.)",
    "short_keepalive": "short poll\n(keep-alive)",
    "long_poll": "long poll",
    "sse": "server-sent\nevents",
    "websocket": "WebSocket",
}
LINESTYLES = {"short_close": "--", "short_keepalive": "-", "long_poll": "-", "sse": "-.", "websocket": "-"}
COLOURS = {"short_close": "#d62728", "short_keepalive": "#ff7f0e", "long_poll": "#9467bd", "sse": "#8c564b",
           "websocket": "#2ca02c"}


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
    handshake: int = 0               # WebSocket, SSE: bytes of the opening request and answer, both ways
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
        self.ready: dict[str, asyncio.Event] = {"websocket": asyncio.Event(), "sse": asyncio.Event()}

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
        run.ready["websocket"].set()
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


def sse_request(host: str, path: str, last_event_id: str | None = None) -> bytes:
    """The bytes of an EventSource's request: it asks for text/event-stream and no cached copy."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", f"User-Agent: {USER_AGENT}", "Accept: text/event-stream",
             "Cache-Control: no-cache"]
    if last_event_id is not None:             # a browser adds it by itself when it reconnects
        lines.append(f"Last-Event-ID: {last_event_id}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_sse(block: bytes) -> dict[str, str]:
    """One event's lines (without the blank line that ends it) as {field: value}; comments (':...') dropped.

    Each line is ``field: value`` (one space after the colon is dropped); several ``data`` lines join with
    newlines, as EventSource joins them.
    """
    fields: dict[str, str] = {}
    for line in block.decode("utf-8").split("\n"):
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        fields[name] = fields[name] + "\n" + value if name == "data" and name in fields else value
    return fields


async def _sse(run: _Run, way: Way, host: str, port: int, since: int) -> None:
    """An EventSource in a few lines: one request, then read events from a response that never ends."""
    stream = await Stream.open(host, port, way.tally)
    try:
        request = sse_request(f"{host}:{port}", f"/events?since={since}")
        await stream.write(request)
        way.tally.requests += 1
        head = await stream.read_until(b"\r\n\r\n")
        answer = parse_head(head)
        if answer.status != 200:
            raise ConnectionError(f"GET /events answered {answer.status} {answer.reason}")
        way.handshake = way.tally.total
        way.request_heads.append(len(request))
        way.response_heads.append(len(head))
        run.ready["sse"].set()
        buffer = b""
        while True:
            buffer += (await stream.read_some()).replace(b"\r\n", b"\n")
            while b"\n\n" in buffer:
                block, _, buffer = buffer.partition(b"\n\n")
                fields = parse_sse(block)
                if "data" not in fields:
                    continue                  # a comment (heartbeat) or a retry: line: no event
                data = fields["data"].encode()
                way.tally.payload += len(data)
                if way.example is None and b'"message"' in data[:20]:
                    way.example = (request + head, block + b"\n\n")
                run.deliver(way, [json.loads(data)])
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
    sse_heartbeat: float | None = None
    delay_ms: float = 0.0
    sent_at: list[float] = dataclasses.field(default_factory=list)   # when each message was sent (monotonic)

    def gaps_shorter_than(self, ms: float) -> tuple[int, int]:
        """(how many, of how many) gaps between two messages sent one after the other were shorter than ``ms``."""
        gaps = [b - a for a, b in zip(self.sent_at, self.sent_at[1:])]
        return sum(1 for g in gaps if g * 1000 < ms), len(gaps)

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
        if not self.idle_seconds:
            return float("nan"), float("nan")
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

    def sse_heartbeat_bytes_per_minute(self) -> float:
        """What the event stream's heartbeat comment costs per minute (it has no answer)."""
        from .polling import HEARTBEAT

        return len(HEARTBEAT) * 60 / self.sse_heartbeat if self.sse_heartbeat else 0.0

    def messages_per_response(self, name: str) -> float:
        """Messages delivered per HTTP response (per frame or event for the push ways, where it is 1)."""
        way = self.ways[name]
        return way.delivered / way.busy.requests if way.busy.requests else 1.0

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
                "idle req/min": _round(req_min), "idle B/min": _round(bytes_min),
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


def _round(value: float) -> Any:
    return "-" if value != value else round(value)


def fmt_ms(value: float) -> str:
    return "-" if value != value else f"{value:.1f}" if value < 100 else f"{value:.0f}"


async def ameasure(host: str, chat_port: int, poll_port: int, *, rate: float = 8, duration: float = 5,
                   interval: float = 0.5, wait: float = 2, idle: float = 4, since: int = 0,
                   seed: int | None = None, ways: Iterable[str] = WAYS, delay_ms: float = 0) -> Measurement:
    """Run the measurement on the current loop (see :func:`measure`)."""
    n = max(1, round(rate * duration))
    run = _Run(n)
    ways = {name: Way(name) for name in WAYS if name in set(ways)}
    sender = await ChatClient(f"ws://{host}:{chat_port}/ws", "ticker", compression=None).aconnect()
    tasks, taps = [], []
    try:
        await sender.await_for(lambda e: e.get("type") == "join" and e.get("username") == "ticker")
        if delay_ms:          # the receivers go through taps that hold each chunk delay_ms, each way
            from ..tap import Tap

            taps = [await Tap((host, port), quiet=True).astart() for port in (poll_port, chat_port)]
            for tap in taps:
                tap.delay(delay_ms)
            poll_port, chat_port = taps[0].port, taps[1].port
        starters = {
            "short_close": lambda w: _short_poll(run, w, host, poll_port, since, interval, False),
            "short_keepalive": lambda w: _short_poll(run, w, host, poll_port, since, interval, True,
                                                     phase=interval / 3),   # two independent pollers, out of step
            "long_poll": lambda w: _long_poll(run, w, host, poll_port, since, wait),
            "sse": lambda w: _sse(run, w, host, poll_port, since),
            "websocket": lambda w: _websocket(run, w, host, chat_port),
        }
        tasks = [asyncio.create_task(starters[name](way)) for name, way in ways.items()]
        for name, ready in run.ready.items():
            if name in ways:
                await asyncio.wait_for(ready.wait(), 5)
        await asyncio.sleep(0.3 + 2 * delay_ms / 1000)   # let the first polls and any greeting frames pass
        start = {name: way.tally.copy() for name, way in ways.items()}
        t0 = time.monotonic()
        rng = random.Random(seed)
        sent_at = []
        for i in range(n):                            # random gaps, so no poll can fall into step with them
            await sender.asend(run.text(i))
            sent_at.append(time.monotonic())
            if i < n - 1:
                await asyncio.sleep(rng.uniform(0.5, 1.5) / rate)
        deadline = time.monotonic() + interval + 2 + 4 * delay_ms / 1000
        while not run.complete(ways.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05 + 2 * delay_ms / 1000)   # the long poll's re-request belongs to its last message
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
        for tap in taps:
            await tap.astop()
        await sender.aclose()
    return Measurement(ways, rate, duration, interval, wait, idle, n, busy_seconds, delay_ms=delay_ms,
                       sent_at=sent_at)


def measure(chat: Any, poll: Any, **options: Any) -> Measurement:
    """Measure the five ways against a running ChatServer and its PollServer (about 6 s + ``idle``).

    Options: ``rate`` (messages per second, default 8), ``duration`` (seconds
    of sending, 5), ``interval`` (short-poll interval, 0.5 s), ``wait``
    (long-poll hold, 2 s), ``idle`` (the idle window, 4 s), ``seed``,
    ``ways`` (which of :data:`WAYS`, all by default), ``delay_ms`` (added in
    each direction by a tap in front of each server, 0).  Runs on a loop of
    its own in a thread, so the kernel stays free.
    """
    parts = urllib.parse.urlsplit(chat.url)
    loop = BackgroundLoop("lesson01-measure")
    try:
        result = loop.call(ameasure(parts.hostname, chat.port, poll.port, since=poll.last_id, **options), timeout=120)
    finally:
        loop.stop()
    result.ping_interval = getattr(chat, "ping_interval", None)
    result.sse_heartbeat = getattr(poll, "heartbeat", None)
    return result


def measure_delayed(chat: Any, poll: Any, delay_ms: float = 50, **options: Any) -> Measurement:
    """The push-like ways again, with ``delay_ms`` added in each direction (about 5 s).

    Long polling, server-sent events and WebSocket push, through taps that
    delay every chunk, as a network with a round trip of ``2 * delay_ms``
    would.  On loopback a long poller asks again within a fraction of a
    millisecond; here its next request needs a whole round trip to reach the
    server, and a message said meanwhile waits for it.
    """
    options = {"ways": ("long_poll", "sse", "websocket"), "duration": 4, "idle": 0, **options}
    return measure(chat, poll, delay_ms=delay_ms, **options)


def gap_share(m: Measurement, name: str = "long_poll", slack_ms: float = 20) -> float:
    """The share of ``name``'s messages that took longer than the one-way delay plus ``slack_ms``: those that
    fell into a gap (for a long poller, the round trip between an answer and the next request)."""
    lat = m.ways[name].latencies
    if not lat:
        return float("nan")
    return sum(1 for t in lat if t * 1000 > m.delay_ms + slack_ms) / len(lat)
