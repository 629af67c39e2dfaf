"""Lesson 03's tools: frames as tables, masking byte by byte, a browser's frames caught live, and exercises.

Everything here builds on the pure code of :mod:`chat_lesson.frames` and
:mod:`chat_lesson.deflate`; the figures are in :mod:`chat_lesson.plots`.

- :data:`RFC_EXAMPLES`: the frames of RFC 6455 §5.7, as bytes.
- :func:`field_table`, :func:`frame_summary`, :func:`hexdump`: one frame, readable.
- :func:`mask_table`: XOR with the 4-byte key, one row per byte.
- :func:`length_table`, :func:`overhead_data`: the three length forms and what a header costs.
- :func:`websockets_parse`, :func:`websockets_serialize`: the same bytes through the ``websockets`` library.
- :func:`browser_frames`, :func:`compression_table` (from :mod:`chat_lesson.lessons.capture`): a browser's
  chat message caught live through a tap, with headless Chromium or a ``ChatClient`` standing in.
- The exercises ``03.mystery_frames``, ``03.masked_ping`` and ``03.fix_decoder``.
"""

from __future__ import annotations

import os
import random
from typing import Any
from collections.abc import Iterable

from ..protocol import frames
from ..protocol.frames import CloseCode, Frame, FrameError, Opcode, decode_close, decode_frame, describe, encode_frame
from .capture import Capture, browser_frames, compression_table
from .display import Table, hexdump, show_payload
from .exercises import Wrong, exercise, expect

# -- RFC 6455 §5.7 --------------------------------------------------------------------------

RFC_KEY = bytes.fromhex("37fa213d")
"""The masking key of every masked example in RFC 6455 §5.7."""

BIN256 = bytes(range(256))
BIN64K = bytes(range(256)) * 256

RFC_EXAMPLES: dict[str, bytes] = {
    "single-frame unmasked text": bytes.fromhex("81 05 48 65 6c 6c 6f"),
    "single-frame masked text": bytes.fromhex("81 85 37 fa 21 3d 7f 9f 4d 51 58"),
    "fragmented text, first frame": bytes.fromhex("01 03 48 65 6c"),
    "fragmented text, last frame": bytes.fromhex("80 02 6c 6f"),
    "unmasked ping": bytes.fromhex("89 05 48 65 6c 6c 6f"),
    "masked pong": bytes.fromhex("8a 85 37 fa 21 3d 7f 9f 4d 51 58"),
    "256 bytes binary, unmasked": bytes.fromhex("82 7e 01 00") + BIN256,
    "64 KiB binary, unmasked": bytes.fromhex("82 7f 00 00 00 00 00 01 00 00") + BIN64K,
}
"""RFC 6455 §5.7, byte for byte.  The RFC leaves the binary data unspecified; here it is 0, 1, 2 ... 255 repeated."""


def field_table(raw: bytes) -> Table:
    """Every header field of the frame at the start of ``raw``: bits, value, meaning (``frames.describe``)."""
    rows = []
    for f in describe(raw):
        bits = f.bits if f.width <= 16 else " ".join(f.bits[i:i + 8] for i in range(0, f.width, 8))
        value = f"0x{f.value:X}" if f.name == "opcode" else (
            f.value.to_bytes(4, "big").hex(" ") if f.name == "masking key" else f.value)
        rows.append({"field": f.name, "bits": f"{f.start}-{f.start + f.width - 1}" if f.width > 1 else str(f.start),
                     "on the wire": bits, "value": value, "meaning": f.meaning})
    return Table(rows)


def frame_summary(named: dict[str, bytes]) -> Table:
    """One row per frame: its first bytes, then what ``frames.decode_frame`` reads in them."""
    rows = []
    for name, raw in named.items():
        frame, used = decode_frame(raw)
        rows.append({"frame": name, "bytes": hexdump(raw, 12), "FIN": int(frame.fin), "opcode": frame.opcode.name,
                     "MASK": int(frame.mask_key is not None),
                     "key": frame.mask_key.hex(" ") if frame.mask_key else "",
                     "length": len(frame.payload), "header": used - len(frame.payload),
                     "payload (unmasked)": show_payload(frame.payload, frame.opcode, 24)})
    return Table(rows)


