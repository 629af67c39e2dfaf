"""Lesson 01: HTTP polling against WebSocket push, measured; its figures and exercises.

The measurement itself (four receivers of one stream of chat messages,
every byte counted) is :mod:`chat_lesson.lessons.four_ways`; :func:`measure`
and the names a notebook needs are here too, so lesson 01 imports one module::

    m = lesson01.measure(chat, poll)        # about 10 s
    lesson01.plot_bytes(m); lesson01.plot_latency(m); lesson01.plot_idle(m)

Exercises: ``01.short_poll_delay``, ``01.frame_header_bytes``, ``01.when_to_use``.
"""

from __future__ import annotations

import math
from typing import Any
from collections.abc import Sequence

from ..protocol import frames
from ..protocol.frames import header_size
from .exercises import exercise, expect, need_dict, need_function
from .four_ways import COLOURS, LABELS, LINESTYLES, SHORT_LABELS, WAYS, Measurement, fmt_ms, measure, poll_request

__all__ = ["ARTICLE_TABLE", "FRAME_HEADER_CASES", "LABELS", "PAYLOAD_SIZES", "SCENARIOS", "WAYS", "Measurement",
           "measure", "overhead_rows", "plot_bytes", "plot_idle", "plot_latency", "plot_overhead", "poll_request",
           "short_poll_delay"]


# -- figures ---------------------------------------------------------------------


