"""The chat server: static files and the ``/ws`` chat on one port.

It is the Go original's design (a set of clients and a broadcast) with the
original's flaws fixed; each fix is one of the defaults below, and lesson 06
shows what goes wrong without it:

========================  ==========================================  ===========================
what                      default                                     the original
========================  ==========================================  ===========================
bind address              127.0.0.1 (``host="0.0.0.0"``: classroom)   every interface
Origin                    same origin as the page, or none; else 403  every Origin accepted
message size              4 KiB of chat text, 8 KiB frames (1009)     unlimited
bad JSON / fields         an ``error`` event to that client only      the client is dropped
rate                      10 messages/s, burst 20, per client         unlimited
slow client               closed (1008) once 256 KiB wait for it      everyone waits for it
heartbeat                 ping every 20 s, 20 s to answer             none
static files              only under static/; 404 otherwise           http.FileServer
HTML in messages          relayed as text; escaped for legacy clients relayed as HTML
========================  ==========================================  ===========================

The wire protocol is in DESIGN.md: clients send ``{"username", "email",
"message"}``; the server sends typed JSON events.  A client that offers the
subprotocol ``chat-lesson.v1`` gets every event type; one that offers none
(the Go original's Vue client) is a *legacy* client and gets only
``message`` events, HTML-escaped, because that client renders with v-html.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import hashlib
import html
import http
import itertools
import json
import logging
import mimetypes
import os
import resource
import socket
import struct
import time
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.http11 import Request, Response
from websockets.protocol import State

from ..protocol import handshake
from ..protocol.frames import Frame, Opcode, encode_frame
from ..protocol.handshake import Head, check_request
from ..notebook import CellService, lan_address, show_link

log = logging.getLogger(__name__)

SUBPROTOCOL = "chat-lesson.v1"
STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
MAX_USERNAME = 32
# The kernel's send buffer per client, fixed.  Left alone, Linux grows it up to
# tcp_wmem's maximum (4 MiB), which would hide a stuck client from the
# max_buffer check below for megabytes; fixed, a stuck client costs at most
# about twice this (the kernel doubles it for bookkeeping) plus max_buffer.
KERNEL_SEND_BUFFER = 64 * 1024

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}


def avatar_hash(email: str) -> str:
    """Gravatar's hash: MD5 hex of the trimmed, lower-cased address ('' when none).

    The hash lets a page draw (or fetch) the same picture for the same
    address without the address itself ever being broadcast.
    """
    email = email.strip().lower()
    return hashlib.md5(email.encode()).hexdigest() if email else ""


def now_iso() -> str:
    """The current UTC time as ISO 8601 with milliseconds, e.g. 2026-11-26T04:41:34.123Z."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise this process's open-file limit towards ``wanted``, as far as the OS allows.

    Every client is one open socket, and many systems start processes with a
    soft limit of 1024.  The soft limit may be raised up to the hard limit
    without privileges; returns the limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


class ChatError(ValueError):
    """A client's mistake, answered with an ``error`` event; ``code`` is machine-readable."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class TokenBucket:
    """Allow ``rate`` events per second on average, and bursts of up to ``burst``.

    The bucket holds up to ``burst`` tokens and refills continuously at ``rate``
    tokens per second; each event takes one token, and an event that finds the
    bucket empty is refused.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclasses.dataclass(eq=False)
class Member:
    """One open chat connection and what the server knows about it."""

    connection: ServerConnection
    legacy: bool
    bucket: TokenBucket | None
    username: str | None = None
    avatar: str = ""


@dataclasses.dataclass
class Stats:
    """Counters a lesson can watch; read them with ``server.stats``."""

    connections: int = 0           # open chat connections now
    connections_total: int = 0     # chat connections ever accepted
    messages: int = 0              # chat messages relayed
    deliveries: int = 0            # frames written to clients (one message to 30 clients: 30)
    errors: int = 0                # error events sent
    closed_slow: int = 0           # clients closed for not reading (1008)
    refused_origin: int = 0        # handshakes refused with 403


