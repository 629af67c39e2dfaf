"""The battery's client side: one connection, every byte logged, every wait bounded.

A :class:`Conn` is a :class:`~chat_lesson.rawclient.RawClient` (blocking
socket, the course's Reader underneath) plus what the cases need: frames
built with ``encode_frame(strict=False)`` so they may break the rules on
purpose, a client-side :class:`~chat_lesson.protocol.frames.MessageAssembler`,
and :meth:`Conn.react`, which reads until something decisive happens (the
wanted reply, a close frame, the end of the stream) or a deadline passes.

The same case runs against an *echo* server (a message comes back as it
was sent) and a *chat* server (lesson 05's wire protocol: it comes back as
a ``message`` event): :meth:`Conn.wrap` and :meth:`Conn.is_reply` hide the
difference.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from typing import Any
from collections.abc import Callable

from ..chat.wire import SUBPROTOCOL
from ..protocol.frames import Frame, FrameError, Message, MessageAssembler, Opcode, encode_frame
from ..rawclient import RawClient

NAMES = {0: "CONT", 1: "TEXT", 2: "BINARY", 8: "CLOSE", 9: "PING", 10: "PONG"}


@dataclasses.dataclass(frozen=True)
class Target:
    """Where the battery connects, and how the server talks: ``mode`` is "echo" or "chat"."""

    host: str
    port: int
    path: str = "/ws"
    mode: str = "echo"
    timeout: float = 2.0          # the longest any single wait may take
    grace: float = 0.25           # how long to wait for a reaction before sending a probe

    @property
    def chat(self) -> bool:
        return self.mode == "chat"


class Verdict(Exception):
    """Raised by a case to end it: ``kind`` is "pass", "non-strict" or "fail"."""

    def __init__(self, kind: str, why: str) -> None:
        super().__init__(why)
        self.kind, self.why = kind, why


def short(data: bytes, limit: int = 24) -> str:
    data = bytes(data)
    try:
        text = data.decode("utf-8")
        if text.isprintable():
            return repr(text if len(text) <= limit else text[:limit] + "…") + f" ({len(data)} B)"
    except UnicodeDecodeError:
        pass
    return data[:limit].hex(" ") + (f" … ({len(data)} B)" if len(data) > limit else "")


def describe(frame: Frame) -> str:
    name = NAMES.get(int(frame.opcode), f"opcode 0x{int(frame.opcode):X}")
    flags = "".join(f" {n}" for n, on in (("FIN=0", not frame.fin), ("RSV1", frame.rsv1), ("RSV2", frame.rsv2),
                                          ("RSV3", frame.rsv3)) if on)
    if int(frame.opcode) == Opcode.CLOSE and len(frame.payload) >= 2:
        body = f"code {int.from_bytes(frame.payload[:2], 'big')}" + (
            f" reason {short(frame.payload[2:])}" if len(frame.payload) > 2 else "")
    else:
        body = short(frame.payload)
    return f"{name}{flags} {body}"


def close_code(frame: Frame) -> int | None:
    """The code in a close frame, None if it carries none."""
    return int.from_bytes(frame.payload[:2], "big") if len(frame.payload) >= 2 else None


@dataclasses.dataclass
class Outcome:
    """What :meth:`Conn.react` ended on: "want", "close", "eof", "timeout" or "bad" (the server broke a rule)."""

    kind: str
    item: Any = None
    detail: str = ""

    @property
    def code(self) -> int | None:
        return close_code(self.item) if self.kind == "close" else None


class Conn:
    """One connection to the server under test; ``sent`` and ``got`` say what crossed, for the report."""

    counter = 0

    def __init__(self, target: Target, sent: list[str], got: list[str], *, handshake: bool = True,
                 protocols: list[str] | None = None, join: bool = True) -> None:
        Conn.counter += 1
        self.target, self.sent, self.got = target, sent, got
        self.name = f"conform-{os.getpid() % 1000}-{Conn.counter}"
        if protocols is None:
            protocols = [SUBPROTOCOL] if target.chat else []
        self.raw = RawClient(target.port, target.host, target.path, protocols=protocols,
                             timeout=target.timeout, handshake=handshake)
        self.raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # each frame now, not after an ACK
        self.assembler = MessageAssembler()
        self.probes: list[str] = []
        self.closed_by_server = False
        if handshake and target.chat and join:
            self.send_frame(Opcode.TEXT, json.dumps({"type": "join", "username": self.name}).encode(),
                            note="join (chat protocol)")

    # -- sending -----------------------------------------------------------------------------

    def send_frame(self, opcode: int, payload: bytes = b"", *, fin: bool = True, rsv1: bool = False,
                   rsv2: bool = False, rsv3: bool = False, masked: bool = True, note: str = "") -> None:
        frame = Frame(fin, opcode, bytes(payload), rsv1, rsv2, rsv3)
        self.send_bytes(encode_frame(frame, os.urandom(4) if masked else None, strict=False),
                        describe(frame) + ("" if masked else " UNMASKED") + (f" [{note}]" if note else ""))

    def send_bytes(self, data: bytes, text: str) -> None:
        self.sent.append(text)
        try:
            self.raw.send_raw(data)
        except OSError as error:
            self.sent.append(f"(send failed: {error.strerror or error})")

    def wrap(self, content: bytes) -> bytes:
        """The payload that carries ``content``: itself to an echo server, a chat message to a chat server."""
        if not self.target.chat:
            return content
        return b'{"username":"' + self.name.encode() + b'","message":"' + content + b'"}'

    def padding_for(self, size: int) -> bytes:
        """``content`` such that ``wrap(content)`` is exactly ``size`` bytes (if it can be)."""
        return b"a" * max(0, size - len(self.wrap(b"")))

    def probe(self) -> str:
        """Send a fresh, valid text message; its reply shows the server read everything before it."""
        token = f"probe-{os.urandom(4).hex()}"
        self.probes.append(token)
        self.send_frame(Opcode.TEXT, self.wrap(token.encode()), note="probe")
        return token

    # -- receiving ---------------------------------------------------------------------------

    def is_reply(self, item: Any, content: bytes | str, opcode: int = Opcode.TEXT) -> bool:
        """Is ``item`` the server's answer to a message carrying ``content``?"""
        if not isinstance(item, Message):
            return False
        if not self.target.chat:
            want = content.decode("utf-8") if opcode == Opcode.TEXT and isinstance(content, bytes) else content
            return item.opcode == opcode and item.data == want
        try:
            event = json.loads(item.data)
        except (ValueError, TypeError):
            return False
        text = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
        return isinstance(event, dict) and event.get("type", "message") == "message" and event.get("message") == text

    def react(self, timeout: float | None = None, want: Callable[[Any], bool] = lambda item: False) -> Outcome:
        """Read until ``want(item)``, a close frame, the end of the stream, a broken frame or ``timeout`` s."""
        deadline = time.monotonic() + (self.target.timeout if timeout is None else timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return Outcome("timeout")
            try:
                frame = self.raw.recv_frame(left).frame
            except TimeoutError:
                return Outcome("timeout")
            except FrameError as error:
                self.got.append(f"a broken frame: {error}")
                return Outcome("bad", detail=str(error))
            except (ConnectionError, OSError) as error:
                if not isinstance(error, ConnectionError) or "closed" not in str(error):
                    self.got.append(f"connection error: {error}")
                else:
                    self.got.append("end of stream (TCP FIN)")
                self.closed_by_server = True
                return Outcome("eof")
            try:
                items = self.assembler.feed(frame)
            except FrameError as error:
                self.got.append(f"{describe(frame)}: invalid ({error})")
                return Outcome("bad", detail=str(error))
            if int(frame.opcode) not in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT) or frame.fin:
                self.got.append(describe(frame) if not items or not isinstance(items[0], Message)
                                else f"{items[0].opcode.name} message {short(_as_bytes(items[0].data))}")
            for item in items:
                if want(item):
                    return Outcome("want", item)
                if isinstance(item, Frame) and item.opcode == Opcode.CLOSE:
                    return Outcome("close", item)

    def wait_fin(self, timeout: float) -> float | None:
        """Seconds until the server's FIN (reading and dropping anything before it), or None."""
        start = time.monotonic()
        deadline = start + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.raw.sock.settimeout(left)
            try:
                data = self.raw.sock.recv(65536)
            except TimeoutError:
                return None
            except OSError:
                return time.monotonic() - start
            if not data:
                return time.monotonic() - start

    def close(self) -> None:
        try:
            self.raw.sock.close()
        except OSError:
            pass


def raw_exchange(target: Target, request: bytes, sent: list[str], got: list[str]) -> tuple[int | None, Any]:
    """Send an HTTP request as given; return (status, head) of the answer, or (None, why)."""
    from ..protocol.handshake import HandshakeError, parse_head

    sent.append(request.decode("ascii", "replace").split("\r\n\r\n")[0].replace("\r\n", " | "))
    try:
        client = RawClient(target.port, target.host, target.path, timeout=target.timeout, handshake=False)
    except OSError as error:
        got.append(f"cannot connect: {error}")
        return None, "cannot connect"
    try:
        client.send_raw(request)
        raw = client.recv_head(target.timeout)
        head = parse_head(raw)
        got.append(head.start_line + "".join(f" | {n}: {v}" for n, v in head.headers
                                             if n.lower().startswith(("sec-websocket", "upgrade", "connection"))))
        return head.status, head
    except TimeoutError:
        got.append("no answer within the time-out")
        return None, "timeout"
    except (ConnectionError, OSError):
        got.append("connection closed with no HTTP answer")
        return None, "closed"
    except HandshakeError as error:
        got.append(f"unreadable answer: {error}")
        return None, "bad"
    finally:
        try:
            client.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        client.sock.close()


def _as_bytes(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data
