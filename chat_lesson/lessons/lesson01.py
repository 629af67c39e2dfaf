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
>>> plot_bytes(m); plot_latency(m); plot_idle(m)   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import json
import os
import random
import re
import secrets
import time
import urllib.parse
from typing import Any, Iterable, Sequence

from ..chat.client import ChatClient
from ..protocol.frames import Frame, IncompleteFrame, Opcode, decode_frame, encode_close, encode_frame, header_size
from ..protocol.handshake import build_request, check_response, make_key, parse_head
from ..notebook import BackgroundLoop
from ..chat.server import SUBPROTOCOL

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

    def __sub__(self, other: "Tally") -> "Tally":
        return Tally(*(a - b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    def copy(self) -> "Tally":
        return dataclasses.replace(self)


class Stream:
    """A TCP connection on asyncio streams that counts every byte into a :class:`Tally`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tally: Tally) -> None:
        self.reader, self.writer, self.tally = reader, writer, tally

    @classmethod
    async def open(cls, host: str, port: int, tally: Tally) -> "Stream":
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
        buffer = b""
        while True:
            try:
                frame, used = decode_frame(buffer, masked=False)
            except IncompleteFrame:
                buffer += await stream.read_some()
                continue
            if way.example is None and frame.opcode == Opcode.TEXT and b'"message"' in frame.payload[:20]:
                way.example = (request + head, buffer[:used])
            buffer = buffer[used:]
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
                "median ms": _ms(med), "p95 ms": _ms(p95),
                "requests": way.busy.requests, "new TCP conns": way.busy.connections,
                "idle req/min": round(req_min), "idle B/min": round(bytes_min),
            })
        return rows

    def table(self) -> "Table":
        return Table(self.rows())

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()

    def __str__(self) -> str:
        return str(self.table())

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


def _ms(value: float) -> str:
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


# -- tables and figures ----------------------------------------------------------


class Table:
    """A list of dicts shown as an HTML table in Jupyter and as aligned text elsewhere."""

    def __init__(self, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
        self.rows = list(rows)
        self.columns = list(columns or (self.rows[0].keys() if self.rows else []))

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{html.escape(str(c))}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(str(r.get(c, '')))}</td>"
                                        for c in self.columns) + "</tr>" for r in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __str__(self) -> str:
        cells = [[str(c) for c in self.columns]] + [[str(r.get(c, "")) for c in self.columns] for r in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


def plot_bytes(m: Measurement, ax: Any = None) -> Any:
    """Stacked bars: bytes on the wire per delivered message, split into payload and overhead."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(8, 3.2))[1]
    names = list(m.ways)[::-1]
    y = range(len(names))
    parts = [m.bytes_per_message(n) for n in names]
    payload = [p["payload"] for p in parts]
    heads = [p["overhead"] for p in parts]
    hand = [p["handshake"] for p in parts]
    ax.barh(y, payload, color="#4c78a8", label="payload (the message JSON)")
    ax.barh(y, heads, left=payload, color="#f58518", label="HTTP heads / frame headers")
    ax.barh(y, hand, left=[a + b for a, b in zip(payload, heads)], color="#b8b8b8",
            label=f"WebSocket handshake, shared by {m.ways['websocket'].delivered} messages")
    for i, p in enumerate(parts):
        ax.text(p["total"], i, f"  {p['total']:.0f} B", va="center")
    ax.set_yticks(list(y), [SHORT_LABELS[n] for n in names])
    ax.set_xlabel("bytes on the wire per delivered message (both directions)")
    ax.set_xlim(0, max(p["total"] for p in parts) * 1.18)
    ax.set_title(f"Cost of one chat message, {m.messages} messages at ~{m.rate:g}/s")
    ax.legend(loc="lower right", fontsize=8)
    return ax


def plot_latency(m: Measurement, ax: Any = None) -> Any:
    """The delivery latency of every message, as a cumulative distribution on a log axis."""
    import matplotlib.pyplot as plt
    import numpy as np

    ax = ax or plt.subplots(figsize=(8, 3.6))[1]
    for name, way in m.ways.items():
        lat = np.sort(np.array(way.latencies) * 1000)
        if lat.size == 0:
            continue
        frac = np.arange(1, lat.size + 1) / lat.size
        med, p95 = m.latency_ms(name)
        ax.step(lat, frac, where="post", color=COLOURS[name], ls=LINESTYLES[name], lw=1.6,
                label=f"{LABELS[name]}: median {_ms(med)} ms, p95 {_ms(p95)} ms")
        ax.plot([med], [0.5], "o", color=COLOURS[name])
    ax.axhline(0.5, color="grey", lw=0.5, ls=":")
    ax.axhline(0.95, color="grey", lw=0.5, ls=":")
    ax.axvline(m.interval * 1000, color="grey", lw=0.8, ls="--")
    ax.text(m.interval * 1000, 0.02, " poll interval", color="grey", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("delivery latency, ms (log scale): time received - time stamped by the sender")
    ax.set_ylabel("fraction of messages")
    ax.set_title("How long each message took to arrive")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, ncol=2, frameon=False)
    return ax


def plot_idle(m: Measurement, axes: Any = None) -> Any:
    """Two panels: requests and bytes per minute spent while nobody says anything."""
    import matplotlib.pyplot as plt

    if axes is None:
        axes = plt.subplots(1, 2, figsize=(9, 3.2))[1]
    names = list(m.ways)
    x = range(len(names))
    reqs = [m.idle_per_minute(n)[0] for n in names]
    sizes = [m.idle_per_minute(n)[1] for n in names]
    colours = [COLOURS[n] for n in names]
    axes[0].bar(x, reqs, color=colours)
    axes[1].bar(x, sizes, color=colours)
    for ax, values, unit in ((axes[0], reqs, ""), (axes[1], sizes, " B")):
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.0f}{unit}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(x), [SHORT_LABELS[n] for n in names], fontsize=8)
        ax.margins(y=0.15)
    beat = m.heartbeat_bytes_per_minute()
    if beat:
        ws = names.index("websocket")
        axes[1].text(ws, max(sizes) * 0.12, f"+ heartbeat\n{beat:.0f} B/min\n(1 ping per {m.ping_interval:g} s)",
                     ha="center", va="bottom", fontsize=7, color=COLOURS["websocket"])
    axes[0].set_ylabel("requests per minute")
    axes[1].set_ylabel("bytes per minute")
    axes[0].set_title(f"Idle: requests (measured over {m.idle_seconds:g} s, ×{60 / m.idle_seconds:g})", fontsize=9)
    axes[1].set_title("Idle: bytes on the wire", fontsize=9)
    plt.tight_layout()
    return axes


