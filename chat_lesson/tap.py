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
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import html
import itertools
import logging
import math
import socket
import struct
import sys
import threading
import time
from typing import Any, Callable, Iterator

from . import deflate
from .frames import (Frame, FrameError, IncompleteFrame, Message, MessageAssembler, Opcode, decode_close, decode_frame,
                     length_form)
from .handshake import Head, HandshakeError, parse_head, split_head
from .notebook import CellService, in_notebook, show_link

log = logging.getLogger("chat_lesson.tap")

DIRECTIONS = ("c2s", "s2c")
ARROWS = {"c2s": "→", "s2c": "←"}
SIDES = {"c2s": "client", "s2c": "server"}   # who sends the bytes of each direction
READ_SIZE = 64 * 1024        # bytes asked for per read
HELD_CHUNKS = 64             # chunks waiting in a direction (x READ_SIZE: ~4 MiB) before reading pauses
PREVIEW = 60                 # characters of payload shown in tables
MAX_HEADER = 14              # the longest frame header: 2 bytes, 8 of length, 4 of mask key

_EOF, _RESET = "EOF", "RESET"    # markers queued after the data: the sender ends the stream in order


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


# -- Views -----------------------------------------------------------------------------------


COLUMNS = ["#", "t (ms)", "conn", "dir", "FIN", "RSV1", "opcode", "MASK", "key", "len", "form", "hdr",
           "payload", "inflated"]


def _row(f: FrameRecord) -> list[str]:
    return [str(f.n), f"{f.t * 1000:.1f}", str(f.conn), f.arrow, str(int(f.fin)), str(int(f.rsv1)),
            f.opcode.name, str(int(f.masked)), f.key_hex, str(f.length), f.form, str(f.header_bytes),
            f.preview(), f.inflated_preview()]


class FrameTable:
    """Frames as a table: HTML in Jupyter, aligned text everywhere else.

    ``rows`` are the FrameRecords shown.  Columns: # (frame number), t (ms
    since the tap started), conn, dir (→ client to server, ← server to
    client), FIN, RSV1, opcode, MASK, key (the masking key, hex), len
    (payload bytes), form (7-, 16- or 64-bit length), hdr (header bytes,
    mask key included), payload (first characters: text, or hex when
    binary or compressed), inflated (the message, for compressed ones).
    """

    def __init__(self, rows: list[FrameRecord], caption: str = "") -> None:
        self.rows, self.caption = rows, caption

    def __len__(self) -> int:
        return len(self.rows)

    def __str__(self) -> str:
        cells = [COLUMNS] + [_row(f) for f in self.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
        lines = [self.caption] if self.caption else []
        for r in cells:
            lines.append("  ".join(c.ljust(w) if i >= len(COLUMNS) - 2 or i in (3, 6, 8, 10) else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if not self.rows:
            lines.append("(no frames yet)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        style = "font-family:monospace;font-size:12px;border-collapse:collapse"
        cell = "padding:1px 6px;border-bottom:1px solid rgba(128,128,128,.25);white-space:pre;text-align:left"
        tint = {"c2s": "rgba(66,133,244,.08)", "s2c": "rgba(52,168,83,.08)"}
        head = "".join(f'<th style="{cell}">{html.escape(c)}</th>' for c in COLUMNS)
        body = "".join(
            f'<tr style="background:{tint[f.direction]}">'
            + "".join(f'<td style="{cell}">{html.escape(c)}</td>' for c in _row(f)) + "</tr>"
            for f in self.rows)
        caption = f"<caption style='text-align:left'>{html.escape(self.caption)}</caption>" if self.caption else ""
        empty = "" if self.rows else f'<tr><td colspan="{len(COLUMNS)}" style="{cell}">(no frames yet)</td></tr>'
        return f'<table style="{style}">{caption}<thead><tr>{head}</tr></thead><tbody>{body}{empty}</tbody></table>'


class LiveView:
    """A view of the frames that keeps itself up to date while traffic flows.

    In Jupyter it is a table displayed once (``display_id=True``) and
    updated in place from the tap's loop thread, at most every ``interval``
    seconds, so the cell returns at once and the table keeps changing under
    it.  Elsewhere it prints one line per new frame or event.  It ends
    after ``seconds`` (None: when stopped), at ``stop()``, or when the tap
    stops; ``wait()`` blocks until then.
    """

    def __init__(self, tap: "Tap", seconds: float | None, filters: dict[str, Any], rows: int,
                 interval: float, notebook: bool | None = None) -> None:
        self.tap, self.seconds, self.filters, self.rows = tap, seconds, filters, rows
        self.interval = max(0.2, interval)
        self.notebook = in_notebook() if notebook is None else notebook
        self._stopped = threading.Event()
        self._done = threading.Event()
        self._handle = None
        self._shown = (0, 0)          # last frame number and last event number already printed/shown
        if self.notebook:
            from IPython.display import display

            self._handle = display(self._table(), display_id=True)
        else:
            self._shown = (tap._counter_value("frame"), tap._counter_value("event"))
        tap._submit(self._run())

    def _table(self) -> FrameTable:
        table = self.tap.table(last=self.rows, **self.filters)
        table.caption = f"live · {self.tap._status()}"
        return table

    async def _run(self) -> None:
        start = time.monotonic()
        try:
            while not self._stopped.is_set() and self.tap.running:
                left = None if self.seconds is None else self.seconds - (time.monotonic() - start)
                if left is not None and left <= 0:
                    break
                await asyncio.sleep(self.interval if left is None else min(self.interval, left))
                self._refresh()
        finally:
            self._refresh()
            self._done.set()

    def _refresh(self) -> None:
        try:
            if self.notebook:
                seen = (self.tap._counter_value("frame"), self.tap._counter_value("event"))
                if seen != self._shown:
                    self._shown = seen
                    self._handle.update(self._table())
                return
            last_frame, last_event = self._shown
            new = [f for f in self.tap.frames(**self.filters) if f.n > last_frame]
            events = [e for e in self.tap.events() if e.n > last_event]
            self._shown = (max([last_frame] + [f.n for f in new]), max([last_event] + [e.n for e in events]))
            for record in sorted([*new, *events], key=lambda r: r.t):
                print(record.line(), flush=True)
        except Exception:                 # a view must never take the tap down
            log.exception("live view update failed")

    def stop(self) -> None:
        """Stop updating (within ``interval`` seconds)."""
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the view has ended; True if it did within ``timeout``."""
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def __repr__(self) -> str:
        return f"<LiveView {'ended' if self.done else 'running'}>"


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
