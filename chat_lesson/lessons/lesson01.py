"""Lesson 01: HTTP polling against WebSocket push, measured; its figures and exercises.

The measurement itself (five receivers of one stream of chat messages,
every byte counted) is :mod:`chat_lesson.lessons.four_ways`; :func:`measure`
and the names a notebook needs are here too, so lesson 01 imports one module::

    m = lesson01.measure(chat, poll)        # about 10 s
    lesson01.plot_bytes(m); lesson01.plot_latency(m); lesson01.plot_idle(m)
    d = lesson01.measure_delayed(chat, poll, delay_ms=50)   # the push-like ways, 50 ms each way

:class:`EventStream` reads server-sent events off a bare socket (and resumes
with ``Last-Event-ID``); :class:`EchoServer` and :func:`browser_binary` show a
binary message, from Python and from Chromium's ``WebSocket.binaryType``.

Exercises: ``01.short_poll_delay``, ``01.frame_header_bytes``, ``01.when_to_use``.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from typing import Any
from collections.abc import Sequence

from ..notebook import BackgroundLoop
from ..protocol import frames
from ..protocol.frames import header_size
from .exercises import exercise, expect, need_dict, need_function
from .four_ways import (COLOURS, LABELS, LINESTYLES, SHORT_LABELS, WAYS, Measurement, fmt_ms, gap_share, measure,
                        measure_delayed, parse_sse, poll_request, sse_request)

__all__ = ["ADVICE", "FRAME_HEADER_CASES", "LABELS", "PAYLOAD_SIZES", "SCENARIOS", "WAYS", "EchoServer", "EventStream",
           "Measurement", "browser_binary", "gap_share", "measure", "measure_delayed", "overhead_rows", "plot_bytes",
           "plot_idle", "plot_latency", "plot_overhead", "poll_request", "short_poll_delay", "sse_request"]


# -- figures ---------------------------------------------------------------------


def plot_bytes(m: Measurement, ax: Any = None) -> Any:
    """Stacked bars: bytes on the wire per delivered message, split into payload and overhead."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(8, 3.6))[1]
    names = list(m.ways)[::-1]
    y = range(len(names))
    parts = [m.bytes_per_message(n) for n in names]
    payload = [p["payload"] for p in parts]
    heads = [p["overhead"] for p in parts]
    hand = [p["handshake"] for p in parts]
    ax.barh(y, payload, color="#4c78a8", label="payload (the message JSON)")
    ax.barh(y, heads, left=payload, color="#f58518", label="HTTP heads / frame headers")
    ax.barh(y, hand, left=[a + b for a, b in zip(payload, heads)], color="#b8b8b8",
            label=f"opening request and answer (WebSocket handshake, GET /events), "
                  f"shared by {m.messages} messages")
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
    if any(n.startswith("short") for n in m.ways):
        ax.axvline(m.interval * 1000, color="grey", lw=0.8, ls="--")
        ax.text(m.interval * 1000, 0.02, " poll interval", color="grey", fontsize=8)
    if m.delay_ms:
        for x, text in ((m.delay_ms, " one-way delay"), (3 * m.delay_ms, " + one round trip")):
            ax.axvline(x, color="grey", lw=0.8, ls="--")
            ax.text(x, 0.02, text, color="grey", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("delivery latency, ms (log scale): time received - time stamped by the sender")
    ax.set_ylabel("fraction of messages")
    ax.set_title("How long each message took to arrive" + (f", {m.delay_ms:g} ms added each way" if m.delay_ms else ""))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, ncol=2, frameon=False)
    return ax


def plot_idle(m: Measurement, axes: Any = None) -> Any:
    """Two panels: requests and bytes per minute spent while nobody says anything."""
    import matplotlib.pyplot as plt

    if axes is None:
        axes = plt.subplots(1, 2, figsize=(10, 3.4))[1]
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
        ax.set_xticks(list(x), [SHORT_LABELS[n] for n in names], fontsize=7)
        ax.margins(y=0.15)
    beat = m.heartbeat_bytes_per_minute()
    if beat:
        ws = names.index("websocket")
        axes[1].text(ws, max(sizes) * 0.12, f"+ heartbeat\n{beat:.0f} B/min\n(1 ping per {m.ping_interval:g} s)",
                     ha="center", va="bottom", fontsize=7, color=COLOURS["websocket"])
    comment = m.sse_heartbeat_bytes_per_minute()
    if comment and "sse" in names:
        axes[1].text(names.index("sse"), max(sizes) * 0.12,
                     f"+ heartbeat\n{comment:.0f} B/min\n(1 comment per {m.sse_heartbeat:g} s)",
                     ha="center", va="bottom", fontsize=7, color=COLOURS["sse"])
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


