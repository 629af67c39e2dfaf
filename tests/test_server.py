"""The chat server against real clients on 127.0.0.1: the protocol and every default."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import socket

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chat_lesson import ChatClient, ChatServer
from chat_lesson.protocol.handshake import accept_key, build_request
from chat_lesson.chat.room import avatar_hash
from chat_lesson.chat.static import static_file
from chat_lesson.chat.wire import DEFAULTS, SUBPROTOCOL

from helpers import get, raw_http, until


async def joined(server: ChatServer, name: str, email: str = "", **options) -> ChatClient:
    """A connected client whose own join has come back to it."""
    client = await ChatClient(server, name, email, **options).aconnect()
    await client.await_for(lambda e: e["type"] == "join" and e["username"] == name)
    return client


# -- the wire protocol ----------------------------------------------------------


def test_broadcast_reaches_20_clients_sender_included(server):
    async def scenario():
        clients = [await joined(server, f"user{i}") for i in range(20)]
        await clients[7].asend("hello everyone :wave:")
        for c in clients:
            event = await c.await_for(lambda e: e["type"] == "message")
            assert event["username"] == "user7"
            assert event["message"] == "hello everyone :wave:"
            assert isinstance(event["id"], int) and event["time"].endswith("Z")
        assert server.stats.messages == 1
        for c in clients:
            await c.aclose()

    asyncio.run(scenario())


def test_join_leave_and_presence(server):
    async def scenario():
        alice = await joined(server, "alice", "Alice@Example.com ")
        bob = await joined(server, "bob")
        seen = await alice.await_for(lambda e: e["type"] == "join" and e["username"] == "bob")
        assert seen["avatar"] == ""
        alice_id, bob_id = seen["from"] - 1, seen["from"]    # ids in the order of connection
        async with connect(server.ws_url, subprotocols=[SUBPROTOCOL]) as carol:   # a newcomer gets the whole list
            await asyncio.wait_for(carol.recv(), 5)                               # welcome
            presence = json.loads(await asyncio.wait_for(carol.recv(), 5))
        assert presence["online"] == [
            {"id": alice_id, "username": "alice", "avatar": avatar_hash("alice@example.com")},
            {"id": bob_id, "username": "bob", "avatar": ""},
        ]
        assert server.clients == ["alice", "bob"]
        await bob.aclose()
        leave = await alice.await_for(lambda e: e["type"] == "leave")
        assert leave["username"] == "bob" and leave["from"] == bob_id            # a diff, not the whole list
        await until(lambda: server.clients == ["alice"])
        await alice.aclose()

    asyncio.run(scenario())


def test_new_connection_gets_welcome_then_presence_before_joining(server):
    async def scenario():
        alice = await joined(server, "alice")
        await alice.asend("hi")                 # speaking announces alice at once (else after announce_after)
        await alice.await_for(lambda e: e["type"] == "message")
        async with connect(server.ws_url, subprotocols=[SUBPROTOCOL]) as ws:
            welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert welcome == {"type": "welcome", "you": 2, "limits": DEFAULTS.public()}
            second = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert second == {"type": "presence", "online": [{"id": 1, "username": "alice", "avatar": ""}]}
        await alice.aclose()

    asyncio.run(scenario())


def test_avatar_is_gravatar_md5_and_email_is_never_sent(server):
    email = "  Student@School.example "
    assert avatar_hash(email) == hashlib.md5(b"student@school.example").hexdigest()

    async def scenario():
        async with connect(server.ws_url, subprotocols=[SUBPROTOCOL]) as watcher, \
                   connect(server.ws_url) as legacy_watcher:
            sender = await joined(server, "sam", email)
            await sender.asend("hi")
            frames = []
            for ws in (watcher, legacy_watcher):
                while True:
                    frame = await asyncio.wait_for(ws.recv(), 5)
                    frames.append(frame)
                    if json.loads(frame).get("type") == "message":
                        break
            assert not any("school" in f.lower() for f in frames)
            assert json.loads(frames[-1])["email"] == ""
            await sender.aclose()

    asyncio.run(scenario())


def test_legacy_client_gets_only_escaped_messages(server):
    """A client without the subprotocol is the Go original's Vue client: it renders with v-html."""

    async def scenario():
        async with connect(server.ws_url) as legacy:   # offers no subprotocol
            assert legacy.subprotocol is None
            mallory = await joined(server, "<b>mallory</b>")
            await mallory.asend("<img src=x onerror=alert(1)>")
            event = json.loads(await asyncio.wait_for(legacy.recv(), 5))
            # the presence and join events were not sent to it: the first frame is the message
            assert event["type"] == "message"
            assert event["message"] == "&lt;img src=x onerror=alert(1)&gt;"
            assert event["username"] == "&lt;b&gt;mallory&lt;/b&gt;"
            assert event["email"] == ""
            # a modern client gets the text as typed; it shows it with textContent
            mine = await mallory.await_for(lambda e: e["type"] == "message")
            assert mine["message"] == "<img src=x onerror=alert(1)>"
            await mallory.aclose()

    asyncio.run(scenario())


