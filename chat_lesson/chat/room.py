"""The chat room's rules, without sockets: parsed input in, events out.

This is the sans-I/O half of the chat, in the style of h11 and websockets'
protocol objects.  A :class:`Room` knows its members, their names and
avatars, their rate budgets, who is online, what was said lately and which
``/commands`` exist.  It never writes to a connection; every call returns the
events to send as a list of ``(audience, event)`` pairs, where the audience
is one :class:`Member` or :data:`EVERYONE`.  One more kind of output is an
instruction, not an event: ``(member, {"type": "close", "code", "reason"})``
asks the server to close that connection (a kick, a ban)::

    room = Room()
    alice, out = room.connect()                  # out: welcome, presence, history for alice
    out = room.receive(alice, '{"type": "join", "username": "alice"}')
    # [(EVERYONE, {"type": "join", ...}), (EVERYONE, {"type": "presence", ...})]

The server (``chat/server.py``) maps connections to members and puts these
events on the wire; a test drives the room with strings and a fake clock.

It is the Go original's design — a set of clients and one broadcast — with
its rules made explicit, for a class with one hostile student in it:

- **identity**: a name is unique in the room by its look-alike skeleton
  (``names.py``), fixed per connection, changed only by an explicit, budgeted
  ``rename`` that everyone sees; "you" is a connection id, never a name;
- **the teacher**: whoever joins with the room's secret gets a badge nobody
  else can get and may kick, mute, ban, lock and clear, each announced to
  the class as a ``system`` event;
- **budgets per address**, shared by all of that address's connections:
  messages, renames and new connections (:meth:`Room.admit`), and caps on
  connections per address and in all; the machine's own address (the
  teacher's cells and tools) is not budgeted;
- **presence as diffs**: the whole list only to a newcomer, then ``join``,
  ``leave`` and ``rename`` events, so churn costs each student one small
  event, not the whole list.

Lesson 06 shows what goes wrong without each rule.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import secrets
import time
from datetime import datetime, UTC
from typing import Any
from collections.abc import Callable

from .budgets import Budget, TokenBucket, is_loopback
from .history import History
from .inputs import TEACHER_COMMANDS, ChatError, check_username, parse_input
from .names import RESERVED, skeleton
from .quietlog import quiet
from .wire import DEFAULTS, Limits

__all__ = ["EVERYONE", "ChatError", "Member", "Others", "Room", "Stats", "TokenBucket", "avatar_hash", "is_loopback",
           "now_iso", "parse_input"]

log = quiet(logging.getLogger(__name__))

Event = dict[str, Any]


class _Everyone:
    def __repr__(self) -> str:
        return "EVERYONE"


EVERYONE = _Everyone()
"""The audience of a broadcast: every open connection, the sender included."""


@dataclasses.dataclass(frozen=True)
class Others:
    """The audience of a broadcast to everyone but ``member`` (who heard it already)."""

    member: Member


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


@dataclasses.dataclass(eq=False)
class Member:
    """One open chat connection, as the room sees it (no socket in here)."""

    id: int                          # assigned by the room, unique for its life
    legacy: bool                     # offered no subprotocol: gets only ``message`` events
    budget: Budget
    address: str = ""
    username: str | None = None
    avatar: str = ""
    teacher: bool = False
    joined_at: float = 0.0           # when it joined (the room's clock)
    announced: bool = False          # has the class been told it joined?
    strikes: int = 0                 # frames over budget in a row
    warned: float = float("-inf")    # when it was last told to slow down

    @property
    def bucket(self) -> TokenBucket | None:
        """The message budget this member draws on (shared with its address's other connections)."""
        return self.budget.messages

    def entry(self) -> Event:
        """How others see this member in presence lists."""
        entry: Event = {"id": self.id, "username": self.username, "avatar": self.avatar}
        if self.teacher:
            entry["teacher"] = True
        return entry

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
    closed_pinging: int = 0        # clients closed for sending pings too fast (1008)
    refused_origin: int = 0        # handshakes refused with 403
    refused_connections: int = 0   # connections refused before the upgrade (budgets, caps, bans)


Out = tuple["Member | _Everyone | Others", Event]


KICKED, BANNED = 4001, 4003           # close codes in the private range 4000-4999 (RFC 6455 §7.4.2)
FLOOD_STRIKES = 50                    # frames over budget in a row before a connection is closed (1008)


class Room:
    """One chat room: members in, events out.  See the module docstring.

    ``clock`` (seconds, monotonic) drives the budgets and mutes and ``now``
    stamps events; both are injectable so that tests need neither sleeps nor
    sockets.  ``secret`` unlocks the teacher's role (a fresh random one by
    default: read it from ``room.secret``).
    """

    def __init__(self, limits: Limits = DEFAULTS, *, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], str] = now_iso, secret: str | None = None, history: History | None = None) -> None:
        self.limits = limits
        self.clock, self.now = clock, now
        self.secret = secret or secrets.token_urlsafe(16)
        self.stats = Stats()
        self.history = history if history is not None else History(keep=limits.history)
        self.commands: dict[str, Callable[[str, str], str | None]] = {}
        self.locked = False
        self._in_at_lock: set[str] = set()     # the addresses in the room when it was locked: they may come back
        self.banned: set[str] = set()
        self._members: dict[int, Member] = {}
        self._names: dict[str, Member] = {}           # skeleton -> the member online under it
        self._budgets: dict[str, Budget] = {}
        self._unannounced: dict[int, Member] = {}     # joined, not yet announced, oldest first
        self._announcing = TokenBucket(limits.announce_rate, max(1, int(limits.announce_rate)), clock)
        self._member_ids = itertools.count(1)
        self._message_ids = itertools.count(self.history.next_id())
        # With a backplane (chat/broker.py) the broker numbers and stores messages, and the room
        # learns what happens on the other servers through heard(): their members, by node.
        self.backplane = False
        self._remote: dict[int, dict[int, Event]] = {}      # node -> member id -> presence entry
        self._remote_names: dict[str, int] = {}            # skeleton -> member id, on another server
        self._heard = 0                                    # the largest message id heard from the backplane

    # -- who is here ------------------------------------------------------------

    @property
    def members(self) -> list[Member]:
        """Every open connection, joined or not."""
        return list(self._members.values())

    @property
    def online(self) -> list[str]:
        """The names of everyone who has joined, sorted (with a backplane: on every server)."""
        names = [m.username for m in self._members.values() if m.username is not None]
        return sorted(names + [e["username"] for entries in self._remote.values() for e in entries.values()])

    def presence(self) -> Event:
        """The whole list of who is online, with ids and avatars (sent to a newcomer only)."""
        joined = sorted((m for m in self._members.values() if m.username is not None and m.announced),
                        key=lambda m: (m.username, m.id))
        online = [m.entry() for m in joined]
        if self._remote:
            online = sorted(online + [e for entries in self._remote.values() for e in entries.values()],
                            key=lambda e: (e["username"], e["id"]))
        return {"type": "presence", "online": online}

    def find(self, who: int | str | Member) -> Member:
        """The member ``who`` names: a Member, a connection id, or a name (compared by skeleton)."""
        if isinstance(who, Member):
            found = self._members.get(who.id)
        elif isinstance(who, int):
            found = self._members.get(who)
        else:
            found = self._names.get(skeleton(str(who)))
        if found is None:
            raise ChatError("no_such_member", f"nobody called {who!r} is in the room")
        return found

    def add_command(self, name: str, handler: Callable[[str, str], str | None]) -> None:
        """A message ``/name args`` calls ``handler(username, args)``.

        The handler returns the text to broadcast in place of the message, or
        None to broadcast nothing; raising :class:`ChatError` sends that client
        an ``error`` event.  Example: ``room.add_command("me", lambda user, args: f"* {user} {args}")``.
        """
        self.commands[name.lstrip("/")] = handler

    # -- a connection's life ------------------------------------------------------

    def _budget(self, address: str) -> Budget | None:
        """The budget of ``address``, made on first use; None for this machine's own address."""
        if is_loopback(address):
            return None
        budget = self._budgets.get(address)
        if budget is None:
            budget = self._budgets[address] = self._new_budget(connects=True)
        return budget

    def _new_budget(self, connects: bool) -> Budget:
        limits = self.limits
        return Budget(
            TokenBucket(limits.rate_limit, limits.burst, self.clock) if limits.rate_limit > 0 else None,
            TokenBucket(limits.rename_rate, limits.rename_burst, self.clock),
            TokenBucket(limits.connect_rate, limits.connect_burst, self.clock) if connects and limits.connect_rate > 0
            else None,
            TokenBucket(limits.bytes_rate, limits.bytes_burst, self.clock) if connects and limits.bytes_rate > 0
            else None)

    def looping(self, address: str) -> bool:
        """Has ``address`` used up its new connections for now?  Spends nothing.

        The server asks as it accepts a TCP connection, before reading a byte
        of it: a client in a reconnect loop is then reset at once instead of
        costing an HTTP parse and a 503 each time (``bench classroom``).
        The first refusal is always a 503 at the handshake, which says why;
        only the attempts after it, while the budget is still empty, are
        reset here.
        """
        budget = self._budgets.get(address)
        return (budget is not None and budget.refusals > 0 and budget.connects is not None
                and not budget.connects.ready())

    def admit(self, address: str = "") -> str | None:
        """May ``address`` open one more connection?  None if so (and a connect token is spent), else why not.

        The server asks before the WebSocket upgrade, so a refusal costs one
        small HTTP answer (503), not a connection.
        """
        if address in self.banned:
            return "banned by the teacher for this session"
        if self.stats.connections >= self.limits.max_connections:
            return f"the room is full ({self.limits.max_connections} connections)"
        budget = self._budget(address)
        if budget is None:
            return None
        if self.limits.max_per_address and budget.connections >= self.limits.max_per_address:
            return f"too many connections from {address} (at most {self.limits.max_per_address})"
        if budget.connects is not None and not budget.connects.take():
            budget.refusals += 1
            return f"too many new connections from {address}: at most {self.limits.connect_rate:g} per second"
        budget.refusals = 0
        return None

    def connect(self, *, legacy: bool = False, address: str = "") -> tuple[Member, list[Out]]:
        """A new connection: its member, and what it is told first.

        A modern client hears ``welcome`` (its id and the room's limits), who
        is online, and the recent history; a legacy client hears nothing until
        someone speaks, as with the Go original.
        """
        budget = self._budget(address) or self._new_budget(connects=False)
        budget.connections += 1
        member = Member(next(self._member_ids), legacy, budget, address)
        self._members[member.id] = member
        self.stats.connections += 1
        self.stats.connections_total += 1
        if legacy:
            return member, []
        out: list[Out] = [(member, {"type": "welcome", "you": member.id, "limits": self.limits.public()}),
                          (member, self.presence())]
        if self.history:
            # What was said before this student arrived (the Go original shows nothing).
            out.append((member, {"type": "history", "messages": self.history.recent()}))
        return member, out

    def receive(self, member: Member, raw: str | bytes) -> list[Out]:
        """One frame from ``member``: the events it causes, or an ``error`` event to it alone."""
        try:
            return self._receive(member, raw)
        except ChatError as error:
            return self._refuse(member, error)
        except Exception as error:                      # a lesson's /command that broke, say
            log.warning("a frame from connection %d raised %r", member.id, error)
            return self._refuse(member, ChatError("server_error", f"that did not work: {type(error).__name__}"))

    def _refuse(self, member: Member, error: ChatError) -> list[Out]:
        self.stats.errors += 1
        if member.legacy:
            log.info("legacy client %d: %s", member.id, error)
        return [(member, {"type": "error", "code": error.code, "detail": str(error)})]

    def disconnect(self, member: Member) -> list[Out]:
        """The connection closed: tell the others if it had joined."""
        if self._members.pop(member.id, None) is None:
            return []
        self.stats.connections -= 1
        member.budget.connections -= 1
        if member.address in self._budgets and self._budgets[member.address].idle():
            del self._budgets[member.address]
        self._forget_idle_budgets()
        if member.username is None:
            return []
        self._names.pop(skeleton(member.username), None)
        if self._unannounced.pop(member.id, None) is not None:
            return []                       # it came and went before the class heard of it: nothing to say
        return [(EVERYONE, {"type": "leave", "time": self.now(), "from": member.id,
                            "username": member.username, "avatar": member.avatar})]

    def _forget_idle_budgets(self, most: int = 8) -> None:
        """Drop a few budgets that have refilled and have no connection: memory stays bounded."""
        idle = [a for a, b in itertools.islice(self._budgets.items(), most * 4) if b.idle()]
        for address in idle[:most]:
            del self._budgets[address]

    # -- the rules ------------------------------------------------------------------

    def _receive(self, member: Member, raw: str | bytes) -> list[Out]:
        if member.bucket is not None and not member.bucket.take():
            return self._flooding(member)
        member.strikes = 0
        data = parse_input(raw, self.limits.max_message, self.limits.max_username)
        kind = data["type"]
        if kind == "join":
            return self._join(member, data["username"], data["email"], data["teacher"])
        if kind == "rename":
            return self._rename(member, data["username"])
        if kind == "resume":
            return [(member, self.resume(data["last"]))]
        if kind in TEACHER_COMMANDS:
            if not member.teacher:
                raise ChatError("not_teacher", f"only the teacher may {kind}")
            return self.command(kind, data["target"], seconds=data["seconds"], by=member)
        out: list[Out] = []
        if member.username is None:
            # The Go original names the sender in every message; a legacy client's first message fixes its name.
            out += self._join(member, check_username(data["username"], self.limits.max_username), data["email"])
        self._may_speak(member)
        if not member.announced:
            out += self._announce(member)                  # speaking makes one known at once
        text = data["message"]
        if text.startswith("/") and text[1:].split(" ", 1)[0] in self.commands:
            name, _, args = text[1:].partition(" ")
            text = self.commands[name](member.username, args)
            if text is None:
                return out
        budget = member.budget.data
        if budget is not None and not budget.take(len(text.encode())):
            raise ChatError("rate_limited", f"slow down: at most {self.limits.bytes_rate:g} bytes of text per second; "
                                            "long messages use it up quickly")
        self.stats.messages += 1
        event = {"type": "message", "id": None if self.backplane else next(self._message_ids), "time": self.now(),
                 "from": member.id, "username": member.username, "avatar": member.avatar, "message": text}
        if member.teacher:
            event["teacher"] = True
        if not self.backplane:              # with one, the broker numbers it and heard() keeps it
            self.history.append(event)
        return out + [(EVERYONE, event)]

    def _flooding(self, member: Member) -> list[Out]:
        """A frame over the budget: one error a second at most, and a flood is closed (1008).

        Answering every refused frame would make the server send as much as
        the flooder does; saying nothing more than once a second and closing
        a connection that keeps going bounds what a flood costs everyone.
        """
        member.strikes += 1
        self.stats.errors += 1
        if member.strikes > FLOOD_STRIKES + 1:
            return []                   # told to close already: what is still in flight costs nothing more
        if member.strikes > FLOOD_STRIKES:
            log.info("closing connection %d: %d frames over its budget in a row", member.id, member.strikes)
            return [(member, {"type": "close", "code": 1008, "reason": "too many messages: slow down"})]
        now = self.clock()
        if now - member.warned < 1.0:
            return []
        member.warned = now
        detail = f"slow down: at most {self.limits.rate_limit:g} messages per second"
        return [] if member.legacy else [(member, {"type": "error", "code": "rate_limited", "detail": detail})]

    def penalize(self, member: Member) -> None:
        """A connection of ``member``'s address misbehaved (it was dropped): its address must wait to reconnect."""
        if member.budget.connects is not None:
            member.budget.connects.empty()

    def _may_speak(self, member: Member) -> None:
        if member.teacher:
            return
        if self.locked:
            raise ChatError("locked", "the teacher has locked the room: only the teacher can write now")
        left = member.budget.muted_until - self.clock()
        if left > 0:
            raise ChatError("muted", f"the teacher muted you for {left:.0f} more seconds")

    def _claim(self, member: Member, username: str) -> str:
        """Check that ``username`` is free for ``member``; returns its skeleton."""
        key = skeleton(username)
        holder = self._names.get(key)
        if holder is None and key in self._remote_names:
            raise ChatError("name_taken", f"{username!r} is taken (or looks just like it) by someone on another "
                                          "server of this room: pick another name")
        if holder is not None and holder is not member:
            raise ChatError("name_taken", f"{username!r} is taken (or looks just like {holder.username!r}, who is "
                                          "online): pick another name")
        if not key:
            raise ChatError("bad_name", "a name needs at least one letter or digit")
        if key in RESERVED and not member.teacher:
            raise ChatError("bad_name", f"{username!r} is kept for the teacher: pick another name")
        return key

    def _avatar(self, member: Member, email: str) -> str:
        """The avatar hash of ``email``, unless someone else online already shows it (no borrowed faces)."""
        avatar = avatar_hash(email)
        if avatar and any(m.avatar == avatar and m is not member for m in self._members.values()):
            return ""
        return avatar

    def _join(self, member: Member, username: str, email: str, secret: str | None = None) -> list[Out]:
        """Name a connection, once; a second join under another name is refused (use rename)."""
        if member.username is not None:
            if skeleton(username) == skeleton(member.username):
                return []
            raise ChatError("already_joined", f"you are {member.username!r} on this connection: "
                                              'send {"type": "rename", "username": ...} to change your name')
        if secret is not None:
            if not secrets.compare_digest(secret.encode(), self.secret.encode()):
                raise ChatError("not_teacher", "that teacher link is not this room's: ask the teacher for it")
            member.teacher = True
        if self.locked and not member.teacher and member.address not in self._in_at_lock:
            raise ChatError("locked", "the teacher has locked the room: nobody new can join now")
        key = self._claim(member, username)
        member.username, member.avatar = username, self._avatar(member, email)
        self._names[key] = member
        log.info("%s joined%s", username, " as the teacher" if member.teacher else "")
        member.joined_at = self.clock()
        if self.limits.announce_after <= 0:
            return self._announce(member, to_self=True)
        self._unannounced[member.id] = member
        return [(member, self._join_event(member))]         # the others hear of it once it has stayed (tick)

    def _join_event(self, member: Member) -> Event:
        event = {"type": "join", "time": self.now(), "from": member.id, "username": member.username,
                 "avatar": member.avatar}
        if member.teacher:
            event["teacher"] = True
        return event

    def _announce(self, member: Member, to_self: bool = False) -> list[Out]:
        """Tell the class that ``member`` joined (it heard it already, unless ``to_self``)."""
        self._unannounced.pop(member.id, None)
        member.announced = True
        return [(EVERYONE if to_self else Others(member), self._join_event(member))]

    def tick(self) -> list[Out]:
        """Announce those who have stayed ``announce_after`` seconds, at most ``announce_rate`` a second.

        The server calls this once a second.  A connection that comes
        and goes within the delay costs the class nothing, and a crowd that
        arrives at once (a restart, a reload of the whole class) is announced
        as a trickle, not a flood that would queue ahead of everyone's
        messages.
        """
        out: list[Out] = []
        now = self.clock()
        for member in list(self._unannounced.values()):
            if now - member.joined_at < self.limits.announce_after or not self._announcing.take():
                break
            out += self._announce(member)
        return out

    def _rename(self, member: Member, username: str) -> list[Out]:
        if member.username is None:
            raise ChatError("not_joined", "join first, then rename")
        if skeleton(username) == skeleton(member.username) and username == member.username:
            return []
        self._may_speak(member)
        key = self._claim(member, username)
        if not member.budget.renames.take():
            raise ChatError("rate_limited", f"one rename every {1 / self.limits.rename_rate:.0f} seconds, please")
        old = member.username
        out = [] if member.announced else self._announce(member)     # a rename is news: say who it was first
        self._names.pop(skeleton(old), None)
        member.username = username
        self._names[key] = member
        event = {"type": "rename", "time": self.now(), "from": member.id, "old": old, "username": username,
                 "avatar": member.avatar}
        return [*out, (EVERYONE, event)]

    # -- catching up, and the other servers (a backplane: chat/broker.py) ------------------

    def resume(self, last: int) -> Event:
        """The messages after id ``last``, from the history: what a reconnecting client missed.

        ``complete`` is False when the history no longer reaches back to
        ``last`` (more was said than it keeps): the client missed some.
        """
        kept = self.history.recent()
        messages = [e for e in kept if isinstance(e.get("id"), int) and e["id"] > last]
        complete = not messages or len(messages) < len(kept) or messages[0]["id"] <= last + 1 or last == 0
        return {"type": "history", "messages": messages, "resume": last, "complete": complete}

    def use_backplane(self, node: int, span: int = 1_000_000) -> None:
        """Let a broker number messages; member ids become ``node * span + n``, unique across servers."""
        self.backplane = True
        self._heard = self.history.next_id() - 1          # the last message id kept: no query per message
        self._member_ids = itertools.count(node * span + 1)

    def local_numbering(self, on: bool) -> None:
        """The broker is down (``on``): number messages here again, after the last id seen; or back up."""
        self.backplane = not on
        if on:
            self._message_ids = itertools.count(max(self._heard, self.history.next_id() - 1) + 1)

    @property
    def last_id(self) -> int:
        """The largest message id this room has numbered or heard."""
        return max(self._heard, self.history.next_id() - 1)

    def number(self, event: Event) -> Event:
        """Number and keep a message the backplane could not (it is down): after the last id seen."""
        event["id"] = self._heard = next(self._message_ids)
        if self.limits.history:
            self.history.append(event)
        return event

    def heard(self, event: Event, node: int | None = None) -> None:
        """An event the backplane delivered: from server ``node``, None when it is this server's own.

        Messages (everyone's, this server's included) go into the history;
        another server's joins, leaves and renames into the presence this
        room shows; a lock, unlock or clear applies here too.
        """
        kind = event.get("type")
        if kind == "message":
            number = event.get("id")
            if isinstance(number, int) and number > self._heard:      # (an outage's replay may repeat some)
                self._heard = number
                if self.limits.history:
                    self.history.append(event)
            return
        if node is None:
            return
        if kind in ("join", "rename"):
            entries = self._remote.setdefault(node, {})
            old = entries.get(event["from"])
            if old is not None:
                self._remote_names.pop(skeleton(old["username"]), None)
            entry = {"id": event["from"], "username": event["username"], "avatar": event.get("avatar", "")}
            if event.get("teacher"):
                entry["teacher"] = True
            entries[event["from"]] = entry
            self._remote_names[skeleton(event["username"])] = event["from"]
        elif kind == "leave":
            entry = self._remote.get(node, {}).pop(event["from"], None)
            if entry is not None:
                self._remote_names.pop(skeleton(entry["username"]), None)
        elif kind == "system":
            action = event.get("action")
            if action in ("lock", "unlock"):
                self.set_locked(action == "lock")
            elif action == "clear":
                self.history.clear()

    def set_remote(self, node: int, entries: list[Event]) -> None:
        """Server ``node``'s members, read whole (at start, or after an outage)."""
        self.forget_node(node)
        self._remote[node] = {e["id"]: e for e in entries}
        for e in entries:
            self._remote_names[skeleton(e["username"])] = e["id"]

    def forget_node(self, node: int) -> list[Out]:
        """Server ``node`` stopped (or died): its members leave; the events to tell this server's clients."""
        entries = self._remote.pop(node, {})
        out: list[Out] = []
        for entry in entries.values():
            self._remote_names.pop(skeleton(entry["username"]), None)
            out.append((EVERYONE, {"type": "leave", "time": self.now(), "from": entry["id"],
                                   "username": entry["username"], "avatar": entry.get("avatar", "")}))
        return out

    def ban_addresses(self, addresses: list[str]) -> list[Out]:
        """A ban made on another server: refuse these addresses here too, and close their connections."""
        out: list[Out] = []
        for address in addresses:
            if is_loopback(address):
                continue
            self.banned.add(address)
            out += [(m, {"type": "close", "code": BANNED, "reason": "banned by the teacher"})
                    for m in self._members.values() if m.address == address and not m.teacher]
        return out

    # -- the teacher's tools (from the teacher's page, or from a cell) ---------------------

    def set_locked(self, locked: bool) -> None:
        """Lock or unlock the room; a student in it when it was locked may rejoin (a page that lost its Wi-Fi).

        Every lock goes through here: the teacher's command, another server's
        (``heard``), and the state a broker hands a server that (re)joins.
        """
        self.locked = locked
        self._in_at_lock = {m.address for m in self._members.values() if m.username is not None} if locked else set()

    def command(self, action: str, target: int | str | Member | None = None, *, seconds: float | None = None,
                by: Member | None = None) -> list[Out]:
        """Carry out a teacher's ``action`` (kick, mute, unmute, ban, lock, unlock, clear) and announce it.

        ``by`` is the teacher's member when the command came from a page; a
        cell (the server's ``kick()`` etc.) leaves it None.
        """
        if action not in TEACHER_COMMANDS:
            raise ChatError("bad_field", f"unknown command {action!r}: one of {', '.join(TEACHER_COMMANDS)}")
        who = self.find(target) if action in ("kick", "mute", "unmute", "ban") else None
        if who is not None and who.teacher:
            raise ChatError("bad_field", "the teacher cannot be kicked, muted or banned")
        out: list[Out] = []
        detail = ""
        name = (who.username or f"connection {who.id}") if who is not None else ""
        if action == "kick":
            out.append((who, {"type": "close", "code": KICKED, "reason": "removed by the teacher"}))
            detail = f"{name} was removed by the teacher"
        elif action == "ban":
            if not is_loopback(who.address):
                self.banned.add(who.address)
            for m in self._members.values():
                if m is who or (m.address == who.address and not is_loopback(m.address) and not m.teacher):
                    out.append((m, {"type": "close", "code": BANNED, "reason": "banned by the teacher"}))
            detail = f"{name} was banned by the teacher for this session"
        elif action == "mute":
            seconds = float(seconds or self.limits.mute_seconds)
            who.budget.muted_until = self.clock() + seconds     # the address's: a reload does not end it
            detail = f"{name} was muted by the teacher for {seconds:.0f} seconds"
        elif action == "unmute":
            who.budget.muted_until = 0.0
            detail = f"{name} may write again"
        elif action in ("lock", "unlock"):
            self.set_locked(action == "lock")
            detail = ("the teacher locked the room: only the teacher can write, and nobody new can join"
                      if self.locked else "the teacher unlocked the room")
        elif action == "clear":
            self.history.clear()
            detail = "the teacher cleared the conversation"
        event = {"type": "system", "time": self.now(), "action": action,
                 "target": None if who is None else {"id": who.id, "username": who.username},
                 "by": by.username if by is not None else "the teacher", "detail": detail}
        if action == "mute":
            event["seconds"] = seconds
        log.info("teacher: %s", detail)
        return [(EVERYONE, event), *out]
