"""ChatClient: a chat participant for notebook cells, tests and bots.

Every method comes in two forms: ``connect()``, ``send()``, ``recv()``,
``close()`` for a plain cell or script, and ``aconnect()``, ``asend()``,
``arecv()``, ``aclose()`` for ``await``.

The plain forms never touch the caller's event loop.  A Jupyter kernel runs
its own loop and queues the cells of a "Run All" on it; a call that re-entered
that loop (as nest-asyncio does) would run the queued cells *inside* the
current one, out of order.  So the connection of a plain-form client lives on
one background loop thread shared by all such clients
(:func:`chat_lesson.notebook.client_loop`), which keeps answering the server's
pings between cells, and each plain call waits for its result there.

The ``a`` forms run on the loop that connected the client; awaited from
another loop (``await bot.arecv()`` in a cell, after ``bot.connect()``), they
are handed to that loop and awaited from here.

>>> bot = ChatClient("ws://127.0.0.1:8000/ws", "bot").connect()   # doctest: +SKIP
>>> bot.send("hello :wave:")                                        # doctest: +SKIP
>>> bot.recv(type="message")["message"]                             # doctest: +SKIP
'hello :wave:'
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect

from ..notebook import client_loop
from .wire import SUBPROTOCOL

__all__ = ["ChatClient", "ws_url_of"]

T = TypeVar("T")


def ws_url_of(target: Any) -> str:
    """Accept a ChatServer, its page URL (http://host:port/) or a ws:// URL."""
    url = getattr(target, "ws_url", target)
    if url.startswith(("http://", "https://")):
        url = "ws" + url[4:].rstrip("/") + "/ws"
    return url


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


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
        self._home: asyncio.AbstractEventLoop | None = None     # the loop the connection lives on

    # -- where the coroutines run ---------------------------------------------------

    async def _on_home(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the connection's loop, from whichever loop we are on."""
        home = self._home
        if home is None or home is asyncio.get_running_loop():
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, home))

    def _block(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the connection's loop (the shared client loop by default) and wait for it."""
        background = client_loop()
        home = self._home or background.loop
        if home is _running_loop():
            coro.close()
            raise RuntimeError("this client was connected with `await client.aconnect()` on this loop: "
                               "use the await forms (await client.asend(...), await client.arecv() ...)")
        if home is background.loop:
            return background.call(coro, timeout=None)
        return asyncio.run_coroutine_threadsafe(coro, home).result()

    # -- async ----------------------------------------------------------------

    async def aconnect(self) -> ChatClient:
        """Open the connection (and join, unless legacy) on the running loop."""
        self._home = asyncio.get_running_loop()
        subprotocols = None if self.legacy else [SUBPROTOCOL]
        self.ws = await connect(self.url, subprotocols=subprotocols, **self.options)
        if not self.legacy:
            await self.ws.send(json.dumps({"type": "join", "username": self.username, "email": self.email}))
        return self

    async def asend(self, message: str) -> None:
        """Send a chat message in the Go original's shape."""
        data = json.dumps({"username": self.username, "email": self.email, "message": message}, ensure_ascii=False)
        await self._on_home(self._ws.send(data))

    async def asend_raw(self, data: str | bytes) -> None:
        """Send anything at all, e.g. broken JSON, to see how the server copes."""
        await self._on_home(self._ws.send(data))

    async def arecv(self, timeout: float = 5, type: str | None = None) -> dict[str, Any]:
        """The next event (of ``type``, if given, skipping others) within ``timeout`` seconds.

        Raises ``TimeoutError`` when none arrives in time.
        """
        return await self._on_home(self._recv(timeout, type))

    async def _recv(self, timeout: float, type: str | None) -> dict[str, Any]:
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
            await self._on_home(self.ws.close())

    async def __aenter__(self) -> ChatClient:
        return await self.aconnect()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self.aevents()

    # -- plain: the same, for a cell or a script; never re-enters the caller's loop --

    def connect(self) -> ChatClient:
        return self._block(self.aconnect())

    def send(self, message: str) -> None:
        self._block(self.asend(message))

    def send_raw(self, data: str | bytes) -> None:
        self._block(self.asend_raw(data))

    def recv(self, timeout: float = 5, type: str | None = None) -> dict[str, Any]:
        return self._block(self.arecv(timeout, type))

    def wait_for(self, predicate: Any, timeout: float = 5) -> dict[str, Any]:
        return self._block(self.await_for(predicate, timeout))

    def events(self, timeout: float = 1) -> Iterator[dict[str, Any]]:
        """Yield events until none arrives for ``timeout`` seconds."""
        while True:
            try:
                yield self.recv(timeout)
            except TimeoutError:
                return

    def close(self) -> None:
        self._block(self.aclose())

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
