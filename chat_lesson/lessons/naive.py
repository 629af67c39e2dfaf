"""NaiveServer: the Go original's chat server, copied faithfully, flaws and all.

**This server is deliberately broken.  Use it only to watch it break (lesson 06).**

It is the design of the article's ``server.go`` (scotch-io/go-realtime-chat)
in Python, on the same ``websockets`` library as :class:`~chat_lesson.server.ChatServer`,
so that lesson 06 can reproduce each of the original's flaws live and then
measure the real server's answer the same way:

* **One client that stops reading stalls everyone.**  One task takes each
  message off the broadcast queue and awaits a send to each client in turn,
  as the original's single writer makes one blocking JSON write per client.
  When one client stops reading, its send waits for ever, and so does the room.
* **Every Origin is accepted** (the original's upgrader is told to accept any), so any
  web page a student opens can join the class chat from the student's browser.
* **No size limit** (``max_size=None``): a 10 MiB message is read whole into
  memory and relayed to everyone.
* **No rate limit**: one client can send as fast as it can, and all are relayed.
* **HTML is relayed as it came**, to clients that render it as HTML (the original's uses ``v-html``).
* **Email addresses are broadcast**: the message object ``{email, username,
  message}`` goes to everyone verbatim.

Two of the original's flaws cannot be copied into Python and are explained in
lesson 06 instead: a failed upgrade ends the whole program (``websockets`` answers
a bad handshake with an HTTP error, it does not exit), and the shared map of
clients has no lock (concurrent map writes crash a Go program; asyncio runs every
handler on one thread).  For the same reason the broadcast loop iterates over a *copy* of the
clients: iterating the live set across an ``await`` would raise "Set changed
size during iteration" when someone joins mid-broadcast, the asyncio cousin of
Go's crash; lesson 06 shows that separately.

Where it is not the original: running on ``websockets`` rather than gorilla,
a text frame that is not valid UTF-8 is refused with 1007 (the original passes
it on, one more of its faults, not shown in lesson 06); a client dropped for bad
JSON gets a closing handshake (Go's ``defer ws.Close()`` just closes the TCP
connection); and the JSON sent out is ``json.dumps``' spelling of the same
object (Go's encoder escapes ``<`` and ends with a newline; the browser's
``JSON.parse`` gets the same strings).  The unbuffered ``broadcast``
channel becomes a queue with room for one message, asyncio's nearest match.

It is reachable only from lesson 06's code: not exported from ``chat_lesson``,
not behind ``python -m chat_lesson serve``.

>>> with NaiveServer(port=0) as naive:     # doctest: +SKIP
...     naive.ws_url                       # ws://127.0.0.1:PORT/ws
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import urllib.parse
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..notebook import CellService, show_link
from ..chat.static import CONTENT_TYPES, http_response, static_file

log = logging.getLogger(__name__)


@dataclasses.dataclass
class NaiveStats:
    """Counters to compare with ``ChatServer.stats``."""

    connections: int = 0      # open connections now
    messages: int = 0         # messages taken off the broadcast queue
    deliveries: int = 0       # frames written to clients
    bytes_relayed: int = 0    # payload bytes written to clients


def read_json(raw: str | bytes) -> dict[str, str]:
    """What the original keeps of a frame: it decodes JSON into a struct of three strings.

    The three string fields, missing ones as ""; other fields dropped.  Like
    Go's decoder, a frame that is not a JSON object, or a field of the wrong
    type, is an error (and the original then drops the client).  Text or binary
    frames alike: the original's decoder does not look at the frame's type.  Nothing else
    is checked: not the size, not the HTML, not whether the email should be
    shared.
    """
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("json: cannot unmarshal into Go value of type main.Message")
    msg = {}
    for field in ("email", "username", "message"):
        value = data.get(field, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise ValueError(f"json: cannot unmarshal {type(value).__name__} into Go struct field Message.{field}")
        msg[field] = value
    return msg


class NaiveServer(CellService):
    """The Go original's chat, in Python.  Deliberately broken: see the module docstring.

    ``NaiveServer(port=0).start()`` runs it on a background loop (like
    ``ChatServer``); ``.ws_url``, ``.clients`` (the shared set of connections),
    ``.stats`` and ``.stop()``; it is also a context manager.  ``static`` is an
    optional folder to serve at ``/`` (the original's ``http.FileServer``, whose
    path handling is not one of its flaws, so ours is borrowed from ChatServer).
    """


    def __init__(self, host: str = "127.0.0.1", port: int = 8000, *,
                 static: str | os.PathLike[str] | None = None, quiet: bool = True) -> None:
        self.host, self.port = host, port
        self.static = Path(static) if static else None
        self.quiet = quiet
        # The original keeps its connections in one global map used as a set, shared by every handler.
        self.clients: set[ServerConnection] = set()
        self.stats = NaiveStats()
        self.loop: asyncio.AbstractEventLoop | None = None
        # The original hands messages from the readers to the one writer over an
        # unbuffered channel (a send waits for the receiver); the nearest asyncio
        # cousin is a queue with room for one.
        self.broadcast: asyncio.Queue[dict[str, str]] | None = None
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()


    # -- the original, line by line -------------------------------------------

    async def handle_connections(self, ws: ServerConnection) -> None:
        """The original's connection handler: register the client, then read messages into the broadcast queue."""
        self._tasks.add(asyncio.current_task())      # so that stop() can end a handler stuck on the queue
        self.clients.add(ws)                         # registered in the shared set, with no lock
        self.stats.connections += 1
        try:
            async for raw in ws:
                msg = read_json(raw)                 # decoded into the three string fields; any error ends the client
                await self.broadcast.put(msg)        # handed to the writer: waits while the writer is busy
        except (ConnectionClosed, ValueError) as exc:
            log.info("error: %s", exc)               # logged, and the client is forgotten
        finally:
            self.clients.discard(ws)
            self.stats.connections -= 1
            self._tasks.discard(asyncio.current_task())

    async def handle_messages(self) -> None:
        """The original's single writer: for each message, send it to every client in turn, waiting for each."""
        while True:
            msg = await self.broadcast.get()         # the next message from any reader
            self.stats.messages += 1
            text = json.dumps(msg, ensure_ascii=False)
            for client in list(self.clients):        # every registered client, one after the other
                try:
                    await client.send(text)          # like a blocking JSON write: waits while this client is full
                    self.stats.deliveries += 1
                    self.stats.bytes_relayed += len(text.encode())
                except ConnectionClosed as exc:
                    log.info("error: %s", exc)
                    self.clients.discard(client)     # a failed write closes and forgets that client

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Files at ``/`` and the WebSocket at ``/ws``, as in the original: no Origin check anywhere."""
        path = urllib.parse.urlsplit(request.path).path
        if path == "/ws":
            return None
        found = static_file(self.static, request.path) if self.static else None
        if found is None:
            return http_response(404, b"Not found\n")
        return http_response(200, found.read_bytes(), CONTENT_TYPES.get(found.suffix, "application/octet-stream"))

    # -- running it from a cell -------------------------------------------------

    async def astart(self) -> NaiveServer:
        self.loop = asyncio.get_running_loop()
        self.broadcast = asyncio.Queue(maxsize=1)
        self._broadcaster = asyncio.create_task(self.handle_messages())    # the writer runs on its own, as a goroutine
        self._server = await serve(
            self.handle_connections, self.host, self.port,
            process_request=self._process_request,
            max_size=None,          # no limit on a message's size
            compression=None,       # gorilla's default: no permessage-deflate
            ping_interval=None,     # the original sends no pings
            close_timeout=1,
            logger=log,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._claim_port()
        if not self.quiet:
            show_link(self.url, "Naive (deliberately broken) server at")
        return self

    async def astop(self) -> None:
        """Stop like the Go program exiting: every TCP connection dropped, no close frame (clients see 1006)."""
        if self._server is None:
            return
        self._broadcaster.cancel()
        for task in list(self._tasks):   # handlers waiting on a full broadcast queue
            task.cancel()
        for ws in list(self._server.connections):
            ws.transport.abort()
        self._server.close()
        try:
            async with asyncio.timeout(5):
                await self._server.wait_closed()
        except TimeoutError:
            log.warning("naive server: connections still open after 5 s; abandoned")
        self._release_port()
        self._server = None

    def __repr__(self) -> str:
        state = "running" if self._server is not None else "stopped"
        return f"<NaiveServer {self.ws_url} {state}, {len(self.clients)} connected (deliberately broken)>"