def test_legacy_sender_is_named_by_its_messages(server):
    async def scenario():
        watcher = await joined(server, "watcher")
        async with connect(server.ws_url) as go_client:
            await go_client.send(json.dumps({"email": "g@o.org", "username": "gopher", "message": "hi from Go"}))
            event = await watcher.await_for(lambda e: e["type"] == "message")
            assert (event["username"], event["message"], event["avatar"]) == ("gopher", "hi from Go", avatar_hash("g@o.org"))
            assert "gopher" in server.clients
        await watcher.await_for(lambda e: e["type"] == "leave" and e["username"] == "gopher")
        await watcher.aclose()

    asyncio.run(scenario())


def test_command_handlers_extend_the_chat(server):
    server.add_command("me", lambda user, args: f"* {user} {args}")
    server.add_command("quiet", lambda user, args: None)

    async def scenario():
        alice = await joined(server, "alice")
        await alice.asend("/quiet nothing to see")
        await alice.asend("/me waves")
        event = await alice.await_for(lambda e: e["type"] == "message")
        assert event["message"] == "* alice waves"
        await alice.asend("/unknown stays text")
        event = await alice.await_for(lambda e: e["type"] == "message")
        assert event["message"] == "/unknown stays text"
        await alice.aclose()

    asyncio.run(scenario())


# -- the defaults ---------------------------------------------------------------


def test_origin_same_or_none_allowed_foreign_refused(server, caplog):
    port = server.port

    async def scenario():
        async with connect(server.ws_url, origin=f"http://127.0.0.1:{port}") as ws:
            assert ws.protocol.state.name == "OPEN"
        async with connect(server.ws_url) as ws:                         # scripts send no Origin
            assert ws.protocol.state.name == "OPEN"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(server.ws_url, origin="http://evil.example"):
                pass
        assert refused.value.response.status_code == 403
        with pytest.raises(InvalidStatus):                               # same host, other port
            async with connect(server.ws_url, origin=f"http://127.0.0.1:{port + 1}"):
                pass

    with caplog.at_level(logging.WARNING, logger="chat_lesson.chat.server"):
        asyncio.run(scenario())
    assert server.stats.refused_origin == 2
    assert "refused Origin 'http://evil.example'" in caplog.text


def test_extra_origins_can_be_allowed():
    with ChatServer(port=0, quiet=True, origins=["http://teacher.example:8888/"]) as server:
        async def scenario():
            async with connect(server.ws_url, origin="http://teacher.example:8888") as ws:
                assert ws.subprotocol is None

        asyncio.run(scenario())


def test_oversized_message_closes_1009_others_unaffected(server):
    async def scenario():
        big = await joined(server, "big")
        calm = await joined(server, "calm")
        await big.asend_raw(json.dumps({"username": "big", "message": "x" * 10_000}))
        with pytest.raises(ConnectionClosed) as closed:
            await big.arecv(type="never")
        assert closed.value.rcvd.code == 1009
        await until(lambda: server.clients == ["calm"])
        await calm.asend("still here")
        assert (await calm.arecv(type="message"))["message"] == "still here"
        await calm.aclose()

    asyncio.run(scenario())