def websockets_parse(raw: bytes, mask: bool) -> Any:
    """Parse ``raw`` with the websockets library's own frame parser (``mask=True``: a server reading a client).

    Returns a ``websockets.frames.Frame``; its ``data`` is already unmasked.
    """
    from websockets.frames import Frame as WsFrame
    from websockets.streams import StreamReader

    reader = StreamReader()
    reader.feed_data(bytes(raw))
    reader.feed_eof()
    parser = WsFrame.parse(reader.read_exact, mask=mask)
    try:
        next(parser)
    except StopIteration as done:
        return done.value
    raise ValueError("websockets wanted more bytes: the frame is incomplete")


def websockets_serialize(opcode: Opcode, payload: bytes, fin: bool = True) -> bytes:
    """The bytes the websockets library writes for an unmasked frame (what a server sends)."""
    from websockets.frames import Frame as WsFrame
    from websockets.frames import Opcode as WsOpcode

    return WsFrame(WsOpcode(int(opcode)), bytes(payload), fin=fin).serialize(mask=False, extensions=[])


# -- Masking --------------------------------------------------------------------------------


def mask_table(payload: bytes | str, key: bytes) -> Table:
    """Masking byte by byte (RFC 6455 §5.3): byte i XOR key[i % 4], in bits and in hex."""
    data = payload.encode() if isinstance(payload, str) else bytes(payload)
    rows = []
    for i, b in enumerate(data):
        k = key[i % 4]
        m = b ^ k
        rows.append({"i": i, "char": chr(b) if 32 <= b < 127 else "", "byte": f"{b:08b}", "key byte": f"{k:08b}",
                     "i % 4": i % 4, "XOR = on the wire": f"{m:08b}", "hex": f"{b:02x} ^ {k:02x} = {m:02x}"})
    return Table(rows)


# -- Lengths and overhead ----------------------------------------------------------------------


def length_table(sizes: Iterable[int] = (0, 125, 126, 65535, 65536), masked: bool = False) -> Table:
    """The header ``encode_frame`` writes for payloads of each size: the three length forms and their edges."""
    rows = []
    key = RFC_KEY if masked else None
    for n in sizes:
        wire = encode_frame(Frame(True, Opcode.BINARY, bytes(n)), mask_key=key)
        header = wire[: len(wire) - n]
        seven = header[1] & 0x7F
        rows.append({"payload bytes": n, "7-bit field": seven, "form": frames.length_form(n),
                     "extended length": hexdump(header[2:2 + {126: 2, 127: 8}.get(seven, 0)]) or "-",
                     "header bytes": len(header), "header on the wire": header.hex(" ")})
    return Table(rows)


def overhead_data(sizes: Iterable[int]) -> tuple[list[int], list[int], list[int]]:
    """Encode a real frame of each size, unmasked and masked; return (sizes, server headers, client headers).

    The header bytes are measured: the length of the encoded frame minus its payload.
    """
    sizes = sorted(set(int(s) for s in sizes))
    server, client = [], []
    for n in sizes:
        payload = bytes(n)
        server.append(len(encode_frame(Frame(True, Opcode.BINARY, payload))) - n)
        client.append(len(encode_frame(Frame(True, Opcode.BINARY, payload), mask_key=os.urandom(4))) - n)
    return sizes, server, client


# -- Fragments and close codes -------------------------------------------------------------------


