"""Lesson 05: the class chat from a notebook: bots, a live view of the room, the client's source, and exercises.

Bots join and talk through :class:`~chat_lesson.chat.client.ChatClient`
(:func:`conversation`, :func:`ticker`); :class:`RoomView` shows who is
online, the last messages and the message rate, redrawn live in the
notebook; :func:`headroom` measures how many deliveries per second this
machine's server can make; :func:`js_function` and :func:`js_constant` read
the browser client's source (``static/app.js``).

The exercises ``05.me_command`` and ``05.deliveries`` start a fresh
``ChatServer(port=0)`` and talk to it through ``ChatClient`` s on a private
event loop thread, so they work the same from a notebook cell or a script,
and never touch the lesson's own server.

Every function here is bounded: each wait has a timeout, each loop an end.
The async functions run on the caller's loop (``await`` them in a cell), so
the clients live on the kernel's loop while the servers run on their own threads.
"""

from __future__ import annotations

import asyncio
import html
import re
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

from ..chat.client import ChatClient
from ..chat.room import ChatError
from ..chat.server import ChatServer
from ..chat.static import STATIC_DIR
from ..notebook import BackgroundLoop
from .exercises import Wrong, exercise, expect, need_dict, need_function

APP_JS = STATIC_DIR / "app.js"

# --------------------------------------------------------------------------------
# Lesson 05: bots and the live room
# --------------------------------------------------------------------------------

SCRIPT: list[tuple[str, str]] = [
    ("ada", "hello everyone :wave:"),
    ("grace", "hi ada! is this the WebSocket lesson?"),
    ("linus", "it is. nobody polled for this message: the server pushed it"),
    ("ada", "one TCP connection each, open the whole time"),
    ("grace", "and every message goes to all of us, me included"),
    ("linus", "<b>bold?</b> no: it shows as text in our client"),
    ("ada", "see you in lesson 06 :rocket:"),
]


async def conversation(server: Any, script: Sequence[tuple[str, str]] = SCRIPT, gap: float = 0.3) -> int:
    """Bots named in ``script`` join, say their lines in order (``gap`` s apart) and leave.

    Returns how many lines were sent.
    """
    names = list(dict.fromkeys(name for name, _ in script))
    bots = {}
    try:
        for name in names:
            bots[name] = await ChatClient(server, name, f"{name}@class.example").aconnect()
        for name, text in script:
            await bots[name].asend(text)
            await asyncio.sleep(gap)
    finally:
        for bot in bots.values():
            await bot.aclose()
    return len(script)


async def ticker(server: Any, name: str = "clock", every: float = 0.5, limit: int = 200) -> None:
    """A bot that says the time every ``every`` seconds (at most ``limit`` times) until cancelled."""
    async with ChatClient(server, name) as bot:
        for _ in range(limit):
            await bot.asend(f"tick {time.strftime('%H:%M:%S')}")
            await asyncio.sleep(every)


