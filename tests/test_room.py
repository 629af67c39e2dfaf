"""chat_lesson.lessons.lesson05 (bots, the live view) and lesson06 (the flaws, measured), and their exercises.

Real servers on 127.0.0.1, port 0; every wait is bounded.  The measurements
are checked for what the lessons say about them (the naive room stalls, ours
does not; the token bucket relays about burst + rate × t ...), not for
machine-dependent numbers.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path

import pytest

from chat_lesson import ChatClient, ChatServer
from chat_lesson import browser
from chat_lesson.lessons import lesson05, lesson06
from chat_lesson.lessons.exercises import check
from chat_lesson.lessons.lesson06 import FLAWS, MAX_BUFFER_CASE, SNIPPETS
from chat_lesson.lessons.naive import NaiveServer
from chat_lesson.chat.room import ChatError


# -- lesson 05: bots, the live view, headroom, the client's source ---------------------------


def test_room_view_records_broadcasts_and_renders_them_escaped():
    with ChatServer(port=0, quiet=True) as server:
        view = lesson05.RoomView(server, bucket=0.25)

        async def scenario():
            script = [("ada", "<b>hi</b>"), ("grace", "hello"), ("ada", "bye")]
            assert await lesson05.conversation(server, script, gap=0.05) == 3
            async with asyncio.timeout(5):
                while len(view.messages()) < 3:
                    await asyncio.sleep(0.01)

        asyncio.run(scenario())
        messages = [e["message"] for _, e in view.messages()]
        assert messages == ["<b>hi</b>", "hello", "bye"]
        xs, rates = view.rate(window=60)          # one window holds them all
        assert len(xs) == len(rates) and rates[-1] * 60 == pytest.approx(3)
        page = view.html()
        assert "&lt;b&gt;hi&lt;/b&gt;" in page and "<b>hi</b>" not in page
        view.close()
        assert view._record not in server.listeners


def test_ticker_talks_until_cancelled():
    with ChatServer(port=0, quiet=True) as server:
        async def scenario():
            async with ChatClient(server, "listener") as listener:
                task = asyncio.create_task(lesson05.ticker(server, every=0.05))
                for _ in range(3):
                    event = await listener.await_for(lambda e: e["type"] == "message")
                    assert event["username"] == "clock" and event["message"].startswith("tick ")
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

        asyncio.run(scenario())


def test_headroom_counts_every_delivery():
    result = asyncio.run(lesson05.headroom(n_clients=5, n_messages=20))
    assert result["deliveries"] == 100
    assert result["wall_s"] > 0 and result["server_cpu_s"] > 0
    assert result["cpu_us_per_delivery"] == pytest.approx(result["server_cpu_s"] / 100 * 1e6)


def test_settle_waits_until_a_value_stops_changing():
    values = iter([1, 2, 3] + [3] * 1000)
    assert asyncio.run(lesson06.settle(lambda: next(values), quiet=0.1, timeout=2)) == 3


def test_js_function_and_constant_read_static_app_js():
    source = lesson05.js_function("connect")
    assert source.startswith("function connect(") and source.rstrip().endswith("}")
    assert "new WebSocket(wsURL(), SUBPROTOCOL)" in source
    assert "textContent" in lesson05.js_function("el")
    assert lesson05.js_constant("BACKOFF_FIRST") < lesson05.js_constant("BACKOFF_MAX")
    with pytest.raises(KeyError):
        lesson05.js_function("noSuchFunction")


# -- lesson 06: the flaws, measured on both servers ------------------------------------------


def test_stall_timeline_naive_stops_ours_keeps_going():
    big = dict(size=30_000, rate=100, seconds=2.5)     # 3 MB/s: the naive room stalls within about a second
    with NaiveServer(port=0) as naive:
        stalled = asyncio.run(lesson06.stall_timeline(naive, **big))
    with ChatServer(port=0, quiet=True, rate_limit=0, max_message=65536, max_frame=131072) as ours:
        kept = asyncio.run(lesson06.stall_timeline(ours, **big))
        assert ours.stats.closed_slow == 1
    assert stalled.delivered < stalled.sent * 3
    assert stalled.rate_between(stalled.seconds - 0.5, stalled.seconds) == 0
    assert stalled.dropped_at is None
    assert kept.delivered == kept.sent * 3
    assert kept.dropped_at is not None and kept.dropped_at < kept.seconds
    xs, counts = kept.per_bucket()
    assert len(xs) == len(counts) == round(kept.seconds / kept.bucket) and sum(counts) <= kept.delivered


def test_flood_naive_relays_all_ours_relays_burst_plus_rate():
    with NaiveServer(port=0) as naive:
        flooded = asyncio.run(lesson06.flood(naive, seconds=0.3, settle=0.3))
    with ChatServer(port=0, quiet=True, rate_limit=10, burst=20) as ours:
        limited = asyncio.run(lesson06.flood(ours, seconds=0.3, settle=0.3))
    assert flooded.relayed == flooded.sent > 100 and flooded.errors == 0
    assert 19 <= limited.relayed <= 20 + 10 * 0.3 + 2       # the burst, less the join's token, plus the refill
    assert limited.errors <= 2                                 # one warning a second, not one per refused frame
    assert limited.closed == 1008                              # and a flood that goes on is closed


def test_big_message_relayed_by_naive_closed_1009_by_ours():
    with NaiveServer(port=0) as naive:
        relayed = asyncio.run(lesson06.big_message(naive, size=10 * 2**20, others=2))
    with ChatServer(port=0, quiet=True) as ours:
        refused = asyncio.run(lesson06.big_message(ours, size=10 * 2**20, others=2))
    assert relayed.received == {"r0": 10 * 2**20, "r1": 10 * 2**20} and relayed.sender_close is None
    assert refused.received == {} and refused.sender_close == 1009
    assert relayed.others_still_chatting and refused.others_still_chatting


def test_origin_probe():
    with NaiveServer(port=0) as naive, ChatServer(port=0, quiet=True) as ours:
        assert asyncio.run(lesson06.origin_probe(naive)).startswith("accepted")
        assert asyncio.run(lesson06.origin_probe(ours)) == "refused: HTTP 403 for Origin http://evil.example"
        assert asyncio.run(lesson06.origin_probe(ours, ours.url.rstrip("/"))).startswith("accepted")


def test_email_probe():
    address = "ada.lovelace@school.example"
    with NaiveServer(port=0) as naive, ChatServer(port=0, quiet=True) as ours:
        leaked = asyncio.run(lesson06.email_probe(naive, address))
        hashed = asyncio.run(lesson06.email_probe(ours, address))
    assert leaked["email"] == address
    assert hashed["email"] == "" and hashed["avatar"] == hashlib.md5(address.encode()).hexdigest()
    assert address not in str(hashed)


def test_bad_handshakes_answered_and_the_server_lives_on():
    with ChatServer(port=0, quiet=True) as server:
        answers = [answer for _, answer in lesson06.bad_handshakes(server)]
        assert answers[:3] == ["HTTP/1.1 400 Bad Request", "HTTP/1.1 426 Upgrade Required", "HTTP/1.1 400 Bad Request"]

        async def still_alive():
            async with ChatClient(server, "survivor") as c:
                await c.asend("still here")
                return (await c.await_for(lambda e: e["type"] == "message"))["message"]

        assert asyncio.run(still_alive()) == "still here"


def test_stuck_client_completes_the_handshake_and_is_closed_by_ours():
    with ChatServer(port=0, quiet=True, rate_limit=0, max_buffer=64 * 1024) as server:
        stuck = lesson06.stuck_client(server)
        try:
            async def talk():
                async with ChatClient(server, "talker", legacy=True) as c:
                    async def read():                # the talker reads its own echoes as they come
                        async for _ in c.ws:
                            pass

                    reader = asyncio.create_task(read())
                    async with asyncio.timeout(15):
                        for i in range(1000):
                            if server.stats.closed_slow:
                                break
                            await c.asend(f"{i:04d}" + "x" * 3000)
                            await asyncio.sleep(0.001)
                    reader.cancel()
                    assert server.stats.closed_slow == 1        # the stuck client, not the talker
                    assert server.clients == ["talker"]

            asyncio.run(talk())
        finally:
            stuck.close()


IN_CI = os.environ.get("CI") == "true"


def test_browser_available_explains_what_is_missing(monkeypatch):
    monkeypatch.setattr(browser, "CHROMIUM", "/nonexistent/chromium")
    assert "Chromium not found at /nonexistent/chromium" in lesson06.browser_available()


@pytest.mark.browser
def test_browser_xss_runs_only_on_the_innerhtml_page_of_the_naive_server():
    reason = lesson06.browser_available()
    if reason:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "index.html").write_text(lesson06.INNER_HTML_PAGE)
        with NaiveServer(port=0, static=folder) as naive, ChatServer(port=0, quiet=True, static=folder) as escaping, \
                ChatServer(port=0, quiet=True) as ours:
            results = lesson06.browser_xss([
                ("naive", naive.url, naive.ws_url, "innerhtml"),
                ("escaping", escaping.url, escaping.ws_url, "innerhtml"),
                ("ours", ours.url, ours.ws_url, "ours"),
            ])
    by = {r.label: r for r in results}
    assert by["naive"].pwned and by["naive"].images == 1
    assert not by["escaping"].pwned and by["escaping"].images == 0 and lesson06.XSS in by["escaping"].shown
    assert not by["ours"].pwned and by["ours"].images == 0 and by["ours"].shown == lesson06.XSS


# -- the exercises of lessons 05 and 06 ---------------------------------------------------


def good_me(username, args):
    if not args.strip():
        raise ChatError("bad_command", "usage: /me <action>")
    return f"* {username} {args.strip()}"


@pytest.mark.parametrize("exercise_id,answer", [
    ("05.me_command", good_me),
    ("05.deliveries", {"message": 5, "join": 9}),
    ("05.deliveries", {"message": "5", "join": 9.0}),
    ("06.find_the_flaw", {"A": "stall", "B": "html", "C": "email", "D": "fatal"}),
    ("06.max_buffer", 30_000),
    ("06.max_buffer", 32 * 1024),
])
def test_right_answers_pass(exercise_id, answer):
    result = check(exercise_id, answer)
    assert result, str(result)


def no_error_me(username, args):
    return f"* {username} {args}"


def crashing_me(username, args):
    raise KeyError(args)


@pytest.mark.parametrize("exercise_id,answer,fragment", [
    ("05.me_command", lambda u, a: f"{u} {a}", "expected '* alice waves'"),
    ("05.me_command", lambda u, a: None, "returned None"),
    ("05.me_command", no_error_me, "should be refused"),
    ("05.me_command", crashing_me, "KeyError"),
    ("05.me_command", "* alice waves", "function itself"),
    ("05.deliveries", {"message": 4, "join": 9}, "sender gets its own message"),
    ("05.deliveries", {"message": 5, "join": 7}, "the newcomer hears a welcome"),
    ("05.deliveries", {"message": "five", "join": 9}, "number of frames"),
    ("05.deliveries", {"message": 5, "join": 8}, "history"),
    ("05.deliveries", {"message": 5.5, "join": 9}, "sender gets its own message"),
    ("06.find_the_flaw", {"A": "race", "B": "html", "C": "email", "D": "fatal"}, "3 of 4"),
    ("06.find_the_flaw", {"A": "stall", "B": "html", "C": "email", "D": "oops"}, "choose"),
    ("06.max_buffer", 30_000 * 30, "all 30 clients"),
    ("06.max_buffer", 6_000, "one second"),
    ("06.max_buffer", 10_000, "too small"),
    ("06.max_buffer", 200_000, "smallest"),
    ("06.max_buffer", 45_000, "smallest"),
    ("06.max_buffer", "lots", "number of bytes"),
])
def test_wrong_answers_fail_with_a_hint(exercise_id, answer, fragment):
    result = check(exercise_id, answer)
    assert not result
    assert fragment in result.message + (result.hint or ""), str(result)


@pytest.mark.parametrize("exercise_id", ["05.deliveries", "06.find_the_flaw"])
def test_placeholders_fail(exercise_id):
    keys = {"05.deliveries": ["message", "join"], "06.find_the_flaw": list(SNIPPETS)}[exercise_id]
    result = check(exercise_id, dict.fromkeys(keys, ...))
    assert not result and "replace the ..." in result.message


def test_exercise_data_is_consistent():
    assert set(FLAWS) >= {"stall", "origin", "size", "rate", "html", "email", "fatal", "race"}
    assert set(SNIPPETS) == {"A", "B", "C", "D"}
    assert set(MAX_BUFFER_CASE) == {"students", "messages_per_second", "frame_bytes", "freeze_seconds"}


# -- lesson 05: the browser's side; lesson 06: a class with a troll ------------------------


def test_room_view_draws_emoji_and_aligns_left():
    assert lesson05.with_emoji("see you :rocket: :no_such_code:") == "see you 🚀 :no_such_code:"
    with ChatServer(port=0, quiet=True) as server:
        view = lesson05.RoomView(server)
        view.events.append((0.0, {"type": "message", "username": "ada", "message": "go :rocket:"}))
        page = view.html()
        view.close()
    assert "🚀" in page and "text-align:left" in page


def test_echo_server_echoes_and_refuses_its_refused_path():
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with lesson05.EchoServer() as echo:
        with connect(echo.ws_url) as ws:
            ws.send("hi")
            assert ws.recv(timeout=5) == "hi"
        with pytest.raises(InvalidStatus) as refused:
            connect(echo.ws_url.rsplit("/", 1)[0] + lesson05.REFUSED_PATH)
        assert refused.value.response.status_code == 403


@pytest.mark.browser
def test_browser_side_sees_ready_states_close_events_and_buffered_amount():
    reason = lesson05.browser_unavailable()
    if reason:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    from chat_lesson.tap import Tap

    with lesson05.EchoServer() as echo, Tap(echo, quiet=True) as tap:
        side = lesson05.browser_side(tap, limit=500_000)
    assert [state for _, state, _ in side.life] == [0, 1, 1, 1, 2, 3]
    assert side.echo == "hello from the page" and ("sent", "hello from the page") in side.frames
    assert side.close == {"code": 4000, "reason": "lesson over", "wasClean": True}
    assert side.cut["code"] == 1006 and not side.cut["wasClean"]
    assert side.refused["code"] == 1006 and not side.refused["wasClean"] and "403" in side.refused_status
    assert max(amount for _, amount, _ in side.buffered) > 4 * side.buffered[0][1]   # it grew


def test_naive_impersonation_shows_two_alices():
    with NaiveServer(port=0) as naive:
        first, second = asyncio.run(lesson06.naive_impersonation(naive))
    assert first["username"] == second["username"] == "Alice" and first["message"] != second["message"]


def test_try_names_refuses_lookalikes_and_invisible_characters():
    with ChatServer(port=0, quiet=True) as server:
        results = dict(asyncio.run(lesson06.try_names(server, ["Alice", "\u0410lice", "Al\u202eice", "Bob"])))
    assert results["Alice"].startswith("accepted") and results["Bob"].startswith("accepted")
    assert "name_taken" in results["\u0410lice"] and "U+202E" in results["Al\u202eice"]


def test_the_teacher_joins_with_the_secret_and_kicks_from_a_cell():
    with ChatServer(port=0, quiet=True) as server:
        async def scenario():
            alice = await ChatClient(server, "Alice").aconnect()
            troll = await ChatClient(server, "troll").aconnect()
            teacher = await lesson06.TeacherClient(server, "Teacher", server.room.secret).aconnect()
            joined = await teacher.await_for(lambda e: e["type"] == "join" and e["username"] == "Teacher")
            await asyncio.to_thread(server.kick, "troll")
            seen = await alice.await_for(lambda e: e["type"] == "system")
            await troll.ws.wait_closed()
            for c in (alice, teacher):
                await c.aclose()
            return joined, seen, troll.ws.close_code

        joined, seen, code = asyncio.run(scenario())
    assert joined.get("teacher") is True
    assert seen["action"] == "kick" and seen["target"]["username"] == "troll" and code == 4001


def test_churn_is_amplified_without_the_guards_and_refused_with_them():
    with ChatServer(port=0, quiet=True, **lesson06.unbudgeted()) as server:
        open_room = asyncio.run(lesson06.churn(server, "127.0.0.3", seconds=0.5))
    with ChatServer(port=0, quiet=True) as server:
        guarded = asyncio.run(lesson06.churn(server, "127.0.0.3", seconds=0.5))
    assert open_room.accepted == open_room.tried and open_room.events == 2 * open_room.accepted
    assert guarded.refused[503] > 0 and guarded.accepted <= server.limits.connect_burst + 2
    assert guarded.events < open_room.events


def test_a_reader_that_is_behind_misses_news_not_messages():
    with ChatServer(port=0, quiet=True, **lesson06.unbudgeted()) as server:
        result = asyncio.run(lesson06.behind_reader(server, messages=60, pause=0.5))
    assert result.slow["message"] == result.healthy["message"] == 60
    assert result.slow["join"] + result.slow["leave"] < result.healthy["join"] + result.healthy["leave"]
    assert result.slow["presence"] >= 2 and result.closed_slow == 0


def test_the_host_allowlist_refuses_a_rebound_name():
    with NaiveServer(port=0) as naive, ChatServer(port=0, quiet=True) as ours, \
            ChatServer(port=0, quiet=True, allow_hosts=["chat.school.example"]) as named:
        def status(server, name):
            host = f"{name}:{server.port}"
            return lesson06.handshake_status(server, host, origin=f"http://{host}")

        assert status(naive, "evil.example").startswith("HTTP/1.1 101")
        refused = status(ours, "evil.example")
        assert refused.startswith("HTTP/1.1 403") and "evil.example" in refused
        assert status(named, "chat.school.example").startswith("HTTP/1.1 101")
