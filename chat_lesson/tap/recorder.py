"""What the tap records, and how one direction's byte stream is decoded.

The record types (ReadRecord, HttpRecord, FrameRecord, Event, Counts), the
bounded store that keeps them, and the decoder that turns the bytes of one
direction into HTTP heads and WebSocket frames as they arrive.  Pure: bytes
in, records out, built on frames.py, handshake.py and deflate.py; no sockets
and no event loop here (the proxy in tap.py does the I/O).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import threading
from typing import TYPE_CHECKING, Any, Callable

from ..protocol import deflate
from ..protocol.frames import (Frame, FrameError, IncompleteFrame, Message, MessageAssembler, Opcode, decode_close, decode_frame,
                     length_form)
from ..protocol.handshake import Head, HandshakeError, parse_head, split_head

if TYPE_CHECKING:                    # only for the annotations: the decoder reports to the tap and its connection
    from .proxy import Connection, Tap

log = logging.getLogger(__name__)

DIRECTIONS = ("c2s", "s2c")
ARROWS = {"c2s": "→", "s2c": "←"}
PREVIEW = 60                 # characters of payload shown in tables
MAX_HEADER = 14              # the longest frame header: 2 bytes, 8 of length, 4 of mask key

# -- What the tap records ------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ReadRecord:
    """One read from a socket: exactly the bytes TCP handed us, when it did."""

    n: int
    t: float            # seconds since the tap started (time.monotonic)
    wall: float         # time.time(), for a clock on the wall
    conn: int
    direction: str      # "c2s" or "s2c"
    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class HttpRecord:
    """One HTTP head (request or response) seen before the switch to WebSocket."""

    n: int
    t: float
    wall: float
    conn: int
    direction: str
    head: Head
    raw: bytes                  # the head as sent, blank line included
    body_length: float          # bytes of body after it (math.inf: until the connection closes)

    @property
    def start_line(self) -> str:
        return self.head.start_line

    def line(self) -> str:
        """One line for a terminal: time, connection, direction, start line, sizes."""
        body = "" if not self.body_length else (
            ", body until close" if self.body_length == math.inf else f", body {int(self.body_length)} B")
        return f"{_ms(self.t)}  c{self.conn} {ARROWS[self.direction]} HTTP   {self.start_line}  ({len(self.raw)} B head{body})"

    def as_dict(self) -> dict[str, Any]:
        return {"t": self.t, "conn": self.conn, "dir": self.direction, "line": self.start_line,
                "head_bytes": len(self.raw), "body_bytes": self.body_length}


@dataclasses.dataclass(frozen=True, slots=True)
class FrameRecord:
    """One WebSocket frame, decoded, as it crossed the tap.

    ``payload`` is the application data, unmasked; ``raw`` is the frame as it
    was on the wire, so for a client's frame it shows the masked bytes (both
    cut to ``max_payload`` bytes of payload; ``truncated`` says when).
    ``header_bytes`` counts everything before the payload, the masking key
    included, like ``frames.header_size``.  ``message`` is set on the frame
    that completes a message (its final fragment): the whole text or bytes,
    inflated if the message was compressed.
    """

    n: int
    t: float
    wall: float
    conn: int
    direction: str
    fin: bool
    rsv1: bool
    rsv2: bool
    rsv3: bool
    opcode: Opcode
    masked: bool
    key: bytes | None
    length: int
    form: str
    header_bytes: int
    payload: bytes
    raw: bytes
    truncated: bool = False
    compressed: bool = False            # part of a permessage-deflate message (RSV1 on its first frame)
    message_opcode: Opcode | None = None  # TEXT or BINARY: the message this data frame belongs to
    message: str | bytes | None = None  # the whole message, on its final frame
    fragments: int = 0                  # frames the message took, on its final frame
    close_code: int | None = None
    close_reason: str | None = None

    @property
    def arrow(self) -> str:
        return ARROWS[self.direction]

    @property
    def key_hex(self) -> str:
        return self.key.hex() if self.key else ""

    @property
    def wire_bytes(self) -> int:
        """Bytes this frame took on the wire: header (mask key included) plus payload."""
        return self.header_bytes + self.length

    @property
    def inflated(self) -> str | bytes | None:
        """The message's inflated text (or bytes) when it was compressed, on its final frame."""
        return self.message if self.compressed else None

    def preview(self, width: int = PREVIEW) -> str:
        """The payload in a few characters: text as text, close frames as code and reason, the rest in hex."""
        if self.opcode == Opcode.CLOSE and self.close_code is not None:
            return _shorten(f"{self.close_code} {self.close_reason}".strip(), width)
        texty = self.opcode in (Opcode.PING, Opcode.PONG) and self.payload.isascii() and self.payload.isalnum()
        if (self.message_opcode == Opcode.TEXT and not self.compressed) or texty:
            return _shorten(repr(self.payload.decode("utf-8", "replace"))[1:-1], width)
        return _hex(self.payload, width)

    def inflated_preview(self, width: int = PREVIEW) -> str:
        value = self.inflated
        if value is None:
            return ""
        return _shorten(repr(value)[1:-1], width) if isinstance(value, str) else _hex(value, width)

    def line(self) -> str:
        """One line for a terminal: every header field, then the payload and, if any, the inflated text."""
        key = f" key={self.key_hex}" if self.key else ""
        line = (f"{_ms(self.t)}  c{self.conn} {self.arrow} #{self.n:<4} {self.opcode.name:<6} "
                f"FIN={int(self.fin)} RSV1={int(self.rsv1)} MASK={int(self.masked)}{key} "
                f"len={self.length} ({self.form}) hdr={self.header_bytes}  {self.preview()}")
        if self.inflated is not None:
            line += f"  ⇒ {self.inflated_preview()}"
        return line

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "t": self.t, "conn": self.conn, "dir": self.direction, "fin": self.fin,
                "rsv1": self.rsv1, "opcode": self.opcode.name, "masked": self.masked, "key": self.key_hex,
                "length": self.length, "form": self.form, "header_bytes": self.header_bytes,
                "wire_bytes": self.wire_bytes}


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to a connection or to the tap: open, eof, close, fault, error ..."""

    n: int
    t: float
    wall: float
    kind: str                 # start stop open upgrade eof reset close fault error
    conn: int | None = None
    direction: str | None = None
    detail: str = ""

    def line(self) -> str:
        who = f"c{self.conn}" if self.conn is not None else "tap"
        arrow = ARROWS.get(self.direction or "", "·")
        return f"{_ms(self.t)}  {who} {arrow} {self.kind.upper():<6} {self.detail}"

    def as_dict(self) -> dict[str, Any]:
        return {"t": self.t, "conn": self.conn, "dir": self.direction, "kind": self.kind, "detail": self.detail}


@dataclasses.dataclass
class Counts:
    """Bytes of one direction of one connection, by what they were.

    ``http``: HTTP heads.  ``header``: frame headers, mask keys excluded.
    ``mask``: masking keys (4 bytes per client frame).  ``payload``: frame
    payloads and HTTP bodies.  ``other``: bytes that could not be decoded.
    ``pending``: read but not decoded *yet* (half a frame).  These always add
    up to ``total``, the bytes read; ``forwarded`` is what was written on,
    equal to ``total`` unless a fault holds bytes back.
    """

    http: int = 0
    header: int = 0
    mask: int = 0
    payload: int = 0
    other: int = 0
    total: int = 0
    forwarded: int = 0

    @property
    def pending(self) -> int:
        return self.total - self.http - self.header - self.mask - self.payload - self.other

    def as_dict(self) -> dict[str, int]:
        return {"http": self.http, "header": self.header, "mask": self.mask, "payload": self.payload,
                "other": self.other, "pending": self.pending, "total": self.total, "forwarded": self.forwarded}


def _ms(t: float) -> str:
    return f"{t * 1000:10.1f} ms"


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _hex(data: bytes, width: int) -> str:
    shown = data[: max(1, (width + 1) // 3)]
    text = shown.hex(" ")
    return text + " …" if len(shown) < len(data) else text


class _Store:
    """A bounded, thread-safe list of records: oldest out past ``max_records`` or ``max_bytes``.

    The tap's loop appends; a notebook cell reads from its own thread, so
    both go through a lock.
    """

    def __init__(self, max_records: int, max_bytes: float, size: Callable[[Any], int]) -> None:
        self.max_records, self.max_bytes, self._size = max_records, max_bytes, size
        self._items: collections.deque = collections.deque()
        self._bytes = 0
        self.dropped = 0
        self._lock = threading.Lock()

    def add(self, item: Any) -> None:
        with self._lock:
            self._items.append(item)
            self._bytes += self._size(item)
            while self._items and (len(self._items) > self.max_records or self._bytes > self.max_bytes):
                self._bytes -= self._size(self._items.popleft())
                self.dropped += 1

    def snapshot(self) -> list:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


# -- Decoding one direction ------------------------------------------------------------


class _Buffer:
    """Bytes read but not decoded yet.

    Appending is cheap (a list of chunks); they are joined only when a
    decoder asks to look, and a decoder that knows it needs n more bytes
    (``need``) does not look before they are here.  So a 1 MiB frame that
    arrives in sixteen reads is joined once, not sixteen times.
    """

    def __init__(self) -> None:
        self._data, self._pos, self._more = b"", 0, []
        self.size = 0

    def append(self, chunk: bytes) -> None:
        self._more.append(chunk)
        self.size += len(chunk)

    def peek(self) -> memoryview:
        if self._more:
            self._data = self._data[self._pos:] + b"".join(self._more)
            self._pos, self._more = 0, []
        return memoryview(self._data)[self._pos:]

    def consume(self, n: int) -> None:
        self.peek()
        self._pos += n
        self.size -= n
        if self._pos >= len(self._data):
            self._data, self._pos = b"", 0

    def clear(self) -> int:
        n, self.size = self.size, 0
        self._data, self._pos, self._more = b"", 0, []
        return n


class _Undecodable(Exception):
    """Decoding this direction cannot go on (reason in the message)."""


class _Decoder:
    """Turns one direction's bytes into HTTP heads and WebSocket frames, as they arrive.

    A small state machine.  ``mode`` is where the next byte belongs:

    - ``"http"``: the start of an HTTP head (a request c2s, a response s2c);
    - ``"body"``: inside a body whose length the head announced;
    - ``"wait"``: c2s after an upgrade request, until the response says
      whether the connection switched to WebSocket (101) or not;
    - ``"ws"``: WebSocket frames;
    - ``"off"``: decoding failed; every byte is "other" from here on.

    ``feed()`` never raises: whatever goes wrong is recorded and turns the
    mode to "off".
    """

    def __init__(self, tap: "Tap", conn: "Connection", direction: str) -> None:
        self.tap, self.conn, self.direction = tap, conn, direction
        self.counts = conn.counts[direction]
        self.mode = "http"
        self.buffer = _Buffer()
        self.need = 0                      # bytes the buffer must hold before trying again
        self.body_left: float = 0
        self.after_body = "http"
        self.assembler: MessageAssembler | None = None
        self.message: tuple[Opcode, bool] | None = None   # (opcode, compressed) of the message in progress
        self.t, self.wall = 0.0, 0.0      # when the bytes being decoded were read

    @property
    def other(self) -> "_Decoder":
        return self.conn.decoders["s2c" if self.direction == "c2s" else "c2s"]

    def feed(self, data: bytes, t: float, wall: float) -> None:
        """Take one chunk as read from the socket; record whatever it completes."""
        self.buffer.append(data)
        self.t, self.wall = t, wall
        self.advance()

    def advance(self) -> None:
        try:
            while self.mode != "off" and self._step():
                pass
        except (_Undecodable, FrameError, HandshakeError, ValueError) as error:
            self.stop(str(error))
        except Exception as error:  # a bug of ours must not break the traffic either
            log.exception("tap decoder failed")
            self.stop(f"{type(error).__name__}: {error}")
        if self.mode == "off":
            self._count("other", self.buffer.clear())

    def stop(self, reason: str) -> None:
        """Give up on this direction: record why, count the rest as "other"."""
        if self.mode == "off":
            return
        self.mode, self.assembler = "off", None
        self.conn.errors[self.direction] = reason
        self.tap._event("error", self.conn.id, self.direction, f"decoding stopped: {reason}", t=self.t)
        self._count("other", self.buffer.clear())
        if self.direction == "s2c" and self.other.mode == "wait":
            self.other.stop("the server's answer to the upgrade request could not be decoded")

    def finish(self) -> None:
        """The connection is over: bytes still waiting (half a frame) become "other"."""
        left = self.buffer.clear()
        if left and self.mode != "off":
            self.tap._event("error", self.conn.id, self.direction,
                            f"{left} byte(s) left undecoded when the connection ended ({self.mode})", t=self.t)
        self._count("other", left)
        self.mode, self.assembler = "off", None

    def _count(self, part: str, n: float) -> None:
        if n:
            with self.tap._lock:
                setattr(self.counts, part, getattr(self.counts, part) + int(n))

    def _step(self) -> bool:
        """Decode one thing from the buffer; False when more bytes are needed."""
        if self.mode == "http":
            return self._http()
        if self.mode == "body":
            return self._body()
        if self.mode == "ws":
            return self._frame()
        if self.buffer.size > self.tap.max_decode:          # "wait" for the 101, yet the client floods
            raise _Undecodable(f"{self.buffer.size} bytes sent before the server answered the upgrade")
        return False    # "wait": the other direction will wake us

    # HTTP ------------------------------------------------------------------

    def _http(self) -> bool:
        if self.buffer.size == 0:
            return False
        split = split_head(self.buffer.peek())      # HandshakeError past 16 KiB without a blank line
        if split is None:
            return False
        raw = split[0]
        head = parse_head(raw)
        self.buffer.consume(len(raw))
        self._count("http", len(raw))
        if head.is_request:
            body = self._request(head)
        else:
            body = self._response(head)
        self.tap._http(HttpRecord(self.tap._next("http"), self.t, self.wall, self.conn.id, self.direction,
                                  head, raw, body))
        if body:
            self.after_body, self.mode, self.body_left = self.mode, "body", body
        if not head.is_request and head.status == 101:
            self.conn.upgrade(head, self.t)
        return True

    def _request(self, head: Head) -> float:
        """Note the request; return its body length; an upgrade request makes c2s wait for the answer."""
        if "Transfer-Encoding" in head.headers:
            raise _Undecodable("a chunked request body is not decoded by the tap")
        self.conn.requests.append(head)
        if "websocket" in head.headers.tokens("Upgrade"):
            self.mode = "wait"
        return _content_length(head)

    def _response(self, head: Head) -> float:
        """Return the body length of a response (RFC 9112 §6.3), given the request it answers."""
        request = self.conn.requests.popleft() if self.conn.requests else None
        if head.status is not None and 100 <= head.status < 200:
            if head.status != 101 and request is not None:
                self.conn.requests.appendleft(request)    # an interim answer: the real one follows
            if head.status != 101:
                return 0
        if self.other.mode == "wait" and head.status != 101:
            self.other.mode = "http"                      # upgrade refused: plain HTTP again
            self.tap._loop_call_soon(self.other.advance)
        if head.status == 101:
            return 0
        if (request is not None and request.method == "HEAD") or head.status in (204, 304):
            return 0
        if "Transfer-Encoding" in head.headers:
            raise _Undecodable("a chunked response body is not decoded by the tap")
        if "Content-Length" in head.headers:
            return _content_length(head)
        return math.inf                                   # no length: the body runs until the server closes

    def _body(self) -> bool:
        n = min(self.body_left, self.buffer.size)
        if n == 0:
            return False
        self.buffer.consume(int(n))
        self._count("payload", n)
        self.body_left -= n
        if self.body_left == 0:
            self.mode = self.after_body
        return True

    # WebSocket ---------------------------------------------------------------

    def start_frames(self, inflater: deflate.Inflater | None) -> None:
        """The handshake is done: from now on this direction carries frames."""
        if self.mode == "off":
            return
        self.assembler = MessageAssembler(inflater, max_size=self.tap.max_decode)
        if self.mode in ("http", "wait"):
            self.mode = "ws"
        else:                                             # e.g. still in a (strange) body: frames after it
            self.after_body = "ws"

    def _frame(self) -> bool:
        if self.buffer.size == 0 or self.buffer.size < self.need:
            return False
        data = self.buffer.peek()
        try:
            frame, used = decode_frame(data)
        except IncompleteFrame as incomplete:
            self.need = len(data) + incomplete.needed
            if self.need > self.tap.max_decode + MAX_HEADER:
                raise _Undecodable(f"a frame of at least {self.need} bytes is larger than the tap "
                                   f"decodes (max_decode={self.tap.max_decode})") from None
            return False
        self.need = 0
        header = used - len(frame.payload)
        keep = len(frame.payload) if self.tap.max_payload is None else min(len(frame.payload), self.tap.max_payload)
        raw = bytes(data[: header + keep])
        self.buffer.consume(used)
        masked = frame.mask_key is not None
        self._count("header", header - 4 * masked)
        self._count("mask", 4 * masked)
        self._count("payload", len(frame.payload))
        self._record(frame, header, raw, keep)
        return True

    def _record(self, frame: Frame, header: int, raw: bytes, keep: int) -> None:
        """Assemble, inflate, then store the frame; an assembly error is recorded after the frame."""
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            self.message = (frame.opcode, frame.rsv1)
        opcode, compressed = self.message if (self.message and not frame.opcode.is_control) else (None, False)
        error, message, fragments = None, None, 0
        try:
            for done in self.assembler.feed(frame):
                if isinstance(done, Message):
                    message, fragments = done.data, done.fragments
        except FrameError as exc:
            error = exc
        truncated, limit = keep < len(frame.payload), self.tap.max_payload
        if message is not None and limit is not None and len(message) > limit:
            message, truncated = message[:limit], True
        close_code = close_reason = None
        if frame.opcode == Opcode.CLOSE:
            try:
                close_code, close_reason = decode_close(frame.payload)
                close_code = int(close_code)
            except FrameError:
                pass
        record = FrameRecord(
            self.tap._next("frame"), self.t, self.wall, self.conn.id, self.direction,
            frame.fin, frame.rsv1, frame.rsv2, frame.rsv3, frame.opcode, frame.mask_key is not None,
            frame.mask_key, len(frame.payload), length_form(len(frame.payload)), header,
            bytes(frame.payload[:keep]), raw, truncated=truncated,
            compressed=compressed, message_opcode=opcode, message=message, fragments=fragments,
            close_code=close_code, close_reason=close_reason)
        if frame.fin and not frame.opcode.is_control:
            self.message = None
        self.tap._frame(record)
        if error is not None:
            raise error


def _content_length(head: Head) -> int:
    value = head.headers.get("Content-Length")
    if value is None:
        return 0
    if not value.strip().isdigit():
        raise _Undecodable(f"bad Content-Length {value!r}")
    return int(value)