# -- server-sent events off a bare socket ----------------------------------------------


class EventStream:
    """``GET /events`` on a bare socket, as a browser's EventSource sends it; read its events as they come.

    >>> stream = EventStream(poll.port, since=poll.last_id)     # doctest: +SKIP
    >>> stream.events(2)                                         # doctest: +SKIP
    [{'id': '7', 'data': '{"type": "message", ...}'}, ...]
    >>> EventStream(poll.port, last_event_id=stream.last_event_id)   # doctest: +SKIP  (a reconnection)

    ``request`` and ``head`` are the bytes sent and the response head; ``raw``
    everything read after the head; ``last_event_id`` the last ``id:`` seen,
    which is what EventSource remembers and sends back when it reconnects.
    """

    def __init__(self, port: int, host: str = "127.0.0.1", *, since: int | None = None,
                 last_event_id: str | None = None, timeout: float = 5) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        path = "/events" if since is None else f"/events?since={since}"
        self.request = sse_request(f"{host}:{port}", path, last_event_id)
        self.sock.sendall(self.request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed before its answer's head")
            data += chunk
        head, _, self._buffer = data.partition(b"\r\n\r\n")
        self.head = head + b"\r\n\r\n"
        self.raw = self._buffer
        self.last_event_id = last_event_id

    def events(self, count: int) -> list[dict[str, str]]:
        """Read until ``count`` more events (blocks with a ``data:`` line) came; comments and ``retry:`` skipped."""
        found: list[dict[str, str]] = []
        while len(found) < count:
            while b"\n\n" not in self._buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"the stream ended after {len(found)} of {count} events")
                self._buffer += chunk
                self.raw += chunk
            block, _, self._buffer = self._buffer.partition(b"\n\n")
            fields = parse_sse(block)
            if "id" in fields:
                self.last_event_id = fields["id"]
            if "data" in fields:
                found.append(fields)
        return found

    def messages(self, count: int) -> list[str]:
        """The chat text of the next ``count`` events."""
        return [json.loads(e["data"]).get("message", "") for e in self.events(count)]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- binary messages: an echo server, and a browser's binaryType --------------------------


class EchoServer:
    """A WebSocket echo server in a few lines of the ``websockets`` library, on a loop of its own.

    Every message comes back as it went: text as text, binary as binary.
    ``start()`` returns once it listens; ``url`` is ``ws://127.0.0.1:PORT/``.
    """

    SOURCE = """\
async def echo(connection):
    async for message in connection:      # str for a text message, bytes for a binary one
        await connection.send(message)     # send() picks the opcode from the type: 0x1 or 0x2

server = await serve(echo, "127.0.0.1", 0)"""

    def __init__(self) -> None:
        self.port = 0
        self._loop: BackgroundLoop | None = None
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def start(self) -> EchoServer:
        from websockets.asyncio.server import serve

        from websockets.exceptions import ConnectionClosed

        async def echo(connection: Any) -> None:
            try:
                async for message in connection:
                    await connection.send(message)
            except ConnectionClosed:      # a client that hangs up without a close frame: nothing to report
                pass

        async def begin() -> Any:
            return await serve(echo, "127.0.0.1", 0)

        self._loop = BackgroundLoop("echo")
        self._server = self._loop.call(begin())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def end() -> None:
            self._server.close()
            await self._server.wait_closed()

        self._loop.call(end())
        self._loop.stop()
        self._loop = None

    def __enter__(self) -> EchoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<EchoServer {self.url} {'running' if self._loop else 'stopped'}>"