def test_chat_text_over_4_kib_is_an_error_event(server):
    async def scenario():
        alice = await joined(server, "alice")
        await alice.asend("é" * 2049)                       # 4098 bytes of UTF-8, in an 8 KiB frame
        error = await alice.arecv(type="error")
        assert error["code"] == "too_long"
        await alice.asend("é" * 2048)                       # exactly 4096 bytes: allowed
        assert (await alice.arecv(type="message"))["message"] == "é" * 2048
        await alice.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "raw, code",
    [
        ("{not json", "bad_json"),
        ("[1, 2, 3]", "bad_json"),
        (json.dumps({"username": "x"}), "bad_field"),
        (json.dumps({"username": "x", "message": 42}), "bad_field"),
        (json.dumps({"username": "x", "message": "   "}), "bad_field"),
        (json.dumps({"username": 7, "message": "hi"}), "bad_field"),
        (json.dumps({"username": "x" * 33, "message": "hi"}), "bad_name"),
        (json.dumps({"username": "x", "email": ["a"], "message": "hi"}), "bad_field"),
        (json.dumps({"type": "dance", "username": "x"}), "bad_field"),
        (b"\x00\x01binary", "bad_frame"),
    ],
)
def test_bad_input_gets_an_error_event_to_that_client_only(server, raw, code):
    async def scenario():
        other = await joined(server, "other")
        async with connect(server.ws_url, subprotocols=[SUBPROTOCOL]) as poker:
            await poker.send(raw)
            while (event := json.loads(await asyncio.wait_for(poker.recv(), 5)))["type"] != "error":
                pass
            assert event["code"] == code and event["detail"]
            # the connection is kept: it can still join and talk
            await poker.send(json.dumps({"type": "join", "username": "poker"}))
            await poker.send(json.dumps({"username": "poker", "message": "sorry"}))
            event = await other.await_for(lambda e: e["type"] == "message")
            assert event["message"] == "sorry"
        # the error went to the poker only
        async for event in other.aevents(timeout=0.2):
            assert event["type"] != "error"
        await other.aclose()

    asyncio.run(scenario())


def test_rate_limit_answers_with_error_event():
    with ChatServer(port=0, quiet=True, rate_limit=5, burst=3) as server:
        async def scenario():
            alice = await ChatClient(server, "alice").aconnect()     # the join takes one token
            for i in range(5):
                await alice.asend(f"m{i}")
            events = [e async for e in alice.aevents(timeout=0.5)]
            messages = [e["message"] for e in events if e["type"] == "message"]
            errors = [e for e in events if e["type"] == "error"]
            assert messages == ["m0", "m1"]
            assert [e["code"] for e in errors] == ["rate_limited"]     # one warning a second, not one per frame
            await alice.aclose()

        asyncio.run(scenario())


def test_rate_limit_zero_turns_it_off():
    with ChatServer(port=0, quiet=True, rate_limit=0) as server:
        async def scenario():
            alice = await joined(server, "alice")
            for i in range(100):
                await alice.asend(f"m{i}")
            got = [await alice.arecv(type="message") for _ in range(100)]
            assert [e["message"] for e in got] == [f"m{i}" for i in range(100)]
            await alice.aclose()

        asyncio.run(scenario())