def check_username(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ChatError("bad_field", "username must be a non-empty string")
    name = value.strip()
    if len(name) > MAX_USERNAME:
        raise ChatError("bad_field", f"username is longer than {MAX_USERNAME} characters")
    return name


def check_email(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 254:
        raise ChatError("bad_field", "email must be a string of at most 254 characters")
    return value


def parse_input(raw: str | bytes, max_text: int) -> dict[str, Any]:
    """Validate one client frame and return it as a dict with a ``type``.

    Accepts the Go original's ``{"username", "email", "message"}`` (type
    ``message``) and our ``{"type": "join", "username", "email"}``.
    """
    if isinstance(raw, bytes):
        raise ChatError("bad_frame", "send JSON in a text frame, not a binary frame")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ChatError("bad_json", f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ChatError("bad_json", "expected a JSON object like {\"username\": ..., \"message\": ...}")
    kind = data.get("type", "message")
    if kind == "join":
        return {"type": "join", "username": check_username(data.get("username")),
                "email": check_email(data.get("email"))}
    if kind != "message":
        raise ChatError("bad_field", f"unknown type {kind!r}: use 'join' or 'message'")
    text = data.get("message")
    if not isinstance(text, str) or not text.strip():
        raise ChatError("bad_field", "message must be a non-empty string")
    if len(text.encode()) > max_text:
        raise ChatError("too_long", f"message is longer than {max_text} bytes")
    return {"type": "message", "username": data.get("username"),
            "email": check_email(data.get("email")), "message": text}


def same_origin(origin: str, host: str | None) -> bool:
    """True when the Origin header names the host the request was sent to.

    A page served by this server at http://H:P opens ws://H:P/ws and its
    browser sends ``Origin: http://H:P`` and ``Host: H:P``.
    """
    parsed = urllib.parse.urlsplit(origin)
    return bool(host) and parsed.scheme in ("http", "https") and parsed.netloc.lower() == host.lower()


def static_file(root: Path, url_path: str) -> Path | None:
    """The file under ``root`` that ``url_path`` names, or None (then: 404).

    Percent-decoding happens first, so ``%2e%2e`` is ``..``; any ``..``
    segment, backslash or NUL is refused outright; and the resolved path
    (symlinks followed) must still lie under ``root``.
    """
    path = urllib.parse.unquote(urllib.parse.urlsplit(url_path).path)
    if path in ("", "/"):
        path = "/index.html"
    parts = path.split("/")[1:]
    if any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
        return None
    root = root.resolve()
    candidate = root.joinpath(*parts).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file():
        return None
    return candidate


def deflate_extension() -> list[ServerPerMessageDeflateFactory]:
    """Accept permessage-deflate as browsers offer it, but never compress what we send.

    Browsers then compress what they send (the tap shows RSV1 set and the
    inflated text); our own events go out uncompressed, which the RFC allows
    per message.  With ``server_no_context_takeover`` websockets keeps no
    compressor per connection (it would never be used), and with
    ``client_no_context_takeover`` no decompressor between messages: each
    costs memory on every idle connection (bench idle --compression), while
    a student's few messages compress nearly as well one by one.
    Measured in docs/benchmarks.md: deflating a ~200-byte chat event saves
    little and costs more CPU per client than sending it.
    """
    return [ServerPerMessageDeflateFactory(server_no_context_takeover=True, client_no_context_takeover=True,
                                           server_max_window_bits=12,
                                           client_max_window_bits=12, compress_settings={"memLevel": 5})]


def text_frame(text: str) -> bytes:
    """A whole, unmasked, uncompressed text frame (what a server sends; RFC 6455 §5.1).

    permessage-deflate lets each message choose (RFC 7692 §6: RSV1 marks the
    compressed ones), and this server sends its small JSON events as they are.
    """
    return encode_frame(Frame(True, Opcode.TEXT, text.encode()))


def as_head(request: Request) -> Head:
    """websockets' parsed request as our own ``handshake.Head`` (websockets only admits GET over HTTP/1.1)."""
    return Head(f"GET {request.path} HTTP/1.1", handshake.Headers(request.headers.raw_items()),
                "HTTP/1.1", method="GET", target=request.path)


def http_response(status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> Response:
    headers = Headers({"Content-Type": content_type, "Content-Length": str(len(body)),
                       "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


class ChatServer(CellService):
    """The chat, run from a notebook cell or a script.

    >>> server = ChatServer(port=0).start()    # doctest: +SKIP
    >>> server.url, server.clients, server.stats  # doctest: +SKIP
    >>> server.stop()                          # doctest: +SKIP

    ``start()`` runs the server on its own event loop in a daemon thread, so a
    cell that blocks does not freeze the chat.  Inside an ``async`` context,
    ``await server.astart()`` / ``await server.astop()`` run it on the current
    loop instead.  Every limit is an argument; ``rate_limit=0`` turns the rate
    limit off.
    """


    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        origins: tuple[str, ...] | list[str] = (),
        max_message: int = 4096,
        max_frame: int = 8192,
        rate_limit: float = 10,
        burst: int = 20,
        max_buffer: int = 256 * 1024,
        ping_interval: float | None = 20,
        ping_timeout: float | None = 20,
        close_timeout: float = 3,
        compression: str | None = "deflate",
        history: int = 50,
        static: str | os.PathLike[str] | None = None,
        quiet: bool = False,
    ) -> None:
        self.host, self.port = host, port
        self.origins = frozenset(o.rstrip("/") for o in origins)
        self.max_message, self.max_frame = max_message, max_frame
        self.rate_limit, self.burst = rate_limit, burst
        self.max_buffer = max_buffer
        self.ping_interval, self.ping_timeout = ping_interval, ping_timeout
        self.close_timeout = close_timeout
        self.compression = compression
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=history)
        self.static = Path(static) if static else STATIC_DIR
        self.quiet = quiet
        self.commands: dict[str, Callable[[str, str], str | None]] = {}
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stats = Stats()
        self._members: dict[ServerConnection, Member] = {}
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self._online: tuple[str, ...] = ()
        self._pending: list[tuple[bytes, bytes | None]] = []   # (frame, legacy frame) per broadcast

    # -- the public face ----------------------------------------------------

    @property
    def clients(self) -> list[str]:
        """The names of everyone who has joined and is online now."""
        return list(self._online)

    def add_command(self, name: str, handler: Callable[[str, str], str | None]) -> None:
        """Let lesson code extend the chat: a message ``/name args`` calls ``handler(username, args)``.

        The handler returns the text to broadcast in place of the message, or
        None to broadcast nothing; raising ``ChatError`` sends that client an
        ``error`` event.  Example: ``server.add_command("me", lambda user, args: f"* {user} {args}")``.
        """
        self.commands[name.lstrip("/")] = handler

    def add_listener(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call ``callback(event)`` for every event broadcast (message, join, leave, presence).

        It runs on the server's loop (``server.loop``) and must not block; a
        lesson uses it to feed the same events to an HTTP polling endpoint.
        """
        self.listeners.append(callback)

    def remove_listener(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Stop calling ``callback``; a no-op if it was not listening."""
        if callback in self.listeners:
            self.listeners.remove(callback)

    async def astart(self) -> "ChatServer":
        """Start listening on the running loop (for those who use the kernel's own loop)."""
        self.loop = asyncio.get_running_loop()
        files = raise_fd_limit()
        if files < 4096:
            log.warning("this process may open only %d files, so at most about %d clients can connect; "
                        "raise the hard limit (ulimit -Hn, or LimitNOFILE= for a service) for more", files, files - 50)
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            select_subprotocol=self._select_subprotocol,
            compression=None,
            extensions=deflate_extension() if self.compression == "deflate" else None,
            max_size=self.max_frame,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            close_timeout=self.close_timeout,
            logger=log,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._claim_port()
        self._announce()
        return self

    async def astop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            self._release_port()
            log.info("chat server on port %s stopped", self.port)

    async def serve_forever(self) -> None:
        """Run until cancelled (``python -m chat_lesson serve`` uses this)."""
        async with self:
            await asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        state = "running" if self._server is not None else "stopped"
        return f"<ChatServer {self.url} {state}, {len(self._online)} online>"

    def _announce(self) -> None:
        log.info("chat server listening on %s", self.url)
        if self.quiet:
            return
        show_link(self.url, "Chat running at")
        if self.host in ("0.0.0.0", "::", ""):
            lan = lan_address()
            if lan:
                show_link(f"http://{lan}:{self.port}/", "Classroom mode: students open")
            else:
                print("Classroom mode: no LAN address found; is this machine on a network?")

    # -- HTTP: the handshake gate and static files ---------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """The HTTP side of the port: our own handshake check for /ws, static files for the rest.

        For /ws, ``handshake.check_request`` (the pure code lesson 02 teaches)
        decides: a refusal (400, 403, 426) is sent as it is; an acceptance
        lets websockets complete the handshake.
        """
        path = urllib.parse.urlsplit(request.path).path
        if path == "/ws":
            head = as_head(request)
            answer = check_request(head, allowed_origins=functools.partial(self._origin_allowed, head.headers.get("Host")))
            if answer.accepted:
                return None
            if answer.status == 403:
                self.stats.refused_origin += 1
                log.warning("refused Origin %r (Host %r)", head.headers.get("Origin"), head.headers.get("Host"))
            return Response(answer.status, answer.reason, Headers(answer.headers), answer.body)
        found = static_file(self.static, request.path)
        if found is None:
            return http_response(404, b"Not found\n")
        content_type = CONTENT_TYPES.get(found.suffix) or mimetypes.guess_type(found.name)[0] or "application/octet-stream"
        return http_response(200, found.read_bytes(), content_type)

    def _origin_allowed(self, host: str | None, origin: str | None) -> bool:
        """No Origin (a script), the page's own origin, or one listed in ``origins``."""
        return origin is None or origin.rstrip("/") in self.origins or same_origin(origin, host)

    @staticmethod
    def _select_subprotocol(connection: ServerConnection, offered: Any) -> str | None:
        return SUBPROTOCOL if SUBPROTOCOL in offered else None

    # -- the chat -------------------------------------------------------------

    async def _handle(self, connection: ServerConnection) -> None:
        """One connection's life: register, read messages until it closes, unregister."""
        bucket = TokenBucket(self.rate_limit, self.burst) if self.rate_limit > 0 else None
        member = Member(connection, legacy=connection.subprotocol != SUBPROTOCOL, bucket=bucket)
        # The handshake is over and nothing reads its headers again: dropping
        # them saves about 3 KiB per connection (bench idle).  (websockets
        # checks that ``request`` is set, so the request itself stays.)
        connection.request.headers = Headers()
        connection.response = None
        sock = connection.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SEND_BUFFER)
        self._members[connection] = member
        self.stats.connections += 1
        self.stats.connections_total += 1
        if not member.legacy:
            self._send(member, self._presence_event())
            if self.history:
                # What was said before this student arrived (the Go original shows nothing).
                self._send(member, {"type": "history", "messages": list(self.history)})
        try:
            async for raw in connection:
                try:
                    self._on_frame(member, raw)
                except ChatError as exc:
                    self._refuse(member, exc)
        except ConnectionClosed:
            pass
        finally:
            del self._members[connection]
            self.stats.connections -= 1
            if member.username is not None:
                self._update_online()
                self._broadcast({"type": "leave", "time": now_iso(),
                                 "username": member.username, "avatar": member.avatar})
                self._broadcast(self._presence_event())

    def _refuse(self, member: Member, error: ChatError) -> None:
        """Tell a client what was wrong with its frame: an ``error`` event, to it only.

        A legacy client (the Go original's page) gets nothing: it would render
        the event as a chat message.  The log says what it sent wrong.
        """
        self.stats.errors += 1
        if member.legacy:
            log.info("legacy client %s: %s", member.username or "(unnamed)", error)
            return
        self._send(member, {"type": "error", "code": error.code, "detail": str(error)})

    def _on_frame(self, member: Member, raw: str | bytes) -> None:
        if member.bucket is not None and not member.bucket.take():
            raise ChatError("rate_limited", f"slow down: at most {self.rate_limit:g} messages per second")
        data = parse_input(raw, self.max_message)
        if data["type"] == "join":
            self._join(member, data["username"], data["email"])
            return
        if member.username is None or member.legacy:
            # The Go original names the sender in every message; so do legacy clients.
            self._join(member, check_username(data["username"]), data["email"])
        text = data["message"]
        if text.startswith("/") and text[1:].split(" ", 1)[0] in self.commands:
            name, _, args = text[1:].partition(" ")
            text = self.commands[name](member.username, args)
            if text is None:
                return
        self.stats.messages += 1
        event = {"type": "message", "id": next(self._ids), "time": now_iso(),
                 "username": member.username, "avatar": member.avatar, "message": text}
        self.history.append(event)
        self._broadcast(event)

    def _join(self, member: Member, username: str, email: str) -> None:
        """Name a connection; announce it when the name is new for it."""
        avatar = avatar_hash(email)
        if member.username == username and member.avatar == avatar:
            return
        first = member.username is None
        member.username, member.avatar = username, avatar
        self._update_online()
        if first:
            log.info("%s joined", username)
            self._broadcast({"type": "join", "time": now_iso(), "username": username, "avatar": avatar})
        self._broadcast(self._presence_event())

    def _update_online(self) -> None:
        self._online = tuple(sorted(m.username for m in self._members.values() if m.username is not None))

    def _presence_event(self) -> dict[str, Any]:
        online = sorted((m.username, m.avatar) for m in self._members.values() if m.username is not None)
        return {"type": "presence", "online": [{"username": u, "avatar": a} for u, a in online]}

    # -- sending: never wait for a client ------------------------------------

    def _broadcast(self, event: dict[str, Any]) -> None:
        """Send ``event`` to every client, encoding it once per audience.

        Legacy clients get only ``message`` events, HTML-escaped and with
        ``email: ""``, in the Go original's shape.  The frames wait in
        ``_pending`` until the end of this turn of the event loop (``_flush``).
        """
        for listener in self.listeners:
            listener(event)
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        legacy = None
        if event["type"] == "message":
            legacy = text_frame(json.dumps({**event, "email": "", "username": html.escape(event["username"]),
                                            "message": html.escape(event["message"])}, ensure_ascii=False))
        self._pending.append((text_frame(json.dumps(event, ensure_ascii=False)), legacy))

    def _flush(self) -> None:
        """Write everything broadcast during this loop turn: one write per client.

        The fast path, in one place.  A server's frames are not masked, so a
        broadcast is the same bytes for every client: each frame is built once
        (``text_frame``), and the frames of one loop turn are joined and handed
        to each client's transport in a single write, where
        ``websockets.broadcast`` serializes every frame again for every
        connection and makes one system call per frame.  What it buys is
        measured in docs/benchmarks.md (python -m chat_lesson.bench fanout).
        websockets still owns each connection's state, pings and close; we
        only add whole data frames between its writes.
        """
        pending, self._pending = self._pending, []
        if not pending:       # already flushed by _send
            return
        modern = b"".join(m for m, _ in pending)
        legacy = [l for _, l in pending if l is not None]
        legacy_data = b"".join(legacy)
        for member in list(self._members.values()):
            if member.legacy:
                if legacy:
                    self._write(member, legacy_data, len(legacy))
            else:
                self._write(member, modern, len(pending))

    def _send(self, member: Member, event: dict[str, Any]) -> None:
        """One event to one client, after whatever was broadcast before it."""
        if self._pending:
            self._flush()
        self._write(member, text_frame(json.dumps(event, ensure_ascii=False)))

    def _write(self, member: Member, data: bytes, count: int = 1) -> None:
        """Queue whole frames for one client without waiting for it.

        Like ``websockets.broadcast``, this never awaits: a client that stops
        reading cannot stall the others.  Its unsent bytes pile up in its
        transport's buffer instead, and once they pass ``max_buffer`` the
        client is closed with 1008 (policy violation).
        """
        connection = member.connection
        if connection.protocol.state is not State.OPEN:
            return
        transport = connection.transport
        if transport.get_write_buffer_size() > self.max_buffer:
            self._drop_slow(member)
            return
        self.stats.deliveries += count
        transport.write(data)

    def _drop_slow(self, member: Member) -> None:
        """Close a client that has stopped reading: 1008, then reset the TCP connection.

        A client that reads nothing could never receive a close frame: it would
        wait behind the unread bytes.  websockets is told the connection failed
        with 1008 (so its state and logs say why), and the TCP connection is
        reset: SO_LINGER with a zero time-out makes close() send an RST and free
        the kernel's buffers now, instead of retrying into a closed window for
        minutes.  The browser, when it wakes, sees 1006 and reconnects.
        """
        self.stats.closed_slow += 1
        connection = member.connection
        log.warning("closing %s: %d bytes unread (limit %d)", member.username or "a client",
                    connection.transport.get_write_buffer_size(), self.max_buffer)
        connection.protocol.fail(1008, "too slow: stopped reading messages")
        connection.send_data()
        sock = connection.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.transport.abort()