def assemble(wire_frames: Iterable[bytes], inflater: Any = None) -> Table:
    """Feed frames (as bytes) one by one to a ``MessageAssembler``; one row per frame: what came out.

    A frame that ``decode_frame`` itself refuses (a fragmented ping, say) is
    reported in its row, like an assembler error; a receiver would fail
    the connection with the close code shown.
    """
    assembler = frames.MessageAssembler(inflater)
    rows = []
    for raw in wire_frames:
        row = {"frame": hexdump(raw, 10), "FIN": int(bool(raw[0] & 0x80)), "opcode": f"0x{raw[0] & 0x0F:X}"}
        try:
            frame, _ = decode_frame(raw)
            row.update({"opcode": frame.opcode.name, "payload": show_payload(frame.payload, frame.opcode, 16)})
            out = assembler.feed(frame)
            result = ", ".join(
                f"message {o.data!r} in {o.fragments} frame(s)" if isinstance(o, frames.Message)
                else f"{o.opcode.name} frame, handled at once: {show_payload(o.payload, o.opcode)}" for o in out
            ) or "nothing yet: the message is still in pieces"
        except FrameError as error:
            result = f"FrameError, close {int(error.code)}: {error}"
        row.update({"assembler gives": result, "in progress": assembler.in_progress})
        rows.append(row)
    return Table(rows, ["frame", "FIN", "opcode", "payload", "assembler gives", "in progress"])


CLOSE_MEANINGS = {
    1000: "normal closure: the purpose of the connection is fulfilled",
    1001: "going away: a server shutting down, a browser leaving the page",
    1002: "protocol error: the peer broke a rule of RFC 6455",
    1003: "unsupported data: e.g. binary to an endpoint that only takes text",
    1005: "no status received: the close frame had no code (never sent)",
    1006: "abnormal closure: the connection ended without a close frame (never sent)",
    1007: "invalid data: e.g. a text message that is not UTF-8",
    1008: "policy violation: e.g. our server closing a client that stopped reading",
    1009: "message too big",
    1010: "mandatory extension: the client needed an extension the server did not agree to",
    1011: "internal error: the server met a condition it could not handle (websockets: keepalive ping timeout)",
    1012: "service restart",
    1013: "try again later",
    1014: "bad gateway",
    1015: "TLS handshake failed (never sent)",
}


def close_code_table() -> Table:
    """Every close code of RFC 6455 §7.4.1 (and the IANA registry): may it be sent, and what it means."""
    rows = []
    for code in CloseCode:
        try:
            frames.check_close_code(code)
            sendable = "yes"
        except FrameError:
            sendable = "NO: local only"
        rows.append({"code": int(code), "name": code.name, "in a close frame?": sendable,
                     "meaning": CLOSE_MEANINGS.get(int(code), "")})
    return Table(rows)


# -- The browser's frames, live --------------------------------------------------------------------


def takeover_table(texts: Iterable[str], window_bits: int = 15) -> Table:
    """Each text compressed as permessage-deflate would: alone, and remembering the texts before it.

    "alone" is a fresh compressor per message (``no_context_takeover``);
    "with context takeover" keeps one compressor for the whole sequence, so
    a text that repeats earlier ones costs a few bytes.
    """
    from ..protocol.deflate import Deflater

    alone, kept = Deflater(no_context_takeover=True, window_bits=window_bits), Deflater(window_bits=window_bits)
    rows = []
    for i, text in enumerate(texts, 1):
        data = text.encode()
        rows.append({"#": i, "text": show_payload(data, Opcode.TEXT, 48), "bytes": len(data),
                     "compressed alone": len(alone.compress(data)),
                     "with context takeover": len(kept.compress(data))})
    return Table(rows)


# =============================================================================
# Exercise 1: three mystery frames
# =============================================================================

MYSTERY_FRAMES: dict[str, bytes] = {
    "A": bytes.fromhex("81 83 11 22 33 44 79 4b 12"),
    "B": bytes.fromhex("02 04 de ad be ef"),
    "C": bytes.fromhex("88 05 03 e9 62 79 65"),
}
"""Three frames to decode by hand: what kind, final or not, masked or not, and what they carry."""

