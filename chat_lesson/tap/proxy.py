"""The tap: a loopback TCP proxy that shows every byte between a browser and the server.

Wireshark needs privileges and a lot of clicking; a proxy you start from a cell
needs neither.  The browser talks to the tap, the tap talks to the server, and
every byte passes through our hands on the way::

    browser ──TCP──▶ Tap(127.0.0.1:8001) ──TCP──▶ ChatServer(127.0.0.1:8000)
            ◀──────                      ◀──────
              "s2c": server to client       "c2s": client to server

    tap = Tap(server).start()          # shows a link: open it in the browser
    tap.table()                        # every frame, decoded: FIN, RSV1, opcode, MASK, key ...
    tap.counters()                     # bytes per direction: HTTP heads, frame headers, payload
    tap.freeze(); tap.thaw()           # pull the network cable, then plug it back in

It never rewrites anything: the bytes that leave are the bytes that came in,
so the browser's handshake (Host, Origin, Sec-WebSocket-Key) reaches the
server untouched and the server's answer reaches the browser untouched.

**Forwarding first, decoding second.**  Each side of a connection has a
reader task that reads a chunk from one socket and hands it to a sender task,
which writes it to the other socket.  Only then is the chunk given to the
decoder (with ``loop.call_soon``), so the bytes are on their way before any
decoding starts, and a decoding error can never stop them: it is recorded for
that connection and direction, decoding stops there, and the rest of that
direction's bytes are counted as "other" and still forwarded unchanged.

**Decoding** uses the course's own pure code: ``handshake.split_head`` and
``parse_head`` for the HTTP heads (several requests and responses may share
one keep-alive connection; bodies are skipped by their Content-Length), and
after a ``101 Switching Protocols``, ``frames.decode_frame`` for each frame,
``frames.MessageAssembler`` to glue fragments into messages, and a
``deflate.Inflater`` per direction, set up from the 101's
Sec-WebSocket-Extensions, for permessage-deflate.  TCP does not keep message
boundaries: one read may hold three frames, or a third of one.  So each
direction keeps what it read but could not decode yet, and tries again when
more arrives.

**Faults**, switchable from any thread while traffic flows:

- ``delay(ms)``: each chunk leaves ``ms`` after it arrived (per direction).
- ``freeze()``: nothing is forwarded and nothing is closed, like a laptop
  lid shutting.  The tap keeps *reading* and records what arrives (you see
  the server's pings pile up), and *holds* it, up to about 4 MiB per
  direction, then stops reading so TCP's flow control pushes back.
  ``thaw()`` releases everything held, in order.  (A real lid would lose the
  bytes; holding them lets a lesson show what the frozen side missed.)
- ``limit(bytes_per_second)``: a slow link.  A chunk of n bytes leaves n/rate
  seconds after the link was last free, as on a real wire.
- ``cut()``: both TCP connections are reset at once (SO_LINGER 0, so the
  peers get an RST, not a polite FIN).

Every fault change is an event on ``timeline()``.

**Memory is bounded.**  At most ``max_records`` frames (and as many reads,
HTTP heads and events) are kept, and at most ``max_stored`` bytes of raw data
per kind, oldest first out; a stored frame keeps only the first
``max_payload`` bytes of its payload (``truncated`` says so).  A frame larger
than ``max_decode`` is not decoded at all (an error is recorded; its bytes
count as "other").  The byte counters are never trimmed.

The tap is three modules: ``tap_decode`` (the records and the pure decoder of
one direction's bytes), ``tap_views`` (the notebook tables) and this one (the
proxy itself: connections, links, faults, the Tap and the command line).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import logging
import math
import socket
import struct
import sys
import threading
import time
from typing import Any, Callable, Iterator

from ..protocol import deflate
from ..protocol.frames import Opcode
from ..protocol.handshake import Head
from ..notebook import CellService, show_link
# What the tap records and how it decodes live in tap_decode, the views in tap_views;
# their public names are re-exported here, so ``from chat_lesson.tap import FrameRecord`` keeps working.
from .recorder import (ARROWS, DIRECTIONS, MAX_HEADER, PREVIEW, Counts, Event, FrameRecord,  # noqa: F401
                         HttpRecord, ReadRecord, _Decoder, _Store)
from .views import COLUMNS, FrameTable, LiveView  # noqa: F401

log = logging.getLogger(__name__)

SIDES = {"c2s": "client", "s2c": "server"}   # who sends the bytes of each direction
READ_SIZE = 64 * 1024        # bytes asked for per read
HELD_CHUNKS = 64             # chunks waiting in a direction (x READ_SIZE: ~4 MiB) before reading pauses

_EOF, _RESET = "EOF", "RESET"    # markers queued after the data: the sender ends the stream in order


# -- One connection ------------------------------------------------------------------------


class Connection:
    """One TCP connection through the tap: a client on one side, the target on the other.

    ``counts`` holds the bytes of each direction, ``errors`` why decoding
    stopped (None while all is well).  Read it with ``tap.connections()``.
    """

    def __init__(self, tap: "Tap", conn_id: int, client: str, opened: float) -> None:
        self.tap, self.id, self.client, self.opened = tap, conn_id, client, opened
        self.closed: float | None = None
        self.counts = {d: Counts() for d in DIRECTIONS}
        self.errors: dict[str, str | None] = {d: None for d in DIRECTIONS}
        self.requests: collections.deque[Head] = collections.deque()   # requests waiting for their response
        self.upgraded = False
        self.extensions: str | None = None
        self.subprotocol: str | None = None
        self.decoders = {d: _Decoder(tap, self, d) for d in DIRECTIONS}
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: list[asyncio.Task] = []

    def upgrade(self, response: Head, t: float) -> None:
        """A 101 arrived: both directions switch to frames, each with its own inflater.

        permessage-deflate keeps one DEFLATE context per direction; the
        parameters come from the Sec-WebSocket-Extensions of the 101.
        """
        self.upgraded = True
        self.extensions = response.headers.get("Sec-WebSocket-Extensions")
        self.subprotocol = response.headers.get("Sec-WebSocket-Protocol")
        negotiated = deflate.params_from_extension_header(self.extensions)
        for direction, params in zip(DIRECTIONS, negotiated or (None, None)):
            inflater = deflate.Inflater(params.no_context_takeover, params.window_bits) if params else None
            self.decoders[direction].start_frames(inflater)
        if self.decoders["c2s"].mode == "ws":
            self.tap._loop_call_soon(self.decoders["c2s"].advance)
        detail = "switched to WebSocket"
        if negotiated:
            c, s = negotiated
            detail += (f"; permessage-deflate c2s {c.window_bits}-bit window{', no context takeover' if c.no_context_takeover else ''},"
                       f" s2c {s.window_bits}-bit window{', no context takeover' if s.no_context_takeover else ''}")
        if self.subprotocol:
            detail += f"; subprotocol {self.subprotocol}"
        self.tap._event("upgrade", self.id, "s2c", detail, t=t)

    def abort(self, rst: bool = True) -> None:
        """End both sides now: with an RST (rst=True), else with a plain close."""
        for writer in self.writers:
            _close(writer, rst)
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()

    def finish(self, t: float) -> None:
        self.closed = t
        for decoder in self.decoders.values():
            decoder.finish()

    def summary(self) -> dict[str, Any]:
        with self.tap._lock:
            counts = {d: self.counts[d].as_dict() for d in DIRECTIONS}
        return {"conn": self.id, "client": self.client, "opened": self.opened, "closed": self.closed,
                "upgraded": self.upgraded, "extensions": self.extensions, "subprotocol": self.subprotocol,
                "errors": dict(self.errors), "counters": counts}


def _close(writer: asyncio.StreamWriter, rst: bool) -> None:
    """Close a socket; with rst=True, abruptly: SO_LINGER 0 makes close() send an RST."""
    if rst:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        writer.transport.abort()
    else:
        writer.close()


@dataclasses.dataclass(frozen=True)
class LinkFaults:
    """The faults on one direction: added latency (s), frozen or not, bandwidth (bytes/s, None: unlimited)."""

    delay: float = 0.0
    frozen: bool = False
    rate: float | None = None

    @property
    def clear(self) -> bool:
        return not self.frozen and not self.delay and not self.rate


class _Link:
    """One direction of one connection: read from one socket, write to the other.

    Two tasks and a queue between them.  The reader records each chunk,
    queues it, and only then schedules its decoding; the sender takes
    chunks off the queue and writes them once the faults let them go.
    """

    def __init__(self, tap: "Tap", conn: Connection, direction: str,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.tap, self.conn, self.direction = tap, conn, direction
        self.reader, self.writer = reader, writer
        self.queue: asyncio.Queue = asyncio.Queue(HELD_CHUNKS)
        self.free_at = 0.0          # when a rate-limited link finishes sending what it sent last

    async def read_loop(self) -> None:
        tap, d = self.tap, self.direction
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await self.reader.read(READ_SIZE)
            except OSError as error:
                tap._event("reset", self.conn.id, d, f"the {SIDES[d]} reset the connection ({type(error).__name__})")
                await self.queue.put((tap._now()[0], _RESET))
                return
            t, wall = tap._now()
            if not data:
                tap._event("eof", self.conn.id, d, f"the {SIDES[d]} closed its side (FIN)", t=t)
                await self.queue.put((t, _EOF))
                return
            with tap._lock:
                self.conn.counts[d].total += len(data)
            tap._reads.add(ReadRecord(tap._next("read"), t, wall, self.conn.id, d, data))
            await self.queue.put((t, data))                      # forwarding first ...
            loop.call_soon(self.conn.decoders[d].feed, data, t, wall)   # ... decoding after

    async def send_loop(self) -> None:
        while True:
            arrived, item = await self.queue.get()
            if item is _EOF or item is _RESET:
                await self._gate(arrived, 0)
                if item is _RESET:
                    self.conn.abort(rst=True)
                    return
                try:
                    if self.writer.can_write_eof():
                        self.writer.write_eof()
                except OSError:
                    pass
                return
            for piece in self._pieces(item):
                await self._gate(arrived, len(piece))
                try:
                    self.writer.write(piece)
                    with self.tap._lock:
                        self.conn.counts[self.direction].forwarded += len(piece)
                    await self.writer.drain()
                except OSError as error:
                    gone = SIDES["s2c" if self.direction == "c2s" else "c2s"]
                    self.tap._event("reset", self.conn.id, self.direction,
                                    f"the {gone} is gone; cannot forward ({type(error).__name__})")
                    self.conn.abort(rst=True)
                    return

    def _pieces(self, data: bytes) -> Iterator[bytes]:
        """Whole chunks, or under a bandwidth limit, slices of 1/20 s each."""
        rate = self.tap._faults[self.direction].rate
        if not rate:
            yield data
            return
        step = max(1, int(rate / 20))
        for i in range(0, len(data), step):
            yield data[i: i + step]

    async def _gate(self, arrived: float, size: int) -> None:
        """Wait until the faults let ``size`` bytes that arrived at ``arrived`` leave.

        Frozen: wait for a thaw.  Delay: leave at arrived + delay.  Rate:
        a link sends one slice at a time, so this slice is done size/rate
        after the link was last free.  Any change of faults wakes us to
        look again.
        """
        tap, done_at = self.tap, None
        while True:
            changed = tap._changed
            faults = tap._faults[self.direction]
            if faults.clear and done_at is None:
                return
            now = time.monotonic() - tap._t0
            if faults.frozen:
                await _wait(changed, None)
                continue
            due = arrived + faults.delay
            if faults.rate and done_at is None and now >= due:
                done_at = max(now, self.free_at) + size / faults.rate
                self.free_at = done_at
            due = max(due, done_at or 0.0)
            if now >= due:
                return
            await _wait(changed, due - now)


async def _wait(event: asyncio.Event, timeout: float | None) -> None:
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        pass


# -- The tap -----------------------------------------------------------------------------------


def _direction(value: str | None) -> str | None:
    if value is None:
        return None
    found = {"c2s": "c2s", "s2c": "s2c", "→": "c2s", "←": "s2c"}.get(value)
    if found is None:
        raise ValueError(f"direction must be 'c2s' (→, client to server) or 's2c' (←), not {value!r}")
    return found


def _directions(value: str) -> tuple[str, ...]:
    return DIRECTIONS if value == "both" else (_direction(value),)


def _opcodes(value: Any) -> set[Opcode] | None:
    """Accept an Opcode, its number, its name ("text", "ping", "cont") or a collection of them."""
    if value is None:
        return None
    if isinstance(value, (str, int)):
        value = [value]
    out = set()
    for v in value:
        if isinstance(v, str):
            name = v.strip().upper()
            name = {"CONTINUATION": "CONT", "BIN": "BINARY"}.get(name, name)
            try:
                out.add(Opcode[name])
            except KeyError:
                raise ValueError(f"unknown opcode {v!r}: use one of {[o.name.lower() for o in Opcode]}") from None
        else:
            out.add(Opcode(v))
    return out


class Tap(CellService):
    """A TCP proxy that records, decodes and can disturb everything between a client and a server.

    >>> tap = Tap(server).start()         # doctest: +SKIP
    >>> tap.url                           # open this one in the browser  # doctest: +SKIP
    >>> tap.table(direction="c2s")        # doctest: +SKIP

    ``target`` is (host, port), "host:port" or a ChatServer.  ``start()``
    runs the tap on its own loop in a daemon thread; inside ``async`` code,
    ``await tap.astart()`` (or ``async with``) runs it on the current loop.
    See the module's docstring for what is recorded and how faults behave.
    """


    def __init__(self, target: Any = ("127.0.0.1", 8000), port: int = 0, host: str = "127.0.0.1", *,
                 quiet: bool = False, max_records: int = 100_000, max_payload: int | None = 64 * 1024,
                 max_stored: int = 64 * 1024 * 1024, max_decode: int = 16 * 1024 * 1024) -> None:
        self.target, self.host, self.port, self.quiet = target, host, port, quiet
        self.max_records, self.max_payload, self.max_decode = max_records, max_payload, max_decode
        self._lock = threading.Lock()             # guards the byte counters
        self._frames = _Store(max_records, max_stored, lambda f: len(f.raw) + len(f.payload))
        self._reads = _Store(max_records, max_stored, lambda r: len(r.data))
        self._http_heads = _Store(max_records, max_stored, lambda h: len(h.raw))
        self._events = _Store(max_records, math.inf, lambda e: 0)
        self._counters = {kind: itertools.count(1) for kind in ("frame", "read", "http", "event", "conn")}
        self._last = {kind: 0 for kind in self._counters}
        self._conns: dict[int, Connection] = {}
        self._faults = {d: LinkFaults() for d in DIRECTIONS}
        self._changed = asyncio.Event()
        self._listeners: list[Callable[[Any], None]] = []
        self._t0, self._started = time.monotonic(), False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task] = set()

    # -- the public face -----------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def target_address(self) -> tuple[str, int]:
        """(host, port) the tap connects to, read afresh (a ChatServer may have been restarted)."""
        t = self.target
        if isinstance(t, str):
            host, _, port = t.rpartition(":")
            return host.strip("[]") or "127.0.0.1", int(port)
        if isinstance(t, (tuple, list)):
            return str(t[0]), int(t[1])
        host = getattr(t, "host", "127.0.0.1")
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
        return host, int(t.port)

    async def astart(self) -> "Tap":
        """Start listening on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        if not self._started:
            self._t0, self._started = time.monotonic(), True     # t = 0: the first start
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._claim_port()
        host, port = self.target_address
        self._event("start", detail=f"listening on {self.host}:{self.port}, forwarding to {host}:{port}")
        if not self.quiet:
            show_link(self.url, f"Tap to {host}:{port} at")
        return self

    async def astop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for conn in list(self._conns.values()):
            conn.abort(rst=False)
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)
        await self._server.wait_closed()
        self._server = None
        self._release_port()
        self._event("stop", detail="tap stopped")

    async def serve_forever(self) -> None:
        """Run until cancelled (``python -m chat_lesson tap`` uses this)."""
        async with self:
            await asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        host, port = self.target_address
        return f"<Tap {self.url} -> {host}:{port} {'running' if self.running else 'stopped'}, {self._status()}>"

    # -- reading the records ---------------------------------------------------------------

    def frames(self, conn: int | None = None, direction: str | None = None, opcode: Any = None) -> list[FrameRecord]:
        """The recorded frames, oldest first, optionally of one connection, direction ("c2s", "s2c") or opcode(s)."""
        d, ops = _direction(direction), _opcodes(opcode)
        return [f for f in self._frames.snapshot()
                if (conn is None or f.conn == conn) and (d is None or f.direction == d)
                and (ops is None or f.opcode in ops)]

    def table(self, conn: int | None = None, direction: str | None = None, opcode: Any = None,
              last: int | None = 100) -> FrameTable:
        """The frames as a table (HTML in Jupyter, text elsewhere): the ``last`` ones, or all with None."""
        rows = self.frames(conn, direction, opcode)
        shown = rows if last is None else rows[-last:]
        caption = f"{len(shown)} of {len(rows)} frames" if len(shown) < len(rows) else ""
        if self._frames.dropped:
            caption += f" ({self._frames.dropped} older frames no longer kept)"
        return FrameTable(shown, caption.strip())

    def http(self, conn: int | None = None, direction: str | None = None) -> list[HttpRecord]:
        """The HTTP heads seen: requests (c2s) and responses (s2c), parsed by handshake.parse_head."""
        d = _direction(direction)
        return [h for h in self._http_heads.snapshot()
                if (conn is None or h.conn == conn) and (d is None or h.direction == d)]

    def reads(self, conn: int | None = None, direction: str | None = None) -> list[ReadRecord]:
        """Every read, with its time and exact bytes: the raw material everything else is decoded from."""
        d = _direction(direction)
        return [r for r in self._reads.snapshot()
                if (conn is None or r.conn == conn) and (d is None or r.direction == d)]

    def raw(self, conn: int, direction: str) -> bytes:
        """The byte stream of one direction of one connection, as read (complete unless reads were dropped)."""
        return b"".join(r.data for r in self.reads(conn, direction))

    def events(self, kind: str | None = None, conn: int | None = None) -> list[Event]:
        """Connection events (open, upgrade, eof, reset, close), errors and fault changes."""
        return [e for e in self._events.snapshot()
                if (kind is None or e.kind == kind) and (conn is None or e.conn == conn)]

    def connections(self) -> list[dict[str, Any]]:
        """A summary of every connection so far: client, times, handshake, errors, byte counters."""
        return [c.summary() for c in list(self._conns.values())]

    def counters(self, conn: int | None = None) -> dict[str, dict[str, int]]:
        """Bytes per direction: http + header + mask + payload + other + pending == total.

        Summed over every connection, or for one. ``forwarded`` is what
        left the tap (less than ``total`` while a fault holds bytes).
        """
        out = {d: Counts() for d in DIRECTIONS}
        with self._lock:
            for c in list(self._conns.values()):
                if conn is not None and c.id != conn:
                    continue
                for d in DIRECTIONS:
                    for f in dataclasses.fields(Counts):
                        setattr(out[d], f.name, getattr(out[d], f.name) + getattr(c.counts[d], f.name))
        return {d: out[d].as_dict() for d in DIRECTIONS}

    def timeline(self, conn: int | None = None) -> dict[str, Any]:
        """Everything with a time, ready for matplotlib.

        Frame columns (equal-length lists): t (s), conn, dir, opcode (name),
        fin, rsv1, masked, length, header_bytes, wire_bytes, close_code;
        plus ``http`` (a dict per HTTP head) and ``events`` (a dict per
        event: open, upgrade, eof, reset, close, error, fault changes).
        """
        frames = self.frames(conn)
        columns: dict[str, Any] = {
            "t": [f.t for f in frames], "conn": [f.conn for f in frames], "dir": [f.direction for f in frames],
            "opcode": [f.opcode.name for f in frames], "fin": [f.fin for f in frames],
            "rsv1": [f.rsv1 for f in frames], "masked": [f.masked for f in frames],
            "length": [f.length for f in frames], "header_bytes": [f.header_bytes for f in frames],
            "wire_bytes": [f.wire_bytes for f in frames], "close_code": [f.close_code for f in frames],
        }
        columns["http"] = [h.as_dict() for h in self.http(conn)]
        columns["events"] = [e.as_dict() for e in self.events()
                             if conn is None or e.conn in (conn, None)]
        return columns

    def live(self, seconds: float | None = None, *, conn: int | None = None, direction: str | None = None,
             opcode: Any = None, rows: int = 25, interval: float = 0.5) -> LiveView:
        """Show frames as they come: a self-updating table in Jupyter, printed lines elsewhere.

        Returns at once; the view updates from the tap's thread every
        ``interval`` s (at least 0.2) for ``seconds`` (None: until
        ``.stop()`` or the tap stops).
        """
        if not self.running:
            raise RuntimeError("start the tap first: tap.start()")
        return LiveView(self, seconds, {"conn": conn, "direction": direction, "opcode": opcode}, rows, interval)

    def add_listener(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(record)`` for each FrameRecord, HttpRecord and Event as it is recorded.

        It runs on the tap's loop (or on the thread that changed a fault)
        and must not block.
        """
        self._listeners.append(callback)

    @property
    def dropped(self) -> dict[str, int]:
        """How many old records were let go to stay within max_records / max_stored, per kind."""
        return {"frames": self._frames.dropped, "reads": self._reads.dropped,
                "http": self._http_heads.dropped, "events": self._events.dropped}

    def clear(self) -> None:
        """Forget the recorded frames, reads, heads and events (the byte counters keep counting)."""
        for store in (self._frames, self._reads, self._http_heads, self._events):
            store.clear()

    # -- faults ------------------------------------------------------------------------------

    @property
    def faults(self) -> dict[str, dict[str, Any]]:
        """The faults now in force, per direction."""
        return {d: {"delay_ms": f.delay * 1000, "frozen": f.frozen, "rate": f.rate} for d, f in self._faults.items()}

    def delay(self, ms: float, direction: str = "both") -> "Tap":
        """Add ``ms`` milliseconds of latency to each chunk, one way or both ways."""
        return self._set(direction, f"delay {ms:g} ms", delay=max(0.0, ms) / 1000)

    def freeze(self, direction: str = "both") -> "Tap":
        """Stop forwarding, without closing anything: a black hole (the lid shuts).

        What arrives meanwhile is recorded and held; ``thaw()`` releases it.
        """
        return self._set(direction, "freeze", frozen=True)

    def thaw(self, direction: str = "both") -> "Tap":
        """Forward again, starting with everything held during the freeze."""
        return self._set(direction, "thaw", frozen=False)

    def limit(self, bytes_per_second: float | None, direction: str = "both") -> "Tap":
        """Cap the bandwidth of each connection (per direction); None or 0 lifts the cap."""
        rate = bytes_per_second or None
        return self._set(direction, f"limit {rate:g} B/s" if rate else "no bandwidth limit", rate=rate)

    def heal(self) -> "Tap":
        """Lift every fault: no delay, no freeze, no limit."""
        self._faults = {d: LinkFaults() for d in DIRECTIONS}
        self._event("fault", detail="heal: no faults")
        self._wake()
        return self

    def cut(self, conn: int | None = None) -> int:
        """Reset every open connection (or just ``conn``) on both sides at once; returns how many.

        SO_LINGER 0 makes the kernel answer close() with an RST, so both
        peers learn at once that the connection is gone (a FIN would be a
        polite close, which a cut cable never sends).
        """
        if self._loop is None or not self.running:
            return 0
        return self._on_loop(self._cut, conn)

    def _cut(self, conn: int | None) -> int:
        victims = [c for c in self._conns.values() if c.closed is None and (conn is None or c.id == conn)]
        self._event("fault", conn, detail=f"cut {len(victims)} connection(s): RST both sides")
        for c in victims:
            c.abort(rst=True)
        return len(victims)

    def _set(self, direction: str, label: str, **change: Any) -> "Tap":
        """Change the faults of one or both directions, from any thread.

        The new settings replace the old ones in one assignment (which
        other threads see whole), the change goes on the timeline, and the
        senders waiting on the old settings are woken to look again.
        """
        chosen = _directions(direction)
        faults = dict(self._faults)
        for d in chosen:
            faults[d] = dataclasses.replace(faults[d], **change)
        self._faults = faults
        self._event("fault", direction=None if len(chosen) == 2 else chosen[0],
                    detail=label + ("" if len(chosen) == 2 else f" ({chosen[0]})"))
        self._wake()
        return self

    def _wake(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if self._in_loop():
            self._notify()
        else:
            loop.call_soon_threadsafe(self._notify)

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # -- the loop side ------------------------------------------------------------------------

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        """One client connected: connect to the target, then pump bytes both ways until both sides end."""
        task = asyncio.current_task()
        self._handlers.add(task)
        peer = client_writer.get_extra_info("peername")
        t, _ = self._now()
        conn = Connection(self, next(self._counters["conn"]), f"{peer[0]}:{peer[1]}" if peer else "?", t)
        self._conns[conn.id] = conn
        conn.writers.append(client_writer)
        host, port = self.target_address
        self._event("open", conn.id, detail=f"from {conn.client}, to {host}:{port}")
        try:
            try:
                server_reader, server_writer = await asyncio.open_connection(host, port)
            except OSError as error:
                self._event("error", conn.id, detail=f"cannot reach {host}:{port}: {error}")
                _close(client_writer, rst=True)
                return
            conn.writers.append(server_writer)
            links = [_Link(self, conn, "c2s", client_reader, server_writer),
                     _Link(self, conn, "s2c", server_reader, client_writer)]
            conn.tasks = [asyncio.create_task(job()) for link in links for job in (link.read_loop, link.send_loop)]
            senders = conn.tasks[1::2]
            await asyncio.wait(senders)            # both directions forwarded to the end (or aborted)
            conn.abort(rst=False)                   # readers still waiting end here
            await asyncio.wait(conn.tasks)
        finally:
            for writer in conn.writers:
                if not writer.is_closing():
                    writer.close()
            t, _ = self._now()
            conn.finish(t)
            c2s, s2c = conn.counts["c2s"].total, conn.counts["s2c"].total
            self._event("close", conn.id, detail=f"closed after {t - conn.opened:.3f} s; "
                                                 f"{c2s} B client→server, {s2c} B server→client", t=t)
            self._handlers.discard(task)

    def _now(self) -> tuple[float, float]:
        return time.monotonic() - self._t0, time.time()

    def _next(self, kind: str) -> int:
        n = next(self._counters[kind])
        self._last[kind] = n
        return n

    def _counter_value(self, kind: str) -> int:
        return self._last[kind]

    def _emit(self, record: Any) -> None:
        for callback in list(self._listeners):
            try:
                callback(record)
            except Exception:
                log.exception("tap listener failed")

    def _frame(self, record: FrameRecord) -> None:
        self._frames.add(record)
        self._emit(record)

    def _http(self, record: HttpRecord) -> None:
        self._http_heads.add(record)
        self._emit(record)

    def _event(self, kind: str, conn: int | None = None, direction: str | None = None, detail: str = "",
               t: float | None = None) -> None:
        now, wall = self._now()
        record = Event(self._next("event"), now if t is None else t, wall, kind, conn, direction, detail)
        self._events.add(record)
        self._emit(record)

    def _status(self) -> str:
        frozen = [d for d, f in self._faults.items() if f.frozen]
        faults = [f"{d} frozen" for d in frozen]
        faults += [f"{d} +{f.delay * 1000:g} ms" for d, f in self._faults.items() if f.delay]
        faults += [f"{d} ≤{f.rate:g} B/s" for d, f in self._faults.items() if f.rate]
        open_now = sum(1 for c in list(self._conns.values()) if c.closed is None)
        return f"{self._last['frame']} frames, {open_now} open connection(s)" + (
            f", faults: {', '.join(faults)}" if faults else "")

    def _in_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _loop_call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the tap's loop after what is running now (decoders use it)."""
        if self._loop is not None and self._in_loop():
            self._loop.call_soon(callback)
        else:
            callback()

    def _on_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the tap's loop and return its result, from any thread."""
        if self._in_loop():
            return fn(*args)

        async def call() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(10)

    def _submit(self, coro: Any) -> None:
        if self._in_loop():
            self._loop.create_task(coro)
        else:
            asyncio.run_coroutine_threadsafe(coro, self._loop)


# -- The command line ----------------------------------------------------------------------------


async def run_cli(target: str, port: int = 8001, host: str = "127.0.0.1", *, delay: float = 0,
                  limit: float | None = None, out: Any = None) -> None:
    """``python -m chat_lesson tap``: print every HTTP head, frame and event, one line each, until cancelled."""
    out = out or sys.stdout
    tap = Tap(target, port, host, quiet=True)
    tap.add_listener(lambda record: print(record.line(), file=out, flush=True))
    async with tap:
        if delay:
            tap.delay(delay)
        if limit:
            tap.limit(limit)
        to_host, to_port = tap.target_address
        print(f"Tap listening on {tap.url} -> {to_host}:{to_port} (Ctrl-C stops it)", file=out, flush=True)
        await asyncio.get_running_loop().create_future()
