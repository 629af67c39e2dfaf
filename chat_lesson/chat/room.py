"""The chat room's rules, without sockets: parsed input in, events out.

This is the sans-I/O half of the chat, in the style of h11 and websockets'
protocol objects.  A :class:`Room` knows its members, their names and
avatars, their rate budgets, who is online, what was said lately and which
``/commands`` exist.  It never writes to a connection; every call returns the
events to send as a list of ``(audience, event)`` pairs, where the audience
is one :class:`Member` or :data:`EVERYONE`::

    room = Room()
    alice, out = room.connect()                  # out: welcome, presence, history for alice
    out = room.receive(alice, '{"type": "join", "username": "alice"}')
    # [(EVERYONE, {"type": "join", ...}), (EVERYONE, {"type": "presence", ...})]

The server (``chat/server.py``) maps connections to members and puts these
events on the wire; a test drives the room with strings and a fake clock.

It is the Go original's design — a set of clients and one broadcast — with
its rules made explicit: each one is a method here, and lesson 06 shows what
goes wrong without it.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import itertools
import json
import logging
import time
from datetime import datetime, UTC
from typing import Any
from collections.abc import Callable

from .wire import DEFAULTS, Limits

__all__ = ["EVERYONE", "ChatError", "Member", "Room", "Stats", "TokenBucket", "avatar_hash", "now_iso",
           "parse_input"]

log = logging.getLogger(__name__)

Event = dict[str, Any]


class _Everyone:
    def __repr__(self) -> str:
        return "EVERYONE"


EVERYONE = _Everyone()
"""The audience of a broadcast: every open connection, the sender included."""


class ChatError(ValueError):
    """A client's mistake, answered with an ``error`` event; ``code`` is machine-readable."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


def avatar_hash(email: str) -> str:
    """Gravatar's hash: MD5 hex of the trimmed, lower-cased address ('' when none).

    The hash lets a page draw (or fetch) the same picture for the same
    address without the address itself ever being broadcast.
    """
    email = email.strip().lower()
    return hashlib.md5(email.encode()).hexdigest() if email else ""


def now_iso() -> str:
    """The current UTC time as ISO 8601 with milliseconds, e.g. 2026-11-26T04:41:34.123Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TokenBucket:
    """Allow ``rate`` events per second on average, and bursts of up to ``burst``.

    The bucket holds up to ``burst`` tokens and refills continuously at ``rate``
    tokens per second; each event takes one token, and an event that finds the
    bucket empty is refused.  ``clock`` is injectable so a test needs no sleep.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = float(burst)
        self.stamp = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclasses.dataclass(eq=False)
class Member:
    """One open chat connection, as the room sees it (no socket in here)."""

    id: int                          # assigned by the room, unique for its life
    legacy: bool                     # offered no subprotocol: gets only ``message`` events
    bucket: TokenBucket | None
    address: str = ""
    username: str | None = None
    avatar: str = ""

    def __repr__(self) -> str:
        return f"<Member {self.id} {self.username or '(not joined)'}{' legacy' if self.legacy else ''}>"


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


Out = tuple[Member | _Everyone, Event]


def check_username(value: Any, limit: int = DEFAULTS.max_username) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ChatError("bad_field", "username must be a non-empty string")
    name = value.strip()
    if len(name) > limit:
        raise ChatError("bad_field", f"username is longer than {limit} characters")
    return name


