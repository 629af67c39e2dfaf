"""The benchmarks run on tiny sizes and print sane figures (a benchmark is not a test)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def bench(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "chat_lesson.bench", *args, "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("server", ["ours", "baseline"])
def test_fanout_counts_every_delivery(server):
    f = bench("fanout", "--server", server, "--clients", "6", "--messages", "30")
    assert f["deliveries"] == 6 * 30 and f["lost"] == 0
    assert 0 < f["p50_ms"] <= f["p99_ms"] <= f["max_ms"] < 10_000
    assert f["server_cpu_s"] >= 0 and f["server_us_per_delivery"] is not None
    assert f["command"].startswith("python -m chat_lesson.bench fanout --server " + server)


def test_fanout_with_compression_offered():
    f = bench("fanout", "--clients", "4", "--messages", "20", "--compression", "--server", "baseline")
    assert f["compression"] is True and f["lost"] == 0


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_paced_sends_at_the_rate(loop):
    if loop == "uvloop":
        pytest.importorskip("uvloop", reason="uvloop is not made for Windows")
    f = bench("paced", "--clients", "4", "--rate", "50", "--seconds", "1", "--client-loop", loop)
    assert f["messages"] == 50 and f["lost"] == 0 and f["client_loop"] == loop
    assert f["seconds"] >= 0.9          # 50 messages at 50/s cannot take less than ~1 s


def test_idle_measures_memory_per_connection():
    f = bench("idle", "--clients", "50")
    assert f["server_rss_connected_mib"] >= f["server_rss_before_mib"] > 0
    assert 0 < f["kib_per_connection"] < 1024


def test_slow_closes_the_stuck_client():
    f = bench("slow", "--clients", "4", "--rate", "400", "--seconds", "2", "--size", "1000", "--max-buffer", "16384")
    assert f["lost_with_stuck"] == 0
    assert len(f["stuck_closed_after_s"]) == 1 and 0 < f["stuck_closed_after_s"][0] < 2


def test_churn_serves_everyone_and_leaks_no_file():
    f = bench("churn", "--connections", "60", "--in-flight", "8")
    assert f["served"] + f["reset"] == 60 and f["failed"] == 0
    assert f["server_alive"] and f["server_fds_after"] == f["server_fds_before"]


def test_classroom_drops_no_student():
    # 3 messages a second each: every phase of 1 s has latencies to compare (at 0.5/s one may have none)
    f = bench("classroom", "--seconds", "1", "--students", "5", "--storm", "20", "--settle-timeout", "30", "--msg-rate", "3")
    names = [r["phase"] for r in f["phases"]]
    assert names[0] == "quiet" and len(names) == 8 and names[6] == "25 online, before the restart"   # quiet, 5 attacks, ...
    assert f["phases"][7]["p99_vs_same_room"] > 0 and f["phases"][6]["baseline"]
    for r in f["phases"]:
        assert {"students_dropped", "p50_ms", "p99_ms", "p99_vs_quiet", "samples", "server_cpu_pct",
                "rss_growth_mib", "attacker", "attacker_stopped", "attacker_counts", "baseline"} <= set(r)
        assert r["students_dropped"] == 0, r
    assert all(r["attacker"] for r in f["phases"][1:6])
    assert f["restart"]["of"] == 25 and f["restart"]["back"] == 25
    assert [t["met"] for t in f["targets"]][0] is True and len(f["targets"]) == 4
    assert f["command"].startswith("python -m chat_lesson.bench classroom")


def test_scaleout_joins_two_processes_and_loses_nothing():
    pytest.importorskip("redis", reason="the broker needs the redis package")
    from helpers import unavailable

    from chat_lesson.lessons.lesson08 import which_nginx, which_redis

    if which_redis() is None or which_nginx() is None:
        unavailable("bench scaleout needs redis-server and nginx: apt-get install redis-server nginx")
    f = bench("scaleout", "--clients", "8", "--rate", "50", "--seconds", "1", "--messages", "30",
              "--failover-clients", "6")
    one, two = f["rows"]
    assert one["processes"] == 1 and two["processes"] == 2
    assert one["lost"] == two["lost"] == 0 and one["max_lost"] == two["max_lost"] == 0
    assert two["deliveries"] == 8 * 50 and two["us_per_delivery"] is not None
    assert f["failover_lost"] == 0 and f["failover_duplicates"] == 0 and f["failover_moved"] >= 1
