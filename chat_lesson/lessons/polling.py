"""The HTTP baseline: the chat's messages over plain HTTP/1.1 polling (lesson 01).

Before WebSocket, a page that wanted news from a server had to ask for it.
This module is that world, small enough to read in one sitting: an HTTP/1.1
server on asyncio streams, no framework, with one endpoint.

``GET /poll?since=N``
    *Short poll.* Answers at once with the JSON list of chat messages whose
    ``id`` is greater than N (``[]`` when there are none).
``GET /poll?since=N&wait=S``
    *Long poll.* Holds the request for up to S seconds until a message with
    an ``id`` greater than N exists, then answers; after S seconds with
    nothing new it answers ``[]``.
``GET /events?since=N``
    *Server-sent events* (the ``EventSource`` of the HTML standard, section
    "Server-sent events").  One response that never ends: ``Content-Type:
    text/event-stream``, then one event per chat message, as it happens::

        id: 42
        data: {"type": "message", "id": 42, ...}

    (a blank line ends each event).  A ``Last-Event-ID`` request header, which
    a browser's EventSource sends by itself when it reconnects, resumes after
    that id, so nothing said while the connection was down is lost; on a first
    connection ``since=N`` does the same.  When nothing is said for
    ``heartbeat`` seconds the server sends a comment line (``: heartbeat``),
    which keeps proxies from cutting a silent response and lets the server
    notice a client that has gone.  The body has no length: it ends when the
    connection closes (RFC 9112 §6.3), so this connection serves nothing else.

The messages are the same events the WebSocket clients get: a
:class:`PollServer` attaches to a running :class:`~chat_lesson.server.ChatServer`
with ``add_listener`` and keeps the last ``history`` messages in a deque.

Connections are persistent, as HTTP/1.1 makes them by default (RFC 9112
§9.3): after a response the server reads the next request on the same TCP
connection, until the client sends ``Connection: close`` (or speaks HTTP/1.0
without ``Connection: keep-alive``), or stays silent for ``idle_timeout``
seconds.  Lesson 01 compares a new connection per request with one kept alive.

>>> chat = ChatServer(port=0).start()              # doctest: +SKIP
>>> poll = PollServer(chat, port=0).start()        # doctest: +SKIP
>>> poll.url                                       # doctest: +SKIP
'http://127.0.0.1:40123/poll'
>>> poll.events_url                                # doctest: +SKIP
'http://127.0.0.1:40123/events'
>>> poll.stop(); chat.stop()                       # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import json
import logging
import urllib.parse
from typing import Any

from ..protocol.handshake import HandshakeError, parse_head
from ..notebook import CellService

log = logging.getLogger(__name__)

MAX_HEAD = 8192
"""The longest request head we read; a longer one gets 431 and the connection is closed."""

SERVER_NAME = "chat-lesson-poll"


class PollServer(CellService):
    """Serve a :class:`ChatServer`'s messages over HTTP polling, on the chat server's own loop.

    ``start()`` / ``stop()`` from a cell (or ``with PollServer(chat) as poll:``);
    ``await astart()`` / ``await astop()`` when you are already on ``chat.loop``.
    ``max_wait`` caps the ``wait`` a client may ask for; ``stats`` counts
    connections, requests and bytes as the server saw them.
    """

    def __init__(self, chat: Any, host: str = "127.0.0.1", port: int = 0, *, history: int = 1000,
                 max_wait: float = 60, idle_timeout: float = 30, heartbeat: float = 15,
                 retry_ms: int | None = 1000) -> None:
        self.chat = chat
        self.host, self.port = host, port
        self.max_wait, self.idle_timeout = max_wait, idle_timeout
        self.heartbeat, self.retry_ms = heartbeat, retry_ms
        self.messages: collections.deque[dict[str, Any]] = collections.deque(maxlen=history)
        self.stats = {"connections": 0, "requests": 0, "bytes_in": 0, "bytes_out": 0, "streams": 0,
                      "heartbeats": 0}
        self._server: asyncio.Server | None = None
        self._news: asyncio.Event | None = None    # set (then replaced) whenever a message arrives
        self._tasks: set[asyncio.Task[None]] = set()
        self._parked = 0                           # long polls waiting for news right now
        self._streaming = 0                        # event streams open right now

    # -- the public face ----------------------------------------------------

    @property
    def url(self) -> str:
        """The endpoint, e.g. ``http://127.0.0.1:40123/poll``."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/poll"

    @property
    def events_url(self) -> str:
        """The server-sent events endpoint, e.g. ``http://127.0.0.1:40123/events``."""
        return self.url.removesuffix("/poll") + "/events"

    @property
    def streams(self) -> int:
        """How many event streams (GET /events) are open right now."""
        return self._streaming

    @property
    def parked(self) -> int:
        """How many long polls are parked right now: held open, waiting for a message to wake them."""
        return self._parked

    @property
    def last_id(self) -> int:
        """The id of the newest message held (0 when none)."""
        return self.messages[-1]["id"] if self.messages else 0

    def start(self) -> PollServer:
        """Start listening on the chat server's loop; returns once listening."""
        loop = self._chat_loop()
        if _loop_of_this_thread() is loop:
            raise RuntimeError("start() would deadlock on the chat server's own loop: use 'await poll.astart()'")
        asyncio.run_coroutine_threadsafe(self.astart(), loop).result(10)
        return self

    def stop(self) -> None:
        """Close every connection and free the port."""
        if self._server is None:
            return
        loop = self._chat_loop()
        if _loop_of_this_thread() is loop:
            raise RuntimeError("stop() would deadlock on the chat server's own loop: use 'await poll.astop()'")
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(self.astop(), loop).result(10)
        else:   # the chat server was stopped first, and its loop with it: just let go
            self.chat.remove_listener(self._on_event)
            for sock in self._server.sockets:
                sock._sock.close()      # TransportSocket wraps the listening socket.socket
            self._server = None

    async def astart(self) -> PollServer:
        self._news = asyncio.Event()
        if self._on_event not in self.chat.listeners:
            self.chat.add_listener(self._on_event)
        self._server = await asyncio.start_server(self._serve_connection, self.host, self.port, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("poll server listening on %s", self.url)
        return self

    async def astop(self) -> None:
        self.chat.remove_listener(self._on_event)
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    def __repr__(self) -> str:
        state = "running" if self._server is not None else "stopped"
        return f"<PollServer {self.url} {state}, {len(self.messages)} messages held>"

    def _chat_loop(self) -> asyncio.AbstractEventLoop:
        loop = getattr(self.chat, "loop", None)
        if loop is None:
            raise RuntimeError("start the ChatServer first: PollServer runs on the chat server's loop")
        return loop

    # -- the events -----------------------------------------------------------

    def _on_event(self, event: dict[str, Any]) -> None:
        """The chat server's listener: keep messages, wake every long poll waiting."""
        if event.get("type") != "message":
            return
        self.messages.append(event)
        if self._news is not None:
            self._news.set()
            self._news = asyncio.Event()

    MAX_ANSWER = 100
    """Messages in one answer at most: a poller that is far behind pages through (since = the last id it got),
    so a 33-byte request can never cost megabytes."""

    def since(self, last_id: int) -> list[dict[str, Any]]:
        """The messages held whose id is greater than ``last_id``, oldest first, at most MAX_ANSWER of them."""
        return [m for m in self.messages if m["id"] > last_id][: self.MAX_ANSWER]

    async def wait_since(self, last_id: int, wait: float) -> list[dict[str, Any]]:
        """Like :meth:`since`, but wait up to ``wait`` seconds for at least one message."""
        deadline = asyncio.get_running_loop().time() + wait
        while not (found := self.since(last_id)):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or self._news is None:
                break
            self._parked += 1
            try:
                await asyncio.wait_for(self._news.wait(), remaining)
            except TimeoutError:
                break
            finally:
                self._parked -= 1
        return found

    # -- HTTP/1.1 -------------------------------------------------------------

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One TCP connection: requests, one after another, until one of us closes it."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.stats["connections"] += 1
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle_timeout)
                except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
                    return        # the client closed, or stayed silent too long
                except asyncio.LimitOverrunError:
                    await self._respond(writer, 431, {"error": "request head too large"}, keep_alive=False)
                    return
                self.stats["requests"] += 1
                self.stats["bytes_in"] += len(raw)
                keep_alive = await self._handle_request(raw, writer, reader)
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _handle_request(self, raw: bytes, writer: asyncio.StreamWriter,
                              reader: asyncio.StreamReader | None = None) -> bool:
        """Answer one request; return whether the connection stays open."""
        try:
            head = parse_head(raw)
        except HandshakeError as error:
            await self._respond(writer, 400, {"error": str(error)}, keep_alive=False)
            return False
        if not head.is_request:
            await self._respond(writer, 400, {"error": "expected a request"}, keep_alive=False)
            return False
        connection = head.headers.tokens("Connection")
        if head.version == "HTTP/1.0":          # RFC 9112 §9.3: 1.0 closes unless asked not to
            keep_alive = "keep-alive" in connection
        else:
            keep_alive = "close" not in connection
        if "Content-Length" in head.headers or "Transfer-Encoding" in head.headers:
            # We never read request bodies; a request with one would desynchronise the connection.
            await self._respond(writer, 400, {"error": "this endpoint takes no request body"}, keep_alive=False)
            return False
        url = urllib.parse.urlsplit(head.target or "")
        if head.method not in ("GET", "HEAD"):
            await self._respond(writer, 405, {"error": "use GET"}, keep_alive, extra=[("Allow", "GET, HEAD")])
            return keep_alive
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/events":
            try:
                since = int(query.get("since", ["0"])[0])
            except ValueError:
                await self._respond(writer, 400, {"error": "since must be an integer"}, keep_alive)
                return keep_alive
            resume = _event_id(head.headers.get("Last-Event-ID"))
            await self._stream(writer, reader, since if resume is None else resume, head.method == "HEAD")
            return False           # the body ended by closing: nothing more on this connection
        if url.path != "/poll":
            await self._respond(writer, 404, {"error": "not found: try GET /poll?since=0 or GET /events"},
                                keep_alive)
            return keep_alive
        try:
            since = int(query.get("since", ["0"])[0])
            wait = min(float(query.get("wait", ["0"])[0]), self.max_wait)
        except ValueError:
            await self._respond(writer, 400, {"error": "since must be an integer and wait a number"}, keep_alive)
            return keep_alive
        found = await self.wait_since(since, wait) if wait > 0 else self.since(since)
        await self._respond(writer, 200, found, keep_alive, head_only=head.method == "HEAD")
        return keep_alive

    async def _respond(self, writer: asyncio.StreamWriter, status: int, data: Any, keep_alive: bool, *,
                       extra: list[tuple[str, str]] = (), head_only: bool = False) -> None:
        body = json.dumps(data, ensure_ascii=False).encode()   # each event as the WebSocket frames carry it
        reasons = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                   431: "Request Header Fields Too Large"}
        headers = [
            ("Date", email.utils.formatdate(usegmt=True)),      # RFC 9110 §6.6.1: origin servers send it
            ("Server", SERVER_NAME),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),                      # every poll must reach the server
            *extra,
        ]
        if not keep_alive:
            headers.append(("Connection", "close"))
        head = f"HTTP/1.1 {status} {reasons[status]}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n"
        out = head.encode("ascii") + (b"" if head_only else body)
        self.stats["bytes_out"] += len(out)
        writer.write(out)
        await writer.drain()


    async def _stream(self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader | None, last: int,
                      head_only: bool) -> None:
        """GET /events: a text/event-stream of every message with an id above ``last``, until either side ends it."""
        headers = [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Server", SERVER_NAME),
            ("Content-Type", "text/event-stream"),
            ("Cache-Control", "no-store"),
            ("Connection", "close"),           # no Content-Length: the body ends when the connection does
        ]
        head = "HTTP/1.1 200 OK\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n"
        await self._write(writer, head.encode("ascii"))
        if head_only:
            return
        if self.retry_ms is not None:           # how long the browser waits before it reconnects
            await self._write(writer, f"retry: {self.retry_ms}\n\n".encode())
        self.stats["streams"] += 1
        self._streaming += 1
        gone = asyncio.ensure_future(reader.read(1)) if reader is not None else None   # b"": the client hung up
        loop = asyncio.get_running_loop()
        try:
            quiet_since = loop.time()
            while True:
                found = self.since(last)
                if found:
                    await self._write(writer, b"".join(sse_event(m) for m in found))
                    last, quiet_since = found[-1]["id"], loop.time()
                    continue
                remaining = quiet_since + self.heartbeat - loop.time()
                if remaining <= 0:
                    self.stats["heartbeats"] += 1
                    await self._write(writer, HEARTBEAT)
                    quiet_since = loop.time()
                    continue
                news = asyncio.ensure_future(self._news.wait()) if self._news is not None else None
                waiting = {t for t in (news, gone) if t is not None}
                if not waiting:
                    return
                await asyncio.wait(waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if news is not None and not news.done():
                    news.cancel()
                if gone is not None and gone.done():
                    return                       # the client closed (or sent bytes it must not send here)
        finally:
            self._streaming -= 1
            if gone is not None and not gone.done():
                gone.cancel()

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        self.stats["bytes_out"] += len(data)
        writer.write(data)
        await writer.drain()


HEARTBEAT = b": heartbeat\n\n"
"""What an event stream sends when nothing has been said for ``heartbeat`` seconds: a comment, which
EventSource ignores (a line that starts with a colon)."""


def sse_event(message: dict[str, Any]) -> bytes:
    """One chat message as a server-sent event: its id, its JSON on one data line, a blank line."""
    data = json.dumps(message, ensure_ascii=False)     # JSON has no raw newline, so one data: line suffices
    return f"id: {message['id']}\ndata: {data}\n\n".encode()


def _event_id(value: str | None) -> int | None:
    """A Last-Event-ID header as a message id, or None (absent, or not one of ours)."""
    try:
        return int(value.strip()) if value is not None else None
    except ValueError:
        return None


def _loop_of_this_thread() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


__all__ = ["HEARTBEAT", "MAX_HEAD", "PollServer", "sse_event"]