def stuck_socket(server: ChatServer) -> socket.socket:
    """A WebSocket client that completes the handshake, then never reads again.

    Its tiny receive buffer makes the kernel stop accepting data early, so the
    server's unsent bytes pile up quickly.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", server.port))
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    sock.sendall(build_request(f"127.0.0.1:{server.port}", "/ws", key=key, protocols=[SUBPROTOCOL]))
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101") and accept_key(key).encode() in head
    return sock


def exchange(server: ChatServer, n_clients: int, n_messages: int, size: int, window: int = 10) -> list[list[str]]:
    """n_clients take turns sending n_messages; returns what each received, in order.

    Senders keep at most ``window`` messages ahead of the slowest healthy
    reader, as a chat does: people type slower than messages arrive.
    """

    async def scenario():
        clients = [await joined(server, f"c{i}") for i in range(n_clients)]
        await until(lambda: len(server.clients) >= n_clients)   # everyone has joined
        received: list[list[str]] = [[] for _ in clients]

        async def reader(c, got):
            while len(got) < n_messages:
                got.append((await c.arecv(10, type="message"))["message"])

        readers = [asyncio.create_task(reader(c, got)) for c, got in zip(clients, received)]
        for i in range(n_messages):
            await until(lambda i=i: min(map(len, received)) >= i - window)
            await clients[i % n_clients].asend(f"{i:05d}" + "x" * size)
        async with asyncio.timeout(30):
            await asyncio.gather(*readers)
        for c in clients:
            await c.aclose()
        return received

    return asyncio.run(scenario())


def test_client_that_never_reads_does_not_stall_the_others():
    with ChatServer(port=0, quiet=True, rate_limit=0) as server:
        stuck = stuck_socket(server)
        received = exchange(server, n_clients=5, n_messages=200, size=100)
        expected = [f"{i:05d}" + "x" * 100 for i in range(200)]
        assert all(sorted(r) == expected for r in received)
        stuck.close()


def test_client_that_never_reads_is_closed_once_its_buffer_is_full():
    with ChatServer(port=0, quiet=True, rate_limit=0, max_buffer=64 * 1024) as server:
        stuck = stuck_socket(server)
        received = exchange(server, n_clients=5, n_messages=200, size=3000)
        assert all(len(r) == 200 for r in received)
        assert server.stats.closed_slow == 1
        asyncio.run(until(lambda: server.stats.connections == 0))
        stuck.close()


def test_heartbeat_closes_a_peer_that_never_answers_pings():
    with ChatServer(port=0, quiet=True, ping_interval=0.2, ping_timeout=0.2, close_timeout=0.5) as server:
        sock = stuck_socket(server)          # reads nothing, so it answers no ping
        async def scenario():
            await until(lambda: server.stats.connections == 1)
            await until(lambda: server.stats.connections == 0, timeout=5)

        asyncio.run(scenario())
        sock.close()


def test_heartbeat_keeps_a_live_peer():
    with ChatServer(port=0, quiet=True, ping_interval=0.1, ping_timeout=0.5) as server:
        async def scenario():
            alice = await joined(server, "alice")
            # websockets answers the server's pings for us; the server's side of
            # the connection measures the round trip when the pong comes back.
            (connection,) = server._connections.values()
            await until(lambda: connection.latency > 0)
            await alice.asend("still alive")
            assert (await alice.arecv(type="message"))["message"] == "still alive"
            await alice.aclose()

        asyncio.run(scenario())


def test_logging_goes_through_logging(caplog):
    with caplog.at_level(logging.INFO, logger="chat_lesson"):
        with ChatServer(port=0, quiet=True) as server:
            client = ChatClient(server, "logger-test").connect()
            client.recv(type="join")
            client.close()
    assert "chat server listening on" in caplog.text
    assert "logger-test joined" in caplog.text


# -- static files -----------------------------------------------------------------


def test_index_and_static_files_with_content_types(server):
    status, headers, body = get(server.port, "/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert b"<html" in body.lower()
    for name, kind in [("app.js", "text/javascript"), ("style.css", "text/css")]:
        status, headers, _ = get(server.port, "/" + name)
        assert status == 200 and headers["content-type"].startswith(kind)


@pytest.mark.parametrize("path", [
    "/../pyproject.toml", "/%2e%2e/pyproject.toml", "/%2E%2E/pyproject.toml", "/..%2fpyproject.toml",
    "/static/../../pyproject.toml", "//etc/passwd", "/%2fetc%2fpasswd", "/etc/passwd",
    "/..\\pyproject.toml", "/index.html%00.js", "/missing.html", "/./index.html",
])
def test_paths_outside_static_are_404(server, path):
    status, _, body = get(server.port, path)
    assert status == 404, (path, body)


def test_symlinks_out_of_static_are_404(tmp_path):
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<html>ok</html>")
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", static / "leak.txt")
    assert static_file(static, "/leak.txt") is None
    with ChatServer(port=0, quiet=True, static=static) as server:
        assert get(server.port, "/")[0] == 200
        assert get(server.port, "/leak.txt")[0] == 404


def test_bad_handshakes_get_http_errors_and_the_server_lives_on(server):
    port = server.port
    plain = raw_http(port, f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    assert plain.startswith(b"HTTP/1.1 400") and b"Upgrade" in plain
    wrong_version = build_request(f"127.0.0.1:{port}", "/ws").replace(b"Version: 13", b"Version: 8")
    answer = raw_http(port, wrong_version)
    assert answer.startswith(b"HTTP/1.1 426") and b"Sec-WebSocket-Version: 13" in answer
    no_key = b"\r\n".join(line for line in build_request(f"127.0.0.1:{port}", "/ws").split(b"\r\n")
                          if not line.startswith(b"Sec-WebSocket-Key"))
    assert raw_http(port, no_key).startswith(b"HTTP/1.1 400")
    # a reset before the 101 (the Go original dies of it)
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.sendall(b"GET /ws HTTP/1.1\r\n")
    s.close()
    client = ChatClient(server, "survivor").connect()
    assert client.recv(type="join")["username"] == "survivor"
    client.close()


# -- running it from a cell --------------------------------------------------------


def test_restart_on_the_same_port_replaces_the_earlier_server():
    first = ChatServer(port=0, quiet=True).start()
    port = first.port
    second = ChatServer(port=port, quiet=True).start()     # a re-run cell: no "address in use"
    try:
        assert first._server is None                         # the earlier one was stopped
        client = ChatClient(second, "again").connect()
        assert client.recv(type="join")["username"] == "again"
        client.close()
    finally:
        second.stop()
    third = ChatServer(port=port, quiet=True).start()        # and stop() freed the port
    third.stop()


def test_url_stats_and_repr(server):
    assert server.url == f"http://127.0.0.1:{server.port}/"
    assert server.ws_url == f"ws://127.0.0.1:{server.port}/ws"
    client = ChatClient(server.url, "stat").connect()   # a page URL works too
    client.send("one")
    client.recv(type="message")
    assert server.stats.messages == 1 and server.stats.connections == 1
    assert server.stats.deliveries >= 3     # presence, join, presence, message
    assert "1 online" in repr(server)
    client.close()


def test_async_form_runs_on_the_callers_loop():
    async def scenario():
        async with ChatServer(port=0, quiet=True) as server:
            async with ChatClient(server, "async") as client:
                await client.asend("on my loop")
                assert (await client.arecv(type="message"))["message"] == "on my loop"

    asyncio.run(scenario())


def test_sync_client_iterates_events(server):
    with ChatClient(server, "iter") as client:
        client.send("a")
        client.send("b")
        got = [e["message"] for e in client.events(timeout=0.3) if e["type"] == "message"]
        assert got == ["a", "b"]
        with pytest.raises(TimeoutError):
            client.recv(timeout=0.05)


def test_listeners_see_every_broadcast_event(server):
    seen = []
    server.add_listener(seen.append)
    with ChatClient(server, "ears") as client:
        client.send("heard")
        client.recv(type="message")
    asyncio.run(until(lambda: [e["type"] for e in seen] == ["join", "message", "leave"]))


def test_command_line_serve_and_ctrl_c():
    """``python -m chat_lesson serve`` prints its link, serves the chat, and Ctrl-C stops it cleanly."""
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "chat_lesson", "serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("Chat running at http://127.0.0.1:"), line
        url = line.split()[-1]
        with ChatClient(url, "cli") as client:
            assert client.recv(type="join")["username"] == "cli"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        proc.kill()


def test_invalid_utf8_closes_1007_and_the_room_goes_on(server):
    """The Go original relays invalid UTF-8 to everyone; RFC 6455 §8.1 says fail the connection (1007)."""
    from chat_lesson.protocol.frames import Frame, Opcode, encode_frame

    async def scenario():
        calm = await joined(server, "calm")
        sock = stuck_socket(server)
        sock.sendall(encode_frame(Frame(True, Opcode.TEXT, b'{"username": "x", "message": "\xff\xfe"}'), b"abcd"))
        sock.settimeout(5)
        data = b""
        while b"\x88" not in data:                 # read until the server's close frame arrives
            chunk = sock.recv(4096)
            assert chunk, "connection closed without a close frame"
            data += chunk
        close = data[data.index(b"\x88"):]
        assert int.from_bytes(close[2:4], "big") == 1007
        sock.close()
        await calm.asend("unharmed")
        assert (await calm.arecv(type="message"))["message"] == "unharmed"
        await calm.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize("junk", [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,   # a TLS hello
                                  b"HELLO\r\n\r\n", b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 70000 + b"\r\n\r\n"])
def test_junk_instead_of_http_is_refused_and_the_server_lives_on(server, junk):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(junk)                           # a TLS hello never ends its "line": the server
                                                     # waits for the rest until open_timeout (10 s)
    client = ChatClient(server, "after-junk").connect()
    assert client.recv(type="join")["username"] == "after-junk"
    client.close()


def test_legacy_clients_get_no_error_events(server):
    """The Go original's page would show an error event as a message from 'undefined'."""

    async def scenario():
        async with connect(server.ws_url) as legacy:
            await legacy.send("{broken")
            await legacy.send(json.dumps({"username": "gopher", "message": "fine"}))
            event = json.loads(await asyncio.wait_for(legacy.recv(), 5))
            assert event["type"] == "message" and event["message"] == "fine"
        assert server.stats.errors == 1

    asyncio.run(scenario())


