"""WebSocket frames, bit by bit (RFC 6455 §5).

After the handshake, everything on the wire is a frame:

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-------+-+-------------+-------------------------------+
    |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
    |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
    |N|V|V|V|       |S|             |   (if payload len==126/127)   |
    | |1|2|3|       |K|             |                               |
    +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
    |     Extended payload length continued, if payload len == 127  |
    + - - - - - - - - - - - - - - - +-------------------------------+
    |                               |Masking-key, if MASK set to 1  |
    +-------------------------------+-------------------------------+
    | Masking-key (continued)       |          Payload Data         |
    +-------------------------------- - - - - - - - - - - - - - - - +

This module turns frames into bytes and back, checks every rule of §5, and
reassembles fragmented messages. Bytes in, values out: no sockets here.
"""

import struct
from dataclasses import dataclass
from enum import IntEnum


class Opcode(IntEnum):
    """What a frame carries: the low 4 bits of its first byte (RFC 6455 §5.2)."""

    CONT = 0x0  # continuation of a fragmented message
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA

    @property
    def is_control(self) -> bool:
        """Control frames (close, ping, pong) have the opcode's top bit set (§5.5)."""
        return self >= 0x8


class CloseCode(IntEnum):
    """Status codes carried by a close frame (RFC 6455 §7.4.1, IANA registry)."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005  # local only: the close frame had no code
    ABNORMAL_CLOSURE = 1006  # local only: no close frame at all
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # local only: TLS failed


class FrameError(ValueError):
    """Bytes or frames that break a rule of RFC 6455.

    `code` is the close code to send when failing the connection because of
    it: 1002 (protocol error) unless stated otherwise, 1007 for invalid UTF-8,
    1009 for a message over the size limit (§7.4.1).
    """

    def __init__(self, message: str, code: int = CloseCode.PROTOCOL_ERROR):
        super().__init__(message)
        self.code = CloseCode(code)


class IncompleteFrame(Exception):
    """More bytes are needed: at least `needed` more. Not an error; read and retry."""

    def __init__(self, needed: int):
        super().__init__(f"incomplete frame: need at least {needed} more byte(s)")
        self.needed = needed


@dataclass(frozen=True)
class Frame:
    """One frame. `payload` is always the unmasked application data.

    `mask_key` is the 4-byte masking key as it was (or will be) on the wire,
    or None for an unmasked frame. Clients mask every frame they send, servers
    never mask (RFC 6455 §5.1, §5.3).
    """

    fin: bool
    opcode: Opcode
    payload: bytes
    rsv1: bool = False
    rsv2: bool = False
    rsv3: bool = False
    mask_key: bytes | None = None


# -- Masking -----------------------------------------------------------------


_XOR_TABLES = [bytes(b ^ k for b in range(256)) for k in range(256)]  # _XOR_TABLES[k][b] == b ^ k


def apply_mask(data: bytes, key: bytes) -> bytes:
    """XOR `data` with the 4-byte `key` repeated: byte i ^= key[i % 4] (§5.3).

    Masking and unmasking are the same operation. A Python loop over the
    bytes would take milliseconds for 64 KiB, so we let C do the work: bytes
    0, 4, 8, ... all meet key[0], bytes 1, 5, 9, ... meet key[1], and so on.
    The slice out[i::4] picks one such column, and translate() maps every
    byte of it through a 256-entry table of "b ^ key[i]" in a single call.
    """
    if len(key) != 4:
        raise ValueError(f"a masking key is 4 bytes, got {len(key)}")
    out = bytearray(data)
    for i in range(4):
        out[i::4] = out[i::4].translate(_XOR_TABLES[key[i]])
    return bytes(out)


# -- Lengths -----------------------------------------------------------------


def length_form(n: int) -> str:
    """Which length encoding a payload of n bytes uses (§5.2): the shortest that fits.

    0-125 fit in the 7-bit "payload len" field; 126-65535 use 126 plus a
    16-bit length; anything larger uses 127 plus a 64-bit length.
    """
    return "7-bit" if n < 126 else "16-bit" if n < 65536 else "64-bit"


def header_size(payload_len: int, masked: bool) -> int:
    """Bytes of header in front of the payload: 2, + 2 or 8 for the length, + 4 if masked."""
    return 2 + {"7-bit": 0, "16-bit": 2, "64-bit": 8}[length_form(payload_len)] + 4 * masked


# -- Encoding and decoding ---------------------------------------------------


def _check_control(fin: bool, opcode: int, length: int) -> None:
    """Control frames must be short and whole (RFC 6455 §5.5)."""
    if opcode >= 0x8 and not fin:
        raise FrameError(f"control frame ({Opcode(opcode).name}) must not be fragmented: FIN=0 (RFC 6455 §5.5)")
    if opcode >= 0x8 and length > 125:
        raise FrameError(f"control frame ({Opcode(opcode).name}) payload exceeds 125 bytes (RFC 6455 §5.5)")


def _opcode(value: int) -> Opcode:
    try:
        return Opcode(value)
    except ValueError:
        kind = "non-control" if value < 0x8 else "control"
        raise FrameError(f"reserved {kind} opcode 0x{value:X} (RFC 6455 §5.2)") from None


def encode_frame(frame: Frame, mask_key: bytes | None = None, *, strict: bool = True) -> bytes:
    """Serialize `frame`, masking the payload with `mask_key` (or frame.mask_key).

    The length uses the minimal form, as RFC 6455 §5.2 requires. With
    strict=True (the default) the frame must pass the checks decode_frame
    applies: known opcode, no RSV2/RSV3, control frames short and unfragmented.
    Lessons pass strict=False to build broken frames on purpose.
    """
    key = frame.mask_key if mask_key is None else mask_key
    n = len(frame.payload)
    if strict:
        _opcode(frame.opcode)
        _check_control(frame.fin, frame.opcode, n)
        if frame.rsv2 or frame.rsv3:
            raise FrameError("RSV2 and RSV3 must be 0: no negotiated extension defines them (RFC 6455 §5.2)")
    first = frame.fin << 7 | frame.rsv1 << 6 | frame.rsv2 << 5 | frame.rsv3 << 4 | frame.opcode
    mask_bit = 0x80 if key is not None else 0
    if n < 126:
        head = struct.pack("!BB", first, mask_bit | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, n)
    if key is None:
        return head + frame.payload
    return head + bytes(key) + apply_mask(frame.payload, key)


def _need(data: memoryview, end: int) -> None:
    if len(data) < end:
        raise IncompleteFrame(end - len(data))


def decode_frame(data: bytes, *, masked: bool | None = None, max_size: int | None = None) -> tuple[Frame, int]:
    """Parse one frame from the front of `data`; return (frame, bytes used).

    Bytes after the frame are left alone: the next frame starts at
    data[used:]. Raises IncompleteFrame if `data` stops before the frame
    ends, and FrameError for a frame that breaks RFC 6455 §5:
    reserved opcode, RSV2/RSV3 set, control frame fragmented or over 125
    bytes, a length not in its shortest form, a 64-bit length with its top
    bit set. RSV1 is allowed: permessage-deflate uses it (RFC 7692 §6).

    `masked=True` demands a masked frame (a server reading a client),
    False an unmasked one (a client reading a server), None accepts both
    (§5.1). `max_size` bounds the payload (FrameError with code 1009).
    """
    view = memoryview(data)
    try:
        return _decode(view, masked, max_size)
    finally:
        # A traceback that outlives this call must not pin `data`: a bytearray
        # with a live view of it cannot grow or shrink (BufferError).
        view.release()


def _decode(data: memoryview, masked: bool | None, max_size: int | None) -> tuple[Frame, int]:
    _need(data, 2)
    first, second = data[0], data[1]
    fin, rsv1, rsv2, rsv3 = (bool(first & bit) for bit in (0x80, 0x40, 0x20, 0x10))
    opcode = _opcode(first & 0x0F)
    if rsv2 or rsv3:
        raise FrameError("RSV2 and RSV3 must be 0: no negotiated extension defines them (RFC 6455 §5.2)")
    _check_control(fin, opcode, second & 0x7F)
    is_masked, length, pos = bool(second & 0x80), second & 0x7F, 2
    if masked is not None and is_masked != masked:
        who = "a client must mask every frame" if masked else "a server must not mask frames"
        raise FrameError(f"MASK bit is {int(is_masked)}: {who} (RFC 6455 §5.1)")
    if length == 126:
        _need(data, 4)
        length, pos = int.from_bytes(data[2:4], "big"), 4
        if length < 126:
            raise FrameError(f"length {length} sent in the 16-bit form: use the minimal 7-bit form (RFC 6455 §5.2)")
    elif length == 127:
        _need(data, 10)
        length, pos = int.from_bytes(data[2:10], "big"), 10
        if length >> 63:
            raise FrameError("64-bit payload length has its most significant bit set (RFC 6455 §5.2)")
        if length < 65536:
            raise FrameError(f"length {length} sent in the 64-bit form: use the minimal form (RFC 6455 §5.2)")
    if max_size is not None and length > max_size:
        raise FrameError(f"frame payload of {length} bytes exceeds max_size {max_size}", CloseCode.MESSAGE_TOO_BIG)
    key = None
    if is_masked:
        _need(data, pos + 4)
        key, pos = bytes(data[pos : pos + 4]), pos + 4
    _need(data, pos + length)
    payload = data[pos : pos + length]
    payload = apply_mask(payload, key) if key is not None else bytes(payload)
    return Frame(fin, opcode, payload, rsv1, rsv2, rsv3, key), pos + length


# -- Close frames ------------------------------------------------------------


_KNOWN_CODES = set(CloseCode)


def check_close_code(code: int) -> None:
    """Raise FrameError unless `code` may appear in a close frame (RFC 6455 §7.4).

    Allowed: 1000-1003 and 1007-1014 (defined), 3000-3999 (registered with
    IANA), 4000-4999 (private use). 1004 is reserved; 1005, 1006 and 1015
    only report local events and must never be sent; 0-999, 1016-2999 and
    5000 and up are not valid codes.
    """
    if code in (1004, 1005, 1006, 1015):
        raise FrameError(f"close code {code} is reserved and must never be sent in a close frame (RFC 6455 §7.4.1)")
    if not (1000 <= code <= 1014 or 3000 <= code <= 4999):
        raise FrameError(f"close code {code} is outside the valid ranges (RFC 6455 §7.4.2)")


def encode_close(code: int, reason: str = "") -> bytes:
    """Build a close frame payload: 2-byte big-endian code, then UTF-8 reason (§5.5.1).

    The whole payload must fit a control frame: 125 bytes, so the reason
    gets at most 123 bytes of UTF-8.
    """
    check_close_code(code)
    payload = struct.pack("!H", code) + reason.encode("utf-8")
    if len(payload) > 125:
        raise FrameError(f"close reason is {len(payload) - 2} bytes of UTF-8; at most 123 fit (RFC 6455 §5.5)")
    return payload


def decode_close(payload: bytes) -> tuple[int, str]:
    """Read (code, reason) from a close frame payload (RFC 6455 §5.5.1, §7.1.5).

    An empty payload is allowed and means "no status code": it reports
    1005 NO_STATUS_RCVD. A single byte is an error (a code takes two). The
    reason must be valid UTF-8 (FrameError with code 1007 otherwise).
    """
    if len(payload) == 0:
        return CloseCode.NO_STATUS_RCVD, ""
    if len(payload) == 1:
        raise FrameError("close payload of 1 byte: a status code takes 2 (RFC 6455 §5.5.1)")
    if len(payload) > 125:
        raise FrameError(f"close payload of {len(payload)} bytes exceeds 125 (RFC 6455 §5.5)")
    code = int.from_bytes(payload[:2], "big")
    check_close_code(code)
    try:
        reason = bytes(payload[2:]).decode("utf-8")
    except UnicodeDecodeError as error:
        raise FrameError(f"close reason is not valid UTF-8: {error.reason} (RFC 6455 §5.5.1)", 1007) from None
    return (CloseCode(code) if code in _KNOWN_CODES else code), reason


# -- Messages ----------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """A complete data message: str for TEXT, bytes for BINARY.

    `fragments` counts the frames it arrived in; `compressed` tells whether
    it was sent with permessage-deflate.
    """

    opcode: Opcode
    data: str | bytes
    fragments: int = 1
    compressed: bool = False


class MessageAssembler:
    """Glue fragments back into messages (RFC 6455 §5.4).

    Feed it every frame in arrival order. feed() returns a list holding
    whatever became ready: control frames at once (they may arrive between
    the fragments of a message), a Message when its final fragment arrives,
    or nothing while a message is still in pieces.

    Pass an `inflater` (chat_lesson.deflate.Inflater) when permessage-deflate
    was negotiated: messages whose first frame has RSV1 set get inflated.
    `max_size` bounds a message's size, compressed and inflated alike.
    """

    def __init__(self, inflater=None, max_size: int | None = None):
        self.inflater = inflater
        self.max_size = max_size
        self._first: Frame | None = None  # first frame of the message in progress
        self._parts: list[bytes] = []
        self._size = 0

    @property
    def in_progress(self) -> bool:
        """True between the first and the final fragment of a message."""
        return self._first is not None

    def feed(self, frame: Frame) -> list[Message | Frame]:
        """Take one frame; return the control frames and messages now complete."""
        if frame.rsv1 and self.inflater is None:
            raise FrameError("RSV1 set, but no extension that defines it was negotiated (RFC 6455 §5.2)")
        if frame.rsv1 and frame.opcode not in (Opcode.TEXT, Opcode.BINARY):
            raise FrameError(f"RSV1 set on a {frame.opcode.name} frame: only a message's first frame has it (RFC 7692 §6)")
        if frame.opcode.is_control:
            return [frame]
        if frame.opcode == Opcode.CONT and self._first is None:
            raise FrameError("continuation frame with no message in progress (RFC 6455 §5.4)")
        if frame.opcode != Opcode.CONT and self._first is not None:
            raise FrameError(f"{frame.opcode.name} frame inside a fragmented message; expected CONT (RFC 6455 §5.4)")
        if self._first is None:
            self._first = frame
        self._parts.append(frame.payload)
        self._size += len(frame.payload)
        if self.max_size is not None and self._size > self.max_size:
            raise FrameError(f"message exceeds max_size {self.max_size}", CloseCode.MESSAGE_TOO_BIG)
        if not frame.fin:
            return []
        first, parts, self._first, self._parts, self._size = self._first, self._parts, None, [], 0
        return [self._finish(first, b"".join(parts), len(parts))]

    def _finish(self, first: Frame, payload: bytes, fragments: int) -> Message:
        if first.rsv1:  # raises FrameError for corrupt or oversized data
            payload = self.inflater.decompress(payload, max_size=self.max_size)
        if first.opcode == Opcode.BINARY:
            return Message(Opcode.BINARY, payload, fragments, first.rsv1)
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as error:
            why = f"text message is not valid UTF-8: {error.reason} at byte {error.start} (RFC 6455 §8.1)"
            raise FrameError(why, CloseCode.INVALID_DATA) from None
        return Message(Opcode.TEXT, text, fragments, first.rsv1)


# -- Describing a header -----------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One header field of a frame, for tables and diagrams.

    `start` and `width` are in bits from the first bit of the frame; `bits`
    is the field as a string of 0s and 1s; `value` is its number.
    """

    name: str
    start: int
    width: int
    bits: str
    value: int
    meaning: str


