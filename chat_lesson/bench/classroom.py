"""``bench classroom``: 30 students on slow Wi-Fi, one hostile address at a time, then a restart.

    python -m chat_lesson.bench classroom
    python -m chat_lesson.bench classroom --seconds 1 --students 5 --storm 20 --json

Every student connects from an address of its own (127.0.1.i: the server
counts each 127.x.y.z but 127.0.0.1 as another machine), reads at 2 Mbit/s
(a 16 KiB SO_RCVBUF and reads paced by a token bucket, so that a flood backs
up as it would on a classroom's Wi-Fi), and sends a stamped message now and
then (0.5/s each), so that every delivery is a latency.  The students live in
a process of their own; this process runs the attacks, each from ONE address
(127.0.2.k for attack k), then restarts the server on the same port while 300
more clients (127.0.3.j, 10 per address) and the students reconnect with the
page's own backoff (static/app.js ``scheduleReconnect``).  Per phase: students
dropped, their p50/p99 against the quiet phase, the server's RSS growth and
CPU, and what the server answered the attacker.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import multiprocessing as mp
import random
import time
from typing import Any

from ..chat.wire import DEFAULTS
from ..protocol import handshake
from .attacks import (Client, Refused, big_messages, connect_loops, impersonation, open_client, ping_flood,
                      rename_flood, student_name)
from .load import percentile

STUDENT_NET, ATTACK_NET, STORM_NET = "127.0.1.{}", "127.0.2.{}", "127.0.3.{}"
# The page's backoff (static/app.js scheduleReconnect): 0.5 s doubling up to 10 s, each delay
# ×0.8-1.2 (not "full jitter"); a connection open 5 s counts as healthy and starts the count again.
BACKOFF_FIRST, BACKOFF_MAX, STABLE_AFTER = 0.5, 10.0, 5.0
# The real defaults (the other benches turn the rate limit and history off for their figures).
SERVER_ARGS = ["--rate-limit", f"{DEFAULTS.rate_limit:g}", "--history", str(DEFAULTS.history)]
TARGET_P99, TARGET_RSS_MIB = 2.0, 50.0


def backoff(attempt: int) -> float:
    return min(BACKOFF_MAX, min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** attempt) * random.uniform(0.8, 1.2))


class Person:
    """One page: connect, join, chat now and then, reconnect with the page's backoff; logs what happened."""

    def __init__(self, index: int, address: str, name: str, port: int, log: list, *, read_rate: float = 0,
                 rcvbuf: int = 0, on_stamp: Any = None) -> None:
        self.index, self.address, self.name, self.port, self.log = index, address, name, port, log
        self.read_rate, self.rcvbuf, self.on_stamp = read_rate, rcvbuf, on_stamp
        self.client: Client | None = None
        self.online_since = 0                       # monotonic ns of the join on the present connection

    def note(self, kind: str, detail: Any = None) -> None:
        self.log.append((time.monotonic_ns(), self.index, kind, detail))

    async def life(self) -> None:
        attempt = 0
        while True:
            client = Client(self.name, self.read_rate, max(self.rcvbuf, 4096), self.on_stamp)
            try:
                await open_client(self.port, self.address, client, self.rcvbuf)
                client.join()
                await asyncio.wait_for(asyncio.shield(client.joined), 10)
            except Refused as refused:
                self.note("refused", refused.status)
            except (TimeoutError, OSError, handshake.HandshakeError) as exc:
                self.note("failed", client.errors.most_common(1)[0][0] if client.errors else type(exc).__name__)
                if client.transport:
                    client.transport.abort()
            else:
                self.client, self.online_since = client, time.monotonic_ns()
                self.note("online")
                await client.closed
                if time.monotonic_ns() - self.online_since >= STABLE_AFTER * 1e9:
                    attempt = 0                     # it was healthy: start the count again, as the page does
                self.client, self.online_since = None, 0
                self.note("lost", client.close_code)
            await asyncio.sleep(backoff(attempt))
            attempt += 1

    async def chat(self, rate: float) -> None:
        """A stamped message every 1/rate s, from a random start (the page sends only while online)."""
        await asyncio.sleep(random.uniform(0, 1 / rate))
        seq = 0
        while True:
            if self.client is not None:
                self.client.send({"username": self.name, "email": "",
                                  "message": f"{seq} {time.monotonic_ns()} hello from {self.name}"})
            seq += 1
            await asyncio.sleep(1 / rate)


