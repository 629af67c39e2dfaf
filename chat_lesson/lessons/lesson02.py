"""Lesson 02's tools: a WebSocket client on a bare socket, raw HTTP, and the sequence diagram.

:class:`RawSession` speaks WebSocket with nothing but a socket and the
course's pure code (:mod:`chat_lesson.handshake`, :mod:`chat_lesson.frames`);
it logs every exchange with its size, and :func:`sequence_diagram` draws
that log.  :func:`send_raw` sends any bytes at all and reads the answer,
which is how the lesson provokes the server's refusals.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
from typing import Any

from ..protocol import frames
from ..protocol.frames import Frame, Opcode
from ..protocol.handshake import Head, parse_head, split_head
from .lesson01 import Table
from ..notebook import BackgroundLoop

HEADER_MEANINGS = {
    "host": "which site the client wants; one IP address may serve many names (RFC 9110 §7.2)",
    "upgrade": "the protocol to switch this connection to: websocket (RFC 9110 §7.8, RFC 6455 §4.1)",
    "connection": "'Upgrade' marks Upgrade as a hop-by-hop field that this hop must act on (RFC 9110 §7.6.1)",
    "sec-websocket-key": "16 random bytes, base64; the server proves it read this request by hashing it (§4.1)",
    "sec-websocket-version": "the protocol version: 13 is RFC 6455; anything else gets 426 (§4.4)",
    "origin": "the page's origin (scheme://host:port); browsers always send it, scripts may not (§4.1, §10.2)",
    "sec-websocket-protocol": "subprotocols the client speaks, best first; the server picks one or none (§1.9)",
    "sec-websocket-extensions": "extensions offered, e.g. permessage-deflate compression (RFC 7692)",
    "sec-websocket-accept": "base64(SHA-1(key + GUID)): proof that the server understood this very request (§4.2.2)",
    "user-agent": "the client software; not part of the handshake rules",
    "cache-control": "browsers add no-cache so no cache answers in the server's place",
    "pragma": "the HTTP/1.0 spelling of no-cache",
    "date": "when the server answered (RFC 9110 §6.6.1)",
    "server": "the server software",
}

ANSWER_MEANINGS = {
    "connection": "Upgrade: the switch happens now, on this connection",
    "upgrade": "websocket: from the next byte on, both sides speak WebSocket frames",
    "sec-websocket-protocol": "the one subprotocol the server chose from the client's offer (§4.2.2)",
    "sec-websocket-extensions": "the extensions the server accepted, with its parameters (RFC 7692 §7)",
}


def header_table(head: Head | bytes) -> Table:
    """The start line and every header field of a head, one row each, with what it means."""
    head = head if isinstance(head, Head) else parse_head(head)
    rows = [{"field": "(start line)", "value": head.start_line,
             "meaning": "method, target, version" if head.is_request else "version, status, reason"}]
    meanings = HEADER_MEANINGS if head.is_request else {**HEADER_MEANINGS, **ANSWER_MEANINGS}
    rows += [{"field": name, "value": value, "meaning": meanings.get(name.lower(), "")}
             for name, value in head.headers]
    return Table(rows)


def capture_request(**connect_options: Any) -> bytes:
    """The handshake request that the ``websockets`` library really sends, caught by a listening socket.

    A tiny TCP server takes the request and hangs up without answering, so
    the client gives up; what it sent is returned.  Options go to
    ``websockets.asyncio.client.connect`` (``origin=``, ``subprotocols=`` ...).
    """
    from websockets.asyncio.client import connect

    async def catch() -> bytes:
        got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def take(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got.set_result(await reader.readuntil(b"\r\n\r\n"))
            writer.close()

        server = await asyncio.start_server(take, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=2, **connect_options):
                pass
        except Exception:
            pass     # expected: we never answer
        server.close()
        return await asyncio.wait_for(got, 2)

    loop = BackgroundLoop("capture")
    try:
        return loop.call(catch())
    finally:
        loop.stop()


def send_raw(port: int, data: bytes, host: str = "127.0.0.1", timeout: float = 5) -> bytes:
    """Send ``data`` on a fresh TCP connection; return everything read until the server closes."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)


def answer_head(port: int, request: bytes, host: str = "127.0.0.1") -> tuple[Head, bytes]:
    """Send a handshake request, read the answer's head (and body if any), hang up: (head, body)."""
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while (split := split_head(data)) is None:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed before the end of its answer's head")
            data += chunk
    head = parse_head(split[0])
    length = int(head.headers.get("Content-Length", "0"))
    return head, split[1][:length]


@dataclasses.dataclass
class Step:
    """One exchange on the wire: who sent it, what it was, how many bytes."""

    sender: str          # "client" or "server"
    label: str
    size: int | None     # bytes of TCP payload (None: TCP's own packets, no payload)
    raw: bytes = b""
    layer: str = "websocket"   # "tcp", "http" or "websocket"
    header: int | None = None  # a frame's header bytes (the rest is payload)


