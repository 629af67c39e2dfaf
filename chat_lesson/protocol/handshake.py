"""The opening handshake: one HTTP/1.1 request and one response (RFC 6455 §4).

A WebSocket connection starts life as an ordinary HTTP request that asks the
server to switch protocols. This module builds and checks those two messages
as bytes; it never opens a socket, so every function can be tried in a notebook
cell with bytes typed by hand.
"""

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""The fixed string a server appends to the client's key (RFC 6455 §1.3)."""

MAX_HEAD = 16384
"""How many bytes split_head() waits for a blank line before giving up."""

_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.6.2
_VALUE = re.compile(r"[\t\x20-\x7e]*")  # visible ASCII, space and tab
_VERSION = re.compile(r"HTTP/(\d)\.(\d)")  # RFC 9112 §2.3
_TARGET = re.compile(r"[\x21-\x7e]+")  # request target: visible ASCII, no spaces


class HandshakeError(ValueError):
    """The bytes are not a valid HTTP head or WebSocket handshake."""


def accept_key(key: str) -> str:
    """Return the Sec-WebSocket-Accept value a server sends for `key`.

    base64(SHA-1(key + GUID)), RFC 6455 §1.3 and §4.2.2. It proves the
    server read this very request and understands WebSocket.
    """
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def make_key() -> str:
    """Return a fresh Sec-WebSocket-Key: 16 random bytes, base64 (RFC 6455 §4.1)."""
    return base64.b64encode(os.urandom(16)).decode()


# -- Reading a head ----------------------------------------------------------


class Headers(tuple):
    """Header fields in arrival order: a tuple of (name, value) pairs.

    Names compare case-insensitively (RFC 9110 §5.1). A field may appear on
    several lines; for list-valued fields such as Connection or
    Sec-WebSocket-Extensions, get() joins them with ", ", which RFC 9110 §5.3
    says means the same as one comma-separated line.
    """

    def get_all(self, name: str) -> list[str]:
        """Every value of field `name`, one per line it appeared on."""
        return [v for n, v in self if n.lower() == name.lower()]

    def get(self, name: str, default: str | None = None) -> str | None:
        """The values of `name` joined with ", ", or `default` if absent."""
        values = self.get_all(name)
        return ", ".join(values) if values else default

    def tokens(self, name: str) -> list[str]:
        """The comma-separated items of `name`, lower-cased (Connection, Upgrade)."""
        return [t.strip().lower() for v in self.get_all(name) for t in v.split(",") if t.strip()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.get_all(name))


@dataclass(frozen=True)
class Head:
    """The start line and header fields of an HTTP request or response.

    A request fills method, target and version ("GET", "/chat", "HTTP/1.1");
    a response fills version, status and reason ("HTTP/1.1", 101, "Switching
    Protocols"). The fields that do not apply are None.
    """

    start_line: str
    headers: Headers
    version: str
    method: str | None = None
    target: str | None = None
    status: int | None = None
    reason: str | None = None

    @property
    def is_request(self) -> bool:
        return self.method is not None


def split_head(data: bytes, max_size: int = MAX_HEAD) -> tuple[bytes, bytes] | None:
    """Split `data` after the blank line that ends an HTTP head.

    Returns (head, rest), where head ends with CRLF CRLF and rest is whatever
    followed (already WebSocket frames, perhaps), or None if the blank line
    has not arrived yet (RFC 9112 §2.1). Raises HandshakeError when more than
    `max_size` bytes came without one, so a peer cannot make us buffer forever.
    """
    end = bytes(data).find(b"\r\n\r\n")
    if end < 0:
        if len(data) > max_size:
            raise HandshakeError(f"no blank line (CRLF CRLF) in the first {max_size} bytes")
        return None
    return bytes(data[: end + 4]), bytes(data[end + 4 :])


