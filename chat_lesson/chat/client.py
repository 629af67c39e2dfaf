"""ChatClient: a chat participant for notebook cells, tests and bots.

Every method comes in two forms: ``connect()``, ``send()``, ``recv()``,
``close()`` for a plain cell or script, and ``aconnect()``, ``asend()``,
``arecv()``, ``aclose()`` for ``await``.  The plain forms go through
:func:`chat_lesson.notebook.run`, which uses nest-asyncio inside Jupyter
(whose kernel already runs an event loop that ``asyncio.run`` cannot start
again); the client's connection then lives on the kernel's loop, which
keeps answering the server's pings between cells.

>>> bot = ChatClient("ws://127.0.0.1:8000/ws", "bot").connect()   # doctest: +SKIP
>>> bot.send("hello :wave:")                                        # doctest: +SKIP
>>> bot.recv(type="message")["message"]                             # doctest: +SKIP
'hello :wave:'
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from collections.abc import AsyncIterator, Iterator

from websockets.asyncio.client import ClientConnection, connect

from ..notebook import run
from .server import SUBPROTOCOL


def ws_url_of(target: Any) -> str:
    """Accept a ChatServer, its page URL (http://host:port/) or a ws:// URL."""
    url = getattr(target, "ws_url", target)
    if url.startswith(("http://", "https://")):
        url = "ws" + url[4:].rstrip("/") + "/ws"
    return url


class ChatClient:
    """One chat user.

    ``legacy=True`` behaves like the Go original's Vue client: it offers no
    subprotocol and sends no join, so the server sends it only messages.
    Other keyword arguments go to ``websockets.asyncio.client.connect``
    (``origin=``, ``compression=None``, ``ping_interval=`` ...).
    """

    def __init__(self, server: Any, username: str, email: str = "", *, legacy: bool = False, **options: Any) -> None:
        self.url = ws_url_of(server)
        self.username, self.email, self.legacy = username, email, legacy
        # Events wait in the client until a cell reads them.  websockets' default
        # (max_queue=16) would stop reading the socket after 16 unread events,
        # and the server would then close this client as too slow.
        self.options = {"max_queue": None, **options}
        self.ws: ClientConnection | None = None

    # -- async ----------------------------------------------------------------

    async def aconnect(self) -> ChatClient:
        subprotocols = None if self.legacy else [SUBPROTOCOL]
        self.ws = await connect(self.url, subprotocols=subprotocols, **self.options)
        if not self.legacy:
            await self.ws.send(json.dumps({"type": "join", "username": self.username, "email": self.email}))
        return self

    async def asend(self, message: str) -> None:
        """Send a chat message in the Go original's shape."""
        await self._ws.send(json.dumps({"username": self.username, "email": self.email, "message": message}, ensure_ascii=False))

    async def asend_raw(self, data: str | bytes) -> None:
        """Send anything at all, e.g. broken JSON, to see how the server copes."""
        await self._ws.send(data)

    async def arecv(self, timeout: float = 5, type: str | None = None) -> dict[str, Any]:
        """The next event (of ``type``, if given, skipping others) within ``timeout`` seconds.

        Raises ``TimeoutError`` when none arrives in time.
        """
        async with asyncio.timeout(timeout):
            while True:
                event = json.loads(await self._ws.recv())
                if type is None or event.get("type") == type:
                    return event

    async def aevents(self, timeout: float = 1) -> AsyncIterator[dict[str, Any]]:
        """Yield events until none arrives for ``timeout`` seconds."""
        while True:
            try:
                yield await self.arecv(timeout)
            except TimeoutError:
                return

    async def await_for(self, predicate: Any, timeout: float = 5) -> dict[str, Any]:
        """The first event for which ``predicate(event)`` is true, within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            event = await self.arecv(max(0.0, deadline - time.monotonic()))
            if predicate(event):
                return event

    async def aclose(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def __aenter__(self) -> ChatClient:
        return await self.aconnect()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self.aevents()

    # -- sync: the same, for a plain cell or script ---------------------------

    def connect(self) -> ChatClient:
        return run(self.aconnect())

    def send(self, message: str) -> None:
        run(self.asend(message))

    def send_raw(self, data: str | bytes) -> None:
        run(self.asend_raw(data))

    def recv(self, timeout: float = 5, type: str | None = None) -> dict[str, Any]:
        return run(self.arecv(timeout, type))

    def wait_for(self, predicate: Any, timeout: float = 5) -> dict[str, Any]:
        return run(self.await_for(predicate, timeout))

    def events(self, timeout: float = 1) -> Iterator[dict[str, Any]]:
        """Yield events until none arrives for ``timeout`` seconds."""
        while True:
            try:
                yield self.recv(timeout)
            except TimeoutError:
                return

    def close(self) -> None:
        run(self.aclose())

    def __enter__(self) -> ChatClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.events()

    @property
    def _ws(self) -> ClientConnection:
        if self.ws is None:
            raise RuntimeError("not connected: call connect() (or await aconnect()) first")
        return self.ws

    def __repr__(self) -> str:
        state = "connected" if self.ws is not None else "not connected"
        return f"<ChatClient {self.username!r} {self.url} {state}>"
