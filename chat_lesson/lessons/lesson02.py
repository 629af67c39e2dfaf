"""Lesson 02's tools: raw HTTP, the handshake's headers explained, the sequence diagram, and exercises.

The lesson speaks WebSocket with :class:`~chat_lesson.rawclient.RawClient`
(a socket and the course's pure code); :func:`steps` turns its log into
labelled :class:`Step` s with their sizes, which :func:`step_table` lists and
:func:`sequence_diagram` draws.  :func:`send_raw` sends any bytes at all and
reads the answer, which is how the lesson provokes the server's refusals.

Exercises: ``02.accept_key``, ``02.broken_handshakes``, ``02.refusal_codes``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import socket
from typing import Any

from ..notebook import BackgroundLoop
from ..protocol import handshake
from ..protocol.frames import Opcode, decode_close
from ..protocol.handshake import Head, parse_head
from ..protocol.reader import Reader
from ..rawclient import Exchange, RawClient
from .display import Table
from .exercises import Wrong, exercise, expect, need_choices, need_dict, need_function

HEADER_MEANINGS = {
    "host": "which site the client wants; one IP address may serve many names (RFC 9110 §7.2)",
    "upgrade": "the protocol to switch this connection to: websocket (RFC 9110 §7.8, RFC 6455 §4.1)",
    "connection": "'Upgrade' marks Upgrade as a hop-by-hop field that this hop must act on (RFC 9110 §7.6.1)",
    "sec-websocket-key": "16 random bytes, base64; the server proves it read this request by hashing it (§4.1)",
    "sec-websocket-version": "the protocol version: 13 is RFC 6455; anything else gets 426 (§4.2.2, §4.4)",
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
        reader = Reader()
        while (head := reader.next_head()) is None:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed before the end of its answer's head")
            reader.receive_data(chunk)
        length = int(head.headers.get("Content-Length", "0"))
        body = reader.take(length)
    return head, body


@dataclasses.dataclass
class Step:
    """One exchange on the wire: who sent it, what it was, how many bytes."""

    sender: str          # "client" or "server"
    label: str
    size: int | None     # bytes of TCP payload (None: TCP's own packets, no payload)
    raw: bytes = b""
    layer: str = "websocket"   # "tcp", "http" or "websocket"
    header: int | None = None  # a frame's header bytes (the rest is payload)


def _label(e: Exchange) -> str:
    """What a logged exchange was, in a few words: the start line of a head, the kind of a frame."""
    if e.kind == "eof":
        return "FIN"
    if e.kind == "http":
        return e.raw.split(b"\r\n", 1)[0].decode("latin-1")
    if e.frame is None:
        return f"{len(e.raw)} raw bytes"
    masked = " (masked)" if e.frame.mask_key is not None else ""
    if e.frame.opcode == Opcode.TEXT:
        try:
            event = json.loads(e.frame.payload)
        except ValueError:
            event = None
        what = event.get("type", "message") if isinstance(event, dict) else "text"
        return f"text frame: {what}{masked}" if masked else f"text frame: {what} event"
    if e.frame.opcode == Opcode.CLOSE and len(e.frame.payload) >= 2:
        return f"close {decode_close(e.frame.payload)[0]}{masked}"
    return f"{e.frame.opcode.name.lower()}{masked}"


def steps(client: RawClient) -> list[Step]:
    """A RawClient's log as labelled steps, after TCP's three-way handshake (which carries no payload)."""
    tcp = [Step("client", "SYN", None, layer="tcp"), Step("server", "SYN-ACK", None, layer="tcp"),
           Step("client", "ACK", None, layer="tcp")]
    layers = {"eof": "tcp", "http": "http"}
    return tcp + [Step("client" if e.direction == "→" else "server", _label(e),
                       None if e.kind == "eof" else len(e.raw), e.raw, layers.get(e.kind, "websocket"), e.header)
                  for e in client.log]


def step_table(log: list[Step]) -> Table:
    """One row per step: who sent it, what it was, its bytes (and how many of them are a frame header)."""
    return Table([{"#": i, "from": s.sender, "what": s.label, "bytes": "-" if s.size is None else s.size,
                   "of which frame header": "" if s.header is None else s.header}
                  for i, s in enumerate(log, 1)])


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


# =============================================================================
# Lesson 02: the handshake
# =============================================================================

RFC_KEY, RFC_ACCEPT = "dGhlIHNhbXBsZSBub25jZQ==", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="        # RFC 6455 §1.3
ARTICLE_KEY, ARTICLE_ACCEPT = "w4v7O6xFTi36lq3RNcgctw==", "Oy4NRAQ13jhfONC7bP8dTKb4PTU="  # the article's pair


def _accept_mistakes(key: str) -> dict[str, str]:
    """What common wrong versions of accept_key return for ``key``, and what each did wrong."""
    guid = handshake.GUID
    digest = hashlib.sha1((key + guid).encode()).digest()
    hexdigest = hashlib.sha1((key + guid).encode()).hexdigest()
    mistakes = {
        hexdigest: "you returned the SHA-1 as hex; the header wants base64 of the 20 raw bytes (.digest())",
        base64.b64encode(hexdigest.encode()).decode():
            "you base64-encoded the hex text; encode the 20 raw bytes from .digest() instead",
        base64.b64encode(hashlib.sha1(key.encode()).digest()).decode(): "you forgot to append the GUID",
        base64.b64encode(hashlib.sha1((guid + key).encode()).digest()).decode():
            "the GUID goes after the key, not before",
        base64.b64encode(hashlib.sha1((key + guid.lower()).encode()).digest()).decode():
            "the GUID is upper case: 258EAFA5-E914-47DA-95CA-C5AB0DC85B11",
        base64.b64encode(hashlib.sha1((key + " " + guid).encode()).digest()).decode():
            "no space between key and GUID: plain concatenation",
        base64.b64encode(hashlib.sha256((key + guid).encode()).digest()).decode(): "the hash is SHA-1, not SHA-256",
        base64.urlsafe_b64encode(digest).decode(): "use standard base64 (+ and /), not the URL-safe alphabet",
        key: "you returned the key itself: the server must prove it computed something from it",
    }
    try:
        raw = base64.b64decode(key)
        mistakes[base64.b64encode(hashlib.sha1(raw + guid.encode()).digest()).decode()] = (
            "do not base64-decode the key first: concatenate the 24 characters as they came")
    except ValueError:
        pass
    return mistakes


@exercise("02.accept_key", hint="Sec-WebSocket-Accept = base64( SHA-1( key + \"258EAFA5-E914-47DA-95CA-C5AB0DC85B11\" ) ): "
          "hashlib.sha1(...).digest(), then base64.b64encode(...).decode() (RFC 6455 §4.2.2).")
def _accept_key(answer: Any) -> str:
    """Write accept_key(key) -> str, the value a server puts in Sec-WebSocket-Accept."""
    f = need_function(answer, "accept_key")
    keys = [(RFC_KEY, "RFC 6455's example key"), (ARTICLE_KEY, "the article's key")]
    keys += [(handshake.make_key(), "a fresh random key") for _ in range(3)]
    for key, where in keys:
        got = f(key)
        if isinstance(got, bytes):
            raise Wrong(f"accept_key({key!r}) returned bytes {got!r}; a header value is text: add .decode()")
        expect(isinstance(got, str), f"accept_key({key!r}) returned {type(got).__name__}, expected a str")
        right = handshake.accept_key(key)
        if got != right:
            diagnosis = _accept_mistakes(key).get(got.strip())
            if got.strip() == right:
                diagnosis = "remove the surrounding whitespace or newline"
            raise Wrong(f"wrong for {where} {key!r}: got {got!r}, expected {right!r}", diagnosis)
    return (f"right for RFC 6455's pair ({RFC_KEY} → {RFC_ACCEPT}), the article's pair "
            f"({ARTICLE_KEY} → {ARTICLE_ACCEPT}) and 3 random keys")


def _request(*lines: str, start: str = "GET /ws HTTP/1.1") -> bytes:
    return ("\r\n".join([start, *lines]) + "\r\n\r\n").encode()


BROKEN_HANDSHAKES: dict[str, tuple[str, bytes]] = {
    "A": ("a client's request", _request(
        "Host: 127.0.0.1:8000", "Upgrade: websocket", "Connection: keep-alive",
        f"Sec-WebSocket-Key: {RFC_KEY}", "Sec-WebSocket-Version: 13")),
    "B": ("a client's request", _request(
        "Host: 127.0.0.1:8000", "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Key: aGVsbG8gd29ybGQ=", "Sec-WebSocket-Version: 13")),
    "C": (f"a server's answer to a request with Sec-WebSocket-Key: {RFC_KEY}", _request(
        "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Accept: {RFC_KEY}",
        start="HTTP/1.1 101 Switching Protocols")),
}
"""Three handshakes with one fault each: name -> (what it is, the bytes)."""

FAULTS = {
    "method": "the method is not GET",
    "version": "Sec-WebSocket-Version is not 13",
    "host": "the Host header is missing",
    "upgrade": "the Upgrade header does not say websocket",
    "connection": "the Connection header does not contain Upgrade",
    "key": "Sec-WebSocket-Key is not base64 of 16 bytes",
    "accept": "Sec-WebSocket-Accept is not the value computed from the key",
    "status": "the status is not 101",
    "origin": "the Origin is not allowed",
}
"""The answers to choose from for ``02.broken_handshakes``."""

_BROKEN_TRUTH = {
    "A": ("connection", "Upgrade: websocket is there, but Connection must list the token Upgrade (Firefox sends "
                        "'keep-alive, Upgrade', which is fine); 'keep-alive' alone is not."),
    "B": ("key", "decode the key: aGVsbG8gd29ybGQ= is base64 of 'hello world', 11 bytes; a key is 16 random bytes."),
    "C": ("accept", "compare the Accept value with the key: the server echoed the key back instead of computing "
                    "base64(SHA-1(key + GUID))."),
}


def _verdict(name: str) -> str:
    """What our own handshake code says about a broken handshake (run live, not stored)."""
    what, raw = BROKEN_HANDSHAKES[name]
    if raw.startswith(b"HTTP/"):
        try:
            handshake.check_response(RFC_KEY, raw)
        except handshake.HandshakeError as error:
            return f"the client fails the connection: {error}"
        return "accepted"
    answer = handshake.check_request(raw)
    return f"the server answers {answer.status} {answer.reason}: {answer.body.decode().strip()}"


@exercise("02.broken_handshakes", hint="Check each header against RFC 6455 §4.1 (the client's request) and §4.2.2 "
          "(the server's answer): Upgrade, Connection, the key's length, the accept value.")
def _broken_handshakes(answer: Any) -> str:
    """Name the one fault in each of three broken handshakes (choose from FAULTS)."""
    need_choices(answer, _BROKEN_TRUTH, FAULTS, "FAULTS")
    return "right. What our handshake code says:" + "".join(f"\n • {k}: {_verdict(k)}" for k in BROKEN_HANDSHAKES)


REFUSAL_CASES = {
    "wrong_version": "a request with Sec-WebSocket-Version: 8",
    "missing_key": "a request without Sec-WebSocket-Key",
    "foreign_origin": "a request with Origin: http://evil.example (the page came from elsewhere)",
    "plain_get": "a plain GET /ws, as a browser's address bar sends it (no Upgrade, no key)",
}
"""The requests of ``02.refusal_codes``: name -> description (answer each with a status code)."""


def _refusal_request(name: str) -> bytes:
    base = ["Host: 127.0.0.1:8000", "Upgrade: websocket", "Connection: Upgrade",
            f"Sec-WebSocket-Key: {RFC_KEY}", "Sec-WebSocket-Version: 13"]
    if name == "wrong_version":
        base[-1] = "Sec-WebSocket-Version: 8"
    elif name == "missing_key":
        del base[3]
    elif name == "foreign_origin":
        base.append("Origin: http://evil.example")
    elif name == "plain_get":
        base = ["Host: 127.0.0.1:8000", "Accept: text/html"]
    return _request(*base)


def _same_origin_only(origin: str | None) -> bool:
    return origin is None or origin == "http://127.0.0.1:8000"


@exercise("02.refusal_codes", hint="400 Bad Request: the request is not a valid handshake; 403 Forbidden: valid, but "
          "the server will not serve this Origin (RFC 6455 §10.2 says a server SHOULD answer so); 426 Upgrade "
          "Required: valid, but a protocol version the server does not speak (§4.2.2), answered with the "
          "versions it does. (A plain GET: our server says 400; the websockets library says 426; both are "
          "defensible, and the question is about ours.)")
def _refusal_codes(answer: Any) -> str:
    """Which status code does our server answer to each refused request?"""
    answer = need_dict(answer, list(REFUSAL_CASES))
    truth = {name: handshake.check_request(_refusal_request(name), allowed_origins=_same_origin_only)
             for name in REFUSAL_CASES}
    wrong = []
    for name, verdict in truth.items():
        try:
            given = int(answer[name])
        except (TypeError, ValueError):
            raise Wrong(f"{name}: give a status code as a number, like 400, not {answer[name]!r}") from None
        if given != verdict.status:
            wrong.append(name)
    expect(not wrong, "not right yet: " + ", ".join(f"{n} (not {answer[n]})" for n in wrong))
    return "right:" + "".join(f"\n • {n} → {v.status} {v.reason}" for n, v in truth.items())
