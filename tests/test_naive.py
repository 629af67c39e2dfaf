"""NaiveServer, the deliberately broken copy of the Go original: it must reproduce each flaw, and stay out of reach.

Lesson 06 relies on these flaws being real, so each is tested on a real
server on 127.0.0.1, port 0, with real sockets.  Waits are on conditions,
each with a time limit.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

import chat_lesson
from helpers import until
from chat_lesson.protocol.handshake import accept_key, build_request, make_key
from chat_lesson.lessons.naive import NaiveServer, read_json


@pytest.fixture
def naive():
    with NaiveServer(port=0) as server:
        yield server


async def settled(value, quiet: float = 0.5, timeout: float = 15.0) -> int:
    """Wait until ``value()`` has not changed for ``quiet`` s (at most ``timeout`` s); return it."""
    deadline = time.monotonic() + timeout
    last, since = value(), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        now = value()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise TimeoutError(f"still changing after {timeout} s")


def stuck_socket(port: int) -> socket.socket:
    """Complete the WebSocket handshake on a raw socket with a tiny receive buffer; then never read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    key = make_key()
    sock.sendall(build_request(f"127.0.0.1:{port}", "/ws", key=key))
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101") and accept_key(key).encode() in head
    return sock


def message(username: str, text: str, email: str = "") -> str:
    return json.dumps({"email": email, "username": username, "message": text})


# -- the shape of the original ----------------------------------------------------


def test_read_json_keeps_the_go_struct_fields_only():
    assert read_json('{"username": "a", "message": "hi", "extra": 1}') == {"email": "", "username": "a", "message": "hi"}
    assert read_json(b'{"email": null, "username": "a"}') == {"email": "", "username": "a", "message": ""}
    for bad in ("[1, 2]", '{"message": 42}', "{nope"):
        with pytest.raises(ValueError):
            read_json(bad)


def test_relays_the_message_object_to_everyone_sender_included(naive):
    async def scenario():
        async with connect(naive.ws_url) as a, connect(naive.ws_url) as b:
            await until(lambda: len(naive.clients) == 2)
            await a.send(message("alice", "hello"))
            for ws in (a, b):
                assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {
                    "email": "", "username": "alice", "message": "hello"}
            await until(lambda: naive.stats.deliveries == 2)     # counted just after each send returns
            assert naive.stats.messages == 1

    asyncio.run(scenario())


def test_bad_json_drops_the_client_like_readjson(naive):
    async def scenario():
        async with connect(naive.ws_url) as a:
            await until(lambda: len(naive.clients) == 1)
            await a.send("{not json")
            await until(lambda: len(naive.clients) == 0)

    asyncio.run(scenario())


# -- the flaws lesson 06 shows ---------------------------------------------------------


def test_one_client_that_stops_reading_stalls_everyone(naive):
    """Once the stuck client's buffers are full, the healthy client gets nothing more; freed, it gets the rest."""
    stuck = stuck_socket(naive.port)
    n, size = 400, 64 * 1024          # 25 MiB in all: more than any kernel buffers for one socket
    received = 0

    async def scenario():
        nonlocal received
        # max_queue=None: the sender never reads, but its library keeps taking what arrives
        # (with the default, it would stop after 16 messages and be a stuck client itself).
        async with connect(naive.ws_url, max_size=None) as reader, \
                connect(naive.ws_url, max_size=None, max_queue=None) as sender:
            await until(lambda: len(naive.clients) == 3)

            async def read():
                nonlocal received
                async for _ in reader:
                    received += 1

            task = asyncio.create_task(read())

            async def send_all():
                for i in range(n):
                    await sender.send(message("sender", f"{i:04d}" + "x" * size))

            sending = asyncio.create_task(send_all())
            stalled_at = await settled(lambda: received)
            assert stalled_at < n, "the room did not stall"
            stuck.close()                 # the stuck client goes away: the loop moves on
            await until(lambda: received == n, timeout=30)
            await asyncio.wait_for(sending, 10)
            task.cancel()
            return stalled_at

    try:
        stalled_at = asyncio.run(scenario())
    finally:
        stuck.close()
    assert 0 < stalled_at < n


def test_every_origin_is_accepted(naive):
    async def scenario():
        async with connect(naive.ws_url, origin="http://evil.example") as ws:
            await ws.send(message("evil", "I can read your chat"))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["username"] == "evil"

    asyncio.run(scenario())


