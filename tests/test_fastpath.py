"""The fast path writes whole frames under websockets' feet: these tests fail if websockets changes underneath it.

``chat_lesson.chat.fastpath.write_frames`` uses three things websockets does
not document as public: ``connection.transport``, ``connection.protocol.fail``
and ``connection.send_data``.  Each is checked here on a real connection, by
what it does, not only by its name.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import socket

import websockets
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from chat_lesson.chat.fastpath import write_frames
from chat_lesson.chat.server import text_frame


def test_the_internals_are_still_there():
    assert callable(getattr(ServerConnection, "send_data", None)), f"websockets {websockets.__version__}: no send_data"
    from websockets.protocol import Protocol

    assert list(inspect.signature(Protocol.fail).parameters)[:3] == ["self", "code", "reason"]


def test_frames_written_beside_websockets_own_pings_arrive_whole_and_in_order():
    async def scenario():
        connections: list[ServerConnection] = []
        done = asyncio.Event()

        async def handler(connection):
            connections.append(connection)
            await done.wait()

        async with serve(handler, "127.0.0.1", 0, ping_interval=0.01, ping_timeout=5, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}", compression=None, max_queue=None) as client:
                while not connections:
                    await asyncio.sleep(0.001)
                (connection,) = connections
                for i in range(300):          # interleaved with websockets' pings every 10 ms
                    batch = b"".join(text_frame({"n": i, "k": k}) for k in range(3))
                    assert write_frames(connection, batch, max_buffer=1 << 20) == "sent"
                    if i % 50 == 0:
                        await asyncio.sleep(0.02)
                got = [json.loads(await asyncio.wait_for(client.recv(), 5)) for _ in range(900)]
                assert got == [{"n": i, "k": k} for i in range(300) for k in range(3)]
                assert connection.latency > 0           # pongs came back between our frames
                done.set()

    asyncio.run(scenario())


def test_a_reader_that_stopped_is_failed_with_1008_and_reset():
    async def scenario():
        connections: list[ServerConnection] = []

        async def handler(connection):
            connections.append(connection)
            try:
                await connection.wait_closed()
            except ConnectionClosed:
                pass

        async with serve(handler, "127.0.0.1", 0, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                                           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
            for _ in range(500):
                if connections:
                    break
                await asyncio.sleep(0.01)
            (connection,) = connections
            frame = text_frame({"pad": "x" * 4000})
            results = []
            for _ in range(2000):                      # never read: the buffer must fill
                results.append(write_frames(connection, frame, max_buffer=64 * 1024))
                if results[-1] != "sent":
                    break
                await asyncio.sleep(0)
            assert results[-1] == "dropped"
            assert connection.protocol.state is State.CLOSED or connection.state is not State.OPEN
            assert connection.protocol.close_sent is not None and connection.protocol.close_sent.code == 1008
            assert write_frames(connection, frame, max_buffer=64 * 1024) == "closed"
            sock.close()

    asyncio.run(scenario())