def parse_head(data: bytes) -> Head:
    """Parse an HTTP/1.1 request or response head (RFC 9112 §2-§5).

    `data` must contain the blank line; bytes after it are ignored (see
    split_head). Strict on purpose: lines end with CRLF, only ASCII, no
    obsolete line folding, every header line is `name: value`.
    """
    split = split_head(data, max_size=len(data))
    if split is None:
        raise HandshakeError("incomplete head: no blank line (CRLF CRLF) yet")
    raw = split[0][:-4]
    if not raw.isascii():
        at = next(i for i, b in enumerate(raw) if b > 0x7F)
        raise HandshakeError(f"non-ASCII byte 0x{raw[at]:02x} at offset {at}")
    start, *lines = raw.decode("ascii").split("\r\n")
    if any("\r" in line or "\n" in line for line in [start, *lines]):
        raise HandshakeError("bare CR or LF: HTTP lines must end with CRLF (RFC 9112 §2.2)")
    return _parse_start_line(start, Headers(_parse_field(line) for line in lines))


def _parse_start_line(line: str, headers: Headers) -> Head:
    if line.startswith("HTTP/"):  # status-line = version SP status SP reason
        version, status, reason = (line.split(" ", 2) + [""])[:3]
        if not (_VERSION.fullmatch(version) and re.fullmatch(r"\d{3}", status) and _VALUE.fullmatch(reason)):
            raise HandshakeError(f"bad status line {line!r}: expected e.g. 'HTTP/1.1 101 Switching Protocols'")
        return Head(line, headers, version, status=int(status), reason=reason)
    parts = line.split(" ")  # request-line = method SP target SP version
    if len(parts) != 3 or not (_TOKEN.fullmatch(parts[0]) and _TARGET.fullmatch(parts[1]) and _VERSION.fullmatch(parts[2])):
        raise HandshakeError(f"bad request line {line!r}: expected e.g. 'GET /chat HTTP/1.1'")
    return Head(line, headers, parts[2], method=parts[0], target=parts[1])


def _parse_field(line: str) -> tuple[str, str]:
    if line[:1] in (" ", "\t"):
        raise HandshakeError(f"obsolete line folding (obs-fold) in {line!r} is not allowed (RFC 9112 §5.2)")
    name, colon, value = line.partition(":")
    if not colon:
        raise HandshakeError(f"header line without a colon: {line!r}")
    if not _TOKEN.fullmatch(name):
        raise HandshakeError(f"bad header name {name!r}: no spaces or separators allowed (RFC 9112 §5.1)")
    value = value.strip(" \t")
    if not _VALUE.fullmatch(value):
        raise HandshakeError(f"control character in the value of {name!r}")
    return name, value


def parse_extensions(value: str | None) -> list[tuple[str, dict[str, str | None]]]:
    """Parse Sec-WebSocket-Extensions into [(name, {param: value or None})].

    Grammar from RFC 6455 §9.1: extensions separated by ",", parameters by
    ";", a parameter is `name` or `name=value` (value may be quoted). Example:
    "permessage-deflate; client_max_window_bits=10" ->
    [("permessage-deflate", {"client_max_window_bits": "10"})].
    """
    result = []
    for item in (value or "").split(","):
        if not item.strip():
            continue  # RFC 9110 §5.6.1: ignore empty list elements
        name, *params = [p.strip() for p in item.split(";")]
        parsed: dict[str, str | None] = {}
        for param in params:
            key, eq, val = (s.strip() for s in param.partition("="))
            val = val[1:-1] if len(val) > 1 and val[0] == val[-1] == '"' else val
            if not _TOKEN.fullmatch(key) or (eq and not _TOKEN.fullmatch(val)):
                raise HandshakeError(f"bad extension parameter {param!r} in {value!r}")
            if key in parsed:
                raise HandshakeError(f"duplicate extension parameter {key!r} in {value!r}")
            parsed[key] = val if eq else None
        if not _TOKEN.fullmatch(name):
            raise HandshakeError(f"bad extension name {name!r} in {value!r}")
        result.append((name, parsed))
    return result


# -- The client's side -------------------------------------------------------


