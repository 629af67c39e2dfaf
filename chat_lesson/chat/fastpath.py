"""The chat's fast path: whole frames written under websockets, never awaited.

A server's frames are not masked (RFC 6455 §5.1), so one broadcast is the
same bytes for every client: the server encodes each event once and hands
the frames of one loop turn to each client's transport in one write, where
``websockets.broadcast`` would serialize every frame again per connection and
make one system call per frame (``bench fanout`` measures the difference).
This is safe because the server never fragments or compresses what it sends:
each write is a run of whole frames, which cannot land inside a frame of
websockets' own (its pings and close are written whole too, from the same
thread).

Everything here that reaches past websockets' documented API is in
:func:`write_frames`, :func:`unsent`, :func:`drop` and :func:`guarded`: ``connection.transport`` (the asyncio transport),
``connection.protocol.fail()`` (the sans-I/O protocol's way to fail a
connection) and ``connection.send_data()`` (which flushes what the protocol
wants to send), the asyncio protocol methods ``connection_made`` and
``connection_lost`` that a ``ServerConnection`` implements, and its
``process_event`` (each frame the protocol parsed).  Checked against websockets 15.0.1, 16.0 and 17.4;
``tests/test_fastpath.py`` fails if a release changes them underneath us.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from typing import Any, Literal

from websockets.asyncio.server import ServerConnection
from websockets.frames import Opcode
from websockets.protocol import State

from .budgets import TokenBucket

__all__ = ["KERNEL_SEND_BUFFER", "drop", "fix_send_buffer", "guarded", "unsent", "write_frames"]

# The kernel's send buffer per client, fixed.  Left alone, Linux grows it up to
# tcp_wmem's maximum (4 MiB), which would hide a stuck client from the
# max_buffer check for megabytes; fixed, a stuck client costs at most about
# twice this (the kernel doubles it for bookkeeping) plus max_buffer.
KERNEL_SEND_BUFFER = 64 * 1024


def fix_send_buffer(connection: ServerConnection, size: int = KERNEL_SEND_BUFFER) -> None:
    """Pin the kernel's send buffer of ``connection`` to ``size`` bytes."""
    sock = connection.transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def write_frames(connection: ServerConnection, data: bytes, max_buffer: int) -> Literal["sent", "closed", "dropped"]:
    """Queue whole frames for one client without waiting for it.

    Returns ``"sent"``; ``"closed"`` when the connection is no longer open
    (nothing written); or ``"dropped"`` when the client has stopped reading:
    more than ``max_buffer`` bytes already wait in its transport.  Such a
    client could never receive a close frame (it would wait behind the
    unread bytes), so websockets is told the connection failed with 1008
    (policy violation: its state and logs say why) and the TCP connection is
    reset: SO_LINGER with a zero time-out makes close() send an RST and free
    the kernel's buffers now, instead of retrying into a closed window for
    minutes.  The browser, when it wakes, sees 1006 and reconnects.
    """
    if connection.state is not State.OPEN:
        return "closed"
    transport = connection.transport
    if transport.get_write_buffer_size() <= max_buffer:
        transport.write(data)
        return "sent"
    drop(connection)
    return "dropped"


def unsent(connection: ServerConnection) -> int:
    """Bytes waiting in ``connection``'s transport for the client to read (pongs and pings included)."""
    return connection.transport.get_write_buffer_size()


def drop(connection: ServerConnection, reason: str = "too slow: stopped reading messages") -> None:
    """Fail ``connection`` with 1008 and reset it: see :func:`write_frames`.

    A connection already closing is reset too: its close frame waits behind
    the same unread bytes, and websockets would wait for them to drain.
    """
    if connection.state is State.OPEN:
        connection.protocol.fail(1008, reason)
        connection.send_data()
    reset(connection.transport)


def reset(transport: asyncio.Transport) -> None:
    """Close with an RST (SO_LINGER, time-out 0): the kernel frees the connection's buffers now."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def guarded(judge: Callable[[str], float | None], released: Callable[[str], None],
            flooded: Callable[[ServerConnection], None], ping_rate: float, ping_burst: int) -> type[ServerConnection]:
    """A ``ServerConnection`` class with two guards that websockets' API has no place for.

    **At accept.** ``judge(peer address)`` returns None to let the handshake
    go on, or the seconds to hold the connection unread before resetting it
    (0: at once).  Nothing of a refused connection is read: no HTTP parse, no
    handler task, no 503 to write.  That is for clients in a reconnect loop,
    whose every attempt would otherwise cost the server as much as a real
    handshake; holding the attempt a while also slows a loop that waits for
    each answer.  ``released(peer)`` is called when a held connection is
    gone.  A browser sees the same failed connection (1006) as after a 503,
    since the WebSocket API hides the status of a refused handshake.

    **Pings.** websockets answers every ping with a pong by itself, before
    the application sees anything, so a client that sends pings as fast as
    it can (and reads the pongs) costs the server a parse and a write each,
    forever.  Each connection may send ``ping_rate`` pings a second after a
    burst of ``ping_burst`` (a browser sends none; websockets' keepalive one
    every 20 s; lesson 04 ten a second); past that it is dropped (1008, then
    a reset: :func:`drop`) and ``flooded(connection)`` is called.
    """

    class GuardedConnection(ServerConnection):
        refused: str | None = None              # the peer, for a connection refused at accept
        held: asyncio.TimerHandle | None = None
        pings: TokenBucket | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            peer = transport.get_extra_info("peername")
            hold = judge(peer[0]) if peer else None
            if hold is None:
                self.pings = TokenBucket(ping_rate, ping_burst) if ping_rate > 0 else None
                super().connection_made(transport)
                return
            self.refused = peer[0]
            if hold > 0:
                transport.pause_reading()  # type: ignore[attr-defined]
                self.held = asyncio.get_running_loop().call_later(hold, reset, transport)
            else:
                reset(transport)  # type: ignore[arg-type]

        def connection_lost(self, exc: Exception | None) -> None:
            if self.refused is None:
                super().connection_lost(exc)
            elif self.held is not None:         # never made: nothing of websockets' to tear down
                self.held.cancel()
                released(self.refused)

        def process_event(self, event: Any) -> None:
            if getattr(event, "opcode", None) is Opcode.PING and self.pings is not None and not self.pings.take():
                if self.state is State.OPEN:
                    flooded(self)               # first: once dropped, the client (another thread, maybe) sees it
                    drop(self, "too many pings")
                return
            super().process_event(event)

    return GuardedConnection