# -- the students' process ---------------------------------------------------------------


async def run_students(cfg: dict[str, Any], conn: Any) -> dict[str, Any]:
    sent, lat, log = array.array("q"), array.array("q"), []

    def on_stamp(sent_ns: int) -> None:
        now = time.monotonic_ns()
        sent.append(sent_ns)
        lat.append(now - sent_ns)

    people = [Person(i, STUDENT_NET.format(i + 1), student_name(i), cfg["port"], log, read_rate=cfg["read_rate"],
                     rcvbuf=cfg["rcvbuf"], on_stamp=on_stamp) for i in range(cfg["students"])]
    tasks = [asyncio.create_task(p.life()) for p in people]
    deadline = time.monotonic() + 60
    while any(p.client is None for p in people) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    tasks += [asyncio.create_task(p.chat(cfg["msg_rate"])) for p in people]
    conn.send(("ready", sum(p.client is not None for p in people)))
    while True:
        await asyncio.sleep(0.05)
        if not conn.poll():
            continue
        command, value = conn.recv()
        if command == "stop":
            break
        conn.send(sum(p.online_since > value for p in people))     # "status": online since `value` ns
    for t in tasks:
        t.cancel()
    for p in people:
        if p.client:
            p.client.bye()
    return {"sent": sent.tobytes(), "lat": lat.tobytes(), "log": log}


def students_main(cfg: dict[str, Any], conn: Any) -> None:
    try:
        conn.send(("result", asyncio.run(run_students(cfg, conn))))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        conn.send(("error", repr(exc)))


# -- this process: the phases, the attacks, the restart --------------------------------------


def now_ns() -> int:
    return time.monotonic_ns()


