"""The classroom bench's clients and attacks: raw WebSocket clients bound to a source address of their own.

:class:`Client` reads no faster than it is told (a token bucket pausing the
transport), answers pings and records what the server answered; each attack
runs from ONE address and returns what the server did about it (``answer``,
``stopped``: refused, throttled or closed).  See ``classroom.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections import Counter
from typing import Any

from ..chat.names import skeleton
from ..chat.wire import DEFAULTS, SUBPROTOCOL
from ..protocol import frames, handshake
from ..protocol.reader import Reader
from .load import STAMP

BIND_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)    # pick the port at connect(): no bind() exhaustion


def student_name(i: int) -> str:
    return f"student{i + 1:02d}"


class Refused(ConnectionError):
    """The server answered the handshake with something other than 101 (a 503 from the budgets, say)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class Client(asyncio.Protocol):
    """A WebSocket client on a raw transport that reads no faster than ``read_rate`` bytes/s (0: as fast as it can).

    Pacing: each read spends tokens from a bucket of ``depth`` bytes that
    refills at ``read_rate``; an empty bucket pauses reading, so the kernel's
    small receive buffer fills and the server's bytes wait on the server.
    """

    def __init__(self, name: str, read_rate: float = 0, depth: int = 16384, on_stamp: Any = None,
                 inbox: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self.name, self.rate, self.depth, self.on_stamp = name, read_rate, depth, on_stamp
        self.key, self.reader, self.host = handshake.make_key(), Reader(masked=False), ""
        self.opened, self.joined, self.closed = loop.create_future(), loop.create_future(), loop.create_future()
        self.inbox: asyncio.Queue[dict[str, Any]] | None = asyncio.Queue() if inbox else None
        self.tokens, self.stamp, self.paused = float(depth), loop.time(), False
        self.transport: asyncio.Transport | None = None
        self.errors: Counter[str] = Counter()
        self.close_code: int | None = None
        self.you: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(handshake.build_request(self.host, "/ws", key=self.key, protocols=[SUBPROTOCOL]))

    def pace(self, n: int) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.tokens = min(self.depth, self.tokens + (now - self.stamp) * self.rate) - n
        self.stamp = now
        if self.tokens < 0 and not self.paused:
            self.paused = True
            self.transport.pause_reading()
            loop.call_later(-self.tokens / self.rate, self.resume)

    def resume(self) -> None:
        self.paused = False
        if self.transport and not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.rate:
            self.pace(len(data))
        self.reader.receive_data(data)
        try:
            if not self.opened.done():
                head = self.reader.next_head_bytes()
                if head is None:
                    return
                parsed = handshake.parse_head(head)
                if parsed.status != 101:
                    raise Refused(parsed.status)
                handshake.check_response(self.key, parsed, protocols=[SUBPROTOCOL])
                self.opened.set_result(None)
            while (frame := self.reader.next_frame()) is not None:
                self.on_frame(frame)
        except (Refused, handshake.HandshakeError, frames.FrameError) as exc:
            if not self.opened.done():
                self.opened.set_exception(exc)
            self.transport.abort()

    def on_frame(self, frame: frames.Frame) -> None:
        if frame.opcode == frames.Opcode.TEXT:
            data = frame.payload
            if data.startswith(b'{"type": "message"') and self.on_stamp and (m := STAMP.search(data)):
                self.on_stamp(int(m[2]))
            elif self.inbox is not None or data.startswith((b'{"type": "welcome"', b'{"type": "join"', b'{"type": "error"')):
                self.on_event(json.loads(data))
        elif frame.opcode == frames.Opcode.PING:
            self.write(frames.Frame(True, frames.Opcode.PONG, frame.payload))
        elif frame.opcode == frames.Opcode.CLOSE:
            self.close_code = frames.decode_close(frame.payload)[0] if frame.payload else 1005
            self.write(frames.Frame(True, frames.Opcode.CLOSE, frame.payload[:2]))
            self.transport.close()

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "welcome":
            self.you = event["you"]
        elif kind == "join" and event.get("from") == self.you and not self.joined.done():
            self.joined.set_result(None)
        elif kind == "error":
            self.errors[event.get("code", "?")] += 1
        if self.inbox is not None:
            self.inbox.put_nowait(event)

    def write(self, frame: frames.Frame) -> None:
        if self.transport and not self.transport.is_closing():
            self.transport.write(frames.encode_frame(frame, os.urandom(4)))

    def send(self, event: dict[str, Any]) -> None:
        self.write(frames.Frame(True, frames.Opcode.TEXT, json.dumps(event).encode()))

    def join(self, name: str | None = None) -> None:
        self.send({"type": "join", "username": name or self.name})

    def bye(self) -> None:
        self.write(frames.Frame(True, frames.Opcode.CLOSE, frames.encode_close(1000)))
        if self.transport:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.opened, self.joined):
            if not future.done():
                future.set_exception(exc if isinstance(exc, ConnectionResetError) else ConnectionError("closed"))
                future.exception()          # retrieved: no "never retrieved" warning
        if not self.closed.done():
            self.closed.set_result(None)


