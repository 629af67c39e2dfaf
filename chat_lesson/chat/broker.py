"""The backplane: several chat server processes in one room, through Redis.

One process holds one core.  To hold more students, run several server
processes (behind nginx, lesson 08) and join them with a *broker*: every
event meant for the whole room goes to Redis first, and Redis hands it to
every server, which writes it to its own clients.  Without a broker (the
default) a server is exactly what it was: one process, one room, nothing
else running.

**The seam.**  The pure :class:`~chat_lesson.chat.room.Room` stays pure: it
still decides everything about *its own* connections (names, budgets, the
teacher's commands) and returns ``(audience, event)`` pairs.  With a broker
the server changes only where a broadcast goes:

- ``_deliver`` hands each ``EVERYONE`` event to :meth:`Broker.publish`
  instead of writing it; the broker numbers messages and stores them;
- the broker's subscription hands every event, this server's own included,
  back to the server, which tells the room (:meth:`Room.heard`: the history
  mirror, names and presence held on other servers, lock and clear) and then
  writes it to its clients.  So every server writes the same events in the
  same order, Redis's order, and a sender sees its own message exactly when
  the others do.

**What lives in Redis** (every key starts with ``chat:<room>:``):

============================  ==========================================================
``ids``                       the message counter: ``INCR`` in the same Lua call that
                              stores and publishes, so ids follow publication order
``history``                   a list of the last ``keep`` messages (``RPUSH`` + ``LTRIM``)
``events``                    the pub/sub channel: ``"<node> <event JSON>"``, or a control
                              line ``"<node> !sync"`` / ``"<node> !ban [...]"`` / ``"<node> !bye"``
``node``                      a counter that gives each server process its node number;
                              member ids are ``node * 1,000,000 + n``, unique in the cluster
``node:<n>:alive``            a key with a TTL that server ``n``'s heartbeat refreshes
``node:<n>:members``          a hash: member id -> presence entry, same TTL; when the alive
                              key expires (the server died), every other server says the
                              leaves of its members to its own clients
``banned``, ``locked``        the teacher's bans (a set of addresses) and lock
``secret``                    the teacher's secret, the same on every server
============================  ==========================================================

**Budgets stay per address per server**: a token bucket checked against
Redis on every frame would put a round trip in front of every message.  A
student on two servers (two tabs that nginx sent to different processes)
gets twice the budget; ``ip_hash`` in nginx keeps an address on one server.

**Redis lost mid-run**: the server keeps serving its own clients (messages
numbered locally, from the last id it saw), sends them a ``system`` event
with ``action: "broker"`` ("broker down"), tries again with backoff, and
when Redis is back re-registers its members, raises the counters to at
least what it has seen, refills an empty history from its mirror, replays
the messages it missed, says "broker up", and asks the others to re-read
its members (``!sync``).  Messages sent during the outage reach only that
server's clients.

**Not shared**: a kick or mute names a connection on the teacher's server
only; names are claimed on each server and checked against the presence
the others published, so two servers may accept the same new name in the
same millisecond.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import Any
from collections.abc import Callable

from .quietlog import quiet

__all__ = ["Broker", "BrokerUnavailable", "NODE_SPAN"]

log = quiet(logging.getLogger(__name__))

NODE_SPAN = 1_000_000        # member ids of node n: n * NODE_SPAN + 1, + 2, ...

# Number a message, keep it, publish it: one atomic step, so ids follow the order of publication.
# ARGV: channel, node prefix, JSON before the id, JSON after the id, keep.
PUBLISH_MESSAGE = """
local id = redis.call('INCR', KEYS[1])
local event = ARGV[3] .. id .. ARGV[4]
redis.call('RPUSH', KEYS[2], event)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
redis.call('PUBLISH', ARGV[1], ARGV[2] .. event)
return id
"""

# Raise a counter to at least ARGV[1] (after Redis restarted empty, say).
AT_LEAST = """
local now = tonumber(redis.call('GET', KEYS[1]) or '0')
if now < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) return tonumber(ARGV[1]) end
return now
"""

ID_MARK = '"id": null'      # json.dumps of a message the room left unnumbered: {"type": "message", "id": null, ...}


class BrokerUnavailable(ConnectionError):
    """The broker cannot be reached (at start: the server refuses to start)."""


def entry_of(event: dict[str, Any]) -> dict[str, Any]:
    """The presence entry a join or rename event describes."""
    entry = {"id": event["from"], "username": event["username"], "avatar": event.get("avatar", "")}
    if event.get("teacher"):
        entry["teacher"] = True
    return entry


class Broker:
    """One server's link to Redis: publish the room's events, hear everyone's.

    The server sets the callbacks before :meth:`start`:

    - ``on_event(node, event)``: an event published by any server (this one's too);
    - ``on_control(node, kind, data)``: ``sync`` (re-read that node's members),
      ``ban`` (addresses), ``bye`` (that node stopped);
    - ``on_state(up, detail)``: the link went down or came back;
    - ``on_dead(node)``: another server stopped refreshing its heartbeat;
    - ``members()``: this server's presence entries (to re-register after an outage);
    - ``last_id()``: the largest message id this server has seen;
    - ``mirror()``: the messages this server keeps (to refill an empty history).

    ``beat`` is the heartbeat period; a server's members expire ``3 * beat``
    seconds after its last beat.
    """

    def __init__(self, url: str, *, room: str = "main", keep: int = 50, beat: float = 2.0) -> None:
        self.url, self.keep, self.beat = url, max(1, keep), beat
        self.prefix = f"chat:{room}:"
        self.channel = self.prefix + "events"
        self.node = 0
        self.up = False
        self.on_event: Callable[[int, dict[str, Any]], None] = lambda node, event: None
        self.on_control: Callable[[int, str, Any], None] = lambda node, kind, data: None
        self.on_state: Callable[[bool, str], None] = lambda up, detail: None
        self.on_dead: Callable[[int], None] = lambda node: None
        self.members: Callable[[], list[dict[str, Any]]] = list
        self.last_id: Callable[[], int] = lambda: 0
        self.mirror: Callable[[], list[dict[str, Any]]] = list
        self.known: set[int] = set()            # other nodes whose members this server shows
        self.published = 0                      # events handed to Redis
        self._redis: Any = None
        self._pubsub: Any = None
        self._outbox: list[tuple[dict[str, Any], Any]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._shas: dict[str, str] = {}

    # -- keys ---------------------------------------------------------------------------

    def key(self, name: str) -> str:
        return self.prefix + name

    def alive_key(self, node: int) -> str:
        return f"{self.prefix}node:{node}:alive"

    def members_key(self, node: int) -> str:
        return f"{self.prefix}node:{node}:members"

    # -- life -------------------------------------------------------------------------------

    async def start(self) -> dict[str, Any]:
        """Connect, take a node number, and read the room's shared state; raises BrokerUnavailable.

        Returns ``{"node", "secret", "history", "remote", "banned", "locked"}``
        for the server to set up its room before it listens.
        """
        try:
            await self._open()
            self.node = int(await self._redis.incr(self.key("node")))
            state = await self.read_state()
            await self._register()
        except (OSError, ImportError) as error:
            await self._drop()
            raise BrokerUnavailable(f"cannot reach the broker at {self.url}: {error}") from None
        except Exception as error:             # redis.exceptions.ConnectionError is not an OSError
            await self._drop()
            raise BrokerUnavailable(f"cannot reach the broker at {self.url}: {error}") from None
        self.up = True
        self._tasks = [asyncio.ensure_future(self._listen()), asyncio.ensure_future(self._send()),
                       asyncio.ensure_future(self._heartbeat())]
        return {"node": self.node, **state}

    async def claim_secret(self, secret: str) -> str:
        """The teacher's secret shared by every server: the first server's, or ``secret`` if this is the first."""
        await self._redis.set(self.key("secret"), secret, nx=True)
        stored = await self._redis.get(self.key("secret"))
        if not stored:
            await self._redis.set(self.key("secret"), secret)
            return secret
        return stored.decode()

    async def read_state(self) -> dict[str, Any]:
        """The shared history, the other servers' members, the bans and the lock."""
        r = self._redis
        history = [json.loads(raw) for raw in await r.lrange(self.key("history"), 0, -1)]
        nodes = [int(n) for n in await r.smembers(self.key("nodes"))]
        remote: dict[int, list[dict[str, Any]]] = {}
        for node in nodes:
            if node == self.node:
                continue
            if not await r.exists(self.alive_key(node)):
                await r.srem(self.key("nodes"), node)
                continue
            entries = await r.hgetall(self.members_key(node))
            remote[node] = [json.loads(v) for v in entries.values()]
        banned = {b.decode() for b in await r.smembers(self.key("banned"))}
        locked = bool(await r.exists(self.key("locked")))
        self.known = set(remote)
        return {"history": history, "remote": remote, "banned": banned, "locked": locked}

    async def node_members(self, node: int) -> list[dict[str, Any]]:
        return [json.loads(v) for v in (await self._redis.hgetall(self.members_key(node))).values()]

    async def close(self) -> None:
        """Send what is queued, say goodbye (the others drop this server's members at once), disconnect."""
        self._closing = True
        if self.up and self._outbox:
            try:
                await asyncio.wait_for(self._flush(), 2)
            except Exception:
                pass
        for task in self._tasks:
            task.cancel()
        self._wake.set()
        if self._tasks:
            # (redis-py may swallow a cancellation that lands inside a command: the loops also watch _closing)
            await asyncio.wait(self._tasks, timeout=2)
        self._tasks = []
        if self.up:
            try:
                r = self._redis
                await asyncio.wait_for(r.delete(self.alive_key(self.node), self.members_key(self.node)), 2)
                await asyncio.wait_for(r.srem(self.key("nodes"), self.node), 2)
                await asyncio.wait_for(r.publish(self.channel, f"{self.node} !bye"), 2)
            except Exception:
                pass
        self.up = False
        await self._drop()

    async def _open(self) -> None:
        import redis.asyncio as aioredis         # optional: pip install chat_lesson[scale]

        self._redis = aioredis.from_url(self.url, socket_connect_timeout=2, socket_timeout=5,
                                        retry_on_timeout=False)
        await self._redis.ping()
        self._shas = {"publish": await self._redis.script_load(PUBLISH_MESSAGE),
                      "at_least": await self._redis.script_load(AT_LEAST)}
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self.channel)

    async def _drop(self) -> None:
        for thing in (self._pubsub, self._redis):
            if thing is not None:
                try:
                    await asyncio.wait_for(thing.aclose(), 2)
                except BaseException:
                    pass
        self._pubsub = self._redis = None

    async def _register(self) -> None:
        """Put this server and its members in Redis (at start, and again after an outage)."""
        r = self._redis
        members = {str(m["id"]): json.dumps(m) for m in self.members()}
        ttl = max(1, round(3 * self.beat))
        async with r.pipeline(transaction=True) as pipe:
            pipe.delete(self.members_key(self.node))
            if members:
                pipe.hset(self.members_key(self.node), mapping=members)
                pipe.expire(self.members_key(self.node), ttl)
            pipe.set(self.alive_key(self.node), "1", ex=ttl)
            pipe.sadd(self.key("nodes"), self.node)
            await pipe.execute()

    # -- out: publish ---------------------------------------------------------------

    def publish(self, event: dict[str, Any], extra: Any = None) -> None:
        """Queue ``event`` for the whole room; sent (in order) at the next turn of the loop."""
        self._outbox.append((event, extra))
        self._wake.set()

    def ban(self, addresses: list[str]) -> None:
        """Share the teacher's bans: every server refuses and closes these addresses."""
        self._outbox.append(({"type": "!ban"}, addresses))
        self._wake.set()

    def take_outbox(self) -> list[tuple[dict[str, Any], Any]]:
        """What was queued and not sent (the server delivers it locally when the broker is down)."""
        out, self._outbox = self._outbox, []
        return out

    async def _send(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            if self.up and self._outbox:
                try:
                    await self._flush()
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    self._fail(error)

    async def _flush(self) -> None:
        batch, self._outbox = self._outbox, []
        try:
            await self._write(batch)
        except BaseException:
            self._outbox[:0] = batch          # not sent: the server delivers them locally
            raise

    def _message_args(self, event: dict[str, Any], head: str) -> tuple[Any, ...]:
        text = json.dumps(event, ensure_ascii=False)
        before, mark, after = text.partition(ID_MARK)
        if not mark:
            raise ValueError("a message to number must start {'type': 'message', 'id': None, ...}")
        return (self._shas["publish"], 2, self.key("ids"), self.key("history"), self.channel, head,
                before + '"id": ', after, self.keep)

    async def _write(self, batch: list[tuple[dict[str, Any], Any]]) -> None:
        r, node, ttl = self._redis, self.node, max(1, round(3 * self.beat))
        mine, head = self.members_key(node), f"{node} "
        if len(batch) == 1 and batch[0][0]["type"] == "message" and batch[0][0].get("id") is None:
            await r.evalsha(*self._message_args(batch[0][0], head))     # the common case: no pipeline to build
            self.published += 1
            return
        async with r.pipeline(transaction=False) as pipe:
            for event, extra in batch:
                kind = event["type"]
                if kind == "!ban":
                    pipe.sadd(self.key("banned"), *extra) if extra else None
                    pipe.publish(self.channel, head + "!ban " + json.dumps(extra))
                    continue
                if kind == "message" and event.get("id") is None:
                    pipe.evalsha(*self._message_args(event, head))
                    continue
                if kind in ("join", "rename"):
                    pipe.hset(mine, str(event["from"]), json.dumps(entry_of(event)))
                    pipe.expire(mine, ttl)
                elif kind == "leave":
                    pipe.hdel(mine, str(event["from"]))
                elif kind == "system":
                    action = event.get("action")
                    if action == "lock":
                        pipe.set(self.key("locked"), "1")
                    elif action == "unlock":
                        pipe.delete(self.key("locked"))
                    elif action == "clear":
                        pipe.delete(self.key("history"))
                pipe.publish(self.channel, head + json.dumps(event, ensure_ascii=False))
            await pipe.execute()
        self.published += len(batch)

    # -- in: the subscription -----------------------------------------------------------

    async def _listen(self) -> None:
        try:
            while not self._closing:
                message = await self._pubsub.get_message(timeout=None)
                if message is None or message.get("type") != "message":
                    continue
                self._hear(message["data"])
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._fail(error)

    def _hear(self, data: bytes) -> None:
        head, _, body = data.partition(b" ")
        try:
            node = int(head)
            if body[:1] == b"!":
                kind, _, rest = body[1:].decode().partition(" ")
                if node != self.node:
                    if kind == "bye":
                        self.known.discard(node)
                    elif kind == "sync":
                        self.known.add(node)
                    self.on_control(node, kind, json.loads(rest) if rest else None)
                return
            event = json.loads(body)
        except ValueError:
            log.warning("broker: ignored a line that is not ours: %r", data[:80])
            return
        if node != self.node:
            self.known.add(node)
        try:
            self.on_event(node, event)
        except Exception as error:            # one bad event must not stop the subscription
            log.warning("broker: an event raised %r", error)

    # -- health: the heartbeat, the outage, the return ---------------------------------------

    async def _heartbeat(self) -> None:
        ttl = max(1, round(3 * self.beat))
        while not self._closing:
            await asyncio.sleep(self.beat)
            if not self.up:
                continue
            try:
                r = self._redis
                async with r.pipeline(transaction=False) as pipe:
                    pipe.set(self.alive_key(self.node), "1", ex=ttl)
                    pipe.expire(self.members_key(self.node), ttl)
                    pipe.sadd(self.key("nodes"), self.node)
                    others = sorted(self.known)
                    for node in others:
                        pipe.exists(self.alive_key(node))
                    answers = await pipe.execute()
                for node, alive in zip(others, answers[3:]):
                    if not alive:
                        self.known.discard(node)
                        log.warning("broker: server %d stopped beating: its members leave", node)
                        self.on_dead(node)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._fail(error)

    def _fail(self, error: BaseException) -> None:
        if not self.up or self._closing:
            return
        self.up = False
        log.warning("broker down: %r", error)
        self.on_state(False, f"broker down ({type(error).__name__}): messages reach this server's clients only")
        for task in self._tasks:
            if task is not asyncio.current_task() and task.get_name() != "broker-rejoin":
                task.cancel()
        self._tasks = [asyncio.ensure_future(self._rejoin())]
        self._tasks[0].set_name("broker-rejoin")

    async def _rejoin(self) -> None:
        """Try again with full-jitter backoff until Redis answers; then catch up and resume."""
        await self._drop()
        delay = 0.1
        while True:
            await asyncio.sleep(random.uniform(0, delay) + 0.05)
            delay = min(delay * 2, 2.0)
            try:
                await self._open()
                r = self._redis
                await r.evalsha(self._shas["at_least"], 1, self.key("node"), self.node)
                await r.evalsha(self._shas["at_least"], 1, self.key("ids"), self.last_id())
                if not await r.exists(self.key("history")):
                    kept = self.mirror()[-self.keep:]
                    if kept:
                        await r.rpush(self.key("history"), *(json.dumps(e, ensure_ascii=False) for e in kept))
                await self._register()
                missed = [json.loads(raw) for raw in await r.lrange(self.key("history"), 0, -1)]
                state = await self.read_state()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.info("broker still down: %r", error)
                await self._drop()
                continue
            break
        self.up = True
        last = self.last_id()
        for event in missed:                       # what the others said while we were away
            if isinstance(event.get("id"), int) and event["id"] > last:
                self.on_event(-1, event)
        self.on_control(-1, "state", state)
        self._tasks = [asyncio.ensure_future(self._listen()), asyncio.ensure_future(self._send()),
                       asyncio.ensure_future(self._heartbeat())]
        await self._redis.publish(self.channel, f"{self.node} !sync")
        self.on_state(True, "broker up: this server is back in the room")
        self._wake.set()