def plot_bytes(m: Measurement, ax: Any = None) -> Any:
    """Stacked bars: bytes on the wire per delivered message, split into payload and overhead."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(8, 3.2))[1]
    names = list(m.ways)[::-1]
    y = range(len(names))
    parts = [m.bytes_per_message(n) for n in names]
    payload = [p["payload"] for p in parts]
    heads = [p["overhead"] for p in parts]
    hand = [p["handshake"] for p in parts]
    ax.barh(y, payload, color="#4c78a8", label="payload (the message JSON)")
    ax.barh(y, heads, left=payload, color="#f58518", label="HTTP heads / frame headers")
    ax.barh(y, hand, left=[a + b for a, b in zip(payload, heads)], color="#b8b8b8",
            label=f"WebSocket handshake, shared by {m.ways['websocket'].delivered} messages")
    for i, p in enumerate(parts):
        ax.text(p["total"], i, f"  {p['total']:.0f} B", va="center")
    ax.set_yticks(list(y), [SHORT_LABELS[n] for n in names])
    ax.set_xlabel("bytes on the wire per delivered message (both directions)")
    ax.set_xlim(0, max(p["total"] for p in parts) * 1.18)
    ax.set_title(f"Cost of one chat message, {m.messages} messages at ~{m.rate:g}/s")
    ax.legend(loc="lower right", fontsize=8)
    return ax


def plot_latency(m: Measurement, ax: Any = None) -> Any:
    """The delivery latency of every message, as a cumulative distribution on a log axis."""
    import matplotlib.pyplot as plt
    import numpy as np

    ax = ax or plt.subplots(figsize=(8, 3.6))[1]
    for name, way in m.ways.items():
        lat = np.sort(np.array(way.latencies) * 1000)
        if lat.size == 0:
            continue
        frac = np.arange(1, lat.size + 1) / lat.size
        med, p95 = m.latency_ms(name)
        ax.step(lat, frac, where="post", color=COLOURS[name], ls=LINESTYLES[name], lw=1.6,
                label=f"{LABELS[name]}: median {fmt_ms(med)} ms, p95 {fmt_ms(p95)} ms")
        ax.plot([med], [0.5], "o", color=COLOURS[name])
    ax.axhline(0.5, color="grey", lw=0.5, ls=":")
    ax.axhline(0.95, color="grey", lw=0.5, ls=":")
    ax.axvline(m.interval * 1000, color="grey", lw=0.8, ls="--")
    ax.text(m.interval * 1000, 0.02, " poll interval", color="grey", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("delivery latency, ms (log scale): time received - time stamped by the sender")
    ax.set_ylabel("fraction of messages")
    ax.set_title("How long each message took to arrive")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, ncol=2, frameon=False)
    return ax


def plot_idle(m: Measurement, axes: Any = None) -> Any:
    """Two panels: requests and bytes per minute spent while nobody says anything."""
    import matplotlib.pyplot as plt

    if axes is None:
        axes = plt.subplots(1, 2, figsize=(9, 3.2))[1]
    names = list(m.ways)
    x = range(len(names))
    reqs = [m.idle_per_minute(n)[0] for n in names]
    sizes = [m.idle_per_minute(n)[1] for n in names]
    colours = [COLOURS[n] for n in names]
    axes[0].bar(x, reqs, color=colours)
    axes[1].bar(x, sizes, color=colours)
    for ax, values, unit in ((axes[0], reqs, ""), (axes[1], sizes, " B")):
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.0f}{unit}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(x), [SHORT_LABELS[n] for n in names], fontsize=8)
        ax.margins(y=0.15)
    beat = m.heartbeat_bytes_per_minute()
    if beat:
        ws = names.index("websocket")
        axes[1].text(ws, max(sizes) * 0.12, f"+ heartbeat\n{beat:.0f} B/min\n(1 ping per {m.ping_interval:g} s)",
                     ha="center", va="bottom", fontsize=7, color=COLOURS["websocket"])
    axes[0].set_ylabel("requests per minute")
    axes[1].set_ylabel("bytes per minute")
    axes[0].set_title(f"Idle: requests (measured over {m.idle_seconds:g} s, ×{60 / m.idle_seconds:g})", fontsize=9)
    axes[1].set_title("Idle: bytes on the wire", fontsize=9)
    plt.tight_layout()
    return axes


PAYLOAD_SIZES = [2 ** k for k in range(0, 21)]    # 1 B .. 1 MiB


def overhead_rows(request_head: float, response_head: float, sizes: Sequence[int] = PAYLOAD_SIZES) -> list[dict[str, Any]]:
    """Overhead bytes and share of the wire for one message of each size, HTTP vs WebSocket frames."""
    rows = []
    for n in sizes:
        http = request_head + response_head + len(str(n)) - 1   # Content-Length grows with the body
        server, client = header_size(n, False), header_size(n, True)
        rows.append({"payload": n, "http": http, "server frame": server, "client frame": client,
                     "http %": 100 * http / (http + n), "server %": 100 * server / (server + n),
                     "client %": 100 * client / (client + n)})
    return rows


def plot_overhead(request_head: float, response_head: float, payload: float | None = None, ax: Any = None) -> Any:
    """Overhead as a share of the bytes on the wire, for payloads from 1 B to 1 MiB."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(8, 3.6))[1]
    rows = overhead_rows(request_head, response_head)
    sizes = [r["payload"] for r in rows]
    ax.plot(sizes, [r["http %"] for r in rows], "o-", ms=3, color=COLOURS["short_keepalive"],
            label=f"HTTP poll: request head + response head (measured: {request_head:.0f} + {response_head:.0f} B)")
    ax.plot(sizes, [r["client %"] for r in rows], "s-", ms=3, color="#17becf",
            label="WebSocket frame, client → server (2-14 B, incl. 4 B mask key)")
    ax.plot(sizes, [r["server %"] for r in rows], "^-", ms=3, color=COLOURS["websocket"],
            label="WebSocket frame, server → client (2-10 B)")
    for n, text in ((126, "126 B: 16-bit length"), (65536, "64 KiB: 64-bit length")):
        ax.axvline(n, color="grey", lw=0.5, ls=":")
        ax.text(n, 101, text, fontsize=7, color="grey", ha="center", va="bottom")
    if payload:
        ax.axvline(payload, color="black", lw=0.8, ls="--")
        ax.text(payload, 35, f"one chat message\n({payload:.0f} B) ", fontsize=8, ha="right")
    ax.set_xscale("log", base=2)
    ax.set_xticks([1, 16, 256, 4096, 65536, 2 ** 20], ["1 B", "16 B", "256 B", "4 KiB", "64 KiB", "1 MiB"])
    ax.set_ylim(0, 108)
    ax.set_xlabel("payload size (log scale)")
    ax.set_ylabel("overhead, % of bytes on the wire")
    ax.set_title("Header overhead per message", pad=14)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, frameon=False)
    return ax