async def open_client(port: int, address: str, client: Client, rcvbuf: int = 0, timeout: float = 10) -> Client:
    """Connect ``client`` from ``address`` (a 127.x.y.z of its own) to the server; raises Refused, OSError."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, BIND_NO_PORT, 1)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)     # before connect: sets the window
        sock.bind((address, 0))
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), timeout)
        client.host = f"127.0.0.1:{port}"
        await loop.create_connection(lambda: client, sock=sock)
    except BaseException:
        sock.close()
        raise
    try:
        await asyncio.wait_for(client.opened, timeout)
    except BaseException:
        client.transport.abort()
        raise
    return client


# -- the attacks: each from one address, each returns what the server answered ---------------


async def connect_loops(port: int, address: str, seconds: float, loops: int = 4) -> dict[str, Any]:
    """``loops`` loops of connect, join, close, as fast as they go."""
    counts: Counter[str] = Counter()
    end = time.monotonic() + seconds

    async def loop(k: int) -> None:
        while time.monotonic() < end:
            client = Client(f"ghost{k}x{sum(counts.values())}")
            try:
                await open_client(port, address, client, timeout=5)
            except Refused as refused:
                counts[f"refused {refused.status}"] += 1
                continue
            except ConnectionResetError:
                counts["reset"] += 1                        # refused as it was accepted: try again at once
                continue
            except (TimeoutError, OSError, handshake.HandshakeError):
                counts["errors"] += 1
                await asyncio.sleep(0.01)
                continue
            counts["accepted"] += 1
            client.join()
            client.bye()

    await asyncio.gather(*(loop(k) for k in range(loops)))
    refused = sum(v for k, v in counts.items() if k.startswith("refused"))
    return {"counts": dict(counts), "stopped": refused + counts["reset"] > 0,
            "answer": f"{refused + counts['reset']} of {sum(counts.values())} connections refused ({refused} with a 503, "
                      f"{counts['reset']} reset as accepted), {counts['accepted']} accepted, {counts['errors']} errors"}


async def big_messages(port: int, address: str, seconds: float, sockets: int = 5, size: int = 4000) -> dict[str, Any]:
    """``sockets`` connections, each sending ``size``-byte messages at the rate limit (the address's budget is shared)."""
    clients = [await open_client(port, address, Client(f"loud{i + 1}")) for i in range(sockets)]
    for c in clients:
        c.join()
    sent, text, start = 0, "z" * size, time.monotonic()

    async def one(c: Client) -> None:
        nonlocal sent
        n = 0
        while time.monotonic() < start + seconds and not c.closed.done():
            c.send({"username": c.name, "email": "", "message": text})
            n, sent = n + 1, sent + 1
            await asyncio.sleep(max(0.0, start + n / DEFAULTS.rate_limit - time.monotonic()))

    await asyncio.gather(*(one(c) for c in clients))
    await asyncio.sleep(0.3)                                   # the last answers
    refused = sum(c.errors["rate_limited"] for c in clients)
    closed = sum(c.closed.done() for c in clients)
    for c in clients:
        c.bye()
    return {"counts": {"sent": sent, "rate_limited": refused, "closed": closed}, "stopped": refused > 0 or closed > 0,
            "answer": f"{refused} of {sent} messages refused (rate_limited), {closed} of {sockets} sockets closed"}


def burst_of(events: list[dict[str, Any]]) -> bytes:
    return b"".join(frames.encode_frame(frames.Frame(True, frames.Opcode.TEXT, json.dumps(e).encode()), os.urandom(4))
                    for e in events)


async def flood(client: Client, chunk: bytes, end: float) -> int:
    """Write ``chunk`` again and again until ``end`` or until the server closes: as fast as TCP lets us."""
    written = 0
    sock = client.transport.get_extra_info("socket")
    while time.monotonic() < end and not client.closed.done():
        if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != 1:    # no longer ESTABLISHED
            break
        if client.transport.get_write_buffer_size() < 65536:
            client.transport.write(chunk)
            written += 1
        await asyncio.sleep(0.001)
    return written


async def rename_flood(port: int, address: str, seconds: float) -> dict[str, Any]:
    client = await open_client(port, address, Client("renamer"))
    client.join()
    await asyncio.wait_for(asyncio.shield(client.joined), 5)
    sent = 100 * await flood(client, burst_of([{"type": "rename", "username": f"r{i}"} for i in range(100)]),
                             time.monotonic() + seconds)
    await asyncio.sleep(0.3)
    errors, closed = dict(client.errors), client.closed.done()
    client.bye()
    refused = sum(errors.values())
    return {"counts": {"sent": sent, **errors, "closed": closed}, "stopped": refused > 0 or closed,
            "answer": f"{sent} renames sent, {refused} answered with an error ({', '.join(sorted(errors))}), "
                      f"{'closed' if closed else 'never closed'}"}


async def ping_flood(port: int, address: str, seconds: float) -> dict[str, Any]:
    """A socket that never reads sends pings as fast as it can; closed, it comes back."""
    end, counts, closed_after = time.monotonic() + seconds, Counter(), []
    ping = frames.encode_frame(frames.Frame(True, frames.Opcode.PING, b"p" * 125), os.urandom(4)) * 100
    while time.monotonic() < end:
        client = Client("pinger")
        try:
            await open_client(port, address, client, rcvbuf=4096)
        except (TimeoutError, Refused, OSError) as exc:
            counts[f"refused {exc.status}" if isinstance(exc, Refused) else "errors"] += 1
            await asyncio.sleep(0.2)
            continue
        client.transport.pause_reading()                       # never reads again
        t0 = time.monotonic()
        counts["pings"] += 100 * await flood(client, ping, end)
        if time.monotonic() < end:
            closed_after.append(round(time.monotonic() - t0, 2))
        client.transport.abort()
    return {"counts": dict(counts), "closed_after_s": closed_after, "stopped": bool(closed_after),
            "answer": f"{counts['pings']} pings; closed {len(closed_after)} times"
                      + (f", after {min(closed_after)}-{max(closed_after)} s each" if closed_after else "")
                      + (f"; {sum(v for k, v in counts.items() if k.startswith('refused'))} reconnects refused"
                         if any(k.startswith("refused") for k in counts) else "")}


def fullwidth(text: str) -> str:
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text)


