"""Lesson 04's tools: ping and pong by hand, round-trip times through a tap, dead peers, and exercises.

- Ping and pong by hand with :class:`~chat_lesson.rawclient.RawClient`, which timestamps every
  frame, so a cell can see when the server's pings arrive; :func:`frame_table` lists them.
- :class:`BackgroundClient`: a ``ChatClient`` on an event loop of its own, so it answers pings
  even while a cell sleeps (the notebook's own loop does not run during a cell).
- :func:`measure_rtt`: ping through a tap while the tap's added delay changes.
- :func:`measure_detection`: freeze several connections at different moments and time how long
  the server takes to declare each peer dead.
- :data:`IDLE_TIMEOUTS`: typical idle time-outs of proxies and NATs (documented defaults, not measured).
- The exercises ``04.pong``, ``04.detection_time`` and ``04.choose_intervals``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import statistics
import threading
import time
from typing import Any

from ..chat.wire import SUBPROTOCOL
from ..notebook import BackgroundLoop, wait_until
from ..protocol.frames import Frame, Opcode, decode_frame, encode_frame
from ..rawclient import RawClient
from .display import Table
from .exercises import Wrong, exercise, expect


# -- Ping and pong by hand ---------------------------------------------------------------------


def frame_table(client: RawClient, opcodes: tuple[Opcode, ...] | None = (Opcode.PING, Opcode.PONG, Opcode.CLOSE)) -> Table:
    """The frames a RawClient sent and received (control frames only, by default): time, direction, bytes, payload."""
    rows = []
    for e in client.log:
        if e.frame is None or opcodes is not None and e.frame.opcode not in opcodes:
            continue
        rows.append({"t (ms)": f"{e.t * 1000:.1f}", "dir": e.direction, "opcode": e.frame.opcode.name,
                     "MASK": int(e.frame.mask_key is not None), "bytes on the wire": e.raw.hex(" "),
                     "payload": e.frame.payload.hex(" ") or "(empty)"})
    return Table(rows)


# -- A client that keeps answering --------------------------------------------------------------


class BackgroundClient:
    """A ChatClient living on an event loop thread of its own.

    In a notebook, a ``ChatClient`` lives on the kernel's loop, which does not
    run while a cell is busy (``time.sleep``): pings would go unanswered and
    the server would, rightly, think the client dead.  This one keeps
    answering.  Options go to ``ChatClient`` (and on to ``websockets``:
    ``ping_interval=``, ``ping_timeout=`` ...).
    """

    def __init__(self, target: Any, username: str, **options: Any) -> None:
        from ..chat.client import ChatClient

        self.loop = BackgroundLoop(f"client-{username}")
        self.client = ChatClient(target, username, **options)
        try:
            self.loop.call(self.client.aconnect(), timeout=10)
        except BaseException:
            self.loop.stop()
            raise

    @property
    def ws(self) -> Any:
        """The websockets connection: ``.latency``, ``.close_code``, ``.close_reason``, ``.state``."""
        return self.client.ws

    def call(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the client's loop and return its result."""
        return self.loop.call(coro, timeout)

    def ping(self, data: bytes | None = None, timeout: float = 5) -> float:
        """Send a ping, wait for its pong; return the round-trip time in seconds."""
        async def go() -> float:
            waiter = await self.client.ws.ping(data)
            return await asyncio.wait_for(waiter, timeout)

        return self.call(go(), timeout + 1)

    def close(self) -> None:
        """Close the connection (if it is still open) and stop the loop."""
        try:
            self.call(asyncio.wait_for(self.client.aclose(), 3), 5)
        except Exception:  # noqa: BLE001 - closing what may already be dead
            pass
        self.loop.stop()

    def __enter__(self) -> BackgroundClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- Round-trip times --------------------------------------------------------------------------


@dataclasses.dataclass
class RttRun:
    """Pings sent through a tap: (t_sent, rtt, delay_ms) samples and (start, end, delay_ms) phases."""

    samples: list[tuple[float, float, float]]
    phases: list[tuple[float, float, float]]
    lost: int = 0

    def points(self) -> list[tuple[float, float]]:
        return [(t, r) for t, r, _ in self.samples]

    def median_ms(self, delay_ms: float) -> float:
        values = [r for _, r, d in self.samples if d == delay_ms]
        return statistics.median(values) * 1000 if values else math.nan

    def table(self) -> Table:
        """Per phase: pings, median/min/max RTT, and what the added delay alone predicts (2 × delay)."""
        rows = []
        for _, _, delay in self.phases:
            values = [r * 1000 for _, r, d in self.samples if d == delay]
            if not values:
                continue
            rows.append({"added each way": f"{delay:g} ms", "pings": len(values),
                         "median RTT": f"{statistics.median(values):.1f} ms", "min": f"{min(values):.1f} ms",
                         "max": f"{max(values):.1f} ms", "2 × delay": f"{2 * delay:g} ms"})
        return Table(rows)