def check_email(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 254:
        raise ChatError("bad_field", "email must be a string of at most 254 characters")
    return value


def parse_input(raw: str | bytes, max_text: int = DEFAULTS.max_message,
                max_username: int = DEFAULTS.max_username) -> dict[str, Any]:
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
        return {"type": "join", "username": check_username(data.get("username"), max_username),
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


class Room:
    """One chat room: members in, events out.  See the module docstring.

    ``clock`` (seconds, monotonic) drives the rate budgets and ``now`` stamps
    events; both are injectable so that tests need neither sleeps nor sockets.
    """

    def __init__(self, limits: Limits = DEFAULTS, *, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], str] = now_iso) -> None:
        self.limits = limits
        self.clock, self.now = clock, now
        self.stats = Stats()
        self.history: collections.deque[Event] = collections.deque(maxlen=limits.history)
        self.commands: dict[str, Callable[[str, str], str | None]] = {}
        self._members: dict[int, Member] = {}
        self._member_ids = itertools.count(1)
        self._message_ids = itertools.count(1)

    # -- who is here ------------------------------------------------------------

    @property
    def members(self) -> list[Member]:
        """Every open connection, joined or not."""
        return list(self._members.values())

    @property
    def online(self) -> list[str]:
        """The names of everyone who has joined, sorted."""
        return sorted(m.username for m in self._members.values() if m.username is not None)

    def presence(self) -> Event:
        """The whole list of who is online, with ids and avatars."""
        joined = sorted((m for m in self._members.values() if m.username is not None),
                        key=lambda m: (m.username, m.id))
        return {"type": "presence",
                "online": [{"id": m.id, "username": m.username, "avatar": m.avatar} for m in joined]}

    def add_command(self, name: str, handler: Callable[[str, str], str | None]) -> None:
        """A message ``/name args`` calls ``handler(username, args)``.

        The handler returns the text to broadcast in place of the message, or
        None to broadcast nothing; raising :class:`ChatError` sends that client
        an ``error`` event.  Example: ``room.add_command("me", lambda user, args: f"* {user} {args}")``.
        """
        self.commands[name.lstrip("/")] = handler

    # -- a connection's life ------------------------------------------------------

    def connect(self, *, legacy: bool = False, address: str = "") -> tuple[Member, list[Out]]:
        """A new connection: its member, and what it is told first.

        A modern client hears ``welcome`` (its id and the room's limits), who
        is online, and the recent history; a legacy client hears nothing until
        someone speaks, as with the Go original.
        """
        limits = self.limits
        bucket = TokenBucket(limits.rate_limit, limits.burst, self.clock) if limits.rate_limit > 0 else None
        member = Member(next(self._member_ids), legacy, bucket, address)
        self._members[member.id] = member
        self.stats.connections += 1
        self.stats.connections_total += 1
        if legacy:
            return member, []
        out: list[Out] = [(member, {"type": "welcome", "you": member.id, "limits": limits.public()}),
                          (member, self.presence())]
        if self.history:
            # What was said before this student arrived (the Go original shows nothing).
            out.append((member, {"type": "history", "messages": list(self.history)}))
        return member, out

    def receive(self, member: Member, raw: str | bytes) -> list[Out]:
        """One frame from ``member``: the events it causes, or an ``error`` event to it alone."""
        try:
            return self._receive(member, raw)
        except ChatError as error:
            self.stats.errors += 1
            if member.legacy:
                log.info("legacy client %s: %s", member.username or "(unnamed)", error)
            return [(member, {"type": "error", "code": error.code, "detail": str(error)})]

    def disconnect(self, member: Member) -> list[Out]:
        """The connection closed: tell the others if it had joined."""
        if self._members.pop(member.id, None) is None:
            return []
        self.stats.connections -= 1
        if member.username is None:
            return []
        return [(EVERYONE, {"type": "leave", "time": self.now(), "from": member.id,
                            "username": member.username, "avatar": member.avatar}),
                (EVERYONE, self.presence())]

    # -- the rules ------------------------------------------------------------------

    def _receive(self, member: Member, raw: str | bytes) -> list[Out]:
        if member.bucket is not None and not member.bucket.take():
            raise ChatError("rate_limited", f"slow down: at most {self.limits.rate_limit:g} messages per second")
        data = parse_input(raw, self.limits.max_message, self.limits.max_username)
        if data["type"] == "join":
            return self._join(member, data["username"], data["email"])
        out: list[Out] = []
        if member.username is None or member.legacy:
            # The Go original names the sender in every message; so do legacy clients.
            out += self._join(member, check_username(data["username"], self.limits.max_username), data["email"])
        text = data["message"]
        if text.startswith("/") and text[1:].split(" ", 1)[0] in self.commands:
            name, _, args = text[1:].partition(" ")
            text = self.commands[name](member.username, args)
            if text is None:
                return out
        self.stats.messages += 1
        event = {"type": "message", "id": next(self._message_ids), "time": self.now(), "from": member.id,
                 "username": member.username, "avatar": member.avatar, "message": text}
        self.history.append(event)
        return out + [(EVERYONE, event)]

    def _join(self, member: Member, username: str, email: str) -> list[Out]:
        """Name a connection; announce it when the name is new for it."""
        avatar = avatar_hash(email)
        if member.username == username and member.avatar == avatar:
            return []
        first = member.username is None
        member.username, member.avatar = username, avatar
        out: list[Out] = []
        if first:
            log.info("%s joined", username)
            out.append((EVERYONE, {"type": "join", "time": self.now(), "from": member.id,
                                   "username": username, "avatar": avatar}))
        return out + [(EVERYONE, self.presence())]