class RoomView:
    """Watch a ChatServer's room from a notebook: who is online, the last messages, the message rate.

    It registers a listener (``server.add_listener``) that records every
    broadcast event with its time; the listener runs on the server's thread and
    only appends to a list.  ``await view.watch(seconds)`` redraws the view in
    place every ``every`` seconds through IPython display handles, and returns.
    """

    def __init__(self, server: ChatServer, bucket: float = 0.25) -> None:
        self.server, self.bucket = server, bucket
        self.t0 = time.monotonic()
        self.events: list[tuple[float, dict[str, Any]]] = []
        server.add_listener(self._record)

    def _record(self, event: dict[str, Any]) -> None:
        self.events.append((time.monotonic() - self.t0, event))

    def close(self) -> None:
        """Stop recording (remove the listener)."""
        if self._record in self.server.listeners:
            self.server.listeners.remove(self._record)

    def messages(self) -> list[tuple[float, dict[str, Any]]]:
        return [(t, e) for t, e in list(self.events) if e["type"] == "message"]

    def rate(self, window: float = 1.0) -> tuple[list[float], list[float]]:
        """Messages per second over the last ``window`` s, sampled every ``bucket`` s since the view started."""
        now = time.monotonic() - self.t0
        times = [t for t, _ in self.messages()]
        xs = [i * self.bucket for i in range(int(now / self.bucket) + 1)] + [now]     # ending now
        return xs, [sum(x - window < t <= x for t in times) / window for x in xs]

    def html(self, last: int = 8) -> str:
        online = self.server.clients
        rows = "".join(
            f"<tr><td style='color:#666'>{t:5.1f} s</td><td><b>{html.escape(str(e['username']))}</b></td>"
            f"<td>{html.escape(str(e['message']))}</td></tr>"
            for t, e in self.messages()[-last:])
        return (f"<div><b>online ({len(online)}):</b> {html.escape(', '.join(online)) or '-'}<br>"
                f"<b>messages so far:</b> {self.server.stats.messages} · "
                f"<b>frames written (deliveries):</b> {self.server.stats.deliveries}"
                f"<table style='margin-top:4px'>{rows}</table></div>")

    def draw(self, ax: Any) -> None:
        xs, ys = self.rate()
        ax.clear()
        ax.plot(xs, ys, color="tab:blue", marker=".")
        ax.fill_between(xs, ys, alpha=0.2, color="tab:blue")
        ax.set_xlabel("seconds since the view started")
        ax.set_ylabel("messages / s")
        ax.set_title("message rate in the room: messages in the last second, measured live")
        ax.set_xlim(0, max(4.0, xs[-1]))
        ax.set_ylim(0, max([4.0, *ys]) * 1.2)
        ax.grid(alpha=0.3)

    async def watch(self, seconds: float = 5, every: float = 0.5) -> None:
        """Show the room and redraw it every ``every`` s for ``seconds`` s (the kernel's loop keeps running)."""
        import matplotlib.pyplot as plt
        from IPython.display import HTML, display

        fig, ax = plt.subplots(figsize=(7.5, 2.6), layout="constrained")
        plt.close(fig)                       # shown through the handle only, not again at the cell's end
        self.draw(ax)
        text = display(HTML(self.html()), display_id=True)
        chart = display(fig, display_id=True)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.sleep(min(every, max(0.0, end - time.monotonic())))
            self.draw(ax)
            text.update(HTML(self.html()))
            chart.update(fig)
        self.figure = fig


async def _server_thread_time(server: Any) -> float:
    """CPU seconds used so far by the server's thread (read on that thread)."""

    async def cpu() -> float:
        return time.thread_time()

    return asyncio.run_coroutine_threadsafe(cpu(), server.loop).result(5)


async def headroom(n_clients: int = 50, n_messages: int = 200, size: int = 100, timeout: float = 20) -> dict[str, float]:
    """Measure a ChatServer's fan-out: ``n_clients`` in a room, ``n_messages`` sent as fast as they go.

    The server runs on its own thread; the clients run on the caller's loop in
    the same process.  Returns the deliveries (frames written), the wall time
    from the first send to the last delivery, the server thread's CPU time, and
    from those deliveries per second and CPU microseconds per delivery.
    """
    with ChatServer(port=0, quiet=True, rate_limit=0) as server:
        clients = [await ChatClient(server, f"u{i:02d}").aconnect() for i in range(n_clients)]
        try:
            last = clients[-1].username
            for c in clients:     # everyone has seen the last one join, so every earlier join too
                await c.await_for(lambda e: e["type"] == "join" and e["username"] == last, timeout)
            deliveries0, cpu0 = server.stats.deliveries, await _server_thread_time(server)
            text = "x" * size

            async def reader(c: ChatClient) -> None:
                got = 0
                while got < n_messages:
                    if (await c.arecv(timeout, type="message")):
                        got += 1

            readers = [asyncio.create_task(reader(c)) for c in clients]
            start = time.perf_counter()
            for i in range(n_messages):
                await clients[i % n_clients].asend(text)
            async with asyncio.timeout(timeout):
                await asyncio.gather(*readers)
            wall = time.perf_counter() - start
            cpu = await _server_thread_time(server) - cpu0
            deliveries = server.stats.deliveries - deliveries0
        finally:
            for c in clients:
                await c.aclose()
    return {"clients": n_clients, "messages": n_messages, "deliveries": deliveries, "wall_s": wall,
            "server_cpu_s": cpu, "deliveries_per_s": deliveries / wall,
            "cpu_us_per_delivery": cpu / deliveries * 1e6, "wall_us_per_delivery": wall / deliveries * 1e6}