async def answer(client: Client) -> str:
    """What the server said to the last frame: an error code, or the name it accepted."""
    while True:
        try:
            event = await asyncio.wait_for(client.inbox.get(), 2)
        except TimeoutError:
            return "no answer"
        if event["type"] == "error":
            return event["code"]
        if event["type"] in ("join", "rename", "message") and event.get("from") == client.you:
            return f"{event['type']} as {event['username']!r}"


async def impersonation(port: int, address: str, seconds: float, students: int) -> dict[str, Any]:
    """Try to be student07 (look-alike letters, spaces, invisible characters), then the teacher."""
    target = student_name(min(6, students - 1))
    tries = [("same name", target), ("upper case", target.upper()), ("Cyrillic е", target.replace("e", "\u0435")),
             ("full-width", fullwidth(target)), ("O for 0", target.replace("0", "O")),
             ("inner space", f"{target[:3]} {target[3:]}"), ("zero-width space", f"{target[:4]}\u200b{target[4:]}"),
             ("RTL override", "\u202e" + target[::-1]), ("teacher", "teacher"), ("Cyrillic teacher", "t\u0435acher")]
    client = await open_client(port, address, Client("impostor", inbox=True))
    answers = {}
    for label, name in tries:
        client.join(name)
        answers[label] = await answer(client)
    client.send({"username": target, "email": "", "message": "it's me"})        # the Go original's way: no join
    answers["message naming it, no join"] = await answer(client)
    client.join("visitor")
    answers["join as visitor"] = await answer(client)
    client.send({"type": "rename", "username": target.title()})
    answers["rename to it"] = await answer(client)
    client.send({"username": target, "email": "", "message": "it's me"})
    answers["message naming it"] = await answer(client)
    client.bye()
    keys = {skeleton(student_name(i)) for i in range(students)} | {"teacher"}
    fooled = [k for k, v in answers.items() if " as " in v and skeleton(v.split(" as ", 1)[1].strip("'")) in keys]
    return {"counts": answers, "stopped": not fooled,
            "answer": f"{len(answers) - len(fooled)} of {len(answers)} tries refused or renamed "
                      f"({', '.join(sorted(set(answers.values())))})" + (f"; ACCEPTED: {fooled}" if fooled else "")}