def test_a_10_mib_message_is_relayed_to_everyone(naive):
    size = 10 * 2**20

    async def scenario():
        async with connect(naive.ws_url, max_size=None, compression=None) as big, \
                connect(naive.ws_url, max_size=None, compression=None) as other:
            await until(lambda: len(naive.clients) == 2)
            await big.send(message("big", "x" * size))
            got = json.loads(await asyncio.wait_for(other.recv(), 20))
            assert len(got["message"]) == size
            await until(lambda: naive.stats.bytes_relayed > 2 * size)     # to both, the sender included

    asyncio.run(scenario())


def test_a_flood_is_relayed_in_full(naive):
    async def scenario():
        async with connect(naive.ws_url, max_queue=None) as flooder, connect(naive.ws_url) as other:
            await until(lambda: len(naive.clients) == 2)
            for i in range(300):
                await flooder.send(message("flooder", f"spam {i}"))
            got = [json.loads(await asyncio.wait_for(other.recv(), 5))["message"] for _ in range(300)]
            assert got == [f"spam {i}" for i in range(300)]

    asyncio.run(scenario())


def test_html_is_relayed_as_it_came(naive):
    xss = '<img src=x onerror="window.__pwned=1">'

    async def scenario():
        async with connect(naive.ws_url) as a, connect(naive.ws_url) as b:
            await until(lambda: len(naive.clients) == 2)
            await a.send(message("<b>mallory</b>", xss))
            got = json.loads(await asyncio.wait_for(b.recv(), 5))
            assert got["message"] == xss and got["username"] == "<b>mallory</b>"

    asyncio.run(scenario())


def test_the_email_address_is_broadcast(naive):
    async def scenario():
        async with connect(naive.ws_url) as ada, connect(naive.ws_url) as eve:
            await until(lambda: len(naive.clients) == 2)
            await ada.send(message("ada", "hi", email="ada.lovelace@school.example"))
            assert json.loads(await asyncio.wait_for(eve.recv(), 5))["email"] == "ada.lovelace@school.example"

    asyncio.run(scenario())


# -- running it, and keeping it out of reach ---------------------------------------------


def test_stop_is_quick_even_while_stalled_and_frees_the_port():
    naive = NaiveServer(port=0).start()
    port = naive.port
    stuck = stuck_socket(port)

    async def stall():
        sender = await connect(naive.ws_url, max_queue=None)
        await until(lambda: len(naive.clients) == 2)
        for _ in range(200):
            try:
                await asyncio.wait_for(sender.send(message("s", "x" * 65536)), 0.5)
            except (TimeoutError, ConnectionClosed):
                break
        assert naive.stats.messages < 200          # stalled
        sender.transport.abort()                   # no closing handshake: the server is not reading
        await asyncio.sleep(0)

    asyncio.run(stall())
    start = time.monotonic()
    naive.stop()
    assert time.monotonic() - start < 3
    stuck.close()
    with socket.socket() as s:            # the port is free again
        s.bind(("127.0.0.1", port))


def test_static_page_only_when_asked_and_only_below_its_folder(tmp_path):
    (tmp_path / "index.html").write_text("<p>hi</p>")
    (tmp_path.parent / "secret.txt").write_text("secret")

    def get(port, path):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            return s.recv(65536).split(b"\r\n", 1)[0]

    with NaiveServer(port=0, static=tmp_path) as naive:
        assert get(naive.port, "/") == b"HTTP/1.1 200 OK"
        assert get(naive.port, "/../secret.txt") == b"HTTP/1.1 404 Not Found"
    with NaiveServer(port=0) as naive:
        assert get(naive.port, "/") == b"HTTP/1.1 404 Not Found"


def test_not_exported_and_not_behind_the_command_line():
    assert "NaiveServer" not in chat_lesson.__all__
    assert not hasattr(chat_lesson, "NaiveServer")
    code = ("import sys, chat_lesson, chat_lesson.__main__ as m\n"
            "assert 'chat_lesson.lessons.naive' not in sys.modules, 'importing chat_lesson loads naive'\n"
            "import argparse\n"
            "p = argparse.ArgumentParser(); sub = p.add_subparsers(dest='c'); m.serve_parser(sub)\n"
            "print(sub.choices['serve'].format_help())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "naive" not in out.lower()
    help_text = subprocess.run([sys.executable, "-m", "chat_lesson", "--help"], capture_output=True, text=True,
                               timeout=60).stdout
    assert "naive" not in help_text.lower()


def test_docstring_says_it_is_deliberately_broken():
    import chat_lesson.lessons.naive as naive_module

    assert "deliberately broken" in naive_module.__doc__.lower()
    assert "deliberately broken" in NaiveServer.__doc__.lower()