# --------------------------------------------------------------------------------
# Lesson 05: showing the code
# --------------------------------------------------------------------------------


def js_function(name: str, path: Path = APP_JS) -> str:
    """The source of ``function name(...) {...}`` in static/app.js (found by brace matching)."""
    source = path.read_text(encoding="utf-8")
    match = re.search(rf"^([ \t]*)function {re.escape(name)}\(", source, re.M)
    if match is None:
        raise KeyError(f"no function {name!r} in {path.name}")
    depth, i = 0, source.index("{", match.end())
    while True:
        if source[i] == "{":
            depth += 1
        elif source[i] == "}":
            depth -= 1
            if depth == 0:
                break
        i += 1
    indent = match.group(1)
    lines = source[match.start(): i + 1].splitlines()
    return "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines)


def js_constant(name: str, path: Path = APP_JS) -> float:
    """The number a ``var NAME = number;`` line of static/app.js sets."""
    match = re.search(rf"\bvar {re.escape(name)} = ([0-9.e]+);", path.read_text(encoding="utf-8"))
    if match is None:
        raise KeyError(f"no numeric var {name!r} in {path.name}")
    return float(match.group(1))


# =============================================================================
# Lesson 05: the live chat
# =============================================================================


def _live(scenario: Callable[[], Any], timeout: float = 20) -> Any:
    """Run ``scenario()`` (a coroutine function) on a private loop thread and return its result."""
    loop = BackgroundLoop("exercise-check")
    try:
        return loop.call(scenario(), timeout=timeout)
    finally:
        loop.stop()


async def _joined(server: ChatServer, name: str) -> ChatClient:
    client = await ChatClient(server, name).aconnect()
    await client.await_for(lambda e: e["type"] == "join" and e["username"] == name)
    return client


@exercise("05.me_command", hint="def me(username, args): return f\"* {username} {args}\" — and when args is empty "
          "(after .strip()), raise ChatError(\"bad_command\", \"...\") instead of returning a text.")
