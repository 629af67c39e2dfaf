"""Exercises of lessons 05 (the live chat) and 06 (hardening), checked against real servers.

Importing this module registers them with :mod:`chat_lesson.exercises`::

    import chat_lesson.exercises_chat
    from chat_lesson.exercises import check
    check("05.me_command", me)

The lesson 05 checkers start a fresh ``ChatServer(port=0)`` and talk to it
through ``ChatClient``s on a private event loop thread, so they work the same
from a notebook cell or a script, and never touch the lesson's own server.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from ..chat.client import ChatClient
from .exercises import Wrong, exercise, expect, need_choices, need_dict, need_function
from ..notebook import BackgroundLoop
from ..chat.server import ChatError, ChatServer

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
        for c in clients:
            await c.await_for(lambda e: e["type"] == "presence" and len(e["online"]) == 5)
        before = server.stats.deliveries
        await clients[0].asend("hello")
        for c in clients:
            await c.await_for(lambda e: e["type"] == "message")
        message = server.stats.deliveries - before
        before = server.stats.deliveries
        clients.append(await ChatClient(server, "c5").aconnect())
        for c in clients:
            await c.await_for(lambda e: e["type"] == "presence" and len(e["online"]) == 6)
        join = server.stats.deliveries - before
        for c in clients:
            await c.aclose()
    return {"message": message, "join": join}


@exercise("05.deliveries", hint="A message goes to everyone, the sender included. For a join, read ChatServer._handle "
          "(what does a new connection get before it has joined, when something was already said?) and "
          "_join (which events does it broadcast?).")
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
        "join": "as it connects the newcomer gets a presence and, since something was said before, a history "
                "(2); then _join broadcasts two events (join, presence) to everyone now in the room, the "
                "newcomer included",
    }
    expect(not wrong, "measured on a real server, not right yet: " + ", ".join(f"{c} (you said {answer[c]})" for c in wrong),
           " · ".join(hints[c] for c in wrong))
    return (f"measured: {truth['message']} frames for the message, {truth['join']} for the join. "
            "Fan-out is the server's whole job: one message in, N frames out")


# =============================================================================
# Lesson 06: hardening
# =============================================================================

FLAWS = {
    "stall": "one client that stops reading holds up everyone",
    "origin": "any web page may connect (no Origin check)",
    "size": "no limit on a message's size",
    "rate": "no limit on how fast one client may send",
    "html": "a message's HTML runs in the readers' pages",
    "email": "a private address is sent to everyone",
    "fatal": "one bad client stops the whole server",
    "race": "shared data changed from several threads at once",
}
"""The choices for ``06.find_the_flaw``."""

SNIPPETS = {
    "A": ("python", '''\
async def relay(text):
    for member in list(members.values()):
        await member.ws.send(text)      # returns once the bytes are written'''),
    "B": ("javascript", '''\
function show(msg) {
  const p = document.createElement("p");
  p.innerHTML = "<b>" + msg.username + "</b> " + msg.message;
  list.append(p);
}'''),
    "C": ("python", '''\
def on_message(member, data):
    broadcast({"type": "message", "from": data["username"],
               "gravatar": data["email"], "message": data["message"][:4000]})'''),
    "D": ("python", '''\
async def handler(ws):
    try:
        hello = json.loads(await ws.recv())
    except ValueError as exc:
        log.critical("bad client: %s", exc)
        sys.exit(1)'''),
}
"""Four short snippets, one flaw each: name -> (language, code)."""

_SNIPPET_TRUTH = {
    "A": ("stall", "each send is awaited in turn: while one member's buffers are full, the loop waits there, "
                   "and everyone after it (and every later message) waits too."),
    "B": ("html", "createElement is safe, but innerHTML then parses the text as HTML: use textContent."),
    "C": ("email", "look at what goes under 'gravatar': the address itself, not its hash."),
    "D": ("fatal", "sys.exit() raises SystemExit, which asyncio does not catch: it ends the event loop and the "
                   "whole server, like Go's log.Fatal. Log it and close only this connection."),
}


@exercise("06.find_the_flaw", hint="Read each snippet as an attacker (or an unlucky student) would: what input or "
          "behaviour of ONE client makes it hurt everyone else?")
def _find_the_flaw(answer: Any) -> str:
    """Name the flaw (from FLAWS) in each of four short server or client snippets."""
    need_choices(answer, _SNIPPET_TRUTH, FLAWS, "FLAWS")
    return "all four. Why:" + "".join(f"\n • {k} ({flaw}): {why}" for k, (flaw, why) in _SNIPPET_TRUTH.items())


MAX_BUFFER_CASE = {"students": 30, "messages_per_second": 20, "frame_bytes": 300, "freeze_seconds": 5}
"""The numbers of ``06.max_buffer``: the whole room's message rate, the size of one frame, the longest pause to survive."""


@exercise("06.max_buffer", hint="max_buffer is per client: it holds what is written to ONE client while that client "
          "is not reading. Bytes per second to one client × seconds of freeze.")
def _max_buffer(answer: Any) -> str:
    """The smallest max_buffer (bytes) that lets a client survive a freeze of freeze_seconds."""
    c = MAX_BUFFER_CASE
    per_second = c["messages_per_second"] * c["frame_bytes"]
    right = per_second * c["freeze_seconds"]
    try:
        given = float(answer)
    except (TypeError, ValueError):
        raise Wrong(f"give a number of bytes, not {answer!r}") from None
    expect(not math.isclose(given, right * c["students"], rel_tol=0.1),
           f"{given:,.0f} bytes is the buffer of all {c['students']} clients together",
           "each client has its own buffer; one frozen client's buffer fills with what is sent to it alone")
    expect(not math.isclose(given, per_second, rel_tol=0.1),
           f"{given:,.0f} bytes is one second of the room's traffic; the freeze lasts {c['freeze_seconds']} s")
    expect(given >= right * 0.95, f"{given:,.0f} bytes is too small: the frozen client would be closed early")
    expect(given <= right * 1.1, f"{given:,.0f} bytes would work, but what is the smallest?")
    default = 256 * 1024
    return (f"{right:,} bytes ({right / 1024:.0f} KiB): {c['messages_per_second']} × {c['frame_bytes']} B = "
            f"{per_second:,} B/s for {c['freeze_seconds']} s (the kernel's own buffers add a little slack). "
            f"ChatServer's default 256 KiB covers {default / per_second:.0f} s of this room, and if all "
            f"{c['students']} froze at once they would hold about {c['students'] * default / 2**20:.1f} MiB (plus the kernel's "
            "buffers): bounded.")


__all__ = ["DELIVERY_CASES", "FLAWS", "SNIPPETS", "MAX_BUFFER_CASE"]
