"""A class with a troll in it, against the real server: each attack of the classroom issue, answered.

The students and the troll connect from other loopback addresses
(127.0.0.2, 127.0.0.3 ...), which the server counts as other machines; the
teacher's own cells use 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket

import pytest
from helpers import get, raw_http, until
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from chat_lesson import ChatServer
from chat_lesson.chat.wire import SUBPROTOCOL
from chat_lesson.protocol.frames import Frame, Opcode, encode_frame
from chat_lesson.protocol.handshake import build_request


async def student(server: ChatServer, name: str, address: str = "127.0.0.2", **join):
    ws = await connect(server.ws_url, subprotocols=[SUBPROTOCOL], local_addr=(address, 0), max_queue=None)
    await ws.send(json.dumps({"type": "join", "username": name, **join}))
    return ws


async def next_of(ws, kind: str, timeout: float = 5) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == kind:
                return event


def test_a_connect_flood_from_one_address_is_refused_before_the_upgrade():
    """Past its burst an address gets one 503 that says why; then its attempts are refused as they are accepted.

    Those are held unread for a second (a loop that waits for answers makes
    one attempt a second), at most 10 at once; the rest are reset at once.
    """
    from chat_lesson.chat.gate import MAX_HELD

    with ChatServer(port=0, quiet=True, connect_rate=0.01, connect_burst=5) as server:
        async def attempt():
            try:
                return await connect(server.ws_url, local_addr=("127.0.0.3", 0), open_timeout=10)
            except InvalidStatus as error:
                assert error.response.status_code == 503
                assert b"too many new connections" in error.response.body
                return 503
            except (OSError, InvalidMessage):       # reset before a byte was read: no HTTP answer at all
                return "reset"

        async def scenario():
            results = [await attempt() for _ in range(6)]
            opened = [r for r in results if not isinstance(r, (int, str))]
            assert len(opened) == 5 and results[5] == 503
            flood = [asyncio.ensure_future(attempt()) for _ in range(MAX_HELD + 5)]
            await until(lambda: server.stats.refused_connections == 1 + MAX_HELD + 5, what="the flood refused")
            assert server._held == {"127.0.0.3": MAX_HELD}                   # the rest were reset at once
            assert await asyncio.gather(*flood) == ["reset"] * (MAX_HELD + 5)
            await until(lambda: not server._held, what="the held connections released")
            alice = await student(server, "alice", "127.0.0.2")           # another address is not affected
            assert (await next_of(alice, "join"))["username"] == "alice"
            for ws in opened + [alice]:
                await ws.close()

        asyncio.run(scenario())


def test_connections_per_address_are_capped():
    with ChatServer(port=0, quiet=True, max_per_address=3, connect_burst=100) as server:
        async def scenario():
            opened = [await connect(server.ws_url, local_addr=("127.0.0.4", 0)) for _ in range(3)]
            with pytest.raises(InvalidStatus):
                await connect(server.ws_url, local_addr=("127.0.0.4", 0))
            for ws in opened:
                await ws.close()

        asyncio.run(scenario())


def test_a_second_alice_is_refused_and_the_real_one_keeps_her_name():
    with ChatServer(port=0, quiet=True) as server:
        async def scenario():
            alice = await student(server, "alice", "127.0.0.2")
            await next_of(alice, "join")
            troll = await student(server, "\u0410lice", "127.0.0.3")      # a Cyrillic A
            error = await next_of(troll, "error")
            assert error["code"] == "name_taken"
            assert server.clients == ["alice"]
            await troll.close()
            await alice.close()

        asyncio.run(scenario())


def test_the_teacher_kicks_from_a_cell_and_the_class_sees_it():
    with ChatServer(port=0, quiet=True) as server:
        async def scenario():
            alice = await student(server, "alice", "127.0.0.2")
            bob = await student(server, "bob", "127.0.0.3")
            await next_of(bob, "join")
            await until(lambda: server.clients == ["alice", "bob"])
            await asyncio.to_thread(server.kick, "bob")                    # a cell runs in another thread
            event = await next_of(alice, "system")
            assert event["action"] == "kick" and event["target"]["username"] == "bob"
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await bob.recv()
            assert closed.value.rcvd.code == 4001
            await until(lambda: server.clients == ["alice"])
            await alice.close()

        asyncio.run(scenario())


def test_the_teacher_page_bans_and_the_address_stays_out():
    with ChatServer(port=0, quiet=True) as server:
        async def scenario():
            teacher = await student(server, "Teacher", "127.0.0.9", teacher=server.room.secret)
            joined = await next_of(teacher, "join")
            assert joined["teacher"] is True
            troll = await student(server, "troll", "127.0.0.5")
            troll_id = (await next_of(troll, "join"))["from"]
            await teacher.send(json.dumps({"type": "ban", "target": troll_id}))
            assert (await next_of(teacher, "system"))["action"] == "ban"
            with pytest.raises(ConnectionClosed):
                while True:
                    await troll.recv()
            with pytest.raises(InvalidStatus) as refused:
                await connect(server.ws_url, local_addr=("127.0.0.5", 0))
            assert refused.value.response.status_code == 403
            await teacher.close()

        asyncio.run(scenario())


@pytest.mark.parametrize("raw", ['{"username": "a", "message": "\\ud800"}',
                                 '{"type": "join", "username": "\\ud800"}',
                                 "[" * 4000 + "]" * 4000])
def test_surrogates_and_deep_json_get_an_error_event_never_a_1011(raw):
    with ChatServer(port=0, quiet=True) as server:
        async def scenario():
            ws = await connect(server.ws_url, subprotocols=[SUBPROTOCOL])
            await ws.send(raw)
            assert (await next_of(ws, "error"))["code"] in ("bad_field", "bad_json")
            await ws.send(json.dumps({"type": "join", "username": "still here"}))
            assert (await next_of(ws, "join"))["username"] == "still here"
            await ws.close()

        asyncio.run(scenario())


def test_a_reader_that_floods_pings_and_never_reads_is_dropped_in_a_quiet_room():
    # The ping budget is off here, so that the sweep (unsent pongs pass max_buffer) is what drops it.
    with ChatServer(port=0, quiet=True, max_buffer=64 * 1024, client_ping_rate=0) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(build_request(f"127.0.0.1:{server.port}", "/ws", key="dGhlIHNhbXBsZSBub25jZQ==",
                                   protocols=[SUBPROTOCOL]))
        ping = encode_frame(Frame(True, Opcode.PING, b"x" * 125), mask_key=b"abcd")
        sock.setblocking(False)
        sent = 0
        try:
            for _ in range(200_000):                    # bounded: ~33 MB of pings at the most
                if server.stats.closed_slow:
                    break
                try:
                    sent += sock.send(ping * 64)
                except BlockingIOError:
                    select.select([], [sock], [], 0.05)     # wait (briefly) until the kernel takes more
                except OSError:
                    break                               # reset by the server: dropped
        finally:
            sock.close()
        asyncio.run(until(lambda: server.stats.closed_slow == 1, timeout=15))


def test_a_client_that_floods_pings_and_reads_the_pongs_is_closed_and_waits_to_reconnect():
    """websockets answers pings by itself: without a budget, one socket could keep a core busy forever."""
    with ChatServer(port=0, quiet=True) as server:
        async def scenario():
            pinger = await connect(server.ws_url, local_addr=("127.0.0.5", 0), ping_interval=None)
            try:
                for i in range(2_000):                  # bounded; the budget allows 50 at once, then 20 a second
                    await pinger.ping()
                    if i % 100 == 99:
                        await asyncio.sleep(0)          # let the pongs in, as a client that reads them would
            except ConnectionClosed:
                pass
            await until(lambda: server.stats.closed_pinging == 1, what="the pinger closed by the server")
            await until(lambda: pinger.state.name == "CLOSED", what="the close reaching the pinger")
            with pytest.raises((InvalidStatus, InvalidMessage, OSError)):   # its address waits (503, then reset)
                await connect(server.ws_url, local_addr=("127.0.0.5", 0))
            calm = await connect(server.ws_url, local_addr=("127.0.0.6", 0))  # 10 pings a second pass
            for _ in range(10):
                await (await calm.ping())
                await asyncio.sleep(0.1)
            await calm.close()
            assert server.stats.closed_pinging == 1

        asyncio.run(scenario())


def test_static_files_refuse_dotfiles_huge_files_and_long_paths_and_head_has_no_body(tmp_path):
    (tmp_path / "index.html").write_text("<p>hi</p>")
    (tmp_path / ".env").write_text("SECRET=1")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("[core]")
    (tmp_path / "big.bin").write_bytes(b"\0" * (3 * 1024 * 1024))
    with ChatServer(port=0, quiet=True, static=tmp_path) as server:
        assert get(server.port, "/.env")[0] == 404
        assert get(server.port, "/.git/config")[0] == 404
        assert get(server.port, "/big.bin")[0] == 403
        assert get(server.port, "/" + "a" * 300)[0] == 404            # a name the file system refuses
        assert get(server.port, "/" + "a/" * 1500)[0] == 414
        head = raw_http(server.port, f"HEAD /index.html HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
        status, _, body = head.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 200") and b"Content-Length: 9" in status and body == b""


def test_dns_rebinding_is_refused_by_the_host_allowlist_unless_the_name_is_allowed():
    def handshake(port: int, host: str) -> bytes:
        request = (f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                   f"Origin: http://{host}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(request)
            return sock.recv(4096)

    with ChatServer(port=0, quiet=True) as server:
        assert handshake(server.port, f"evil.example:{server.port}").startswith(b"HTTP/1.1 403")
        assert handshake(server.port, f"localhost:{server.port}").startswith(b"HTTP/1.1 101")
    with ChatServer(port=0, quiet=True, allow_hosts=["chat.school.example"]) as server:
        assert handshake(server.port, f"chat.school.example:{server.port}").startswith(b"HTTP/1.1 101")


def test_the_rooms_news_never_pushes_a_slow_reader_over_its_limit():
    """Joins and leaves skip a reader that is behind; messages still reach it; it gets the list when it catches up."""
    with ChatServer(port=0, quiet=True, rate_limit=0, max_buffer=256 * 1024, announce_after=0) as server:
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.settimeout(5)
        slow.connect(("127.0.0.1", server.port))
        slow.sendall(build_request(f"127.0.0.1:{server.port}", "/ws", key="dGhlIHNhbXBsZSBub25jZQ==",
                                   protocols=[SUBPROTOCOL]))

        def backlog() -> int:
            async def probe():
                return max(c.transport.get_write_buffer_size() for c in server._connections.values())
            return server._background.call(probe())

        async def scenario():
            talker = await student(server, "talker", "127.0.0.1")
            while backlog() <= 64 * 1024 + 1000:          # behind: past a quarter of max_buffer
                await talker.send(json.dumps({"message": "x" * 3000}))
                await next_of(talker, "message")
            before = backlog()
            for i in range(30):                            # churn: 30 joins and leaves
                ws = await student(server, f"churn{i}", "127.0.0.1")
                await next_of(ws, "join")
                await ws.close()
            assert backlog() == before                     # none of that news was queued for the slow reader
            await talker.send(json.dumps({"message": "still for everyone"}))
            await next_of(talker, "message")
            assert backlog() > before                      # but messages are
            slow.settimeout(0.2)
            got = b""
            deadline = asyncio.get_running_loop().time() + 15
            while got.count(b'"type": "presence"') < 2 and asyncio.get_running_loop().time() < deadline:
                try:
                    got += slow.recv(65536)                # catch up; the sweep then sends the whole list
                except TimeoutError:
                    await asyncio.sleep(0)
            assert got.count(b'"type": "presence"') >= 2 and server.stats.closed_slow == 0
            await talker.close()

        asyncio.run(scenario())
        slow.close()


def test_a_low_open_file_limit_caps_the_room_below_it():
    """With macOS's default of 256 files, 260 idle sockets locked everyone out; now the room stops short of it."""
    import subprocess
    import sys

    code = """
import resource
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
from chat_lesson import ChatServer
with ChatServer(port=0, quiet=True) as server:
    print(server.limits.max_connections, server.room.limits.max_connections)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["192", "192"]


def test_behind_a_local_reverse_proxy_the_forwarded_address_is_budgeted():
    with ChatServer(port=0, quiet=True, connect_rate=1, connect_burst=3) as server:
        async def scenario():
            opened, refused = [], 0
            for _ in range(6):                                   # a proxy on this machine, one student behind it
                try:
                    opened.append(await connect(server.ws_url, additional_headers={"X-Forwarded-For": "192.0.2.7"}))
                except InvalidStatus:
                    refused += 1
            other = await connect(server.ws_url, additional_headers={"X-Forwarded-For": "192.0.2.8"})
            assert (len(opened), refused) == (3, 3)
            for ws in opened + [other]:
                await ws.close()

        asyncio.run(scenario())


def test_a_churning_troll_costs_the_class_no_join_or_leave_event():
    with ChatServer(port=0, quiet=True) as server:            # the default: announced after 2 s
        async def scenario():
            alice = await student(server, "alice", "127.0.0.2")
            await next_of(alice, "join")
            for i in range(5):                                  # come and go within the delay
                troll = await student(server, f"troll{i}", "127.0.0.3")
                await next_of(troll, "join")
                await troll.close()
            await until(lambda: server.clients == ["alice"])
            bob = await student(server, "bob", "127.0.0.4")     # one who stays is announced, ~2 s later
            joined = await next_of(alice, "join", timeout=10)
            assert joined["username"] == "bob"                  # the first event alice hears: no troll in between
            await bob.close()
            await alice.close()

        asyncio.run(scenario())