def test_classroom_mode_shows_the_lan_link(capsys):
    """host="0.0.0.0" listens on every interface and prints the address to hand out."""
    from chat_lesson.notebook import lan_address

    with ChatServer(host="0.0.0.0", port=0) as server:
        shown = capsys.readouterr().out
        assert f"Chat running at http://127.0.0.1:{server.port}/" in shown
        lan = lan_address()
        if lan:
            assert f"Classroom mode: students open http://{lan}:{server.port}/" in shown
        else:
            assert "Classroom mode: no LAN address found" in shown
        with ChatClient(server, "local") as client:          # reached over loopback only
            assert client.recv(type="join")["username"] == "local"


def test_newcomers_get_recent_history_after_presence():
    with ChatServer(port=0, quiet=True, history=3, rate_limit=0) as server:
        async def scenario():
            alice = await joined(server, "alice")
            for i in range(5):
                await alice.asend(f"m{i}")
            await alice.await_for(lambda e: e.get("message") == "m4")
            async with connect(server.ws_url, subprotocols=[SUBPROTOCOL]) as late, connect(server.ws_url) as legacy:
                assert json.loads(await asyncio.wait_for(late.recv(), 5))["type"] == "welcome"
                first = json.loads(await asyncio.wait_for(late.recv(), 5))
                second = json.loads(await asyncio.wait_for(late.recv(), 5))
                assert first["type"] == "presence"
                assert second["type"] == "history"
                assert [m["message"] for m in second["messages"]] == ["m2", "m3", "m4"]   # the last 3
                await alice.asend("now")
                assert json.loads(await asyncio.wait_for(legacy.recv(), 5))["message"] == "now"  # no history for legacy
            await alice.aclose()

        asyncio.run(scenario())