def _render(start_line: str, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [start_line]
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(value):
            raise HandshakeError(f"refusing to write header {name!r}: {value!r} (CR, LF or non-ASCII)")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def build_request(
    host: str,
    path: str = "/",
    key: str | None = None,
    origin: str | None = None,
    protocols: Iterable[str] = (),
    extensions: Iterable[str] = (),
    extra_headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """Build the client's opening handshake (RFC 6455 §4.1).

    `host` is "name:port" as the Host header wants it. Pass your own `key`
    (make_key()) if you will check the answer with check_response(); when
    None a fresh one is made, readable again via parse_head(...).headers.
    `extensions` are offers such as "permessage-deflate; client_max_window_bits".
    """
    headers = [
        ("Host", host),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key or make_key()),
        ("Sec-WebSocket-Version", "13"),
    ]
    headers += [("Origin", origin)] if origin is not None else []
    headers += [("Sec-WebSocket-Protocol", ", ".join(protocols))] if protocols else []
    headers += [("Sec-WebSocket-Extensions", ", ".join(extensions))] if extensions else []
    return _render(f"GET {path} HTTP/1.1", [*headers, *extra_headers])


def check_response(
    key: str,
    response: bytes | Head,
    protocols: Collection[str] = (),
    extensions: Iterable[str] = (),
) -> Head:
    """Check the server's answer to our request with `key`; return its Head.

    RFC 6455 §4.1 lists what the client must verify, and says that if any
    check fails the client must _Fail the WebSocket Connection_: status 101,
    Upgrade "websocket", Connection "Upgrade", Sec-WebSocket-Accept equal to
    accept_key(key), and no subprotocol or extension we did not offer
    (`protocols` and `extensions` are what build_request was given).
    Raises HandshakeError naming the failed check.
    """
    head = response if isinstance(response, Head) else parse_head(response)
    h = head.headers
    if head.is_request:
        raise HandshakeError("expected an HTTP response, got a request")
    if head.status != 101:
        raise HandshakeError(f"server answered {head.status} {head.reason}, not 101 Switching Protocols")
    if h.tokens("Upgrade") != ["websocket"]:
        raise HandshakeError(f"{_shown(h, 'Upgrade')}, expected 'websocket'")
    if "upgrade" not in h.tokens("Connection"):
        raise HandshakeError(f"{_shown(h, 'Connection')}, expected 'Upgrade'")
    if h.get_all("Sec-WebSocket-Accept") != [accept_key(key)]:
        raise HandshakeError(
            f"Sec-WebSocket-Accept is {h.get('Sec-WebSocket-Accept')!r}, expected {accept_key(key)!r}"
        )
    offered = {name for offer in extensions for name, _ in parse_extensions(offer)}
    for name, _ in parse_extensions(h.get("Sec-WebSocket-Extensions")):
        if name not in offered:
            raise HandshakeError(f"server chose extension {name!r}, which we did not offer")
    chosen = h.get("Sec-WebSocket-Protocol")
    if chosen is not None and chosen not in protocols:
        raise HandshakeError(f"server chose subprotocol {chosen!r}, which we did not offer")
    return head


# -- The server's side -------------------------------------------------------


@dataclass
class Answer:
    """What a server sends back: status, reason, header pairs, body.

    A 101 answer switches to WebSocket; anything else is a refusal, and its
    plain-text body says why. Append to `headers` before to_bytes() to add
    your own fields.
    """

    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def accepted(self) -> bool:
        return self.status == 101

    def to_bytes(self) -> bytes:
        """Render the HTTP/1.1 response: status line, headers, blank line, body."""
        return _render(f"HTTP/1.1 {self.status} {self.reason}", self.headers) + self.body


_REASONS = {400: "Bad Request", 403: "Forbidden", 426: "Upgrade Required"}


def _shown(headers: Headers, name: str) -> str:
    """A header's value quoted for an error message, or "no NAME header"."""
    value = headers.get(name)
    return f"{name} header is {value!r}" if value is not None else f"there is no {name} header"


def _refuse(status: int, why: str, *headers: tuple[str, str]) -> Answer:
    """A refusal with a plain-text reason; the connection closes after it.

    A 426 must name the protocol to upgrade to (RFC 9110 §15.5.22), and a
    message with an Upgrade field must list "upgrade" in Connection (§7.8).
    """
    body = (why + "\n").encode()
    connection = "Upgrade, close" if status == 426 else "close"
    upgrade = [("Upgrade", "websocket")] if status == 426 else []
    extra = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), ("Connection", connection)]
    return Answer(status, _REASONS[status], [*headers, *upgrade, *extra], body)


