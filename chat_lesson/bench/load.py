"""The benchmark's load: lean clients on raw asyncio transports, spread over worker processes."""

from __future__ import annotations

import array
import asyncio
import json
import os
import re
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..protocol import deflate, frames, handshake
from ..protocol.reader import Reader
from ..rawclient import RawClient
from ..chat.server import raise_fd_limit
from ..chat.wire import SUBPROTOCOL

STAMP = re.compile(rb'"message": ?"(\d+) (\d+) ')
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"


class LeanClient(asyncio.Protocol):
    """One WebSocket client on a raw transport: our handshake, our frame decoder.

    It keeps only what the benchmark needs: the send timestamps carried in
    message payloads (``"<seq> <monotonic_ns> xxx..."``) become latencies.
    """

    def __init__(self, host: str, key: str, compression: bool, on_stamp: Any) -> None:
        self.host, self.key, self.compression, self.on_stamp = host, key, compression, on_stamp
        self.reader = Reader(masked=False)      # the handshake's answer, then frames (compressed runs)
        self.buffer = bytearray()               # uncompressed runs: raw bytes, scanned for stamps
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.inflater: deflate.Inflater | None = None
        self.deflater: deflate.Deflater | None = None
        self.transport: asyncio.Transport | None = None
        self.messages = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        ext = [DEFLATE_OFFER] if self.compression else []
        transport.write(handshake.build_request(self.host, "/ws", key=self.key, protocols=[SUBPROTOCOL], extensions=ext))  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if not self.opened.done():
            self.reader.receive_data(data)
            head = self.reader.next_head_bytes()
            if head is None:
                return
            response = handshake.check_response(self.key, head, protocols=[SUBPROTOCOL], extensions=[DEFLATE_OFFER])
            pair = deflate.contexts(response.headers.get("Sec-WebSocket-Extensions"), "client")
            if pair:
                self.deflater, self.inflater = pair
            self.opened.set_result(None)
            if self.inflater is not None:
                self.read_frames()
                return
            data = self.reader.take()                  # uncompressed: scan the bytes, no frames
        if self.inflater is None:
            self.buffer += data
            self.scan_stamps()
            return
        self.reader.receive_data(data)
        self.read_frames()

    def read_frames(self) -> None:
        """Handle every whole frame the reader holds (compressed runs: each payload must be inflated)."""
        while (frame := self.reader.next_frame()) is not None:
            self.on_frame(frame)

    def scan_stamps(self) -> None:
        """Find the send stamps in uncompressed frames without parsing them one by one.

        Decoding every frame in Python would make this client, not the server,
        the bottleneck; the stamps are plain text in the byte stream, so a
        regular expression over what arrived finds them.  A stamp may be cut
        between two reads, so the tail of the buffer is kept for the next scan.
        The bench servers run without pings, so no frame here needs an answer.
        """
        end = 0
        for match in STAMP.finditer(self.buffer):
            self.messages += 1
            self.on_stamp(int(match[1]), int(match[2]))
            end = match.end()
        del self.buffer[: max(end, len(self.buffer) - 64)]

    def on_frame(self, frame: frames.Frame) -> None:
        if frame.opcode == frames.Opcode.TEXT:
            payload = self.inflater.decompress(frame.payload) if frame.rsv1 and self.inflater else frame.payload
            self.messages += 1
            match = STAMP.search(payload)
            if match:
                self.on_stamp(int(match[1]), int(match[2]))
        elif frame.opcode == frames.Opcode.PING:
            self.write(frames.Frame(True, frames.Opcode.PONG, frame.payload))
        elif frame.opcode == frames.Opcode.CLOSE and self.transport:
            self.transport.close()

    def write(self, frame: frames.Frame) -> None:
        if self.transport and not self.transport.is_closing():
            self.transport.write(frames.encode_frame(frame, os.urandom(4)))

    def send_text(self, text: str) -> None:
        data = text.encode()
        if self.deflater is not None:
            self.write(frames.Frame(True, frames.Opcode.TEXT, self.deflater.compress(data), rsv1=True))
        else:
            self.write(frames.Frame(True, frames.Opcode.TEXT, data))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)


async def open_lean(port: int, compression: bool, on_stamp: Any) -> LeanClient:
    loop = asyncio.get_running_loop()
    client = LeanClient(f"127.0.0.1:{port}", handshake.make_key(), compression, on_stamp)
    await loop.create_connection(lambda: client, "127.0.0.1", port)
    await asyncio.wait_for(client.opened, 30)
    return client