# =============================================================================
# Lesson 01: HTTP vs WebSocket
# =============================================================================


def short_poll_delay(interval_ms: float) -> tuple[float, float]:
    """The course's answer to ``01.short_poll_delay``: (median, p95) wait in ms of a message short-polled every
    ``interval_ms``, network delay aside.  The notebook's comparison with the measurement uses this, not the
    student's ``delay``, so it works whatever the exercise cell holds."""
    return interval_ms / 2, 0.95 * interval_ms


@exercise("01.short_poll_delay", hint="A message lands at a random moment between two polls and waits for the "
          "next one: its wait is spread evenly from 0 to one interval. Half of the messages wait less than the "
          "median; 95% wait less than the p95.")
def _short_poll_delay(answer: Any) -> str:
    """Predict the median and p95 wait of a short-polled message for any poll interval."""
    f = need_function(answer, "delay(interval_ms) -> (median_ms, p95_ms)")
    for interval in (100, 500, 2000, 10_000):
        got = f(interval)
        expect(isinstance(got, (tuple, list)) and len(got) == 2,
               f"delay({interval}) returned {got!r}; return two numbers: (median_ms, p95_ms)")
        expect(... not in got, "replace each ... with your formula (in terms of interval_ms)")
        median, p95 = (float(x) for x in got)
        expect(not math.isclose(median, interval, rel_tol=0.05),
               f"delay({interval}) gives a median of {median:g} ms: that is the longest any message waits, "
               "the one that arrives just after a poll")
        expect(math.isclose(median, interval / 2, rel_tol=0.1),
               f"delay({interval}) gives a median of {median:g} ms; it should be close to {interval / 2:g} ms")
        expect(math.isclose(p95, 0.95 * interval, rel_tol=0.03),
               f"delay({interval}) gives a p95 of {p95:g} ms; 95% of the waits are shorter than it",
               "The wait is uniform between 0 and the interval; what fraction of the interval leaves 5% above it?")
    return ("median = interval / 2, p95 = 0.95 × interval (plus the network's own delay): "
            "compare with the measured values printed below")


def _frame_cases() -> dict[str, tuple[int, bool]]:
    return {"server sends 5 bytes": (5, False), "client sends 5 bytes": (5, True),
            "server sends 200 bytes": (200, False), "client sends 70000 bytes": (70_000, True)}


FRAME_HEADER_CASES = list(_frame_cases())
"""The keys of the ``01.frame_header_bytes`` answer dict."""


@exercise("01.frame_header_bytes", hint="2 bytes always; +2 when the payload length is 126-65535, +8 when it is "
          "larger; +4 for the masking key, which only client-to-server frames carry (RFC 6455 §5.2).")
def _frame_header_bytes(answer: Any) -> str:
    """How many header bytes a WebSocket frame carries in front of its payload."""
    cases = _frame_cases()
    answer = need_dict(answer, list(cases))
    wrong = []
    for name, (n, masked) in cases.items():
        right = frames.header_size(n, masked)
        if answer[name] != right:
            why = []
            form = frames.length_form(n)
            why.append(f"{n} bytes fit the {form} length form" + ("" if form == "7-bit" else
                       f" (+{2 if form == '16-bit' else 8} bytes of extended length)"))
            why.append("a client masks: +4 bytes of key" if masked else "a server does not mask")
            wrong.append(f"{name!r}: not {answer[name]!r} ({'; '.join(why)})")
    expect(not wrong, "\n".join(wrong))
    return "a frame header is 2 to 14 bytes; every HTTP exchange carries a request head and a response head"


# The article's closing table (总结), rows in its own order and words, translated.
ARTICLE_TABLE = {
    "Use HTTP for": [
        "Retrieving a resource (检索资源)",
        "Highly cacheable resources (高度可缓存的资源)",
        "Idempotency and safety (幂等性和安全性)",
        "Error scenarios (错误方案)",
    ],
    "Use WebSocket for": [
        "Fast reaction time (快速响应时间)",
        "Ongoing updates (持续更新)",
        "Ad-hoc messaging (Ad-hoc消息传递)",
    ],
    "Wrong uses of HTTP": [
        "Relying on the client polling the service rather than the user starting each request",
        "Frequent service calls to send small messages",
        "The client must react quickly to changes in a resource, and cannot predict when a change happens",
    ],
    "Wrong uses of WebSocket": [
        "The connection is used for very few events or a very short time, and the client need not react quickly",
        "Several WebSockets must be open to the same service at once",
        "Opening a WebSocket, sending a message, closing it, then doing it all again",
        "Re-implementing the request/response pattern inside the messaging layer",
    ],
}