_OPCODE_MEANINGS = {0: "continuation frame", 1: "text frame", 2: "binary frame",
                    8: "connection close", 9: "ping", 10: "pong"}


def describe(raw: bytes) -> list[Field]:
    """List the header fields of the frame at the start of `raw`, bit by bit.

    FIN, RSV1-3, opcode, MASK, payload len, then "extended payload length"
    (16 or 64 bits) and "masking key" when present. No rule is enforced,
    so broken frames can be described too. Raises IncompleteFrame if the
    header is cut short.
    """
    data = memoryview(raw)
    _need(data, 2)
    seven, masked = data[1] & 0x7F, bool(data[1] & 0x80)
    ext = {126: 16, 127: 64}.get(seven, 0)
    _need(data, 2 + ext // 8 + 4 * masked)
    bits = "".join(f"{byte:08b}" for byte in data[: 2 + ext // 8 + 4 * masked])
    fields, start = [], 0

    def add(name: str, width: int, meaning) -> None:
        nonlocal start
        value = int(bits[start : start + width], 2)
        fields.append(Field(name, start, width, bits[start : start + width], value, meaning(value)))
        start += width

    add("FIN", 1, lambda v: "final fragment" if v else "more fragments follow")
    add("RSV1", 1, lambda v: "set: compressed message (permessage-deflate)" if v else "reserved, not set")
    add("RSV2", 1, lambda v: "set, but no extension defines it: invalid" if v else "reserved, not set")
    add("RSV3", 1, lambda v: "set, but no extension defines it: invalid" if v else "reserved, not set")
    add("opcode", 4, lambda v: _OPCODE_MEANINGS.get(v, f"reserved opcode {v} (invalid)"))
    add("MASK", 1, lambda v: "payload is masked (client to server)" if v else "payload is not masked (server to client)")
    add("payload len", 7, lambda v: f"payload length {v} in the 7-bit form" if v < 126
        else f"{v}: the length follows in the next {ext} bits")
    if ext:
        add("extended payload length", ext, lambda v: f"payload length {v} in the {ext}-bit form")
    if masked:
        add("masking key", 32, lambda v: f"masking key {v.to_bytes(4, 'big').hex(' ')}: payload byte i is XORed with key byte i % 4")
    return fields
