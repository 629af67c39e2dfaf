"""The chat server: the pure :class:`~chat_lesson.chat.room.Room` on the wire.

It is the Go original's design (a set of clients and a broadcast) with the
original's flaws fixed.  The room decides what happens; this module only
moves bytes: it accepts connections (one port for the page and ``/ws``),
turns each text frame into ``room.receive(member, raw)``, and writes the
events the room returns, one frame per event and one write per client per
loop turn (``fastpath.write_frames``).  Every default lives in
``chat/wire.py``; lesson 06 shows what goes wrong without each one.

A client that offers the subprotocol ``chat-lesson.v1`` gets every event; one
that offers none (the Go original's Vue client) is *legacy* and gets only
``message`` events, HTML-escaped, because that client renders with v-html.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import json
import logging
import os
from pathlib import Path
from typing import Any, NamedTuple
from collections.abc import Callable

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

from ..notebook import LINK_MODES, CellService, lan_address, show_link
from ..protocol.frames import Frame, Opcode, encode_frame
from .backplane import Backplane
from .gate import Gate
from .history import History
from .fastpath import drop, fix_send_buffer, guarded, unsent, write_frames
from .room import EVERYONE, ChatError, Member, Others, Out, Room, Stats, avatar_hash
from .static import STATIC_DIR
from .quietlog import quiet
from .wire import DEFAULTS, SUBPROTOCOL, Limits

__all__ = ["ChatError", "ChatServer", "SUBPROTOCOL", "STATIC_DIR", "avatar_hash", "raise_fd_limit"]

log = quiet(logging.getLogger(__name__))

# In a notebook the teacher link reads this, not its address: the secret after #teacher= stays off the projector.
TEACHER_LINK_TEXT = "open the teacher page (its address holds the secret: right-click to copy it)"
NEWS = frozenset({"join", "leave", "rename"})     # what a reader that is behind may miss (it gets the whole list later)
STALL_SECONDS = 10.0     # a backlog that has not shrunk for this long means the reader stopped


def raise_fd_limit(wanted: int = 65536) -> int | None:
    """Raise this process's open-file limit towards ``wanted``, as far as the OS allows.

    Every client is one open socket, and many systems start processes with a
    soft limit of 1024 (macOS: 256).  The soft limit may be raised up to the
    hard limit without privileges; returns the limit now in force, or None
    where there is no such limit to read (Windows has no ``resource`` module).
    """
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


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


class Pending(NamedTuple):
    """One broadcast waiting for the end of the loop turn (``ChatServer._flush``)."""

    frame: bytes                   # the event, encoded once for every modern client
    legacy: bytes | None           # what a legacy client gets of it (messages only)
    news: bool                     # a join, leave or rename: a reader that is behind may miss it
    skip: Member | None            # everyone but this member (a newcomer already told of its own join)


def text_frame(event: dict[str, Any]) -> bytes:
    """``event`` as JSON in one whole, unmasked, uncompressed text frame (what a server sends; RFC 6455 §5.1).

    permessage-deflate lets each message choose (RFC 7692 §6: RSV1 marks the
    compressed ones), and this server sends its small JSON events as they are.
    """
    return encode_frame(Frame(True, Opcode.TEXT, json.dumps(event, ensure_ascii=False).encode()))


def legacy_frame(event: dict[str, Any]) -> bytes | None:
    """What a legacy client (the Go original's page) gets of ``event``: messages only, in its shape.

    That page inserts ``username`` and ``message`` as HTML, so both are
    escaped; it reads ``email`` to draw an avatar, and we never send one.
    """
    if event["type"] != "message":
        return None
    return text_frame({**event, "email": "", "username": html.escape(event["username"]),
                       "message": html.escape(event["message"])})


class ChatServer(Gate, Backplane, CellService):
    """The chat, run from a notebook cell or a script.

    >>> server = ChatServer(port=0).start()    # doctest: +SKIP
    >>> server.url, server.clients, server.stats  # doctest: +SKIP
    >>> server.stop()                          # doctest: +SKIP

    ``start()`` runs the server on its own event loop in a daemon thread, so a
    cell that blocks does not freeze the chat.  Inside an ``async`` context,
    ``await server.astart()`` / ``await server.astop()`` run it on the current
    loop instead.  Every limit is an argument, with its default from
    ``chat_lesson.chat.wire.DEFAULTS``; ``rate_limit=0`` turns the rate limit
    off, ``ping_interval=None`` the heartbeat, ``history=0`` the replay.
    ``origins`` lists other pages (``http://host:port``) allowed to connect.
    Other limits (``connect_rate``, ``max_per_address``, ``max_connections``,
    ``mute_seconds`` ...) are keyword arguments too, named as in ``Limits``.
    ``allow_hosts`` adds names the server may be reached by (its Host
    allowlist, against DNS rebinding, also has its own names).
    ``history_file`` keeps the messages in a SQLite file, so a restart
    replays them; ``server.history.export()`` is the transcript to keep.

    ``link`` chooses the link the start cell shows: ``"direct"`` is
    ``http://127.0.0.1:PORT/``; ``"proxy"`` is the same page through the
    Jupyter server (``<base_url>proxy/PORT/``, jupyter-server-proxy), the
    one that works when Jupyter runs on another machine (JupyterHub, Binder);
    ``"auto"`` (the default) picks "proxy" under JupyterHub, else "direct".
    ``trust_proxy`` lets a proxy on this machine (a loopback peer) say, in
    ``Forwarded`` / ``X-Forwarded-*`` (RFC 7239), which scheme and host the
    browser used: see ``chat_lesson.chat.origin``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        origins: tuple[str, ...] | list[str] = (),
        max_message: int = DEFAULTS.max_message,
        max_frame: int = DEFAULTS.max_frame,
        rate_limit: float = DEFAULTS.rate_limit,
        burst: int = DEFAULTS.burst,
        max_buffer: int = DEFAULTS.max_buffer,
        ping_interval: float | None = DEFAULTS.ping_interval,
        ping_timeout: float | None = DEFAULTS.ping_timeout,
        close_timeout: float = 3,
        compression: str | None = "deflate",
        history: int = DEFAULTS.history,
        history_file: str | os.PathLike[str] | None = None,
        static: str | os.PathLike[str] | None = None,
        quiet: bool = False,
        link: str = "auto",
        trust_proxy: bool = True,
        allow_hosts: tuple[str, ...] | list[str] = (),
        broker: str | None = None,
        broker_beat: float = 2.0,
        **more_limits: Any,
    ) -> None:
        if link not in LINK_MODES:
            raise ValueError(f"link={link!r}: use one of {', '.join(map(repr, LINK_MODES))} "
                             "(\"proxy\" when the notebook's server is not on your machine)")
        self.host, self.port = host, port
        try:
            self.limits = Limits(max_message=max_message, max_frame=max_frame, rate_limit=rate_limit, burst=burst,
                                 max_buffer=max_buffer, ping_interval=ping_interval or 0,
                                 ping_timeout=ping_timeout or 0, history=history, **more_limits)
        except TypeError as error:
            raise TypeError(f"{error}: the limits are the fields of chat_lesson.chat.wire.Limits") from None
        self.ping_interval, self.ping_timeout = ping_interval, ping_timeout
        self.origins = frozenset(o.rstrip("/") for o in origins)
        self.close_timeout = close_timeout
        self.compression = compression
        self.static = Path(static) if static else STATIC_DIR
        self.quiet = quiet
        self.link, self.trust_proxy = link, trust_proxy
        self.allow_hosts = tuple(allow_hosts)
        self._hosts: frozenset[str] | None = None
        self.room = Room(self.limits, history=History(history_file, keep=history))
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self._connections: dict[Member, ServerConnection] = {}
        self._held: dict[str, int] = {}          # peer -> connections held unread before a reset (_at_accept)
        self._server: Server | None = None
        self._sweeper: asyncio.Future[None] | None = None
        self._ticker: asyncio.Future[None] | None = None
        self._stalled: dict[Member, tuple[float, int]] = {}     # since when, and how much, unsent bytes wait
        self._behind: set[Member] = set()                          # skipped the room's news while backed up
        self._pending: list[Pending] = []        # what this loop turn broadcast: one write per client at its end
        self.broker_url, self.broker_beat = broker, broker_beat    # None: one process, the room in memory
        self._broker: Any = None                                    # a chat.broker.Broker while running with one
        self._skips: set[int] = set()                               # members who heard their own join already
        self._tasks: set[asyncio.Future[None]] = set()

    # -- the public face ----------------------------------------------------

    @property
    def clients(self) -> list[str]:
        """The names of everyone who has joined and is online now."""
        return self.room.online

    @property
    def stats(self) -> Stats:
        """Counters: connections, messages, deliveries, errors, closed_slow, refused_origin."""
        return self.room.stats

    @property
    def history(self) -> Any:
        """The room's messages: ``.recent()`` is what a newcomer is shown, ``.export()`` the transcript."""
        return self.room.history

    def add_command(self, name: str, handler: Callable[[str, str], str | None]) -> None:
        """Let lesson code extend the chat: see :meth:`Room.add_command <chat_lesson.chat.room.Room.add_command>`."""
        self.room.add_command(name, handler)

    # -- the teacher's tools, from a cell -----------------------------------------

    @property
    def teacher_url(self) -> str:
        """The page with the room's secret in its fragment: whoever opens it joins as the teacher.

        The secret is after ``#``, so the browser never sends it in a request
        line or a log; the page hands it over once, in its join.
        """
        return f"{self.url}#teacher={self.room.secret}"

    def kick(self, who: int | str) -> None:
        """Close ``who``'s connection (a name or a connection id); the class sees a system event."""
        self._teacher("kick", who)

    def mute(self, who: int | str, seconds: float | None = None) -> None:
        """Keep ``who`` from writing for ``seconds`` (default ``limits.mute_seconds``)."""
        self._teacher("mute", who, seconds)

    def unmute(self, who: int | str) -> None:
        self._teacher("unmute", who)

    def ban(self, who: int | str) -> None:
        """Close every connection from ``who``'s address and refuse that address until the server stops."""
        self._teacher("ban", who)

    def lock(self) -> None:
        """Only the teacher may write, and nobody new may join, until :meth:`unlock`."""
        self._teacher("lock")

    def unlock(self) -> None:
        self._teacher("unlock")

    def clear(self) -> None:
        """Forget the history and tell every page to empty its list."""
        self._teacher("clear")

    def _teacher(self, action: str, who: int | str | None = None, seconds: float | None = None) -> None:
        """Run a teacher's command on the server's loop (the room is only ever touched there)."""
        loop = self.loop
        if loop is None or self._server is None:
            raise RuntimeError("the server is not running: start() it first")

        async def act() -> None:
            self._deliver(self.room.command(action, who, seconds=seconds))

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._deliver(self.room.command(action, who, seconds=seconds))
        else:
            asyncio.run_coroutine_threadsafe(act(), loop).result(10)

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

    async def astart(self) -> ChatServer:
        """Start listening on the running loop (for those who use the kernel's own loop)."""
        self.loop = asyncio.get_running_loop()
        self._hosts = self._known_hosts()
        files = raise_fd_limit()
        if files is not None and files - 64 < self.limits.max_connections:
            # Past the open-file limit, accept() fails for everyone, the teacher included: cap the room below it,
            # so the last connections get a clear 503 instead.
            self.limits = dataclasses.replace(self.limits, max_connections=max(16, files - 64))
            self.room.limits = self.limits
            warning = (f"this process may open only {files} files, so the room takes at most "
                       f"{self.limits.max_connections} connections; raise the hard limit (ulimit -Hn, or "
                       "LimitNOFILE= for a service) for more")
            log.warning(warning)
            if self.host in ("0.0.0.0", "::", "") and not self.quiet:
                print(f"WARNING: {warning}", flush=True)          # a classroom: say it where the teacher looks
        if self.broker_url:
            await self._join_broker()           # refuses to start (BrokerUnavailable) before listening
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            select_subprotocol=self._select_subprotocol,
            compression=None,
            extensions=deflate_extension() if self.compression == "deflate" else None,
            max_size=self.limits.max_frame,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            close_timeout=self.close_timeout,
            open_timeout=10,                # a handshake that dawdles holds a socket: 10 s at most
            logger=log,
            create_connection=guarded(self._at_accept, self._released, self._ping_flood, self.limits.client_ping_rate,
                                      self.limits.client_ping_burst),
        )
        self._sweeper = asyncio.ensure_future(self._sweep())
        self._ticker = asyncio.ensure_future(self._tick())
        self.port = self._server.sockets[0].getsockname()[1]
        self._claim_port()
        self._announce()
        return self

    async def astop(self) -> None:
        for task in (self._sweeper, self._ticker):
            if task is not None:
                task.cancel()
        self._sweeper = self._ticker = None
        if self._server is not None:
            self._server.close()               # every connection closes with 1001 (going away)
            await self._server.wait_closed()
            self._server = None
            self._release_port()
        if self._broker is not None:
            await self._broker.close()       # sends the leaves queued by those closes, then says goodbye
            self._broker = None
            log.info("chat server on port %s stopped", self.port)

    async def serve_forever(self) -> None:
        """Run until cancelled (``python -m chat_lesson serve`` uses this)."""
        async with self:
            await asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        state = "running" if self._server is not None else "stopped"
        return f"<ChatServer {self.url} {state}, {len(self.clients)} online>"

    def _announce(self) -> None:
        log.info("chat server listening on %s", self.url)
        if self.quiet:
            return
        show_link(self.url, "Chat running at", link=self.link)
        show_link(self.teacher_url, "Teacher link (keep it to yourself: it gives kick, mute, ban and lock):",
                  link=self.link, text=TEACHER_LINK_TEXT)
        if self.host in ("0.0.0.0", "::", ""):
            lan = lan_address()
            if lan:
                show_link(f"http://{lan}:{self.port}/", "Classroom mode: students open", link="direct")
            else:
                print("Classroom mode: no LAN address found; is this machine on a network?")

    # -- one connection's life: frames in, the room's events out ---------------

    async def _handle(self, connection: ServerConnection) -> None:
        """Register with the room, hand it every frame until the connection closes, unregister."""
        # The handshake is over and nothing reads its headers again: dropping
        # them saves about 3 KiB per connection (bench idle).  (websockets
        # checks that ``request`` is set, so the request itself stays.)
        address = self._client(connection)
        connection.request.headers = Headers()
        connection.response = None
        fix_send_buffer(connection)
        member, out = self.room.connect(legacy=connection.subprotocol != SUBPROTOCOL, address=address)
        self._connections[member] = connection
        try:
            self._deliver(out)
            async for raw in connection:
                self._deliver(self.room.receive(member, raw))
        except ConnectionClosed:
            pass
        finally:
            del self._connections[member]
            self._stalled.pop(member, None)
            self._behind.discard(member)
            self._deliver(self.room.disconnect(member))

    def _deliver(self, out: list[Out]) -> None:
        """Put the room's events on the wire, in order: broadcasts batched, direct events after them.

        A ``close`` instruction (a kick, a ban) closes that connection with its
        code, after what was queued before it.
        """
        for audience, event in out:
            if self._broker is not None and (audience is EVERYONE or isinstance(audience, Others)):
                self._publish(event, audience)
            elif audience is EVERYONE:
                self._broadcast(event)
            elif isinstance(audience, Others):
                self._broadcast(event, skip=audience.member)
            elif event["type"] == "close":
                connection = self._connections.get(audience)
                if connection is not None:
                    if self._pending:
                        self._flush()
                    task = asyncio.ensure_future(connection.close(event["code"], event["reason"]))
                    self._tasks.add(task)                   # keep a reference until it is done
                    task.add_done_callback(self._tasks.discard)
            else:
                self._send(audience, event)

    # -- sending: never wait for a client ------------------------------------

    def _broadcast(self, event: dict[str, Any], skip: Member | None = None) -> None:
        """Send ``event`` to every client (but ``skip``), encoding it once.

        The frames wait in ``_pending`` until the end of this turn of the
        event loop (``_flush``), so the events of one turn go out in one write
        per client, announcements of newcomers included: after a restart a
        student's first message comes with its join, and the room announces
        a crowd several at a time; a write pass for each would queue the
        messages behind hundreds of system calls (``bench classroom``).
        """
        for listener in self.listeners:
            try:
                listener(event)
            except Exception as error:          # a lesson's listener that broke must not close the sender (1011)
                log.warning("listener %r raised %r", listener, error)
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(Pending(text_frame(event), legacy_frame(event), event["type"] in NEWS, skip))

    def _flush(self) -> None:
        """Write everything broadcast during this loop turn: one write per client."""
        pending, self._pending = self._pending, []
        if not pending:       # already flushed by _send
            return
        modern = b"".join(p.frame for p in pending)
        legacy = [p.legacy for p in pending if p.legacy is not None]
        legacy_data = b"".join(legacy)
        essential = [p for p in pending if not p.news]      # all but joins, leaves and renames
        essential_data = b"".join(p.frame for p in essential)
        skipped = {p.skip for p in pending if p.skip is not None}
        behind = self.limits.max_buffer // 4
        plan: list[tuple[Member, ServerConnection, bytes, int]] = []
        for member, connection in self._connections.items():
            if member.legacy:
                if legacy:
                    plan.append((member, connection, legacy_data, len(legacy)))
            elif member in skipped:                 # rare: a newcomer is not told of its own join twice
                mine = [p.frame for p in pending if p.skip is not member]
                if mine:
                    plan.append((member, connection, b"".join(mine), len(mine)))
            elif len(essential) < len(pending) and unsent(connection) > behind:
                # A reader that is behind gets the messages and the teacher's actions, not the room's
                # news (joins, leaves, renames): those must never be what pushes a student over
                # max_buffer.  It gets a fresh presence once it has caught up (_sweep).
                self._behind.add(member)
                if essential:
                    plan.append((member, connection, essential_data, len(essential)))
            else:
                plan.append((member, connection, modern, len(pending)))
        # The whole pass is counted before its first write: a client in another thread may see its
        # frames (and a cell read the counter) while later clients are still being written to.
        self.stats.deliveries += sum(count for *_, count in plan)
        for member, connection, data, count in plan:
            self._put(member, connection, data, count)

    def _send(self, member: Member, event: dict[str, Any]) -> None:
        """One event to one client, after whatever was broadcast before it.

        A legacy client gets only ``message`` events: the Go original's page
        would render anything else (an ``error``, say) as a chat message.
        """
        frame = legacy_frame(event) if member.legacy else text_frame(event)
        if frame is None:
            return
        if self._pending:
            self._flush()
        self._write(member, frame)

    def _write(self, member: Member, data: bytes, count: int = 1) -> None:
        connection = self._connections.get(member)
        if connection is None:
            return
        # Counted before the write: once written, a client in another thread may
        # see the frames (and a cell read the counter) before this line runs again.
        self.stats.deliveries += count
        self._put(member, connection, data, count)

    def _put(self, member: Member, connection: ServerConnection, data: bytes, count: int) -> None:
        """Write ``count`` frames already counted as delivered; uncount them if they could not go."""
        result = write_frames(connection, data, self.limits.max_buffer)
        if result != "sent":
            self.stats.deliveries -= count
        if result == "dropped":
            self._dropped(member, f"more than {self.limits.max_buffer} bytes unsent")

    def _dropped(self, member: Member, why: str) -> None:
        self.stats.closed_slow += 1
        self.room.penalize(member)
        self._stalled.pop(member, None)
        log.warning("closed connection %d (%r): it stopped reading, %s", member.id, member.username, why)

    async def _tick(self, every: float = 1.0) -> None:
        """Let the room announce newcomers who have stayed (``Room.tick``), once a second.

        Each tick's announcements go out in one write per client; ticking
        more often would only add write passes for messages to queue behind.
        """
        while True:
            await asyncio.sleep(every)
            self._deliver(self.room.tick())

    async def _sweep(self, every: float = 1.0) -> None:
        """Find readers that stopped, even in a quiet room: every ``every`` s, look at each connection's backlog.

        A write finds a stuck client only when there is something to write;
        a client that floods pings and never reads grows the backlog with
        pongs alone, and websockets' keepalive waits for the backlog to drain
        before its own time-out starts.  So: past ``max_buffer`` unsent bytes,
        or a backlog that has not shrunk for ``STALL_SECONDS``, the
        connection is dropped (1008, then a reset).
        """
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every)
            now = loop.time()
            for member, connection in list(self._connections.items()):
                if connection.transport.is_closing():
                    continue                                        # reset already (dropped by a write, say)
                size = unsent(connection)
                since, least = self._stalled.get(member, (now, size))
                if size == 0:
                    self._stalled.pop(member, None)
                    if member in self._behind:                    # caught up: the list it missed, whole
                        self._behind.discard(member)
                        self._send(member, self.room.presence())
                elif size > self.limits.max_buffer:
                    drop(connection)
                    self._dropped(member, f"{size} bytes unsent")
                elif size < least:
                    self._stalled[member] = (now, size)          # it is reading: start over
                elif now - since > STALL_SECONDS:
                    drop(connection)
                    self._dropped(member, f"nothing read for {now - since:.0f} s")
                else:
                    self._stalled[member] = (since, least)