async def scenario(args: argparse.Namespace, server: Any, conn: Any) -> tuple[list[dict[str, Any]], list, list]:
    """Quiet, each attack, then the restart; returns the phases (with their windows) and the RSS samples."""
    from . import ServerProcess

    rss: list[tuple[int, int]] = []

    async def sample() -> None:
        while True:
            try:
                rss.append((now_ns(), server.rss()))
            except OSError:                     # between two server processes
                pass
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    await asyncio.sleep(1)                                   # the first messages are flowing
    phases: list[dict[str, Any]] = []
    cool = max(0.5, args.seconds / 5)
    attacks = [("quiet", None), ("connect-join-close ×4", connect_loops), ("5 sockets, 4 KB at the rate limit", big_messages),
               ("rename flood", rename_flood), ("ping flood, never reads", ping_flood),
               ("impersonation", lambda *a: impersonation(*a, students=args.students))]
    for k, (name, attack) in enumerate(attacks):
        start, cpu0 = now_ns(), server.cpu()
        if attack is None:
            await asyncio.sleep(args.seconds)
            attacker = None
        else:
            attacker = await attack(server.port, ATTACK_NET.format(k), args.seconds)
            await asyncio.sleep(max(0.0, start / 1e9 + args.seconds - time.monotonic()) + cool)  # its aftermath is its cost
        end = now_ns()
        phases.append({"phase": name, "start": start, "end": end, "attacker": attacker,
                       "server_cpu_pct": round(100 * (server.cpu() - cpu0) / ((end - start) / 1e9))})

    # The restart: 300 more pages, the server stops and starts again on its port, everyone comes back.
    storm_log: list = []
    storm = [Person(i, STORM_NET.format(1 + i // DEFAULTS.max_per_address), f"visitor{i + 1:03d}", server.port,
                    storm_log) for i in range(args.storm)]
    tasks = [asyncio.create_task(p.life()) for p in storm]
    deadline = time.monotonic() + 60
    while any(p.client is None for p in storm) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    # The same room before the restart, its newcomers being announced as they are after it: 11 times the
    # class, so every message goes to 11 times the sockets.  What the restart costs is measured against
    # this; what a bigger room costs, against "quiet".
    await asyncio.sleep(DEFAULTS.announce_after)
    start, cpu0 = now_ns(), server.cpu()
    await asyncio.sleep(args.seconds)
    end = now_ns()
    phases.append({"phase": f"{args.students + args.storm} online, before the restart", "start": start, "end": end,
                   "attacker": None, "baseline": True,
                   "server_cpu_pct": round(100 * (server.cpu() - cpu0) / ((end - start) / 1e9))})
    start = now_ns()
    await asyncio.to_thread(server.stop)
    down = now_ns()
    fresh = await asyncio.to_thread(ServerProcess, "ours", False, [*SERVER_ARGS, "--port", str(server.port)])
    server.proc, server.pid = fresh.proc, fresh.pid
    up = now_ns()
    deadline = time.monotonic() + args.settle_timeout
    while time.monotonic() < deadline:
        conn.send(("status", down))                         # the old server is gone: any join since is a comeback
        students_back = conn.recv()
        if students_back == args.students and all(p.online_since > down for p in storm):
            break
        await asyncio.sleep(0.1)
    settled = now_ns()
    await asyncio.sleep(args.seconds)                        # the class carries on
    end = now_ns()
    phases.append({"phase": f"restart + {args.storm} reconnect", "start": start, "end": end, "down": down, "up": up,
                   "settled": settled, "attacker": None,
                   "server_cpu_pct": round(100 * server.cpu() / ((end - up) / 1e9))})
    for t in tasks + [sampler]:
        t.cancel()
    for p in storm:
        if p.client:
            p.client.bye()
    await asyncio.sleep(0.2)
    return phases, rss, storm_log


def bench_classroom(args: argparse.Namespace, server: Any) -> dict[str, Any]:
    if server.proc is None:
        raise SystemExit("bench classroom restarts the server itself: it cannot use --url")
    conn, child = mp.Pipe()
    cfg = {"port": server.port, "students": args.students, "read_rate": args.mbit * 1e6 / 8, "rcvbuf": args.rcvbuf,
           "msg_rate": args.msg_rate}
    proc = mp.Process(target=students_main, args=(cfg, child), daemon=True)
    proc.start()
    if not conn.poll(90):
        raise RuntimeError("the students did not connect")
    tag, ready = conn.recv()
    if tag != "ready" or ready != args.students:
        raise RuntimeError(f"students: {tag} {ready}")
    try:
        phases, rss, storm_log = asyncio.run(scenario(args, server, conn))
    finally:
        conn.send(("stop", 0))
        tag, result = conn.recv() if conn.poll(60) else ("error", "the students did not answer")
        proc.join(5)
    if tag != "result":
        raise RuntimeError(f"students: {result}")
    return summarize(args, phases, rss, result, storm_log)


# -- the figures --------------------------------------------------------------------


def summarize(args: argparse.Namespace, phases: list[dict[str, Any]], rss: list, result: dict[str, Any],
              storm_log: list) -> dict[str, Any]:
    sent, lat = array.array("q"), array.array("q")
    sent.frombytes(result["sent"])
    lat.frombytes(result["lat"])
    log = result["log"]
    base_rss = next((r for t, r in rss if t >= phases[0]["start"]), rss[0][1] if rss else 0)

    def window(a: int, b: int) -> list[int]:
        return [x for s, x in zip(sent, lat) if a <= s < b]

    rows, quiet_p99, crowd_p99 = [], None, None
    for ph in phases:
        a, b = ph.get("down", ph["start"]), ph["end"]
        samples = window(a, b)
        p50, p99 = round(percentile(samples, 0.5) / 1e6, 2), round(percentile(samples, 0.99) / 1e6, 2)
        quiet_p99 = quiet_p99 or p99
        crowd_p99 = p99 if ph.get("baseline") else crowd_p99
        if "up" in ph:                          # everyone is closed by the stop: dropped = not back, or lost again
            back = {}
            for t, i, kind, _ in log:
                if kind == "online" and t > ph["down"]:
                    back.setdefault(i, t)
            again = {i for t, i, kind, _ in log if kind == "lost" and i in back and t > back[i]}
            dropped = len(set(range(args.students)) - set(back)) + len(again)
        else:
            dropped = len({i for t, i, kind, _ in log if kind == "lost" and ph["start"] <= t < b})
        peak = max((r for t, r in rss if ph["start"] <= t < b), default=base_rss)
        attacker = ph["attacker"]
        rows.append({"phase": ph["phase"], "students_dropped": dropped, "p50_ms": p50, "p99_ms": p99,
                     "p99_vs_quiet": round(p99 / quiet_p99, 2) if quiet_p99 else None, "samples": len(samples),
                     "baseline": bool(ph.get("baseline")),
                     "p99_vs_same_room": round(p99 / crowd_p99, 2) if "up" in ph and crowd_p99 else None,
                     "server_cpu_pct": ph["server_cpu_pct"], "rss_growth_mib": round((peak - base_rss) / 2**20, 1),
                     "attacker": attacker["answer"] if attacker else "", "attacker_stopped": attacker and attacker["stopped"],
                     "attacker_counts": attacker["counts"] if attacker else {}})
    restart = phases[-1]
    everyone = [(t, ("s", i)) for t, i, kind, _ in log if kind == "online" and t > restart["down"]]
    everyone += [(t, ("v", i)) for t, i, kind, _ in storm_log if kind == "online" and t > restart["down"]]
    first: dict[Any, int] = {}
    for t, who in sorted(everyone):
        first.setdefault(who, t)
    complete = len(first) == args.students + args.storm
    after = [(kind, d) for t, _, kind, d in storm_log + log if restart["down"] < t]
    figures = {
        "students": args.students, "student_read_kbit_s": round(args.mbit * 1000), "student_rcvbuf": args.rcvbuf,
        "student_msg_per_s": args.msg_rate, "storm": args.storm, "seconds": args.seconds,
        "server_rss_quiet_mib": round(base_rss / 2**20, 1), "phases": rows,
        "restart": {"down_s": round((restart["up"] - restart["down"]) / 1e9, 2),
                    "stop_s": round((restart["down"] - restart["start"]) / 1e9, 2),
                    "settle_s": round(max(0, max(first.values()) - restart["up"]) / 1e9, 2) if complete else None,
                    "back": len(first), "of": args.students + args.storm,
                    "refused_503": sum(k == "refused" for k, _ in after),
                    "failed_attempts": sum(k == "failed" for k, _ in after)},
    }
    figures["targets"] = targets(figures)
    figures["all_targets_met"] = all(t["met"] for t in figures["targets"])
    return figures


def targets(figures: dict[str, Any]) -> list[dict[str, Any]]:
    rows = figures["phases"]
    dropped = {r["phase"]: r["students_dropped"] for r in rows if r["students_dropped"]}
    # Each attack against the quiet class; the restart against the same room just before it (a room of 330
    # sends each message to 11 times the sockets: that is its size, not the restart, and is shown apart).
    ratios = [(r["p99_vs_same_room"] if r["p99_vs_same_room"] is not None else r["p99_vs_quiet"], r["phase"])
              for r in rows[1:] if not r["baseline"]]
    over = [f"{p} {x}×" for x, p in ratios if x is None or x >= TARGET_P99]
    worst = max(ratios, key=lambda x: x[0] or 0)
    growth = max(rows, key=lambda r: r["rss_growth_mib"])
    free = [r["phase"] for r in rows if r["attacker_stopped"] is False]
    crowd = next((f"{r['p99_ms']} ms" for r in rows if r["baseline"]), "not measured")
    return [
        {"target": "0 students dropped", "met": not dropped,
         "measured": "0 in every phase" if not dropped else ", ".join(f"{p}: {n}" for p, n in dropped.items())},
        {"target": f"students' p99 < {TARGET_P99:g}× quiet ({rows[0]['p99_ms']} ms) under each attack, and < "
                   f"{TARGET_P99:g}× the same room before the restart ({crowd}) after it", "met": not over,
         "measured": f"worst {worst[0]}× ({worst[1]})" + (f"; over: {', '.join(over)}" if over else "")},
        {"target": f"server RSS grows < {TARGET_RSS_MIB:g} MiB", "met": growth["rss_growth_mib"] < TARGET_RSS_MIB,
         "measured": f"at most {growth['rss_growth_mib']} MiB ({growth['phase']})"},
        {"target": "each attacker refused, throttled or closed", "met": not free,
         "measured": "all 5" if not free else f"not stopped: {', '.join(free)}"},
    ]


HEAD = ["phase", "dropped", "p50 ms", "p99 ms", "p99 ÷ quiet", "server CPU", "RSS +MiB", "what the server did to the attacker"]


def cells(r: dict[str, Any]) -> list[str]:
    ratio = f"{r['p99_vs_quiet']}×" + (f" ({r['p99_vs_same_room']}× the same room)" if r["p99_vs_same_room"] else "")
    return [r["phase"], str(r["students_dropped"]), str(r["p50_ms"]), str(r["p99_ms"]), ratio,
            f"{r['server_cpu_pct']} %", str(r["rss_growth_mib"]), r["attacker"] or "-"]


def restart_line(f: dict[str, Any]) -> str:
    r = f["restart"]
    settle = f"{r['settle_s']} s" if r["settle_s"] is not None else "NOT settled"
    return (f"Restart: stopping took {r['stop_s']} s, down {r['down_s']} s; {r['back']} of {r['of']} pages back and "
            f"joined, settled {settle} after the new server listened; {r['refused_503']} attempts refused (503), "
            f"{r['failed_attempts']} failed (server down).")


def setup_line(f: dict[str, Any]) -> str:
    return (f"{f['students']} students, one address each, reading at {f['student_read_kbit_s']} kbit/s "
            f"(SO_RCVBUF {f['student_rcvbuf']} B), {f['student_msg_per_s']} msg/s each; phases of {f['seconds']} s; "
            f"server RSS in the quiet phase {f['server_rss_quiet_mib']} MiB.")


def verdict(f: dict[str, Any]) -> list[str]:
    missed = [t for t in f["targets"] if not t["met"]]
    return (["All targets met."] if not missed else
            [f"TARGET MISSED: {t['target']}: {t['measured']}." for t in missed])


def render(f: dict[str, Any]) -> str:
    """The plain-text report: a table, the restart, the targets with ✅/❌."""
    table = [HEAD] + [cells(r) for r in f["phases"]]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEAD) - 1)]
    lines = [f["command"], setup_line(f), ""]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in table]
    lines += ["", restart_line(f), "", "Targets:"]
    lines += [f"  {'✅' if t['met'] else '❌'} {t['target']}: {t['measured']}" for t in f["targets"]]
    return "\n".join(lines + [""] + verdict(f))