async def open_stuck(port: int) -> RawClient:
    """A client that completes the handshake, then never reads again (a frozen laptop).

    Its receive buffer is tiny, so the server's bytes back up quickly.  It is
    a blocking :class:`~chat_lesson.rawclient.RawClient`, connected on a
    thread; the event loop never watches its socket.
    """
    return await asyncio.to_thread(RawClient, port, protocols=[SUBPROTOCOL], rcvbuf=4096)


def tcp_established(sock: socket.socket) -> bool:
    """The kernel's view of the connection (TCP_INFO's first byte: 1 is ESTABLISHED)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 1


def payload(seq: int, size: int) -> str:
    """A message of ``size`` bytes carrying its sequence number and send time."""
    head = f"{seq} {time.monotonic_ns()} "
    return head + "x" * max(0, size - len(head))


# -- a worker process: some listeners, maybe the senders ----------------------------


@dataclass
class Job:
    port: int
    listeners: int          # clients in this worker; the first `senders` of them also send
    senders: int
    messages: int           # per sender
    expected: int           # messages each listener should get (all senders, all workers)
    size: int
    compression: bool
    rate: float = 0         # messages/s per sender; 0 = as fast as the window allows
    window: int = 8         # messages in flight per sender when rate is 0
    timeout: float = 60
    stuck: int = 0          # clients that never read (tiny SO_RCVBUF)
    client_loop: str = "asyncio"   # the workers' event loop: "asyncio" or "uvloop" (client_loop())


@dataclass
class WorkerResult:
    latencies: bytes = b""      # array('q') of ns
    received: int = 0
    cpu: float = 0.0
    first: int = 0              # monotonic ns of the first and last delivery
    last: int = 0
    stuck_closed_after: list[float] = field(default_factory=list)
    error: str = ""


async def run_job(job: Job, barrier: Any) -> WorkerResult:
    """Connect, wait for the start signal, send and count; report what arrived."""
    result = WorkerResult()
    latencies = array.array("q")
    counts = [0] * job.listeners
    echoed = [asyncio.Event() for _ in range(job.senders)]

    def recorder(index: int):
        def on_stamp(seq: int, sent_ns: int) -> None:
            now = time.monotonic_ns()
            latencies.append(now - sent_ns)
            counts[index] += 1
            result.first = result.first or now
            result.last = now
            if index < job.senders:
                echoed[index].set()
        return on_stamp

    clients = [await open_lean(job.port, job.compression, recorder(i)) for i in range(job.listeners)]
    stuck = [await open_stuck(job.port) for _ in range(job.stuck)]
    for i in range(job.senders):
        clients[i].send_text(json.dumps({"type": "join", "username": f"sender{os.getpid()}-{i}"}))
    await asyncio.to_thread(barrier.wait)          # everyone connected
    await asyncio.to_thread(barrier.wait)          # the parent has read the server's CPU: go
    cpu0, t0 = time.process_time(), time.monotonic()

    async def watch(client: RawClient) -> None:
        while tcp_established(client.sock):
            await asyncio.sleep(0.05)
        result.stuck_closed_after.append(time.monotonic() - t0)

    watchers = [asyncio.create_task(watch(s)) for s in stuck]

    async def sender(index: int) -> None:
        start = time.monotonic()
        for seq in range(job.messages):
            if job.rate:
                delay = start + seq / job.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                while seq - counts[index] >= job.window:
                    echoed[index].clear()
                    await echoed[index].wait()
            clients[index].send_text(json.dumps({"username": f"s{index}", "email": "", "message": payload(seq, job.size)}))

    tasks = [asyncio.create_task(sender(i)) for i in range(job.senders)]
    deadline = time.monotonic() + job.timeout
    while min(counts, default=job.expected) < job.expected and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    for t in tasks + watchers:
        t.cancel()
    result.cpu = time.process_time() - cpu0
    result.received = sum(counts)
    result.latencies = latencies.tobytes()
    for c in clients:
        c.transport.abort()
    for client in stuck:
        client.close()
    return result


def client_loop(wanted: str = "auto") -> str:
    """The event loop the load's workers run: uvloop when installed ("auto"), else asyncio's own.

    On a 2-core machine the clients use several times the server's CPU and
    compete with it; on uvloop they need about half as much (bench paced),
    so what the latencies measure is more the server's.
    """
    if wanted == "auto":
        import importlib.util

        return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return wanted


def worker_main(job: Job, barrier: Any, out: Any) -> None:
    raise_fd_limit(65536)
    loop_factory = None
    if job.client_loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            out.put(asdict(runner.run(run_job(job, barrier))))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, not hidden
        barrier.abort()
        out.put(asdict(WorkerResult(error=repr(exc))))


# -- the parent: start the server, spread clients, read the figures ------------------


def percentile(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


