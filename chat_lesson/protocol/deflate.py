"""permessage-deflate: compressing each message (RFC 7692).

Each direction of a connection has its own DEFLATE context. With "context
takeover" (the default) a context remembers earlier messages, so a repeated
word costs a few bits; with "no_context_takeover" it forgets after each
message, which costs ratio but saves memory. The first frame of a compressed
message has RSV1 set (RFC 7692 §6).
"""

import re
import zlib
from dataclasses import dataclass
from typing import NamedTuple

from .frames import CloseCode, FrameError
from .handshake import HandshakeError, parse_extensions

TAIL = b"\x00\x00\xff\xff"
"""An empty stored DEFLATE block: every Z_SYNC_FLUSH ends with it (RFC 7692 §7.2.1)."""

_BITS = re.compile(r"[89]|1[0-5]")  # RFC 7692 §7.1.2: 8 to 15, no leading zero
_PARAMS = {"server_no_context_takeover", "client_no_context_takeover",
           "server_max_window_bits", "client_max_window_bits"}


class Deflater:
    """Compresses the messages one side sends (RFC 7692 §7.2.1).

    compress() runs raw DEFLATE (no zlib header: wbits = -window_bits),
    flushes with Z_SYNC_FLUSH so the message ends on a byte boundary, then
    drops the 00 00 ff ff that the flush always ends with; the receiver puts
    it back. window_bits 8 is legal in the RFC, but zlib cannot compress with
    a window that small, so it is refused here.
    """

    def __init__(self, no_context_takeover: bool = False, window_bits: int = 15,
                 level: int = zlib.Z_DEFAULT_COMPRESSION):
        if not 9 <= window_bits <= 15:
            raise ValueError(f"window_bits must be 9..15 for compression (zlib refuses 8), not {window_bits}")
        self.no_context_takeover, self.window_bits, self.level = no_context_takeover, window_bits, level
        self._zlib = None

    def compress(self, data: bytes) -> bytes:
        """Compress one whole message; the result is the payload to send with RSV1 set."""
        if self._zlib is None or self.no_context_takeover:
            self._zlib = zlib.compressobj(self.level, zlib.DEFLATED, -self.window_bits)
        out = self._zlib.compress(data) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(TAIL)
        return out[:-4]


class Inflater:
    """Decompresses the messages one side receives (RFC 7692 §7.2.2).

    decompress() appends 00 00 ff ff, then inflates. `max_size` stops a
    small message from inflating into a huge one (a "zip bomb"): zlib is
    told to produce at most max_size + 1 bytes.
    """

    def __init__(self, no_context_takeover: bool = False, window_bits: int = 15):
        if not 8 <= window_bits <= 15:
            raise ValueError(f"window_bits must be 8..15, not {window_bits}")
        self.no_context_takeover, self.window_bits = no_context_takeover, window_bits
        self._zlib = None

    def decompress(self, data: bytes, max_size: int | None = None) -> bytes:
        """Inflate one whole message. FrameError if the data is corrupt or too big."""
        # A block with BFINAL set ends the stream; the next message needs a new one.
        if self._zlib is None or self.no_context_takeover or self._zlib.eof:
            self._zlib = zlib.decompressobj(-self.window_bits)
        try:
            out = self._zlib.decompress(bytes(data) + TAIL, 0 if max_size is None else max_size + 1)
        except zlib.error as error:
            raise FrameError(f"compressed message is not valid DEFLATE data: {error} (RFC 7692 §7.2.2)") from None
        if max_size is not None and len(out) > max_size:
            raise FrameError(f"message inflates to more than max_size {max_size} bytes", CloseCode.MESSAGE_TOO_BIG)
        return out


@dataclass(frozen=True)
class Params:
    """How one direction compresses: context takeover off or on, window size in bits."""

    no_context_takeover: bool = False
    window_bits: int = 15


class Negotiated(NamedTuple):
    """The parameters of each direction, as agreed in the handshake."""

    client_to_server: Params
    server_to_client: Params


def _check(params: dict[str, str | None], in_offer: bool) -> None:
    """Raise HandshakeError unless `params` are valid permessage-deflate parameters (§7.1)."""
    for name, value in params.items():
        if name not in _PARAMS:
            raise HandshakeError(f"unknown permessage-deflate parameter {name!r} (RFC 7692 §7.1)")
        if name.endswith("takeover") and value is not None:
            raise HandshakeError(f"{name} takes no value (RFC 7692 §7.1.1)")
        bare_ok = in_offer and name == "client_max_window_bits"  # only a client's offer may omit it
        if name.endswith("bits") and not (_BITS.fullmatch(value or "") or (bare_ok and value is None)):
            raise HandshakeError(f"{name}={value} must be a number from 8 to 15 (RFC 7692 §7.1.2)")


def params_from_extension_header(value: str | None) -> Negotiated | None:
    """Read what a 101 response's Sec-WebSocket-Extensions agreed on (RFC 7692 §7.1).

    "permessage-deflate; server_no_context_takeover; client_max_window_bits=10"
    gives client_to_server=Params(False, 10), server_to_client=Params(True, 15).
    Returns None when permessage-deflate is not in the header.
    """
    found = [params for name, params in parse_extensions(value) if name == "permessage-deflate"]
    if len(found) > 1:
        raise HandshakeError("a response may accept permessage-deflate only once (RFC 7692 §5)")
    if not found:
        return None
    p = found[0]
    _check(p, in_offer=False)
    return Negotiated(
        Params("client_no_context_takeover" in p, int(p.get("client_max_window_bits") or 15)),
        Params("server_no_context_takeover" in p, int(p.get("server_max_window_bits") or 15)),
    )


def contexts(value: str | None, role: str) -> tuple[Deflater, Inflater] | None:
    """The (Deflater, Inflater) pair that `role` ("client" or "server") uses, or None.

    A client compresses client_to_server and inflates server_to_client; a
    server does the opposite.
    """
    negotiated = params_from_extension_header(value)
    if negotiated is None:
        return None
    if role not in ("client", "server"):
        raise ValueError(f"role must be 'client' or 'server', not {role!r}")
    send, receive = negotiated if role == "client" else reversed(negotiated)
    return Deflater(send.no_context_takeover, send.window_bits), Inflater(receive.no_context_takeover, receive.window_bits)


def respond_to_offer(value: str | None) -> str | None:
    """Accept a client's permessage-deflate offer: the value for our 101 response, or None.

    Takes the first offer we can honour (RFC 7692 §5.1) and agrees to all
    it asks (§7.1): each *_no_context_takeover it lists, its
    server_max_window_bits, and client_max_window_bits only when it gave
    one a value. Offers with unknown parameters, or asking us to compress
    with an 8-bit window, which zlib cannot do, are skipped.
    """
    for name, params in parse_extensions(value):
        if name != "permessage-deflate" or params.get("server_max_window_bits") == "8":
            continue
        try:
            _check(params, in_offer=True)
        except HandshakeError:
            continue
        return "; ".join([name] + [k if v is None else f"{k}={v}" for k, v in params.items()
                                   if not (k == "client_max_window_bits" and v is None)])
    return None