def _key_is_valid(key: str) -> bool:
    try:  # RFC 6455 §4.2.1 item 5: base64 of a 16-byte value
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def check_request(
    request: bytes | Head,
    allowed_origins: Collection[str | None] | Callable[[str | None], bool] | None = None,
    protocols: Iterable[str] = (),
) -> Answer:
    """Decide how a server answers an opening handshake request.

    Follows RFC 6455 §4.2.1 (what a valid request contains) and §4.2.2 (the
    answer). Returns an Answer: 101 with Sec-WebSocket-Accept when all is
    well; 400 for a malformed request (not GET, HTTP older than 1.1, no Host,
    Upgrade without "websocket", Connection without "Upgrade", a key that is
    not base64 of 16 bytes, no version); 426 with "Sec-WebSocket-Version: 13"
    for another protocol version (§4.4); 403 for a refused Origin (§10.2).

    `allowed_origins` is None (any origin), a collection of origins (put None
    in it to admit clients that send no Origin, i.e. non-browsers), or a
    function origin -> bool. `protocols` are the subprotocols this server
    speaks, best first; the first one the client also offered is chosen.
    """
    try:
        head = request if isinstance(request, Head) else parse_head(request)
    except HandshakeError as error:
        return _refuse(400, f"Malformed HTTP request: {error}")
    h = head.headers
    version = _VERSION.fullmatch(head.version)
    if not head.is_request or head.method != "GET":
        return _refuse(400, f"A WebSocket handshake is a GET request, not {head.start_line!r}")
    if (int(version[1]), int(version[2])) < (1, 1):
        return _refuse(400, f"A WebSocket handshake needs HTTP/1.1 or higher, not {head.version}")
    if len(h.get_all("Host")) != 1:
        return _refuse(400, "The request must carry exactly one Host header")
    if "websocket" not in h.tokens("Upgrade"):
        return _refuse(400, f"{_shown(h, 'Upgrade')}; it must contain 'websocket'")
    if "upgrade" not in h.tokens("Connection"):
        return _refuse(400, f"{_shown(h, 'Connection')}; it must contain 'Upgrade'")
    keys = h.get_all("Sec-WebSocket-Key")
    if len(keys) != 1 or not _key_is_valid(keys[0]):
        return _refuse(400, f"{_shown(h, 'Sec-WebSocket-Key')}; it must be base64 of exactly 16 bytes")
    if "Sec-WebSocket-Version" not in h:
        return _refuse(400, "The request has no Sec-WebSocket-Version header")
    if h.get("Sec-WebSocket-Version") != "13":
        why = f"Sec-WebSocket-Version {h.get('Sec-WebSocket-Version')!r} is not supported; this server speaks 13"
        return _refuse(426, why, ("Sec-WebSocket-Version", "13"))
    origin = h.get("Origin")
    if allowed_origins is not None and not (
        allowed_origins(origin) if callable(allowed_origins) else origin in allowed_origins
    ):
        return _refuse(403, f"Origin {origin!r} is not allowed")
    headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept_key(keys[0]))]
    offered = [p.strip() for p in (h.get("Sec-WebSocket-Protocol") or "").split(",")]
    chosen = next((p for p in protocols if p in offered), None)  # names are case-sensitive
    headers += [("Sec-WebSocket-Protocol", chosen)] if chosen else []
    return Answer(101, "Switching Protocols", headers)