MYSTERY_KEYS = ["opcode", "fin", "masked", "payload"]


def _opcode_of(value: Any) -> Opcode | None:
    if isinstance(value, Opcode):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return Opcode(value)
        except ValueError:
            return None
    if isinstance(value, str):
        name = value.strip().upper().replace(" FRAME", "")
        name = {"CONTINUATION": "CONT", "CONNECTION CLOSE": "CLOSE", "BIN": "BINARY"}.get(name, name)
        if name.startswith("0X"):
            try:
                return Opcode(int(name, 16))
            except ValueError:
                return None
        return Opcode.__members__.get(name)
    return None


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "0", "1"):
        return value.strip().lower() in ("true", "yes", "1")
    return None


def _payload_matches(given: Any, frame: Frame) -> bool:
    payload = bytes(frame.payload)
    if isinstance(given, (bytes, bytearray)):
        return bytes(given) == payload
    if isinstance(given, str):
        if frame.opcode == Opcode.CLOSE:
            return False
        if given.replace(" ", "").lower() == payload.hex():
            return True
        try:
            return given == payload.decode("utf-8")
        except UnicodeDecodeError:
            return False
    if isinstance(given, (tuple, list)) and frame.opcode == Opcode.CLOSE and len(given) == 2:
        code, reason = decode_close(payload)
        return given[0] == int(code) and given[1] == reason
    return False


@exercise("03.mystery_frames", hint="Byte 0: FIN is its top bit, the opcode its low 4 bits. Byte 1: MASK is its top "
          "bit, the length its low 7. A masked frame then has 4 bytes of key; XOR payload byte i with key[i % 4]. "
          "A close payload is a 2-byte code (big-endian) and a UTF-8 reason.")
def _mystery_frames(answer: Any) -> str:
    """Decode three frames by hand: opcode, FIN, MASK and the (unmasked) payload of each."""
    expect(isinstance(answer, dict) and set(answer) == set(MYSTERY_FRAMES),
           "answer with a dict for each frame: {'A': {...}, 'B': {...}, 'C': {...}}")
    wrong = []
    for name, raw in MYSTERY_FRAMES.items():
        given = answer[name]
        expect(isinstance(given, dict), f"{name}: give a dict with keys {MYSTERY_KEYS}")
        missing = [k for k in MYSTERY_KEYS if given.get(k, ...) is ...]
        expect(not missing, f"{name}: still to answer: {', '.join(missing)}")
        frame, _ = decode_frame(raw)
        opcode = _opcode_of(given["opcode"])
        if opcode is None:
            wrong.append(f"{name}: opcode {given['opcode']!r} is not one I know: use a name like 'text' or a number")
        elif opcode != frame.opcode:
            wrong.append(f"{name}: opcode is not {opcode.name} (look at the low 4 bits of byte 0: {raw[0]:08b})")
        if _flag(given["fin"]) != frame.fin:
            wrong.append(f"{name}: FIN is not {given['fin']!r} (the top bit of byte 0)")
        if _flag(given["masked"]) != (frame.mask_key is not None):
            wrong.append(f"{name}: MASK is not {given['masked']!r} (the top bit of byte 1: {raw[1]:08b})")
        if not _payload_matches(given["payload"], frame):
            tip = ("unmask it first: XOR with the key" if frame.mask_key else
                   "give (code, reason) or the raw bytes" if frame.opcode == Opcode.CLOSE else
                   "bytes like b'\\x..' or a hex string for binary data")
            wrong.append(f"{name}: the payload is not {given['payload']!r} ({tip})")
    expect(not wrong, "\n".join(wrong))
    lines = []
    for name, raw in MYSTERY_FRAMES.items():
        frame, _ = decode_frame(raw)
        lines.append(f"{name}: {frame.opcode.name}, FIN={int(frame.fin)}, MASK={int(frame.mask_key is not None)}: "
                     f"{show_payload(frame.payload, frame.opcode)}")
    return ("all three right:\n" + "\n".join(lines) +
            "\nA came from a client (masked); B opens a fragmented binary message (FIN=0); C is a server's close.")


