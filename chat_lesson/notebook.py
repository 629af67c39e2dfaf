"""Run asyncio code from a notebook cell.

Two problems meet in a notebook:

1. A server must keep running while the student runs other cells, some of
   which block (``time.sleep``, a long computation).  So a server gets its
   own event loop in a daemon thread: :class:`BackgroundLoop`.
2. Jupyter's kernel already runs an asyncio loop, so ``asyncio.run(...)`` from
   a cell fails with "cannot be called from a running event loop".
   :func:`run` uses nest-asyncio to re-enter the kernel's loop for the
   duration of one call, which lets a lesson call the same helper from a
   cell and from a script.  (Inside a cell you may also simply ``await``.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import socket
import threading
import time
from typing import Any, TypeVar
from collections.abc import Awaitable, Callable, Coroutine

T = TypeVar("T")

_script_loop: asyncio.AbstractEventLoop | None = None


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion and return its result, from a cell or a script.

    Inside Jupyter (a loop is already running in this thread) this is
    nest-asyncio's job: it patches that loop so it can be re-entered, and we
    drive it until ``coro`` is done.  Background tasks on the kernel's loop
    (a client's keepalive, say) keep running between cells.  Elsewhere one
    private loop is kept for the whole process, so connections opened by one
    call are still alive in the next.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        import nest_asyncio

        nest_asyncio.apply(loop)
        return loop.run_until_complete(coro)
    global _script_loop
    if _script_loop is None or _script_loop.is_closed():
        _script_loop = asyncio.new_event_loop()
    return _script_loop.run_until_complete(coro)


def wait_until(condition: Callable[[], T], timeout: float = 5.0, what: str = "a condition", step: float = 0.01) -> T:
    """Check ``condition()`` every ``step`` s until it returns something true, and return that.

    Raises ``TimeoutError`` after ``timeout`` s: waiting for a condition, never
    for a guessed time, is what keeps a demo (or a test) both quick and sure.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout:g} s")
        time.sleep(step)


class BackgroundLoop:
    """An asyncio event loop running in a daemon thread.

    ``call(coro)`` runs a coroutine there and waits for its result from any
    other thread; a cell that blocks does not block this loop.
    """

    def __init__(self, name: str = "chat-lesson-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.close()

    def submit(self, coro: Awaitable[T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; returns a thread-safe future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def call(self, coro: Awaitable[T], timeout: float | None = 30) -> T:
        """Run ``coro`` on the loop and wait (at most ``timeout`` s) for its result."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("BackgroundLoop.call() from its own thread would deadlock")
        return self.submit(coro).result(timeout)

    def stop(self) -> None:
        """Stop the loop and wait for its thread to end."""
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)


def in_notebook() -> bool:
    """True when running inside a Jupyter kernel (where HTML output renders)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"


def show_link(url: str, label: str) -> None:
    """Show ``url`` as a clickable link in Jupyter, or print it elsewhere."""
    if in_notebook():
        from IPython.display import HTML, display

        u = html.escape(url, quote=True)
        display(HTML(f'{html.escape(label)} <a href="{u}" target="_blank">{html.escape(url)}</a>'))
    else:
        print(f"{label} {url}", flush=True)


def lan_address() -> str | None:
    """This machine's address on the local network, or None.

    Connecting a UDP socket sends nothing; it only asks the kernel which
    interface would route to a private address, and reads that interface's IP.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


class CellService:
    """Start and stop an asyncio server from a cell: the shared half of ChatServer, Tap, ...

    A subclass writes ``astart()`` (listen on the running loop, set
    ``self.port``, call ``self._claim_port()``) and ``astop()`` (close, call
    ``self._release_port()``).  This class adds:

    - ``start()`` / ``stop()``: the same on a :class:`BackgroundLoop` of its
      own, so the service keeps running while other cells block;
    - ``with`` and ``async with``;
    - re-run cells: starting a service on a port that an earlier service of
      this kernel still holds stops that one first, instead of failing with
      "address already in use".
    """

    _by_port: dict[int, CellService] = {}   # shared by every kind of service in this process
    host: str
    port: int
    _background: BackgroundLoop | None = None

    @property
    def url(self) -> str:
        """The page to open in a browser (on this machine: 0.0.0.0 is shown as 127.0.0.1)."""
        return f"http://{self._display_host()}:{self.port}/"

    @property
    def ws_url(self) -> str:
        """Where the WebSocket is: the same host and port, path /ws."""
        return f"ws://{self._display_host()}:{self.port}/ws"

    def _display_host(self) -> str:
        if self.host in ("0.0.0.0", ""):
            return "127.0.0.1"
        if self.host == "::":
            return "[::1]"
        return f"[{self.host}]" if ":" in self.host else self.host

    async def astart(self) -> Any:
        raise NotImplementedError

    async def astop(self) -> None:
        raise NotImplementedError

    def start(self) -> Any:
        """Start on a background loop; returns once listening."""
        previous = CellService._by_port.get(self.port) if self.port else None
        if previous is not None and previous is not self:
            previous.stop()
        if self._background is None:
            self._background = BackgroundLoop(f"{type(self).__name__}-{self.port}")
        try:
            self._background.call(self.astart())
        except BaseException:
            self._background.stop()
            self._background = None
            raise
        return self

    def stop(self) -> None:
        """Stop and free the port."""
        if self._background is not None:
            self._background.call(self.astop())
            self._background.stop()
            self._background = None

    def _claim_port(self) -> None:
        CellService._by_port[self.port] = self

    def _release_port(self) -> None:
        if CellService._by_port.get(self.port) is self:
            del CellService._by_port[self.port]

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Any:
        return await self.astart()

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()