def markdown(f: dict[str, Any]) -> list[str]:
    """The same for docs/benchmarks.md."""
    lines = ["## classroom", "", f"    {f['command']}", "", setup_line(f), "",
             "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in cells(r)) + " |" for r in f["phases"]]
    lines += ["", restart_line(f), "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {'✅' if t['met'] else '❌ **no**'} |" for t in f["targets"]]
    return lines + [""] + verdict(f)


def add_parser(sub: Any) -> None:
    q = sub.add_parser("classroom", help="30 students on slow Wi-Fi, five attacks from one address, a restart")
    q.add_argument("--students", type=int, default=30, help="each from its own address 127.0.1.i (at most 254)")
    q.add_argument("--mbit", type=float, default=2, help="each student's reading speed, Mbit/s")
    q.add_argument("--rcvbuf", type=int, default=16384, help="each student's SO_RCVBUF, bytes")
    q.add_argument("--msg-rate", type=float, default=0.5, help="stamped messages per second per student")
    q.add_argument("--seconds", type=float, default=5, help="length of each phase")
    q.add_argument("--storm", type=int, default=300, help="pages that reconnect after the restart, 10 per address")
    q.add_argument("--settle-timeout", type=float, default=40, help="longest wait for everyone to come back")
    q.add_argument("--json", action="store_true")
    q.set_defaults(server="ours", url=None, pid=None, compression=False)
