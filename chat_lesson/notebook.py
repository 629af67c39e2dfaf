"""Run asyncio code from a notebook cell, without ever blocking or re-entering the kernel.

Two problems meet in a notebook:

1. A server must keep running while the student runs other cells, some of
   which block (``time.sleep``, a long computation).  So a server gets its
   own event loop in a daemon thread: :class:`BackgroundLoop`.
2. Jupyter's kernel already runs an asyncio loop, and on "Run All" it queues
   every cell on it.  ``asyncio.run(...)`` from a cell fails ("cannot be
   called from a running event loop"), and re-entering the kernel's loop (the
   nest-asyncio trick) would run the queued cells *inside* the current one,
   out of order.  So a blocking call from a cell hands its coroutine to a
   background loop and waits for the result in the cell's thread
   (:func:`client_loop` for clients); in a cell you may also simply ``await``
   the ``a...`` form of a call.

This is the only module that knows Jupyter: how to show a link (and which
one: :func:`link_for`), and how to tell a re-run of the same cell (see
:class:`CellService`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import os
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

_client_loop: BackgroundLoop | None = None
_client_loop_lock = threading.Lock()


def client_loop() -> BackgroundLoop:
    """The background loop shared by every client driven from plain (non-await) calls."""
    global _client_loop
    with _client_loop_lock:
        if _client_loop is None or _client_loop.loop.is_closed():
            _client_loop = BackgroundLoop("chat-lesson-clients")
        return _client_loop


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


LINK_MODES = ("auto", "direct", "proxy")


def link_for(url: str, link: str = "auto", environ: Mapping[str, str] | None = None) -> str:
    """The link to show for a service listening at ``url`` (``http://127.0.0.1:PORT/...``).

    A service's own address is only good on the machine it runs on.  When
    the notebook runs elsewhere (JupyterHub, Binder, a lab on a remote
    machine), the learner's browser reaches that machine only through the
    Jupyter server itself, and jupyter-server-proxy forwards
    ``<base_url>proxy/PORT/...`` to ``127.0.0.1:PORT/...`` there: the page
    and its WebSocket both, since the page builds the WebSocket's URL from
    its own location (static/app.js ``wsURL()``).

    - ``"direct"``: ``url`` as it is.
    - ``"proxy"``: ``{base_url}proxy/{port}/...``, an absolute path that the
      browser resolves against the lab's own address.  The base URL is
      JupyterHub's ``JUPYTERHUB_SERVICE_PREFIX`` (``/user/alice/``), else ``/``.
    - ``"auto"``: "proxy" under JupyterHub (which sets
      ``JUPYTERHUB_SERVICE_PREFIX``; Binder runs under JupyterHub too), else
      "direct".

    Pure: ``environ`` defaults to ``os.environ`` but a test passes its own.
    """
    if link not in LINK_MODES:
        raise ValueError(f"link={link!r}: use one of {', '.join(map(repr, LINK_MODES))}")
    environ = os.environ if environ is None else environ
    prefix = environ.get("JUPYTERHUB_SERVICE_PREFIX")
    if link == "direct" or (link == "auto" and not prefix):
        return url
    parts = urllib.parse.urlsplit(url)
    if parts.port is None:
        return url                     # no port to proxy to: nothing better to show
    inner = (prefix or "").strip("/")
    base = f"/{inner}/" if inner else "/"
    path = parts.path or "/"
    return urllib.parse.urlunsplit(("", "", f"{base}proxy/{parts.port}{path}", parts.query, parts.fragment))


def link_html(url: str, label: str, text: str | None = None) -> str:
    """``label`` and a link to ``url`` as HTML; the link reads ``text`` (the URL itself if None)."""
    return (f'{html.escape(label)} <a href="{html.escape(url, quote=True)}" target="_blank">'
            f'{html.escape(url if text is None else text)}</a>')


def show_link(url: str, label: str, link: str = "auto", text: str | None = None) -> None:
    """Show the service at ``url`` as a clickable link in Jupyter, or print it elsewhere.

    ``link`` chooses between ``url`` itself and the same page through the
    Jupyter server (see :func:`link_for`); every service (chat, tap, ...)
    shows its link here, so each gets the proxied one under JupyterHub.
    ``text``, in a notebook, is what the link reads instead of its address:
    for the teacher link, whose address holds a secret that a projector
    would show the class.
    """
    shown = link_for(url, link)
    if in_notebook():
        from IPython.display import HTML, display

        display(HTML(link_html(shown, label, text)))
    elif shown != url:     # a path on the Jupyter server: say where it leads, for a terminal on that server
        print(f"{label} {shown} on the Jupyter server's address (on this machine: {url})", flush=True)
    else:
        print(f"{label} {shown}", flush=True)


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


PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def calling_cell() -> str | None:
    """The notebook cell (``file:line``) whose code called into this package, or None outside one.

    ipykernel compiles each cell to a file name made from a hash of its
    source (``.../ipykernel_<pid>/<hash>.py``; terminal IPython uses
    ``<ipython-input-...>``), so running the same cell again gives the same
    name: that is how a re-run is told from a new cell.
    """
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(PACKAGE_DIR):
        frame = frame.f_back
    if frame is None:
        return None
    name = frame.f_code.co_filename
    if "ipykernel_" in name or name.startswith("<ipython-input-"):
        return f"{name}:{frame.f_lineno}"
    return None


class CellService:
    """Start and stop an asyncio server from a cell: the shared half of ChatServer, Tap, ...

    A subclass writes ``astart()`` (listen on the running loop, set
    ``self.port``, call ``self._claim_port()``) and ``astop()`` (close, call
    ``self._release_port()``).  This class adds:

    - ``start()`` / ``stop()``: the same on a :class:`BackgroundLoop` of its
      own, so the service keeps running while other cells block;
    - ``with`` and ``async with``;
    - re-run cells: running the same cell again stops the service it started
      the first time and starts the new one *on the same port*, even with
      ``port=0``, so a browser tab open on it reconnects by itself; and
      starting a service on a port that another service of this kernel holds
      stops that one first, instead of failing with "address already in use".
    """

    _by_port: dict[int, CellService] = {}   # shared by every kind of service in this process
    _by_cell: dict[tuple[str, str], CellService] = {}
    host: str
    port: int
    link: str = "auto"        # which link to show: see link_for()
    _background: BackgroundLoop | None = None
    _cell: tuple[str, str] | None = None

    @property
    def url(self) -> str:
        """The page to open in a browser (on this machine: 0.0.0.0 is shown as 127.0.0.1)."""
        return f"http://{self._display_host()}:{self.port}/"

    @property
    def link_url(self) -> str:
        """The link a learner should open: ``url``, or the same page through the Jupyter server (:func:`link_for`)."""
        return link_for(self.url, self.link)

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
        """Start on a background loop; returns once listening.

        Called again from the same notebook cell (a re-run), it first stops
        what that cell started before, and takes over its port.
        """
        cell = calling_cell()
        if cell is not None:
            self._cell = (type(self).__name__, cell)
            earlier = CellService._by_cell.get(self._cell)
            if earlier is not None and earlier is not self:
                if self.port == 0 and earlier.host == self.host:
                    self.port = earlier.port
                earlier.stop()
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
        if self._cell is not None:
            CellService._by_cell[self._cell] = self
        return self

    def stop(self) -> None:
        """Stop and free the port."""
        if self._background is not None:
            self._background.call(self.astop())
            self._background.stop()
            self._background = None
        if self._cell is not None and CellService._by_cell.get(self._cell) is self:
            del CellService._by_cell[self._cell]

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
