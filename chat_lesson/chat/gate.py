"""The chat server's door: what may connect, before a single chat frame.

:class:`Gate` is a part of :class:`~chat_lesson.chat.server.ChatServer` (a
mixin: it uses the server's ``room``, ``limits``, ``stats`` and settings).
In the order a connection meets it:

1. **At accept** (``_at_accept``, through ``fastpath.guarded``): a peer in a
   reconnect loop is held unread, then reset, before a byte is read.
2. **The HTTP request** (``_process_request``): static files and
   ``/limits.json``; for ``/ws``, our own handshake check (lesson 02),
   the Origin and Host rules (``chat/origin.py``), and the room's budgets
   for this address (``_admit``: a 503 that says why).
3. **The subprotocol** (``_select_subprotocol``): ``chat-lesson.v1`` or none
   (a legacy client).
4. **Pings** (``_ping_flood``): a connection that sends too many is dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import urllib.parse
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from ..notebook import lan_address
from ..protocol.handshake import check_request
from .origin import Verdict, check_origin, client_address
from .static import as_head, http_response, static_response
from .wire import SUBPROTOCOL

__all__ = ["Gate", "HOLD_SECONDS", "MAX_HELD", "peer_address"]

log = logging.getLogger("chat_lesson.chat.server")     # the server's logger (server.py makes it quiet)

HOLD_SECONDS, MAX_HELD = 1.0, 10     # a looping peer's attempts: held this long, this many at once (_at_accept)


def peer_address(connection: ServerConnection) -> str:
    """The IP address of the peer, as a string ('' if unknown)."""
    return str((connection.remote_address or ("",))[0])


class Gate:
    """The HTTP side of the port and the checks before the WebSocket: see the module's docstring."""

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """The HTTP side of the port: our own handshake check for /ws, static files for the rest.

        For /ws, ``handshake.check_request`` (the pure code lesson 02 teaches)
        decides: a refusal (400, 403, 426) is sent as it is.  An acceptance
        then asks the room whether this address may open one more connection
        (budgets, caps, bans): a refusal costs one small 503, not a WebSocket.
        Files are read in a worker thread, so a big one cannot stall the chat.
        Whose page may connect is ``chat.origin.check_origin``'s decision
        (RFC 6455 §10.2), given the peer's address so that a proxy on this
        machine (the Jupyter server) may say how the browser reached it; a
        403 says why, and what to do.
        """
        path = urllib.parse.urlsplit(request.path).path
        if path == "/limits.json":        # the page reads the room's limits before it connects
            return http_response(200, json.dumps(self.limits.public()).encode(), "application/json")
        if path != "/ws":
            method = getattr(request, "method", "GET")
            return await asyncio.to_thread(static_response, self.static, request.path, method)
        head = as_head(request)
        peer = (connection.remote_address or (None,))[0]
        verdict = self._origin_allowed(head.headers, peer)
        answer = check_request(head, allowed_origins=lambda origin: verdict.allowed)
        if answer.accepted:
            if any(name == "Sec-Websocket-Extensions" for name, _ in request.headers.raw_items()):
                # Spelled so, the offer comes from tornado's WebSocket client: jupyter-server-proxy
                # relaying a browser's socket from the Jupyter server.  Tornado drops extension
                # parameters that have no value, so it would ignore our client_no_context_takeover
                # (RFC 7692 §7.1.1.2) and compress each message against the previous one, which we
                # cannot inflate ("decompression failed", close 1002, from the second message on).
                # On that loopback hop compression saves nothing: offer none.
                del request.headers["Sec-WebSocket-Extensions"]
            return self._admit(connection)
        if answer.status == 403:
            self.stats.refused_origin += 1
            log.warning("refused Origin %r (Host %r, from %s): %s", head.headers.get("Origin"), head.headers.get("Host"),
                        peer, verdict.reason)
            body = f"{verdict.reason}\n".encode()
            headers = Headers([(k, str(len(body)) if k.lower() == "content-length" else v) for k, v in answer.headers])
            return Response(403, answer.reason, headers, body)   # the reason says what to do, not only "not allowed"
        return Response(answer.status, answer.reason, Headers(answer.headers), answer.body)

    def _client(self, connection: ServerConnection) -> str:
        """The address budgets are kept for: the browser's, also behind a reverse proxy on this machine."""
        headers = connection.request.headers if connection.request is not None else {}
        return client_address(headers, peer_address(connection), self.trust_proxy)

    def _at_accept(self, peer: str) -> float | None:
        """Refuse this TCP connection as it is accepted?  Only a peer in a reconnect loop (``Room.looping``).

        None lets the handshake go on.  A looping peer's attempt is held
        unread for ``HOLD_SECONDS`` and then reset, so a loop that waits for
        answers makes one attempt a second; past ``MAX_HELD`` held at once
        (a loop that does not wait) the rest are reset at once.  A proxy on
        this machine speaks for many browsers, so its own address is never
        refused here; the forwarded one is judged at the handshake.
        """
        if not self.room.looping(peer):
            return None
        self.stats.refused_connections += 1
        held = self._held.get(peer, 0)
        if held >= MAX_HELD:
            return 0.0
        self._held[peer] = held + 1
        return HOLD_SECONDS

    def _ping_flood(self, connection: ServerConnection) -> None:
        """A connection sent pings faster than ``client_ping_rate`` (it was dropped): its address waits to reconnect."""
        member = next((m for m, c in self._connections.items() if c is connection), None)
        if member is not None:
            self.stats.closed_pinging += 1
            self.room.penalize(member)
            log.warning("closed connection %d (%r): more than %g pings a second", member.id, member.username,
                        self.limits.client_ping_rate)

    def _released(self, peer: str) -> None:
        left = self._held.pop(peer, 1) - 1
        if left > 0:
            self._held[peer] = left

    def _admit(self, connection: ServerConnection) -> Response | None:
        """None when the room admits one more connection from this peer, else a 503 (403 when banned)."""
        why = self.room.admit(self._client(connection))
        if why is None:
            return None
        self.stats.refused_connections += 1
        log.info("refused a connection: %s", why)
        response = http_response(403 if "banned" in why else 503, (why + "\n").encode())
        response.headers["Retry-After"] = "5"
        return response

    def _origin_allowed(self, headers: Any, peer: str | None) -> Verdict:
        """No Origin (a script), the page's own origin (also through a local proxy), or one listed in ``origins``.

        The rule itself is pure and lives in ``chat_lesson.chat.origin.check_origin``
        (RFC 6455 §10.2); this server adds only its settings.
        """
        return check_origin(headers, peer, self.origins, hosts=self._hosts, trust_forwarded=self.trust_proxy)

    def _known_hosts(self) -> frozenset[str] | None:
        """The names a browser may address this server by: a Host allowlist against DNS rebinding.

        A page at ``http://evil.example:8000`` whose name the attacker then
        points at this machine would pass a same-origin check (its Origin and
        Host agree); only a list of this server's real names stops it.  The
        list: localhost, the loopback addresses, this machine's name and LAN
        address, the address it is bound to, and what ``allow_hosts`` adds.
        Behind Jupyter's proxy (JupyterHub, Binder) the Host is the hub's, and
        Jupyter has authenticated the request already: no list then (None).
        """
        if self.link == "proxy" or (self.link == "auto" and os.environ.get("JUPYTERHUB_SERVICE_PREFIX")):
            return None
        name = socket.gethostname().lower()
        names = {"localhost", "127.0.0.1", "::1", name, name.split(".")[0], f"{name.split('.')[0]}.local",
                 lan_address() or "127.0.0.1", self.host}
        return frozenset(n.lower().strip("[]") for n in names | set(self.allow_hosts) if n and n not in ("0.0.0.0", "::"))

    @staticmethod
    def _select_subprotocol(connection: ServerConnection, offered: Any) -> str | None:
        return SUBPROTOCOL if SUBPROTOCOL in offered else None