def measure_rtt(tap: Any, schedule: tuple[tuple[float, float], ...] = ((0, 1.0), (50, 1.0), (200, 1.5)),
                every: float = 0.1) -> RttRun:
    """Ping through ``tap`` every ``every`` s while its added delay follows ``schedule``.

    ``schedule`` is ((delay_ms each way, seconds), ...).  Each ping is its
    own frame with its own payload; its pong is awaited in a task of its own,
    so a slow pong never holds back the next ping.  The websockets client
    runs on a loop of its own and its own keepalive is off: every ping here
    is one we sent.  The tap's delay is set back to 0 at the end.
    """
    from websockets.asyncio.client import connect

    samples: list[tuple[float, float, float]] = []
    phases: list[tuple[float, float, float]] = []
    lost = 0

    async def run() -> None:
        nonlocal lost
        loop = asyncio.get_running_loop()
        async with connect(tap.ws_url, ping_interval=None, subprotocols=[SUBPROTOCOL]) as ws:
            t0 = loop.time()
            pending = []

            async def record(sent: float, waiter: Any, delay: float) -> None:
                nonlocal lost
                try:
                    samples.append((sent, await asyncio.wait_for(waiter, 5), delay))
                except Exception:  # noqa: BLE001 - a lost pong is a result too
                    lost += 1

            for delay, seconds in schedule:
                tap.delay(delay)
                start = loop.time() - t0
                while loop.time() - t0 < start + seconds:
                    sent = loop.time() - t0
                    pending.append(asyncio.create_task(record(sent, await ws.ping(), delay)))
                    await asyncio.sleep(every)
                phases.append((start, loop.time() - t0, delay))
            await asyncio.gather(*pending)

    bg = BackgroundLoop("rtt")
    try:
        bg.call(run(), timeout=sum(s for _, s in schedule) + 15)
    finally:
        tap.delay(0)
        bg.stop()
    samples.sort()
    return RttRun(samples, phases, lost)


# -- Dead peers ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Trial:
    """One frozen connection: when it froze after the last ping (phase) and how long detection took."""

    phase: float           # s from the server's last ping to the freeze
    detected: float        # s from the freeze to the server's close frame
    close_code: int | None
    close_reason: str | None


@dataclasses.dataclass
class DetectionRun:
    ping_interval: float
    ping_timeout: float
    trials: list[Trial]

    @property
    def times(self) -> list[float]:
        return [t.detected for t in self.trials]

    def table(self) -> Table:
        rows = [{"trial": i, "froze after the last ping": f"{t.phase:.2f} s", "detected after": f"{t.detected:.2f} s",
                 "theory (interval − phase + timeout)": f"{self.ping_interval - t.phase + self.ping_timeout:.2f} s",
                 "close frame": f"{t.close_code} {t.close_reason}"} for i, t in enumerate(self.trials, 1)]
        return Table(rows)


def _one_trial(server: Any, phase: float, username: str, timeout: float) -> Trial:
    from ..tap.proxy import Tap

    tap = Tap(server, quiet=True).start()
    client = None
    try:
        client = BackgroundClient(tap, username, ping_interval=None)
        ping = wait_until(lambda: tap.frames(direction="s2c", opcode="ping"), timeout, "first ping")[0]
        wait_until(lambda: tap.frames(direction="c2s", opcode="pong"), timeout, "first pong")
        time.sleep(max(0.0, ping.wall + phase - time.time()))
        tap.freeze()
        frozen = tap.events("fault")[-1]
        close = wait_until(lambda: tap.frames(direction="s2c", opcode="close"), timeout, "the server's close")[0]
        pings = [p for p in tap.frames(direction="s2c", opcode="ping") if p.t <= frozen.t]
        return Trial(frozen.t - pings[-1].t, close.t - frozen.t, close.close_code, close.close_reason)
    finally:
        tap.thaw()
        if client is not None:
            client.close()
        tap.stop()