BINARY_TYPE_JS = """async ([url, bytes]) => {
  const results = {};
  for (const binaryType of ["blob", "arraybuffer"]) {
    const ws = new WebSocket(url);
    ws.binaryType = binaryType;                       // what a binary message becomes in the page
    const data = await new Promise((resolve, reject) => {
      ws.onopen = () => ws.send(new Uint8Array(bytes)); // a typed array goes out as a binary frame
      ws.onmessage = (event) => resolve(event.data);
      ws.onerror = () => reject(new Error("WebSocket error"));
    });
    const buffer = data instanceof Blob ? await data.arrayBuffer() : data;
    results[binaryType] = {type: Object.prototype.toString.call(data),
                           bytes: Array.from(new Uint8Array(buffer))};
    ws.close(1000);
  }
  return results;
}"""
"""What :func:`browser_binary` runs in Chromium: send bytes, get them back once per binaryType."""


def browser_binary(url: str, data: bytes = bytes([0, 1, 2, 254, 255]), timeout: float = 15) -> dict[str, Any]:
    """Open ``url`` in headless Chromium, send ``data`` as a binary message, once with each ``binaryType``.

    Returns {"blob": {"type": "[object Blob]", "bytes": [...]}, "arraybuffer": {...}, "seconds": ...},
    or {"error": reason} when no browser can be driven here.
    """
    from .. import browser

    reason = browser.unavailable()
    if reason:
        return {"error": reason}
    result: dict[str, Any] = {}

    def job() -> None:
        start = time.monotonic()
        try:
            from playwright.sync_api import sync_playwright

            with sync_playwright() as p:
                chromium = browser.launch(p, timeout=timeout * 1000)
                try:
                    page = chromium.new_page()
                    result.update(page.evaluate(BINARY_TYPE_JS, [url, list(data)]))
                finally:
                    chromium.close()
            result["seconds"] = time.monotonic() - start
        except Exception as error:  # noqa: BLE001 - reported to the caller
            result["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"

    thread = threading.Thread(target=job, name="binary-type", daemon=True)
    thread.start()
    thread.join(2 * timeout)
    if thread.is_alive():
        return {"error": f"headless Chromium did not finish within {2 * timeout:g} s"}
    return result


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


# The advice the article closes with, as we put it (its table has four rows for HTTP, three for WebSocket, then
# three misuses of HTTP and four of WebSocket; these are our words for the same ideas), and our row for SSE.
ADVICE = {
    "HTTP fits": [
        "fetching a resource: a page, a file, a record",
        "anything a cache should keep and serve again",
        "operations that must be safe to repeat: methods say which are safe and idempotent",
        "clear failures: a status code says what went wrong",
    ],
    "WebSocket fits": [
        "a page that must react within a moment",
        "updates that keep coming for as long as the page is open",
        "messages that either side may send at any time",
    ],
    "Server-sent events fit": [
        "updates that flow one way only, server to page, as text",
        "a page that should reconnect and resume by itself (Last-Event-ID)",
        "networks whose proxies and tools understand HTTP responses better than upgraded connections",
    ],
    "Signs HTTP is the wrong tool": [
        "the page keeps asking whether anything changed, instead of the user asking for something",
        "many small requests a second, each to carry a few bytes",
        "changes the page must see at once but cannot predict",
    ],
    "Signs WebSocket is the wrong tool": [
        "a connection held for a handful of events, or a few seconds, with no hurry",
        "one page opening several sockets to the same service",
        "connect, send one message, disconnect, and again",
        "rebuilding request/response (ids, errors, retries) on top of messages",
    ],
}

# scenario -> (description, the accepted answers (the first is the one the advice names), the question to ask,
# why, and what to say about an answer that is defensible but not accepted)
_SCENARIOS: dict[str, tuple[str, tuple[str, ...], str, str]] = {
    "stock_ticker": ("A stock ticker whose prices change about 10 times a second", ("websocket", "sse"),
                     "how often does news come, and who starts each exchange?",
                     "updates that keep coming: push them; polling would be many small requests a second. They "
                     "flow one way only, so server-sent events fit as well as a WebSocket"),
    "pdf_download": ("Downloading the course notes as a PDF", ("http",),
                     "is it one resource, fetched once, that a cache could keep?",
                     "a resource fetched once, which caches can keep; a socket for one event is a misuse"),
    "form_submit": ("Submitting a sign-up form once", ("http",),
                    "what tells the user that it worked or failed, and may it be retried safely?",
                    "one request that must succeed or fail clearly: HTTP has methods and status codes for exactly "
                    "this; 'connect, send, disconnect' is a misuse of WebSocket"),
    "cursors": ("Showing every player's mouse cursor in a shared whiteboard", ("websocket",),
                "how fast must the others see each move, and how many moves per second, in which direction?",
                "many small messages a second, in both directions, seen at once: one full-duplex connection"),
    "mobile_rest_api": ("The product catalogue API of a shopping app", ("http",),
                        "is it request/response on resources that caches could keep?",
                        "resources that caches can keep; over a WebSocket you would rebuild request/response "
                        "on top of messages"),
    "score_per_minute": ("A sports score that changes about once a minute, where a few seconds late is fine",
                         ("http",), "how many events, and must the client react fast?",
                         "few events and no hurry: a connection held open for them is a misuse; an occasional "
                         "(cacheable) GET does the job"),
    "class_chat": ("This course's class chat", ("websocket",),
                   "who speaks when, in which direction, and how soon should the others see it?",
                   "anyone may speak at any moment, and everyone should see it at once: messages both ways"),
    "job_finished": ("Telling a waiting user the moment their video has finished converting (which may take "
                     "seconds or an hour)", ("websocket", "sse", "push"),
                     "can the client predict when the change happens?",
                     "a change the page cannot predict but should see at once: polling for it is a misuse of "
                     "HTTP. One event, server to page: server-sent events fit as well as a WebSocket, and a "
                     "push notification (Web Push) reaches the user even after the tab is closed"),
}

_NOT_ACCEPTED = {
    "sse": "server-sent events carry the server's news only; here the page sends as often as it receives, so each "
           "of its messages would be one more HTTP request",
    "push": "a push notification (Web Push) suits rare news that must reach a user who may have closed the page; "
            "it is not a channel for a page that is open and talking",
}

SCENARIOS = {name: text for name, (text, *_) in _SCENARIOS.items()}
"""The scenarios of ``01.when_to_use``: name -> description (answer each with "http" or "websocket"; "sse" and
"push" are accepted where they fit)."""


def _transport(value: Any) -> str | None:
    text = str(value).strip().lower().replace(" ", "").replace("-", "")
    if text in ("http", "https", "rest", "polling"):
        return "http"
    if text in ("websocket", "websockets", "ws", "wss"):
        return "websocket"
    if text in ("sse", "serversentevents", "eventsource", "eventstream"):
        return "sse"
    if text in ("push", "webpush", "pushnotification", "notification"):
        return "push"
    return None


@exercise("01.when_to_use", hint="Go back to the advice: HTTP for resources you fetch (and cache) and for "
          "requests that need clear success or failure; WebSocket when updates keep coming, either side may speak "
          "and the client must react fast; server-sent events when the updates flow one way only.")
def _when_to_use(answer: Any) -> str:
    """HTTP or WebSocket (or SSE)? Decide each scenario with the advice that closes the article."""
    answer = need_dict(answer, list(_SCENARIOS))
    unclear = [k for k in _SCENARIOS if _transport(answer[k]) is None]
    expect(not unclear, "answer each with 'http' or 'websocket' ('sse' or 'push' where they fit); not understood: "
           + ", ".join(f"{k}={answer[k]!r}" for k in unclear))
    wrong = [k for k, (_, fits, _, _) in _SCENARIOS.items() if _transport(answer[k]) not in fits]
    right = len(_SCENARIOS) - len(wrong)
    notes = [f"{k}: {_NOT_ACCEPTED[_transport(answer[k])]}" for k in wrong if _transport(answer[k]) in _NOT_ACCEPTED]
    expect(not wrong, f"{right} of {len(_SCENARIOS)} right. Look again at: " + ", ".join(wrong),
           " · ".join([f"{k}: {_SCENARIOS[k][2]}" for k in wrong] + notes))
    chosen = {k: _transport(answer[k]) for k in _SCENARIOS}
    return "all right. Why each:" + "".join(
        f"\n • {k} ({chosen[k]}): {why}" for k, (_, _, _, why) in _SCENARIOS.items())
