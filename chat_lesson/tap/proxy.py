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

The work is split by job:

- ``links`` moves the bytes: per connection and direction, a reader task
  hands each chunk to a sender task, which writes it on once the faults
  (delay, freeze, bandwidth limit) let it; ``cut()`` resets both sides.
- ``recorder`` decodes them, pure: a chunk in, records out (HTTP heads,
  frames with their masks and inflated messages, errors).  A chunk is
  forwarded *before* it is decoded, so a decoding error cannot stop it: it
  is recorded, decoding stops for that direction, and the rest of its bytes
  count as "other", still forwarded unchanged.
- this module, the Tap, keeps what the recorder returns: it numbers the
  records, stores them under its lock, tells the listeners (live views, the
  command line), and answers questions about them from any thread.

Every fault change is an event on ``timeline()``.

**Memory is bounded.**  At most ``max_records`` frames (and as many reads,
HTTP heads and events) are kept, and at most ``max_stored`` bytes of raw data
per kind, oldest first out; a stored frame keeps only the first
``max_payload`` bytes of its payload (``truncated`` says so).  A frame larger
than ``max_decode`` is not decoded at all (an error is recorded; its bytes
count as "other").  Of the connections that have ended, only the last
``max_closed`` are kept, records and all; the byte counters summed over the
tap (``counters()``) still include the forgotten ones.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import logging
import math
import threading
import time
from typing import Any
from collections.abc import Callable

from ..notebook import CellService, show_link
from .links import Connection, Faults, Link, close_writer
from .recorder import Recorder
from .records import (DIRECTIONS, Counts, Event, FrameRecord, HttpRecord, ReadRecord, Record, Store, as_direction,
                      as_directions, as_opcodes)
from .views import FrameTable, LiveView

__all__ = ["Tap"]

log = logging.getLogger(__name__)

_KINDS = {ReadRecord: "read", HttpRecord: "http", FrameRecord: "frame", Event: "event"}