# =============================================================================
# Exercise 2: a masked ping, by hand
# =============================================================================


def _ping_mistake(got: bytes, payload: bytes, key: bytes) -> str:
    """Name the likely slip in a wrong masked ping."""
    right = encode_frame(Frame(True, Opcode.PING, payload), mask_key=key)
    if not isinstance(got, (bytes, bytearray)):
        return f"return bytes, not {type(got).__name__}"
    got = bytes(got)
    if len(got) < 2:
        return f"{len(got)} byte(s) is too short for any frame"
    if got[0] & 0x0F != 0x9:
        return f"byte 0 is {got[0]:08b}: the opcode (low 4 bits) of a ping is 1001 (0x9)"
    if not got[0] & 0x80:
        return f"byte 0 is {got[0]:08b}: FIN must be 1, control frames are never fragmented (§5.5)"
    if got[0] & 0x70:
        return f"byte 0 is {got[0]:08b}: RSV1-3 must be 0"
    if not got[1] & 0x80:
        return f"byte 1 is {got[1]:08b}: MASK must be 1, a client masks every frame (§5.1)"
    if got[1] & 0x7F != len(payload):
        return f"byte 1 says length {got[1] & 0x7F}, but the payload has {len(payload)} bytes"
    if got[2:6] != key:
        return "bytes 2-5 must be the masking key, as given"
    if got[6:] == payload and payload:
        return "the payload is not masked: XOR byte i with key[i % 4]"
    if len(got) != len(right):
        return f"{len(got)} bytes; a masked ping with {len(payload)} payload bytes takes {len(right)}"
    if got[6:] == bytes(b ^ key[0] for b in payload):
        return "every byte was XORed with key[0]: use key[i % 4]"
    return "the masked payload is wrong: byte i of the payload XOR key[i % 4]"


@exercise("03.masked_ping", hint="b0 = FIN<<7 | opcode (0x9); b1 = 1<<7 | length (MASK=1, length ≤ 125); then the "
          "4-byte key; then each payload byte XOR key[i % 4]. A ping of more than 125 bytes is not allowed (§5.5).")
def _masked_ping(answer: Any) -> str:
    """Write masked_ping(payload, key) -> bytes: a client's ping frame, built by hand."""
    f = answer
    expect(callable(f), "pass your function itself: check('03.masked_ping', masked_ping)")
    rng = random.Random(6455)
    cases = [(b"", bytes(4)), (b"Hello", RFC_KEY), (b"are you there?", bytes.fromhex("01020304"))]
    cases += [(bytes(rng.randrange(256) for _ in range(n)), bytes(rng.randrange(256) for _ in range(4)))
              for n in (1, 3, 4, 7, 64, 125)]
    for payload, key in cases:
        got = f(payload, key)
        right = encode_frame(Frame(True, Opcode.PING, payload), mask_key=key)
        expect(got == right, f"masked_ping({payload[:12]!r}{'…' if len(payload) > 12 else ''}, {key.hex()}) "
               f"is wrong: {_ping_mistake(got, payload, key)}")
    try:
        too_long = f(b"x" * 126, b"abcd")
    except Exception:  # noqa: BLE001 - any refusal is right
        too_long = None
    expect(too_long is None, "masked_ping(126 bytes, key) returned a frame: control frames carry at most 125 "
           "bytes of payload (RFC 6455 §5.5); raise an error (e.g. ValueError) instead")
    return "right: the same bytes as frames.encode_frame, for every payload and key tried (and 126 bytes refused)"


# =============================================================================
# Exercise 3: find the bug in a decoder
# =============================================================================


