"""Benchmarks: does the chat hold a classroom, and with how much CPU to spare?

    python -m chat_lesson.bench fanout --clients 100 --messages 200
    python -m chat_lesson.bench fanout --server baseline --clients 500
    python -m chat_lesson.bench paced --clients 500 --rate 200
    python -m chat_lesson.bench idle --clients 10000
    python -m chat_lesson.bench slow --clients 100 --rate 200
    python -m chat_lesson.bench churn --connections 1000
    python -m chat_lesson.bench classroom
    python -m chat_lesson.bench scaleout --clients 500 --rate 200

The server runs in its own process (``--server ours`` is ChatServer,
``--server baseline`` is the plain websockets relay below, ``--url`` any
server that speaks the wire protocol), so its CPU time can be read from
/proc/PID/stat.  The clients are spread over worker processes and are
deliberately lean: a hand-made handshake and ``frames.decode_frame`` on raw
asyncio transports, so that they, not the server, are cheap.  Each figure is
printed with the exact command that produced it; ``--json`` prints the same
as JSON.  Absolute times drift from run to run; compare ratios from one run.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import multiprocessing as mp
import os
import re
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from ..chat.server import raise_fd_limit
from ..protocol import frames, handshake
from . import classroom, scaleout
from .load import Job, client_loop, open_lean, percentile, worker_main

# /proc/PID/stat counts CPU time in clock ticks (Linux only; bench says so elsewhere)
CLOCK_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# -- the server under test ---------------------------------------------------------


async def baseline_relay(port: int, compression: str | None) -> None:
    """The simplest faithful port of the Go original to websockets.

    A set of connections; every message read as JSON, written back as JSON
    (ReadJSON / WriteJSON) to every client with ``websockets.broadcast``.
    """
    from websockets.asyncio.server import broadcast, serve
    from websockets.exceptions import ConnectionClosed

    clients = set()

    async def relay(ws):
        clients.add(ws)
        try:
            async for raw in ws:
                msg = json.loads(raw)
                out = {"email": msg.get("email", ""), "username": msg.get("username", ""), "message": msg.get("message", "")}
                broadcast(clients, json.dumps(out))
        except ConnectionClosed:
            pass
        finally:
            clients.discard(ws)

    async with serve(relay, "127.0.0.1", port, compression=compression, max_size=2**16, ping_interval=None) as server:
        print(f"listening on port {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.get_running_loop().create_future()


class ServerProcess:
    """A server in a child process, with its CPU time, memory and open files read from /proc."""

    def __init__(self, kind: str, compression: bool, extra: list[str]) -> None:
        if kind == "ours":
            # No history: a newcomer's history event would carry old send stamps.  No cap on the room
            # (1000 by default, a classroom's): bench idle opens 10,000 (the open-file limit still applies).
            cmd = [sys.executable, "-m", "chat_lesson", "serve", "--port", "0", "--rate-limit", "0", "--history", "0",
                   "--max-connections", "1000000", *extra]
            if not compression:
                cmd.append("--no-compression")
        else:
            cmd = [sys.executable, "-m", "chat_lesson.bench", "_baseline", "--port", "0"]
            if not compression:
                cmd.append("--no-compression")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        match = re.search(r":(\d+)/?\s*$", line) or re.search(r"port (\d+)", line)
        if not match:
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r}")
        self.port = int(match[1])
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.pid = self.proc.pid

    def cpu(self) -> float:
        """User + system CPU seconds used so far (fields 14 and 15 of /proc/PID/stat)."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICK

    def rss(self) -> int:
        """Resident memory in bytes (VmRSS)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# -- lean clients ------------------------------------------------------------------


def gather(procs: list[Any], results: list[dict[str, Any]], t0: int) -> tuple[list[int], int, float]:
    """Join the worker processes and pool their results: (latencies in ns, deliveries, seconds since ``t0``)."""
    for p in procs:
        p.join(10)
    errors = [r["error"] for r in results if r["error"]]
    if errors:
        raise RuntimeError("; ".join(errors))
    lat = [x for r in results for x in array.array("q", r["latencies"])]
    received = sum(r["received"] for r in results)
    last = max(r["last"] for r in results) or time.monotonic_ns()
    return lat, received, (last - t0) / 1e9


def run_load(args: argparse.Namespace, server: ServerProcess, stuck: int = 0) -> dict[str, Any]:
    """N clients over W worker processes; S senders in worker 0; returns the figures."""
    workers = max(1, min(args.workers, args.clients))
    per = [args.clients // workers + (1 if i < args.clients % workers else 0) for i in range(workers)]
    expected = args.senders * args.messages
    barrier = mp.Barrier(workers + 1)
    out: Any = mp.Queue()
    procs = []
    loop = client_loop(args.client_loop)
    for i, n in enumerate(per):
        job = Job(server.port, n, args.senders if i == 0 else 0, args.messages, expected, args.size,
                  args.compression, rate=getattr(args, "rate", 0) / max(1, args.senders),
                  timeout=args.timeout, stuck=stuck if i == 0 else 0, client_loop=loop)
        procs.append(mp.Process(target=worker_main, args=(job, barrier, out), daemon=True))
        procs[-1].start()
    barrier.wait(timeout=120)
    rss0 = server.rss()
    cpu0 = server.cpu()
    t0 = time.monotonic_ns()
    barrier.wait(timeout=30)
    results = [out.get(timeout=args.timeout + 60) for _ in procs]
    cpu1, rss1 = server.cpu(), server.rss()
    lat, received, seconds = gather(procs, results, t0)
    return {
        "clients": args.clients, "senders": args.senders, "messages": expected, "size": args.size,
        "compression": args.compression, "client_loop": loop,
        "deliveries": received, "lost": expected * args.clients - received,
        "seconds": round(seconds, 3), "deliveries_per_s": round(received / seconds) if seconds > 0 else 0,
        "p50_ms": round(percentile(lat, 0.50) / 1e6, 3), "p99_ms": round(percentile(lat, 0.99) / 1e6, 3),
        "max_ms": round(max(lat, default=0) / 1e6, 3),
        "server_cpu_s": round(cpu1 - cpu0, 3),
        "server_us_per_delivery": round((cpu1 - cpu0) / received * 1e6, 3) if received else None,
        "bench_cpu_s": round(sum(r["cpu"] for r in results), 3),
        "server_rss_mib": round(rss1 / 2**20, 1), "server_rss_growth_mib": round((rss1 - rss0) / 2**20, 2),
        "stuck_closed_after_s": [round(x, 2) for r in results for x in r["stuck_closed_after"]],
    }


class ExternalServer(ServerProcess):
    """A server someone else started (``--url``); its figures need ``--pid``."""

    def __init__(self, url: str, pid: int | None) -> None:
        match = re.match(r"wss?://[^/:]+:(\d+)", url)
        if not match:
            raise SystemExit(f"--url must look like ws://127.0.0.1:PORT/ws, not {url!r}")
        self.port, self.url, self.pid, self.proc = int(match[1]), url, pid, None

    def cpu(self) -> float:
        return super().cpu() if self.pid else float("nan")

    def rss(self) -> int:
        return super().rss() if self.pid else 0

    def fds(self) -> int:
        return super().fds() if self.pid else -1

    def alive(self) -> bool:
        return True

    def stop(self) -> None:
        pass


# -- the subcommands ----------------------------------------------------------------


def bench_fanout(args: argparse.Namespace, server: ServerProcess) -> dict[str, Any]:
    return run_load(args, server)


def bench_paced(args: argparse.Namespace, server: ServerProcess) -> dict[str, Any]:
    args.messages = max(1, int(args.rate * args.seconds / args.senders))
    return {"rate": args.rate, **run_load(args, server)}


def bench_idle(args: argparse.Namespace, server: ServerProcess) -> dict[str, Any]:
    args.senders, args.messages = 0, 0
    before, fds_before = server.rss(), server.fds()
    figures = run_load(args, server)
    connected = figures["server_rss_mib"] * 2**20 - figures["server_rss_growth_mib"] * 2**20
    return {"clients": args.clients, "server_rss_before_mib": round(before / 2**20, 1),
            "server_rss_connected_mib": round(connected / 2**20, 1),
            "kib_per_connection": round((connected - before) / args.clients / 1024, 2),
            "server_fds_before": fds_before}


def bench_slow(args: argparse.Namespace, server: ServerProcess) -> dict[str, Any]:
    args.messages = max(1, int(args.rate * args.seconds / args.senders))
    run_load(argparse.Namespace(**{**vars(args), "messages": args.messages // 10}), server)   # warm-up
    healthy = run_load(args, server)
    stuck = run_load(args, server, stuck=1)
    ratio = stuck["p99_ms"] / healthy["p99_ms"] if healthy["p99_ms"] else float("nan")
    return {"clients": args.clients, "rate": args.rate,
            "healthy_deliveries_per_s": healthy["deliveries_per_s"], "stuck_deliveries_per_s": stuck["deliveries_per_s"],
            "healthy_p99_ms": healthy["p99_ms"], "stuck_p99_ms": stuck["p99_ms"], "p99_ratio": round(ratio, 2),
            "lost_with_stuck": stuck["lost"], "rss_growth_with_stuck_mib": stuck["server_rss_growth_mib"],
            "stuck_closed_after_s": stuck["stuck_closed_after_s"]}


async def churn(port: int, total: int, in_flight: int, reset_every: int) -> dict[str, int]:
    """Connect and disconnect ``total`` times, ``in_flight`` at once; some reset before the 101."""
    counts = {"served": 0, "reset": 0, "failed": 0}
    gate = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with gate:
            if reset_every and i % reset_every == 0:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(handshake.build_request(f"127.0.0.1:{port}", "/ws")[:40])
                await writer.drain()
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                writer.transport.abort()
                counts["reset"] += 1
                return
            try:
                client = await open_lean(port, False, lambda *a: None)
                client.write(frames.Frame(True, frames.Opcode.CLOSE, frames.encode_close(1000)))
                await asyncio.wait_for(client.closed, 10)
                counts["served"] += 1
            except (TimeoutError, OSError, handshake.HandshakeError):
                counts["failed"] += 1

    await asyncio.gather(*(one(i) for i in range(total)))
    return counts


def bench_churn(args: argparse.Namespace, server: ServerProcess) -> dict[str, Any]:
    fds_before = server.fds()
    started = time.monotonic()
    counts = asyncio.run(churn(server.port, args.connections, args.in_flight, args.reset_every))
    seconds = time.monotonic() - started
    deadline = time.monotonic() + 10
    while server.fds() > fds_before and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"connections": args.connections, "in_flight": args.in_flight, **counts,
            "seconds": round(seconds, 2), "server_alive": server.alive(),
            "server_fds_before": fds_before, "server_fds_after": server.fds()}


BENCHES = {"fanout": bench_fanout, "paced": bench_paced, "idle": bench_idle, "slow": bench_slow, "churn": bench_churn,
           "classroom": classroom.bench_classroom, "scaleout": scaleout.bench_scaleout}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m chat_lesson.bench", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="bench", required=True)

    def common(q: argparse.ArgumentParser, clients: int) -> None:
        q.add_argument("--server", choices=["ours", "baseline"], default="ours")
        q.add_argument("--url", help="measure a server that is already running (ws://127.0.0.1:PORT/ws)")
        q.add_argument("--pid", type=int, help="with --url: its process id, to read CPU and memory")
        q.add_argument("--compression", action="store_true", help="offer permessage-deflate, as browsers do")
        q.add_argument("--clients", type=int, default=clients)
        q.add_argument("--workers", type=int, default=2, help="client processes (default 2)")
        q.add_argument("--client-loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                       help="the client processes' event loop (auto: uvloop when installed)")
        q.add_argument("--size", type=int, default=200, help="bytes of chat text per message")
        q.add_argument("--senders", type=int, default=1)
        q.add_argument("--timeout", type=float, default=60)
        q.add_argument("--json", action="store_true")

    fanout = sub.add_parser("fanout", help="N listeners, S senders, M messages as fast as they go")
    common(fanout, 100)
    fanout.add_argument("--messages", type=int, default=200, help="per sender")
    for name, clients, rate in (("paced", 500, 200), ("slow", 100, 200)):
        q = sub.add_parser(name, help="messages at a fixed rate" if name == "paced" else "one client never reads")
        common(q, clients)
        q.add_argument("--rate", type=float, default=rate, help="messages per second, all senders together")
        q.add_argument("--seconds", type=float, default=5)
        if name == "slow":
            q.add_argument("--max-buffer", type=int, help="ours: bytes a client may leave unread before it is closed")
    idle = sub.add_parser("idle", help="N open connections: memory per connection")
    common(idle, 1000)
    churn_p = sub.add_parser("churn", help="connect and disconnect, some reset before the 101")
    common(churn_p, 0)
    churn_p.add_argument("--connections", type=int, default=1000)
    churn_p.add_argument("--in-flight", type=int, default=64)
    churn_p.add_argument("--reset-every", type=int, default=10, help="every Nth connection resets mid-handshake")
    classroom.add_parser(sub)
    scaleout.add_parser(sub)
    rep = sub.add_parser("report", help="run the standard set and write docs/benchmarks.md (a few minutes)")
    rep.add_argument("--out", default="docs")
    base = sub.add_parser("_baseline", help=argparse.SUPPRESS)
    base.add_argument("--port", type=int, default=0)
    base.add_argument("--no-compression", action="store_true")
    return p


def command_line(argv: list[str]) -> str:
    return "python -m chat_lesson.bench " + " ".join(argv)


def print_table(title: str, figures: dict[str, Any]) -> None:
    print(title)
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"  {key:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if not os.path.isdir("/proc/self"):
        print("chat_lesson.bench reads the server's CPU time and memory from /proc, which only Linux has: "
              "run the benchmarks on Linux (the chat and the lessons work everywhere).", file=sys.stderr)
        return 2
    if args.bench == "_baseline":
        try:
            asyncio.run(baseline_relay(args.port, None if args.no_compression else "deflate"))
        except KeyboardInterrupt:
            pass
        return 0
    if args.bench == "report":
        from .report import report
        report(args.out)
        return 0
    raise_fd_limit(65536)
    extra = ["--max-buffer", str(args.max_buffer)] if getattr(args, "max_buffer", None) else []
    if args.bench == "classroom":
        extra = classroom.SERVER_ARGS          # the real limits, pings included: the students answer them
    elif args.bench != "idle":
        extra += ["--ping-interval", "0"]    # the load clients skip frames they need not parse, pings included
    if args.bench == "scaleout":                 # starts its own servers (and Redis, and nginx)
        figures = {"bench": "scaleout", **scaleout.bench_scaleout(args), "command": command_line(argv)}
        print(json.dumps(figures) if args.json else f"{figures['command']}\n{scaleout.render(figures)}")
        return 0
    server = ExternalServer(args.url, args.pid) if args.url else ServerProcess(args.server, args.compression, extra)
    try:
        figures = {"bench": args.bench, "server": "url" if args.url else args.server, **BENCHES[args.bench](args, server)}
    finally:
        server.stop()
    figures["command"] = command_line(argv)
    if args.json:
        print(json.dumps(figures))
    elif args.bench == "classroom":
        print(classroom.render(figures))
    else:
        print_table(figures.pop("command"), figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