class RawSession:
    """A WebSocket client made of a socket, ``handshake`` and ``frames``; it logs every step.

    >>> s = RawSession(port)                      # doctest: +SKIP
    >>> s.send(build_request(...), "GET /ws Upgrade")  # doctest: +SKIP
    >>> head = s.recv_head()                      # doctest: +SKIP
    >>> frame = s.recv_frame()                    # doctest: +SKIP
    """

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""
        self.log: list[Step] = [Step("client", "SYN", None, layer="tcp"), Step("server", "SYN-ACK", None, layer="tcp"),
                                Step("client", "ACK", None, layer="tcp")]

    def send(self, data: bytes, label: str, layer: str | None = None) -> int:
        """Send bytes as they are; returns how many."""
        self.sock.sendall(data)
        layer = layer or ("http" if data[:4] == b"GET " else "websocket")
        self.log.append(Step("client", label, len(data), data, layer))
        return len(data)

    def send_frame(self, opcode: Opcode, payload: bytes, label: str, mask_key: bytes | None = None) -> bytes:
        """Encode one final frame, masked with ``mask_key`` (random if None) as a client must; send it."""
        wire = frames.encode_frame(Frame(True, opcode, payload), mask_key or os.urandom(4))
        self.send(wire, label)
        self.log[-1].header = len(wire) - len(payload)
        return wire

    def send_text(self, data: dict[str, Any] | str, label: str | None = None) -> bytes:
        text = data if isinstance(data, str) else json.dumps(data)
        return self.send_frame(Opcode.TEXT, text.encode(), label or f"text frame {text[:24]}…")

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def recv_head(self, label: str | None = None) -> bytes:
        """Read up to the blank line that ends the server's HTTP head; frames after it stay buffered."""
        while (split := split_head(self.buffer)) is None:
            self._fill()
        head, self.buffer = split
        self.log.append(Step("server", label or head.split(b"\r\n", 1)[0].decode(), len(head), head, "http"))
        return head

    def recv_frame(self, label: str | None = None) -> tuple[Frame, bytes]:
        """Read one whole frame: (frame, its bytes as they came)."""
        while True:
            try:
                frame, used = frames.decode_frame(self.buffer, masked=False)
                break
            except frames.IncompleteFrame:
                self._fill()
        raw, self.buffer = self.buffer[:used], self.buffer[used:]
        if label is None:
            label = f"{frame.opcode.name.lower()} frame"
            if frame.opcode == Opcode.TEXT:
                kind = json.loads(frame.payload).get("type", "?")
                label = f"text frame: {kind} event"
        self.log.append(Step("server", label, len(raw), raw, "websocket", len(raw) - len(frame.payload)))
        return frame, raw

    def recv_until(self, predicate: Any, limit: int = 20) -> tuple[Frame, bytes]:
        """Read frames until ``predicate(frame)`` holds; returns that one."""
        for _ in range(limit):
            frame, raw = self.recv_frame()
            if predicate(frame):
                return frame, raw
        raise TimeoutError(f"no matching frame in {limit} frames")

    def close(self) -> None:
        """Hang up the TCP connection (after the close handshake, if you did one).

        After the close handshake the server closes TCP first (RFC 6455 §7.1.1);
        we wait a moment to see its FIN (the end of the byte stream), then send ours.
        """
        try:
            self.sock.settimeout(1)
            if not self.buffer and self.sock.recv(1) == b"":
                self.log.append(Step("server", "FIN", None, layer="tcp"))
        except OSError:
            pass
        self.sock.close()
        self.log.append(Step("client", "FIN", None, layer="tcp"))

    def table(self) -> Table:
        return Table([{"#": i, "from": s.sender, "what": s.label, "bytes": "-" if s.size is None else s.size,
                       "of which frame header": "" if s.header is None else s.header}
                      for i, s in enumerate(self.log, 1)])


def sequence_diagram(steps: list[Step], title: str = "One WebSocket connection, as measured", ax: Any = None) -> Any:
    """Draw ``steps`` as a sequence diagram: client and server lifelines, one arrow per step."""
    import matplotlib.pyplot as plt

    n = len(steps)
    if ax is None:
        ax = plt.subplots(figsize=(9.5, 0.42 * n + 1.4))[1]
    left, right = 0.0, 1.0
    top = 0.0
    ax.set_xlim(-0.22, 1.22)
    ax.set_ylim(-(n + 0.3), 1.0)
    for x, name in ((left, "client"), (right, "server\n(ChatServer)")):
        ax.text(x, 0.55, name, ha="center", va="center", fontsize=10, fontweight="bold",
                bbox={"boxstyle": "round", "fc": "#eef2ff", "ec": "#4f46e5"})
        ax.plot([x, x], [0.2, -(n + 0.2)], color="#4f46e5", lw=1, ls="--", zorder=0)
    colours = {"tcp": "#9ca3af", "http": "#f58518", "websocket": "#2ca02c"}
    for i, step in enumerate(steps):
        y = top - (i + 0.6)
        colour = colours.get(step.layer, "black")
        start, end = (left, right) if step.sender == "client" else (right, left)
        ax.annotate("", xy=(end, y - 0.25), xytext=(start, y),
                    arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 1.4})
        size = "no payload" if step.size is None else f"{step.size} B"
        if step.header is not None:
            size += f" = {step.header} header + {step.size - step.header} payload"
        ax.text(0.5, y - 0.02, f"{step.label}  ({size})", ha="center", va="bottom", fontsize=8,
                bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})
    for label, colour in zip(("TCP (no payload)", "HTTP", "WebSocket frames"), colours.values()):
        ax.plot([], [], color=colour, lw=2, label=label)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, -0.08), ncol=3, fontsize=8, frameon=False)
    ax.set_title(title)
    ax.axis("off")
    return ax