def buggy_decode(data: bytes) -> tuple[bool, int, bytes]:
    """Decode one frame: (fin, opcode, unmasked payload).  It has one bug."""
    fin = bool(data[0] & 0x80)
    opcode = data[0] & 0x0F
    masked = bool(data[1] & 0x80)
    length = data[1] & 0x7F
    pos = 2
    if length == 126:
        length = int.from_bytes(data[2:10], "big")
        pos = 10
    elif length == 127:
        length = int.from_bytes(data[2:4], "big")
        pos = 4
    key = b""
    if masked:
        key = data[pos:pos + 4]
        pos += 4
    payload = bytes(data[pos:pos + length])
    if masked:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return fin, opcode, payload


def decoder_cases(seed: int = 6455) -> list[tuple[str, bytes]]:
    """Frames that a decoder must get right: §5.7's examples and random ones of every length form, masked or not."""
    rng = random.Random(seed)
    cases = [(name, raw) for name, raw in RFC_EXAMPLES.items()]
    for n in (0, 1, 125, 126, 127, 200, 1000, 65535, 65536, 70000):
        for masked in (False, True):
            payload = bytes(rng.randrange(256) for _ in range(min(n, 64))) * (n // 64 + 1)
            payload = payload[:n]
            key = bytes(rng.randrange(256) for _ in range(4)) if masked else None
            raw = encode_frame(Frame(True, Opcode.BINARY, payload), mask_key=key)
            cases.append((f"{n} bytes binary, {'masked' if masked else 'unmasked'}", raw))
    cases.append(("ping, masked", encode_frame(Frame(True, Opcode.PING, b"ping"), mask_key=b"\x00\xff\x10\x01")))
    cases.append(("first of three fragments", encode_frame(Frame(False, Opcode.TEXT, b"frag"))))
    return cases


def _expected(raw: bytes) -> tuple[bool, int, bytes]:
    frame, _ = decode_frame(raw)
    return frame.fin, int(frame.opcode), bytes(frame.payload)


@exercise("03.fix_decoder", hint="Compare the two extended length forms with RFC 6455 §5.2: payload len 126 means "
          "the length is in the next 2 bytes (16 bits), 127 means the next 8 bytes (64 bits). Which bytes does "
          "buggy_decode read in each case?")
def _fix_decoder(answer: Any) -> str:
    """Fix buggy_decode: a decoder that returns (fin, opcode, unmasked payload) for every frame."""
    f = answer
    expect(callable(f), "pass your fixed function itself: check('03.fix_decoder', fixed_decode)")
    expect(f is not buggy_decode, "that is the buggy decoder itself: copy it, fix it, and pass your copy")
    for name, raw in decoder_cases():
        got = f(raw)
        expect(isinstance(got, (tuple, list)) and len(got) == 3,
               f"return (fin, opcode, payload), not {type(got).__name__}")
        fin, opcode, payload = got
        want = _expected(raw)
        if (bool(fin), int(opcode), bytes(payload)) != want:
            length = len(want[2])
            why = (f"got {len(bytes(payload))} payload bytes instead of {length}" if len(bytes(payload)) != length
                   else "wrong payload bytes" if bytes(payload) != want[2] else "wrong FIN or opcode")
            raise Wrong(f"wrong on '{name}' ({frames.length_form(length)} length form): {why}")
    return ("fixed: 126 → a 16-bit length in bytes 2-3, 127 → a 64-bit length in bytes 2-9. The bug slept "
            "through every frame of 125 bytes or less, which is why tests need the edges")


__all__ = ["MYSTERY_FRAMES", "RFC_EXAMPLES", "RFC_KEY", "Capture", "assemble", "browser_frames", "buggy_decode",
           "close_code_table", "compression_table", "decoder_cases", "field_table", "frame_summary", "hexdump",
           "length_table", "mask_table", "overhead_data", "show_payload", "takeover_table", "websockets_parse",
           "websockets_serialize"]