def test_history_zero_sends_none():
    with ChatServer(port=0, quiet=True, history=0) as server:
        with ChatClient(server, "a") as a:
            a.send("x")
            a.recv(type="message")
        with ChatClient(server, "b") as b:
            assert [e["type"] for e in b.events(timeout=0.3)] == ["welcome", "presence", "join"]


def test_the_page_reads_the_rooms_limits_from_one_place():
    with ChatServer(port=0, quiet=True, max_message=100) as server:
        status, headers, body = get(server.port, "/limits.json")
        assert status == 200 and headers["content-type"] == "application/json"
        assert json.loads(body) == {**DEFAULTS.public(), "max_message": 100}


def test_the_teacher_link_reads_as_words_in_a_notebook_and_only_its_address_holds_the_secret():
    from chat_lesson.chat.server import TEACHER_LINK_TEXT
    from chat_lesson.notebook import link_html

    shown = link_html("http://127.0.0.1:8000/#teacher=s3cr3t&x", "Teacher link:", TEACHER_LINK_TEXT)
    visible = re.sub(r"<[^>]+>", "", shown)
    assert 'href="http://127.0.0.1:8000/#teacher=s3cr3t&amp;x"' in shown and "s3cr3t" not in visible
    assert re.sub(r"<[^>]+>", "", link_html("http://a/", "Chat at")) == "Chat at http://a/"