PAYLOAD_SIZES = [2 ** k for k in range(0, 21)]    # 1 B .. 1 MiB


def overhead_rows(request_head: float, response_head: float, sizes: Sequence[int] = PAYLOAD_SIZES) -> list[dict[str, Any]]:
    """Overhead bytes and share of the wire for one message of each size, HTTP vs WebSocket frames."""
    rows = []
    for n in sizes:
        http = request_head + response_head + len(str(n)) - 1   # Content-Length grows with the body
        server, client = header_size(n, False), header_size(n, True)
        rows.append({"payload": n, "http": http, "server frame": server, "client frame": client,
                     "http %": 100 * http / (http + n), "server %": 100 * server / (server + n),
                     "client %": 100 * client / (client + n)})
    return rows


def plot_overhead(request_head: float, response_head: float, payload: float | None = None, ax: Any = None) -> Any:
    """Overhead as a share of the bytes on the wire, for payloads from 1 B to 1 MiB."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(8, 3.6))[1]
    rows = overhead_rows(request_head, response_head)
    sizes = [r["payload"] for r in rows]
    ax.plot(sizes, [r["http %"] for r in rows], "o-", ms=3, color=COLOURS["short_keepalive"],
            label=f"HTTP poll: request head + response head (measured: {request_head:.0f} + {response_head:.0f} B)")
    ax.plot(sizes, [r["client %"] for r in rows], "s-", ms=3, color="#17becf",
            label="WebSocket frame, client → server (2-14 B, incl. 4 B mask key)")
    ax.plot(sizes, [r["server %"] for r in rows], "^-", ms=3, color=COLOURS["websocket"],
            label="WebSocket frame, server → client (2-10 B)")
    for n, text in ((126, "126 B: 16-bit length"), (65536, "64 KiB: 64-bit length")):
        ax.axvline(n, color="grey", lw=0.5, ls=":")
        ax.text(n, 101, text, fontsize=7, color="grey", ha="center", va="bottom")
    if payload:
        ax.axvline(payload, color="black", lw=0.8, ls="--")
        ax.text(payload, 35, f"one chat message\n({payload:.0f} B) ", fontsize=8, ha="right")
    ax.set_xscale("log", base=2)
    ax.set_xticks([1, 16, 256, 4096, 65536, 2 ** 20], ["1 B", "16 B", "256 B", "4 KiB", "64 KiB", "1 MiB"])
    ax.set_ylim(0, 108)
    ax.set_xlabel("payload size (log scale)")
    ax.set_ylabel("overhead, % of bytes on the wire")
    ax.set_title("Header overhead per message", pad=14)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, frameon=False)
    return ax