class Tap(CellService):
    """A TCP proxy that records, decodes and can disturb everything between a client and a server.

    >>> tap = Tap(server).start()         # doctest: +SKIP
    >>> tap.url                           # open this one in the browser  # doctest: +SKIP
    >>> tap.table(direction="c2s")        # doctest: +SKIP

    ``target`` is (host, port), "host:port" or a ChatServer.  ``start()``
    runs the tap on its own loop in a daemon thread; inside ``async`` code,
    ``await tap.astart()`` (or ``async with``) runs it on the current loop.
    See the module's docstring for what is recorded and how much is kept,
    and ``links`` for how faults behave.
    """

    def __init__(self, target: Any = ("127.0.0.1", 8000), port: int = 0, host: str = "127.0.0.1", *,
                 quiet: bool = False, max_records: int = 100_000, max_payload: int | None = 64 * 1024,
                 max_stored: int = 64 * 1024 * 1024, max_decode: int = 16 * 1024 * 1024,
                 max_closed: int = 100) -> None:
        self.target, self.host, self.port, self.quiet = target, host, port, quiet
        self.max_records, self.max_payload, self.max_decode = max_records, max_payload, max_decode
        self.max_closed = max_closed
        self._lock = threading.Lock()             # guards the stores, the numbering and the byte counters
        self._stores = {
            "frame": Store(max_records, max_stored, lambda f: len(f.raw) + len(f.payload)),
            "read": Store(max_records, max_stored, lambda r: len(r.data)),
            "http": Store(max_records, max_stored, lambda h: len(h.raw)),
            "event": Store(max_records, math.inf, lambda e: 0),
        }
        self._counters = {kind: itertools.count(1) for kind in ("frame", "read", "http", "event", "conn")}
        self._last = {kind: 0 for kind in self._counters}
        self._conns: dict[int, Connection] = {}
        self._closed: collections.deque[int] = collections.deque()   # ids of ended connections still kept
        self._forgotten = {d: Counts() for d in DIRECTIONS}           # bytes of the connections let go
        self._faults = Faults()
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

    async def astart(self) -> Tap:
        """Start listening on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._faults.bind(self._loop)
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
        """Run until cancelled."""
        async with self:
            await asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        host, port = self.target_address
        return f"<Tap {self.url} -> {host}:{port} {'running' if self.running else 'stopped'}, {self.status()}>"

    # -- reading the records ---------------------------------------------------------------

    def _snapshot(self, kind: str) -> list:
        with self._lock:
            return list(self._stores[kind].items)

    def frames(self, conn: int | None = None, direction: str | None = None, opcode: Any = None) -> list[FrameRecord]:
        """The recorded frames, oldest first, optionally of one connection, direction ("c2s", "s2c") or opcode(s)."""
        d, ops = as_direction(direction), as_opcodes(opcode)
        return [f for f in self._snapshot("frame")
                if (conn is None or f.conn == conn) and (d is None or f.direction == d)
                and (ops is None or f.opcode in ops)]

    def table(self, conn: int | None = None, direction: str | None = None, opcode: Any = None,
              last: int | None = 100) -> FrameTable:
        """The frames as a table (HTML in Jupyter, text elsewhere): the ``last`` ones, or all with None."""
        rows = self.frames(conn, direction, opcode)
        shown = rows if last is None else rows[-last:]
        caption = f"{len(shown)} of {len(rows)} frames" if len(shown) < len(rows) else ""
        if self._stores["frame"].dropped:
            caption += f" ({self._stores['frame'].dropped} older frames no longer kept)"
        return FrameTable(shown, caption.strip())

    def http(self, conn: int | None = None, direction: str | None = None) -> list[HttpRecord]:
        """The HTTP heads seen: requests (c2s) and responses (s2c), parsed by handshake.parse_head."""
        d = as_direction(direction)
        return [h for h in self._snapshot("http")
                if (conn is None or h.conn == conn) and (d is None or h.direction == d)]

    def reads(self, conn: int | None = None, direction: str | None = None) -> list[ReadRecord]:
        """Every read, with its time and exact bytes: the raw material everything else is decoded from."""
        d = as_direction(direction)
        return [r for r in self._snapshot("read")
                if (conn is None or r.conn == conn) and (d is None or r.direction == d)]

    def raw(self, conn: int, direction: str) -> bytes:
        """The byte stream of one direction of one connection, as read (complete unless reads were dropped)."""
        return b"".join(r.data for r in self.reads(conn, direction))

    def events(self, kind: str | None = None, conn: int | None = None) -> list[Event]:
        """Connection events (open, upgrade, eof, reset, close), errors and fault changes."""
        return [e for e in self._snapshot("event")
                if (kind is None or e.kind == kind) and (conn is None or e.conn == conn)]

    def connections(self) -> list[dict[str, Any]]:
        """A summary of every connection kept: client, times, handshake, errors, byte counters."""
        with self._lock:
            return [c.summary() for c in self._conns.values()]

    def counters(self, conn: int | None = None) -> dict[str, dict[str, int]]:
        """Bytes per direction: http + header + mask + payload + other + pending == total.

        Summed over every connection since the start (forgotten ones
        included), or for one kept connection.  ``forwarded`` is what left
        the tap (less than ``total`` while a fault holds bytes).
        """
        out = {d: Counts() for d in DIRECTIONS}
        with self._lock:
            for d in DIRECTIONS:
                if conn is None:
                    out[d].add(self._forgotten[d])
                for c in self._conns.values():
                    if conn is None or c.id == conn:
                        out[d].add(c.recorder.counts[d])
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
        view = LiveView(self, seconds, {"conn": conn, "direction": direction, "opcode": opcode}, rows, interval)
        self._submit(view.run())
        return view

    def add_listener(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(record)`` for each FrameRecord, HttpRecord and Event as it is recorded.

        It runs on the tap's loop (or on the thread that changed a fault)
        and must not block.
        """
        self._listeners.append(callback)

    def status(self) -> str:
        """One line: frames so far, open connections, faults in force."""
        now = self._faults.now
        faults = [f"{d} frozen" for d, f in now.items() if f.frozen]
        faults += [f"{d} +{f.delay * 1000:g} ms" for d, f in now.items() if f.delay]
        faults += [f"{d} ≤{f.rate:g} B/s" for d, f in now.items() if f.rate]
        with self._lock:
            open_now = sum(1 for c in self._conns.values() if c.closed is None)
        return f"{self._last['frame']} frames, {open_now} open connection(s)" + (
            f", faults: {', '.join(faults)}" if faults else "")

    def last_number(self, kind: str) -> int:
        """The number of the last record of ``kind`` ("frame", "read", "http", "event"), 0 before the first."""
        return self._last[kind]

    @property
    def dropped(self) -> dict[str, int]:
        """How many old records were let go to stay within max_records / max_stored, per kind."""
        names = {"frame": "frames", "read": "reads", "http": "http", "event": "events"}
        return {names[kind]: store.dropped for kind, store in self._stores.items()}

    def clear(self) -> None:
        """Forget the recorded frames, reads, heads and events (the byte counters keep counting)."""
        with self._lock:
            for store in self._stores.values():
                store.clear()

    # -- faults ------------------------------------------------------------------------------

    @property
    def faults(self) -> dict[str, dict[str, Any]]:
        """The faults now in force, per direction."""
        return {d: {"delay_ms": f.delay * 1000, "frozen": f.frozen, "rate": f.rate}
                for d, f in self._faults.now.items()}

    def delay(self, ms: float, direction: str = "both") -> Tap:
        """Add ``ms`` milliseconds of latency to each chunk, one way or both ways."""
        return self._set(direction, f"delay {ms:g} ms", delay=max(0.0, ms) / 1000)

    def freeze(self, direction: str = "both") -> Tap:
        """Stop forwarding, without closing anything: a black hole (the lid shuts).

        What arrives meanwhile is recorded and held (about 4 MiB per
        direction, then reading pauses); ``thaw()`` releases it, in order.
        """
        return self._set(direction, "freeze", frozen=True)

    def thaw(self, direction: str = "both") -> Tap:
        """Forward again, starting with everything held during the freeze."""
        return self._set(direction, "thaw", frozen=False)

    def limit(self, bytes_per_second: float | None, direction: str = "both") -> Tap:
        """Cap the bandwidth of each connection (per direction); None or 0 lifts the cap."""
        rate = bytes_per_second or None
        return self._set(direction, f"limit {rate:g} B/s" if rate else "no bandwidth limit", rate=rate)

    def heal(self) -> Tap:
        """Lift every fault: no delay, no freeze, no limit."""
        self._faults.heal()
        self._event("fault", detail="heal: no faults")
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

    def _set(self, direction: str, label: str, **change: Any) -> Tap:
        """Change the faults of one or both directions, from any thread, and put it on the timeline."""
        chosen = as_directions(direction)
        self._faults.change(chosen, **change)
        self._event("fault", direction=None if len(chosen) == 2 else chosen[0],
                    detail=label + ("" if len(chosen) == 2 else f" ({chosen[0]})"))
        return self

    # -- the loop side ------------------------------------------------------------------------

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        """One client connected: connect to the target, then pump bytes both ways until both sides end."""
        task = asyncio.current_task()
        self._handlers.add(task)
        peer = client_writer.get_extra_info("peername")
        t, _ = self._now()
        conn_id = next(self._counters["conn"])
        recorder = Recorder(conn_id, max_payload=self.max_payload, max_decode=self.max_decode)
        conn = Connection(conn_id, f"{peer[0]}:{peer[1]}" if peer else "?", t, recorder)
        with self._lock:
            self._conns[conn.id] = conn
        conn.writers.append(client_writer)
        host, port = self.target_address
        self._event("open", conn.id, detail=f"from {conn.client}, to {host}:{port}")
        try:
            try:
                server_reader, server_writer = await asyncio.open_connection(host, port)
            except OSError as error:
                self._event("error", conn.id, detail=f"cannot reach {host}:{port}: {error}")
                close_writer(client_writer, rst=True)
                return
            conn.writers.append(server_writer)
            links = [Link(self, conn, "c2s", client_reader, server_writer),
                     Link(self, conn, "s2c", server_reader, client_writer)]
            conn.tasks = [asyncio.create_task(job()) for link in links for job in (link.read_loop, link.send_loop)]
            senders = conn.tasks[1::2]
            await asyncio.wait(senders)            # both directions forwarded to the end (or aborted)
            conn.abort(rst=False)                   # readers still waiting end here
            await asyncio.wait(conn.tasks)
        finally:
            for writer in conn.writers:
                if not writer.is_closing():
                    writer.close()
            conn.writers, conn.tasks = [], []
            for d in DIRECTIONS:                    # chunks read but whose decoding was still scheduled
                self._decode(conn, d)
            t, wall = self._now()
            conn.closed = t
            with self._lock:
                ending = recorder.finish(t, wall)
            self._keep(ending)
            c2s, s2c = recorder.counts["c2s"].total, recorder.counts["s2c"].total
            self._event("close", conn.id, detail=f"closed after {t - conn.opened:.3f} s; "
                                                 f"{c2s} B client→server, {s2c} B server→client", t=t)
            self._forget_closed(conn.id)
            self._handlers.discard(task)

    def _forget_closed(self, conn_id: int) -> None:
        """Keep the last ``max_closed`` ended connections; let older ones go, records and all."""
        with self._lock:
            self._closed.append(conn_id)
            while len(self._closed) > self.max_closed:
                old = self._conns.pop(self._closed.popleft())
                for d in DIRECTIONS:
                    self._forgotten[d].add(old.recorder.counts[d])
                for store in self._stores.values():
                    store.forget(old.id)

    # hooks for the links (see links.Owner) --------------------------------------------------

    def _now(self) -> tuple[float, float]:
        return time.monotonic() - self._t0, time.time()

    def _received(self, conn: Connection, direction: str, data: bytes, t: float, wall: float) -> None:
        with self._lock:
            self._store([conn.recorder.read(direction, data, t, wall)])

    def _decode(self, conn: Connection, direction: str) -> None:
        with self._lock:
            records = self._store(conn.recorder.decode(direction))
        self._emit(records)

    def _forwarded(self, conn: Connection, direction: str, n: int) -> None:
        with self._lock:
            conn.recorder.counts[direction].forwarded += n

    def _event(self, kind: str, conn: int | None = None, direction: str | None = None, detail: str = "",
               t: float | None = None) -> None:
        now, wall = self._now()
        self._keep([Event(0, now if t is None else t, wall, kind, conn, direction, detail)])

    # storing and telling ------------------------------------------------------------------------

    def _store(self, records: list[Record]) -> list[Record]:
        """Number and store records (the caller holds the lock); return them numbered."""
        numbered = []
        for record in records:
            kind = _KINDS[type(record)]
            n = next(self._counters[kind])
            self._last[kind] = n
            record = dataclasses.replace(record, n=n)
            self._stores[kind].add(record)
            numbered.append(record)
        return numbered

    def _keep(self, records: list[Record]) -> None:
        with self._lock:
            records = self._store(records)
        self._emit(records)

    def _emit(self, records: list[Record]) -> None:
        """Tell the listeners, outside the lock (a listener may read the tap)."""
        for record in records:
            if isinstance(record, ReadRecord):
                continue
            for callback in list(self._listeners):
                try:
                    callback(record)
                except Exception:
                    log.exception("tap listener failed")

    def _in_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

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