def measure_detection(ping_interval: float, ping_timeout: float, trials: int = 5,
                      close_timeout: float = 0.5) -> DetectionRun:
    """Start a server with these keepalive settings; freeze ``trials`` connections, each at its own phase.

    Connection k freezes (k + 0.5) / trials of a ping interval after one
    of the server's pings; each runs through its own tap, all at the same
    time, so the whole run takes about two ping intervals plus the timeout.
    """
    from ..chat.server import ChatServer

    phases = [(k + 0.5) / trials * ping_interval for k in range(trials)]
    results: list[Trial | BaseException | None] = [None] * trials
    limit = 2 * ping_interval + ping_timeout + 5
    with ChatServer(port=0, quiet=True, ping_interval=ping_interval, ping_timeout=ping_timeout,
                    close_timeout=close_timeout) as server:
        def job(k: int) -> None:
            try:
                results[k] = _one_trial(server, phases[k], f"trial-{k + 1}", limit)
            except BaseException as error:  # noqa: BLE001 - reported below
                results[k] = error

        threads = [threading.Thread(target=job, args=(k,), daemon=True) for k in range(trials)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(limit + 10)
    errors = [r for r in results if not isinstance(r, Trial)]
    if errors:
        raise RuntimeError(f"{len(errors)} of {trials} trials failed: {errors[0]!r}")
    return DetectionRun(ping_interval, ping_timeout, sorted(results, key=lambda t: t.phase))  # type: ignore[arg-type]


# -- Idle time-outs in the path ------------------------------------------------------------------

IDLE_TIMEOUTS = [
    {"what": "nginx as a reverse proxy", "idle time-out": "60 s (proxy_read_timeout)",
     "note": "closes a proxied WebSocket when the server sends nothing for 60 s; nginx's docs suggest pings"},
    {"what": "AWS Application Load Balancer", "idle time-out": "60 s (idle_timeout, default)",
     "note": "1-4000 s; no data either way for that long and the connection is closed"},
    {"what": "Heroku router", "idle time-out": "55 s",
     "note": "a WebSocket with no data either way for 55 s is closed (error H15)"},
    {"what": "home router / NAT, TCP", "idle time-out": "minutes to hours",
     "note": "RFC 5382 asks for at least 2 h 4 min for an established TCP mapping; cheap routers and "
             "mobile carriers' NATs often forget much sooner"},
    {"what": "NAT, UDP (for comparison)", "idle time-out": "≥ 2 min (RFC 4787), often 30 s in practice",
     "note": "no connection state to go by, so NATs guess short"},
    {"what": "Linux conntrack (a Linux box doing NAT)", "idle time-out": "5 days",
     "note": "nf_conntrack_tcp_timeout_established = 432000 s by default"},
]
"""Typical documented defaults, cited, not measured here.  A proxy closes both of its TCP connections when the
time-out runs out (no WebSocket close frame: a browser reports 1006); a NAT drops its mapping without telling
either end: the next packet finds no mapping, and the peers learn only when they next send something."""


def idle_timeout_table() -> Table:
    return Table(IDLE_TIMEOUTS)


# =============================================================================
# Exercise 1: answer a ping
# =============================================================================


def _pong_mistake(got: Any, ping_payload: bytes, key: bytes) -> str:
    right = encode_frame(Frame(True, Opcode.PONG, ping_payload), mask_key=key)
    if not isinstance(got, (bytes, bytearray)):
        return f"return the pong frame as bytes, not {type(got).__name__}"
    got = bytes(got)
    if len(got) < 2:
        return "too short for a frame"
    if got[0] & 0x0F == 0x9:
        return "that is a ping again (opcode 0x9): a pong has opcode 0xA"
    if got[0] & 0x0F != 0xA:
        return f"opcode {got[0] & 0x0F:#x}: a pong has opcode 0xA"
    if not got[0] & 0x80:
        return "FIN must be 1: control frames are never fragmented"
    if not got[1] & 0x80:
        return "MASK is 0: a client masks every frame it sends, pongs included (§5.3)"
    if got[2:6] != key:
        return "bytes 2-5 must be the masking key you were given"
    try:
        frame, _ = decode_frame(got)
    except Exception as error:  # noqa: BLE001
        return f"not a valid frame: {error}"
    if frame.payload != ping_payload:
        return (f"the pong carries {frame.payload!r}; it must carry exactly the ping's payload "
                f"{ping_payload!r} (§5.5.3: 'Application data' identical to the ping's)")
    return f"not the expected {right.hex(' ')}"


@exercise("04.pong", hint="Decode the ping (frames.decode_frame), then build a frame with FIN=1, opcode 0xA, "
          "MASK=1, the same payload, masked with the key (frames.encode_frame does the masking). RFC 6455 §5.5.3.")
def _pong(answer: Any) -> str:
    """Write pong_for(ping_bytes, key) -> bytes: a client's answer to a server's ping."""
    f = answer
    expect(callable(f), "pass your function itself: check('04.pong', pong_for)")
    rng = random.Random(2011)
    payloads = [b"", b"\x00\x01\x02\x03", b"are you there?", bytes(rng.randrange(256) for _ in range(125))]
    payloads += [bytes(rng.randrange(256) for _ in range(4)) for _ in range(5)]
    for payload in payloads:
        ping = encode_frame(Frame(True, Opcode.PING, payload))
        key = bytes(rng.randrange(256) for _ in range(4))
        got = f(ping, key)
        right = encode_frame(Frame(True, Opcode.PONG, payload), mask_key=key)
        expect(got == right, f"pong_for({ping.hex(' ')[:30]}…, {key.hex()}) is wrong: {_pong_mistake(got, payload, key)}")
    return "right: same payload back, opcode 0xA, masked because a client sends it"


# =============================================================================
# Exercise 2: predict the detection time
# =============================================================================

DETECTION_SETTINGS = {"ping_interval": 2.0, "ping_timeout": 0.5}
"""The settings of ``04.detection_time``: predict the earliest and latest detection after a freeze."""


@exercise("04.detection_time", hint="After the freeze, the server first waits for its next ping to be due "
          "(anywhere from 0 to ping_interval later), then ping_timeout for a pong that never comes.")
def _detection_time(answer: Any) -> str:
    """With ping_interval=2 s and ping_timeout=0.5 s: the earliest and latest detection time after a freeze."""
    expect(isinstance(answer, dict) and set(answer) == {"earliest", "latest"},
           "answer with a dict: {'earliest': seconds, 'latest': seconds}")
    expect(all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in answer.values()),
           "give both as numbers of seconds (replace the ...)")
    interval, timeout = DETECTION_SETTINGS["ping_interval"], DETECTION_SETTINGS["ping_timeout"]
    lo, hi = float(answer["earliest"]), float(answer["latest"])
    expect(lo <= hi, f"earliest ({lo:g}) is later than latest ({hi:g})")
    tol = 0.05
    if abs(hi - interval) <= tol:
        raise Wrong(f"latest = {hi:g} s is when the next ping leaves at worst; then the server still waits "
                    f"ping_timeout for its pong")
    if abs(lo) <= tol:
        raise Wrong("earliest = 0 would mean the server knows at once; it only knows when a pong fails to come")
    expect(abs(lo - timeout) <= tol, f"earliest = {lo:g} s is not right: at best the freeze comes just before a "
           "ping leaves; how long does the server then wait?")
    expect(abs(hi - (interval + timeout)) <= tol, f"latest = {hi:g} s is not right: at worst the freeze comes just "
           "after a pong arrived")
    return (f"right: between ping_timeout = {timeout:g} s and ping_interval + ping_timeout = {interval + timeout:g} s, "
            f"{(interval / 2) + timeout:g} s on average; the measurement below checks it")