# scenario -> (description, the better fit, the question to ask, why: the article's row it matches)
_SCENARIOS: dict[str, tuple[str, str, str, str]] = {
    "stock_ticker": ("A stock ticker whose prices change about 10 times a second", "websocket",
                     "how often does news come, and who starts each exchange?",
                     "ongoing updates; polling it would be 'frequent service calls to send small messages'"),
    "pdf_download": ("Downloading the course notes as a PDF", "http",
                     "is it one resource, fetched once, that a cache could keep?",
                     "retrieving a resource, highly cacheable; a WebSocket 'used for one event' is a wrong use"),
    "form_submit": ("Submitting a sign-up form once", "http",
                    "what tells the user that it worked or failed, and may it be retried safely?",
                    "idempotency, safety and error scenarios: HTTP has methods and status codes for exactly this; "
                    "'open, send, close, repeat' is a wrong use of WebSocket"),
    "cursors": ("Showing every player's mouse cursor in a shared whiteboard", "websocket",
                "how fast must the others see each move, and how many moves per second?",
                "fast reaction time and ad-hoc messaging, in both directions, many times a second"),
    "mobile_rest_api": ("The product catalogue API of a shopping app", "http",
                        "is it request/response on resources that caches could keep?",
                        "retrieving resources that caches can keep; over a WebSocket you would "
                        "'re-implement request/response in the messaging layer'"),
    "score_per_minute": ("A sports score that changes about once a minute, where a few seconds late is fine",
                         "http", "how many events, and must the client react fast?",
                         "very few events and no need to react quickly: the article's first wrong "
                         "use of WebSocket; an occasional (cacheable) GET does the job"),
    "class_chat": ("This course's class chat", "websocket",
                   "who speaks when, and how soon should the others see it?",
                   "ad-hoc messaging: anyone may speak at any moment, and everyone should see it at once"),
    "job_finished": ("Telling a waiting user the moment their video has finished converting (which may take "
                     "seconds or an hour)", "websocket",
                     "can the client predict when the change happens?",
                     "the client must react quickly to a change it cannot predict: the article's third "
                     "wrong use of HTTP (polling for it)"),
}

SCENARIOS = {name: text for name, (text, *_) in _SCENARIOS.items()}
"""The scenarios of ``01.when_to_use``: name -> description (answer each with "http" or "websocket")."""


def _transport(value: Any) -> str | None:
    text = str(value).strip().lower().replace(" ", "").replace("-", "")
    if text in ("http", "https", "rest", "polling"):
        return "http"
    if text in ("websocket", "websockets", "ws", "wss"):
        return "websocket"
    return None


@exercise("01.when_to_use", hint="Go back to the article's table: HTTP for resources you fetch (and cache) and for "
          "requests that need clear success or failure; WebSocket when updates keep coming and the client must "
          "react fast.")
def _when_to_use(answer: Any) -> str:
    """HTTP or WebSocket? Decide each scenario with the article's closing table."""
    answer = need_dict(answer, list(_SCENARIOS))
    unclear = [k for k in _SCENARIOS if _transport(answer[k]) is None]
    expect(not unclear, "answer each with 'http' or 'websocket'; not understood: "
           + ", ".join(f"{k}={answer[k]!r}" for k in unclear))
    wrong = [k for k, (_, fit, _, _) in _SCENARIOS.items() if _transport(answer[k]) != fit]
    right = len(_SCENARIOS) - len(wrong)
    expect(not wrong, f"{right} of {len(_SCENARIOS)} right. Look again at: " + ", ".join(wrong),
           " · ".join(f"{k}: {_SCENARIOS[k][2]}" for k in wrong))
    return "all right. Why each:" + "".join(f"\n • {k}: {why}" for k, (_, _, _, why) in _SCENARIOS.items())
