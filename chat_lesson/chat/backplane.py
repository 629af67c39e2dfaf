"""The chat server on a backplane: several processes, one room, through a broker (``chat/broker.py``).

:class:`Backplane` is a part of :class:`~chat_lesson.chat.server.ChatServer`
(a mixin: it uses the server's ``room``, ``_broadcast`` and ``_deliver``).
With a broker, a broadcast goes to Redis first (``_publish``) and reaches
every server's clients, this one's too, when the broker hands it back
(``_heard``): that round trip gives every server the same order.  During an
outage the server keeps its own clients talking (``_local``) and says so.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .room import EVERYONE, Others, now_iso

__all__ = ["Backplane"]

log = logging.getLogger("chat_lesson.chat.server")     # the server's logger (server.py makes it quiet)


class Backplane:
    """Joining a broker, and the events that come and go through it: see the module's docstring."""

    async def _join_broker(self) -> None:
        """Connect to the broker, take this server's node number and the room's shared state."""
        from .broker import NODE_SPAN, Broker

        broker = Broker(self.broker_url, keep=max(1, self.limits.history), beat=self.broker_beat)
        broker.on_event, broker.on_control = self._heard, self._broker_control
        broker.on_state, broker.on_dead = self._broker_state, self._broker_dead
        broker.members = lambda: [m.entry() for m in self.room.members if m.username is not None and m.announced]
        broker.last_id = lambda: self.room.last_id
        broker.mirror = self.room.history.recent
        state = await broker.start()
        self.room.secret = await broker.claim_secret(self.room.secret)
        self.room.use_backplane(state["node"], NODE_SPAN)
        for event in state["history"]:
            self.room.heard(event)
        for node, entries in state["remote"].items():
            self.room.set_remote(node, entries)
        self.room.banned |= state["banned"]
        self.room.set_locked(state["locked"])
        self._broker = broker
        log.info("joined the broker %s as server %d", self.broker_url, broker.node)

    @property
    def node(self) -> int | None:
        """This server's number in the cluster (None without a broker)."""
        return self._broker.node if self._broker is not None else None

    @property
    def broker_up(self) -> bool | None:
        """True while the broker is reachable, False during an outage, None without one."""
        return self._broker.up if self._broker is not None else None

    def _publish(self, event: dict[str, Any], audience: Any) -> None:
        """A broadcast with a broker: to Redis, and from there to every server (this one too)."""
        broker = self._broker
        if not broker.up:                     # an outage: this server's clients only, numbered here
            self._local(event, audience)
            return
        if isinstance(audience, Others):
            self._skips.add(audience.member.id)
        broker.publish(event)
        if event["type"] == "system" and event.get("action") == "ban":
            broker.ban(sorted(self.room.banned))

    def _local(self, event: dict[str, Any], audience: Any) -> None:
        if event["type"] == "message" and event.get("id") is None:
            self.room.number(event)
        self._broadcast(event, skip=audience.member if isinstance(audience, Others) else None)

    def _heard(self, node: int, event: dict[str, Any]) -> None:
        """An event from the broker (``node`` -1: one missed during an outage): tell the room, then the clients."""
        mine = node == self._broker.node
        self.room.heard(event, None if mine else node)
        skip = None
        if mine and event["type"] == "join" and event["from"] in self._skips:
            self._skips.discard(event["from"])
            skip = next((m for m in self._connections if m.id == event["from"]), None)
        self._broadcast(event, skip=skip)

    def _broker_control(self, node: int, kind: str, data: Any) -> None:
        if kind == "ban":
            self._deliver(self.room.ban_addresses(data or []))
        elif kind == "bye":
            self._deliver(self.room.forget_node(node))
        elif kind == "sync":                    # a server came back: read its members again
            asyncio.ensure_future(self._resync(node))
        elif kind == "state":                   # we came back: the others' members, bans, lock
            for other in list(self.room._remote):
                if other not in data["remote"]:
                    self._deliver(self.room.forget_node(other))
            for other, entries in data["remote"].items():
                self.room.set_remote(other, entries)
            self.room.banned |= data["banned"]
            self.room.set_locked(data["locked"])
            self._broadcast(self.room.presence())

    async def _resync(self, node: int) -> None:
        try:
            entries = await self._broker.node_members(node)
        except Exception:
            return
        self.room.set_remote(node, entries)
        self._broadcast(self.room.presence())

    def _broker_dead(self, node: int) -> None:
        self._deliver(self.room.forget_node(node))

    def _broker_state(self, up: bool, detail: str) -> None:
        """The broker went down or came back: say so to this server's clients, and number messages accordingly."""
        self.room.local_numbering(not up)
        if not up:
            for event, _ in self._broker.take_outbox():    # queued, never sent: deliver them here
                if event["type"] != "!ban":
                    self._local(event, EVERYONE)
        self._broadcast({"type": "system", "time": now_iso(), "action": "broker", "target": None, "by": "the server",
                         "detail": detail, "up": up})