def _me_command(answer: Any) -> str:
    """Write the handler of a /me command: '/me waves' from alice is broadcast as '* alice waves'."""
    handler = need_function(answer, "me")
    # First on its own, for clear messages; then inside a real server.
    got = handler("alice", "waves")
    expect(isinstance(got, str), f"me('alice', 'waves') returned {got!r}; return the text to broadcast, a str")
    expect(got == "* alice waves", f"me('alice', 'waves') returned {got!r}; expected '* alice waves'",
           "a star, a space, the username, a space, then the action")
    try:
        handler("alice", "   ")
    except ChatError:
        pass
    except Exception as error:
        raise Wrong(f"me('alice', '   ') raised {type(error).__name__}; raise chat_lesson.server.ChatError(code, detail) "
                    "so that the server turns it into an error event", "from chat_lesson.server import ChatError") from None
    else:
        raise Wrong("me('alice', '   ') returned instead of raising: a /me with nothing to do should be refused",
                    "if not args.strip(): raise ChatError(\"bad_command\", \"usage: /me <action>\")")

    async def scenario() -> tuple[str, dict[str, Any], list[str]]:
        with ChatServer(port=0, quiet=True) as server:
            server.add_command("me", handler)
            alice, bob = await _joined(server, "alice"), await _joined(server, "bob")
            await alice.asend("/me waves :wave:")
            seen = (await bob.await_for(lambda e: e["type"] == "message"))["message"]
            await alice.asend("/me")
            error = await alice.await_for(lambda e: e["type"] == "error")
            await alice.asend("plain text")
            after = [e["message"] async for e in bob.aevents(timeout=0.5) if e["type"] == "message"]
            await alice.aclose()
            await bob.aclose()
            return seen, error, after

    seen, error, after = _live(scenario)
    expect(seen == "* alice waves :wave:", f"in a real server, bob saw {seen!r} for alice's '/me waves :wave:'")
    expect(after == ["plain text"], f"after the refused '/me', bob saw {after!r}; expected only 'plain text'",
           "a refused command must broadcast nothing")
    return (f"bob saw {seen!r}; alice's empty '/me' came back to her alone as an error event "
            f"(code {error['code']!r}: {error['detail']!r}), and the room saw nothing of it")


DELIVERY_CASES = {
    "message": "5 clients (our subprotocol) are in the room, all joined; one of them sends a chat message",
    "join": "then a 6th client connects and joins (our subprotocol)",
}
"""The questions of ``05.deliveries``: how many frames does the server write for each?"""


async def _count_deliveries() -> dict[str, int]:
    """Measure, on a real server, the frames written for each case of DELIVERY_CASES."""
    with ChatServer(port=0, quiet=True, rate_limit=0) as server:
        clients = [await _joined(server, f"c{i}") for i in range(5)]
        for c in clients[:-1]:            # everyone has seen the last join (c4 saw its own in _joined)
            await c.await_for(lambda e: e["type"] == "join" and e["username"] == "c4")
        before = server.stats.deliveries
        await clients[0].asend("hello")
        for c in clients:
            await c.await_for(lambda e: e["type"] == "message")
        message = server.stats.deliveries - before
        before = server.stats.deliveries
        clients.append(await ChatClient(server, "c5").aconnect())
        for c in clients:
            await c.await_for(lambda e: e["type"] == "join" and e["username"] == "c5")
        join = server.stats.deliveries - before
        for c in clients:
            await c.aclose()
    return {"message": message, "join": join}


@exercise("05.deliveries", hint="A message goes to everyone, the sender included. For a join, read Room.connect "
          "(what does a new connection hear before it has joined, when something was already said?) and "
          "Room.receive (which events does a join broadcast?).")
def _deliveries(answer: Any) -> str:
    """Predict how many frames (server.stats.deliveries) the server writes in two moments of a chat."""
    answer = need_dict(answer, list(DELIVERY_CASES))
    truth = _live(_count_deliveries)
    wrong = []
    for case in DELIVERY_CASES:
        try:
            given = float(answer[case])       # "5" and 13.0 are fine; 5.5 frames is not 5
        except (TypeError, ValueError):
            raise Wrong(f"{case}: give a number of frames, not {answer[case]!r}") from None
        if given != truth[case]:
            wrong.append(case)
    hints = {
        "message": "the sender gets its own message back too: that is how it knows the server took it",
        "join": "as it connects the newcomer hears a welcome, a presence (the whole list, to it alone) and, "
                "since something was said before, a history (3); then its join is broadcast as one event to "
                "everyone now in the room, the newcomer included: the others update their lists from it",
    }
    expect(not wrong, "measured on a real server, not right yet: " + ", ".join(f"{c} (you said {answer[c]})" for c in wrong),
           " · ".join(hints[c] for c in wrong))
    return (f"measured: {truth['message']} frames for the message, {truth['join']} for the join. "
            "Fan-out is the server's whole job: one message in, N frames out")
