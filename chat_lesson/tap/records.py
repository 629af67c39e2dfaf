"""What the tap records: plain, frozen values that a notebook can read, filter and print.

- :class:`ReadRecord`: one read from a socket, its exact bytes and time;
- :class:`HttpRecord`: one HTTP head (RFC 9112 §2-§5), parsed;
- :class:`FrameRecord`: one WebSocket frame (RFC 6455 §5.2): every header
  field, the masking key, the unmasked payload, the raw bytes, and on a
  message's last frame the whole message, inflated (RFC 7692);
- :class:`Event`: open, upgrade, eof, reset, close, fault, error;
- :class:`Counts`: one direction's bytes by kind (HTTP, header, mask,
  payload, other), adding up to the bytes read.

Each record has ``n`` (its number among its kind), ``t`` (seconds since the
tap started), ``conn`` and ``direction`` ("c2s": client to server, "s2c").
``line()`` prints one for a terminal; text that came off the wire goes
through :func:`printable` first, so a peer's ``"\\x1b[2J"`` shows as those
characters instead of clearing your screen.

Also here: :class:`Store`, the bounded list the Tap keeps records in, and
the parsing of the filters ``frames(direction=..., opcode=...)`` accepts.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any
from collections.abc import Callable

from ..protocol.frames import Opcode
from ..protocol.handshake import Head

__all__ = ["ARROWS", "DIRECTIONS", "PREVIEW", "Counts", "Event", "FrameRecord", "HttpRecord", "ReadRecord",
           "Record", "Store", "as_direction", "as_directions", "as_opcodes", "printable"]

DIRECTIONS = ("c2s", "s2c")
ARROWS = {"c2s": "→", "s2c": "←"}
PREVIEW = 60                 # characters of payload shown in tables


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on made visible, repr-style.

    Control characters (ESC, BEL, CR, LF, backspace ...), other unprintable
    ones (U+202E, which reverses the text after it) and the backslash itself
    become escapes like ``\\x1b``, ``\\n``, ``\\u202e``, ``\\\\``; the rest,
    accents and emoji included, stays as it is.  A close reason is whatever
    the peer put there (RFC 6455 §5.5.1): print it raw and ``"\\x1b[2J"``
    clears your screen.
    """
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c != "\\" else repr(c)[1:-1] for c in text)


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

    def line(self, width: int = PREVIEW) -> str:
        """One line for a terminal: time, connection, direction, start line, sizes (``width``: unused)."""
        body = "" if not self.body_length else (
            ", body until close" if self.body_length == math.inf else f", body {int(self.body_length)} B")
        return (f"{_ms(self.t)}  c{self.conn} {ARROWS[self.direction]} HTTP   {printable(self.start_line)}"
                f"  ({len(self.raw)} B head{body})")

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
        """The payload in ``width`` characters (0: all of it as text, hex cut at PREVIEW).

        Text as text, close frames as code and reason, the rest (binary,
        compressed) in hex; text always through :func:`printable`.
        """
        if self.opcode == Opcode.CLOSE and self.close_code is not None:
            return _shorten(printable(f"{self.close_code} {self.close_reason}".strip()), width)
        texty = self.opcode in (Opcode.PING, Opcode.PONG) and self.payload.isascii() and self.payload.isalnum()
        if (self.message_opcode == Opcode.TEXT and not self.compressed) or texty:
            return _shorten(printable(self.payload.decode("utf-8", "replace")), width)
        return _hex(self.payload, width or PREVIEW)

    def inflated_preview(self, width: int = PREVIEW) -> str:
        """The inflated message in ``width`` characters (0: whole), or "" if it was not compressed."""
        value = self.inflated
        if value is None:
            return ""
        return _shorten(printable(value), width) if isinstance(value, str) else _hex(value, width or PREVIEW)

    def fields(self) -> str:
        """Time, connection, direction, number and every header field, on one line."""
        key = f" key={self.key_hex}" if self.key else ""
        return (f"{_ms(self.t)}  c{self.conn} {self.arrow} #{self.n:<4} {self.opcode.name:<6} "
                f"FIN={int(self.fin)} RSV1={int(self.rsv1)} MASK={int(self.masked)}{key} "
                f"len={self.length} ({self.form}) hdr={self.header_bytes}")

    def line(self, width: int = PREVIEW) -> str:
        """One line for a terminal: :meth:`fields`, the payload and, if any, the inflated text."""
        line = f"{self.fields()}  {self.preview(width)}"
        if self.inflated is not None:
            line += f"  ⇒ {self.inflated_preview(width)}"
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

    def line(self, width: int = PREVIEW) -> str:
        """One line for a terminal (``width``: unused; details are short)."""
        who = f"c{self.conn}" if self.conn is not None else "tap"
        arrow = ARROWS.get(self.direction or "", "·")
        return f"{_ms(self.t)}  {who} {arrow} {self.kind.upper():<6} {printable(self.detail)}"

    def as_dict(self) -> dict[str, Any]:
        return {"t": self.t, "conn": self.conn, "dir": self.direction, "kind": self.kind, "detail": self.detail}


