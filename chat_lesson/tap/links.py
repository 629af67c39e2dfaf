"""The tap's plumbing: one connection's two links, and the faults that slow, hold or cut them.

A connection through the tap is two TCP connections, client to tap and tap
to server, and two *links* between them, one per direction::

    client ──▶ [read_loop ─queue─▶ send_loop] ──▶ server      "c2s"
    client ◀── [send_loop ◀─queue─ read_loop] ◀── server      "s2c"

Each link is two asyncio tasks and a queue.  The reader reads a chunk,
queues it for the sender, and only then has it decoded (``loop.call_soon``),
so bytes are on their way before decoding starts and a decoding error can
never stop them.  The sender writes each chunk once the faults let it go:

- delay: a chunk leaves ``delay`` seconds after it arrived;
- frozen: nothing leaves (the reader goes on reading and recording until
  the queue holds HELD_CHUNKS, about 4 MiB; then TCP's flow control pushes
  back on the peer);
- rate: a chunk of n bytes leaves n/rate seconds after the link was last
  free, in slices of 1/20 s, as on a slow wire.

A cut is ``Connection.abort(rst=True)``: SO_LINGER 0, so each peer gets an
RST (RFC 9293 §3.5.2), not the polite FIN of a close.

This module knows nothing of the Tap class: a link calls back into its
*owner* (anything shaped like :class:`Owner`) to record and decode bytes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import struct
from typing import Any, Protocol
from collections.abc import Iterator

from .recorder import Recorder
from .records import DIRECTIONS

__all__ = ["Connection", "Faults", "HELD_CHUNKS", "Link", "LinkFaults", "Owner", "READ_SIZE", "SIDES", "close_writer"]

SIDES = {"c2s": "client", "s2c": "server"}   # who sends the bytes of each direction
READ_SIZE = 64 * 1024        # bytes asked for per read
HELD_CHUNKS = 64             # chunks waiting in a direction (x READ_SIZE: ~4 MiB) before reading pauses

_EOF, _RESET = "EOF", "RESET"    # markers queued after the data: the sender ends the stream in order


class Connection:
    """One TCP connection through the tap: a client on one side, the target on the other.

    ``recorder`` decodes and counts its bytes; ``writers`` and ``tasks``
    are its sockets and link tasks while it is open (emptied when it ends,
    so a closed connection keeps only its records and numbers).
    """

    def __init__(self, conn_id: int, client: str, opened: float, recorder: Recorder) -> None:
        self.id, self.client, self.opened, self.recorder = conn_id, client, opened, recorder
        self.closed: float | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: list[asyncio.Task] = []

    def abort(self, rst: bool = True) -> None:
        """End both sides now: with an RST (rst=True), else with a plain close."""
        for writer in self.writers:
            close_writer(writer, rst)
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()

    def summary(self) -> dict[str, Any]:
        """Client, times, handshake, errors and byte counters (the caller holds the owner's lock)."""
        r = self.recorder
        return {"conn": self.id, "client": self.client, "opened": self.opened, "closed": self.closed,
                "upgraded": r.upgraded, "extensions": r.extensions, "subprotocol": r.subprotocol,
                "errors": dict(r.errors), "counters": {d: r.counts[d].as_dict() for d in DIRECTIONS}}


def close_writer(writer: asyncio.StreamWriter, rst: bool) -> None:
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


# -- Faults ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LinkFaults:
    """The faults on one direction: added latency (s), frozen or not, bandwidth (bytes/s, None: unlimited)."""

    delay: float = 0.0
    frozen: bool = False
    rate: float | None = None

    @property
    def clear(self) -> bool:
        return not self.frozen and not self.delay and not self.rate


class Faults:
    """The faults in force on each direction: changed from any thread, obeyed by every link.

    ``now`` is replaced whole on each change (another thread sees the old
    dict or the new one, never half of each), and the links waiting on the
    old settings are woken to look again.
    """

    def __init__(self) -> None:
        self.now = {d: LinkFaults() for d in DIRECTIONS}
        self.changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The links run on ``loop`` from now on (a tap may be restarted on another)."""
        self._loop, self.changed = loop, asyncio.Event()

    def change(self, directions: tuple[str, ...], **change: Any) -> None:
        now = dict(self.now)
        for d in directions:
            now[d] = dataclasses.replace(now[d], **change)
        self.now = now
        self._wake()

    def heal(self) -> None:
        self.now = {d: LinkFaults() for d in DIRECTIONS}
        self._wake()

    def _wake(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            in_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            in_loop = False
        if in_loop:
            self._notify()
        else:
            loop.call_soon_threadsafe(self._notify)

    def _notify(self) -> None:
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


# -- One direction ------------------------------------------------------------------------------


class Owner(Protocol):
    """What a link calls back: the Tap (duck typing; this module never imports it)."""

    _faults: Faults

    def _now(self) -> tuple[float, float]: ...            # (seconds since the start, time.time())

    def _received(self, conn: Connection, direction: str, data: bytes, t: float, wall: float) -> None: ...

    def _decode(self, conn: Connection, direction: str) -> None: ...

    def _forwarded(self, conn: Connection, direction: str, n: int) -> None: ...

    def _event(self, kind: str, conn: int | None = None, direction: str | None = None, detail: str = "",
               t: float | None = None) -> None: ...


class Link:
    """One direction of one connection: read from one socket, write to the other.

    Two tasks and a queue between them.  The reader records each chunk,
    queues it, and only then schedules its decoding; the sender takes
    chunks off the queue and writes them once the faults let them go.
    """

    def __init__(self, owner: Owner, conn: Connection, direction: str,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.owner, self.conn, self.direction = owner, conn, direction
        self.reader, self.writer = reader, writer
        self.queue: asyncio.Queue = asyncio.Queue(HELD_CHUNKS)
        self.free_at = 0.0          # when a rate-limited link finishes sending what it sent last

    async def read_loop(self) -> None:
        owner, d = self.owner, self.direction
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await self.reader.read(READ_SIZE)
            except OSError as error:
                owner._event("reset", self.conn.id, d, f"the {SIDES[d]} reset the connection ({type(error).__name__})")
                await self.queue.put((owner._now()[0], _RESET))
                return
            t, wall = owner._now()
            if not data:
                owner._event("eof", self.conn.id, d, f"the {SIDES[d]} closed its side (FIN)", t=t)
                await self.queue.put((t, _EOF))
                return
            owner._received(self.conn, d, data, t, wall)         # counted and kept ...
            await self.queue.put((t, data))                      # ... forwarded ...
            loop.call_soon(owner._decode, self.conn, d)          # ... and decoded after

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
                    self.owner._forwarded(self.conn, self.direction, len(piece))
                    await self.writer.drain()
                except OSError as error:
                    gone = SIDES["s2c" if self.direction == "c2s" else "c2s"]
                    self.owner._event("reset", self.conn.id, self.direction,
                                      f"the {gone} is gone; cannot forward ({type(error).__name__})")
                    self.conn.abort(rst=True)
                    return

    def _pieces(self, data: bytes) -> Iterator[bytes]:
        """Whole chunks, or under a bandwidth limit, slices of 1/20 s each."""
        rate = self.owner._faults.now[self.direction].rate
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
        faults, done_at = self.owner._faults, None
        while True:
            changed = faults.changed
            now_faults = faults.now[self.direction]
            if now_faults.clear and done_at is None:
                return
            now = self.owner._now()[0]
            if now_faults.frozen:
                await _wait(changed, None)
                continue
            due = arrived + now_faults.delay
            if now_faults.rate and done_at is None and now >= due:
                done_at = max(now, self.free_at) + size / now_faults.rate
                self.free_at = done_at
            due = max(due, done_at or 0.0)
            if now >= due:
                return
            await _wait(changed, due - now)


async def _wait(event: asyncio.Event, timeout: float | None) -> None:
    """Until ``event`` is set or ``timeout`` seconds pass (None: no limit), whichever comes first."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        pass