# =============================================================================
# Exercise 3: choose the intervals
# =============================================================================

SCENARIO = {"idle_timeout": 60.0, "deadline": 30.0, "worst_rtt": 2.0}
"""``04.choose_intervals``: the proxy's idle time-out, how soon a vanished student must be noticed,
and the worst round trip of a live student on a bad mobile link (all in seconds)."""


@exercise("04.choose_intervals", hint="Three rules: a ping must cross the proxy more often than its idle time-out; "
          "a live peer's pong must make it back within ping_timeout even on the worst link; and at worst a dead "
          "peer is noticed ping_interval + ping_timeout after it died.")
def _choose_intervals(answer: Any) -> str:
    """Pick ping_interval and ping_timeout for a classroom behind a 60 s proxy (SCENARIO)."""
    expect(isinstance(answer, dict) and set(answer) == {"ping_interval", "ping_timeout"},
           "answer with a dict: {'ping_interval': seconds, 'ping_timeout': seconds}")
    expect(all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in answer.values()),
           "give both as numbers of seconds (replace the ...)")
    interval, timeout = float(answer["ping_interval"]), float(answer["ping_timeout"])
    idle, deadline, rtt = SCENARIO["idle_timeout"], SCENARIO["deadline"], SCENARIO["worst_rtt"]
    expect(interval > 0 and timeout > 0, "both must be positive")
    expect(interval >= 1, f"ping_interval = {interval:g} s: thirty phones woken {1 / interval:g} times a second "
           "each, for nothing; one ping a second is already plenty")
    expect(interval < idle, f"ping_interval = {interval:g} s: the proxy closes a line idle for {idle:g} s, so the "
           "pings must come more often than that")
    expect(timeout > rtt, f"ping_timeout = {timeout:g} s: a live student on a bad link needs up to {rtt:g} s for the "
           "pong to come back; they would be thrown out while still there")
    expect(interval + timeout <= deadline, f"at worst a vanished student is noticed ping_interval + ping_timeout = "
           f"{interval + timeout:g} s later; the deadline is {deadline:g} s")
    return (f"works: pings every {interval:g} s keep the {idle:g} s proxy awake, a pong has {timeout:g} s "
            f"(> {rtt:g} s worst RTT), a dead peer is noticed after {timeout:g} to {interval + timeout:g} s; "
            f"cost: {3600 / interval:.0f} pings per hour per student")


__all__ = ["BackgroundClient", "DETECTION_SETTINGS", "DetectionRun", "IDLE_TIMEOUTS", "RttRun", "SCENARIO", "SUBPROTOCOL",
           "Trial", "frame_table", "idle_timeout_table", "measure_detection", "measure_rtt"]