Record = ReadRecord | HttpRecord | FrameRecord | Event      # what a Recorder returns


@dataclasses.dataclass
class Counts:
    """Bytes of one direction of one connection, by what they were.

    ``http``: HTTP heads.  ``header``: frame headers, mask keys excluded.
    ``mask``: masking keys (4 bytes per client frame).  ``payload``: frame
    payloads and HTTP bodies.  ``other``: bytes that could not be decoded.
    ``pending``: read but not decoded *yet* (half a frame).  These always add
    up to ``total``, the bytes read.  ``forwarded`` is what the proxy wrote
    on (the recorder never touches it): equal to ``total`` unless a fault
    holds bytes back.
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

    def add(self, other: Counts) -> None:
        """Add ``other``'s bytes to these, field by field."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return {"http": self.http, "header": self.header, "mask": self.mask, "payload": self.payload,
                "other": self.other, "pending": self.pending, "total": self.total, "forwarded": self.forwarded}


def _ms(t: float) -> str:
    return f"{t * 1000:10.1f} ms"


def _shorten(text: str, width: int) -> str:
    return text if not width or len(text) <= width else text[: width - 1] + "…"


def _hex(data: bytes, width: int) -> str:
    shown = data[: max(1, (width + 1) // 3)]
    text = shown.hex(" ")
    return text + " …" if len(shown) < len(data) else text


# -- Keeping and finding records --------------------------------------------------------


class Store:
    """A bounded list of records: oldest out past ``max_records`` or ``max_bytes``.

    Not thread-safe by itself: the Tap holds its lock around every use.
    """

    def __init__(self, max_records: int, max_bytes: float, size: Callable[[Any], int]) -> None:
        self.max_records, self.max_bytes, self._size = max_records, max_bytes, size
        self.items: collections.deque = collections.deque()
        self._bytes = 0
        self.dropped = 0

    def add(self, item: Any) -> None:
        self.items.append(item)
        self._bytes += self._size(item)
        while self.items and (len(self.items) > self.max_records or self._bytes > self.max_bytes):
            self._bytes -= self._size(self.items.popleft())
            self.dropped += 1

    def forget(self, conn: int) -> None:
        """Remove the records of connection ``conn`` (not counted as dropped)."""
        self.items = collections.deque(r for r in self.items if r.conn != conn)
        self._bytes = sum(map(self._size, self.items))

    def clear(self) -> None:
        self.items.clear()
        self._bytes = 0


def as_direction(value: str | None) -> str | None:
    if value is None:
        return None
    found = {"c2s": "c2s", "s2c": "s2c", "→": "c2s", "←": "s2c"}.get(value)
    if found is None:
        raise ValueError(f"direction must be 'c2s' (→, client to server) or 's2c' (←), not {value!r}")
    return found


def as_directions(value: str) -> tuple[str, ...]:
    return DIRECTIONS if value == "both" else (as_direction(value),)


def as_opcodes(value: Any) -> set[Opcode] | None:
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
