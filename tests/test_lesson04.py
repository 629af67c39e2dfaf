"""Lesson 04's tools, figures and exercises, against a real ChatServer with short heartbeats."""

from __future__ import annotations

import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from chat_lesson import ChatServer
from chat_lesson.chat.wire import SUBPROTOCOL

from chat_lesson.lessons import plots  # noqa: E402
from chat_lesson.lessons.exercises import check  # noqa: E402
from chat_lesson.protocol.frames import Frame, Opcode, apply_mask, decode_frame, encode_frame  # noqa: E402
from chat_lesson.lessons.lesson04 import (DETECTION_SETTINGS, IDLE_TIMEOUTS, SCENARIO, BackgroundClient,  # noqa: E402
                                          frame_table, idle_timeout_table, measure_detection, measure_rtt)
from chat_lesson.notebook import wait_until  # noqa: E402
from chat_lesson.rawclient import RawClient  # noqa: E402
from chat_lesson.tap import Tap  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def fast_server():
    with ChatServer(port=0, quiet=True, ping_interval=0.5, ping_timeout=0.5, close_timeout=0.5) as server:
        yield server


# -- by hand ------------------------------------------------------------------------------------


def test_raw_client_pings_and_answers_the_servers_pings(fast_server):
    bare = RawClient(fast_server.port, protocols=[SUBPROTOCOL])
    sent = bare.send_frame(Opcode.PING, b"are you there?", mask_key=b"\x01\x02\x03\x04")
    assert sent[:6] == bytes([0x89, 0x8E, 1, 2, 3, 4]) and sent[6:] == apply_mask(b"are you there?", b"\x01\x02\x03\x04")
    pong = bare.recv_until(Opcode.PONG)
    assert pong.raw == bytes([0x8A, 14]) + b"are you there?" and pong.frame.mask_key is None
    for _ in range(2):        # answered by hand, the server keeps pinging: we are alive to it
        ping = bare.recv_until(Opcode.PING, timeout=2)
        assert ping.raw[:2] == bytes([0x89, 4]) and len(ping.frame.payload) == 4      # websockets: 4 random bytes
        bare.pong(ping.frame.payload)
    bare.close_handshake()
    bare.close()
    rows = frame_table(bare).rows
    assert [r["opcode"] for r in rows][-2:] == ["CLOSE", "CLOSE"]
    assert [r["dir"] for r in rows if r["opcode"] == "PONG"] == ["←", "→", "→"]
    assert all(r["MASK"] == 1 for r in rows if r["dir"] == "→") and all(r["MASK"] == 0 for r in rows if r["dir"] == "←")


def test_raw_client_that_stops_answering_is_closed_with_1011(fast_server):
    bare = RawClient(fast_server.port, protocols=[SUBPROTOCOL])
    close = bare.recv_until(Opcode.CLOSE, timeout=3)           # never answers the pings
    assert close.frame.payload[:2] == (1011).to_bytes(2, "big") and b"keepalive ping timeout" in close.frame.payload
    assert 0.5 + 0.5 - 0.1 < close.t < 0.5 + 0.5 + 0.5
    bare.close()


def test_background_client_measures_latency_and_keeps_answering(fast_server):
    with BackgroundClient(fast_server, "bg", ping_interval=0.1, ping_timeout=1) as client:
        wait_until(lambda: client.ws.latency > 0, timeout=3, what="a keepalive pong")
        assert 0 < client.ping() < 0.5
        time.sleep(1.6)                       # blocks this thread, not the client's loop: pings are answered
        assert client.ws.close_code is None
    assert client.ws.close_code == 1000


def test_wait_until_returns_the_value_or_times_out():
    assert wait_until(lambda: [1], timeout=0.1) == [1]
    with pytest.raises(TimeoutError, match="no thing within"):
        wait_until(lambda: None, timeout=0.05, what="thing")


# -- measurements ---------------------------------------------------------------------------------


def test_measure_rtt_follows_the_added_delay(fast_server):
    with Tap(fast_server, quiet=True) as tap:
        run = measure_rtt(tap, schedule=((0, 0.4), (100, 0.6)), every=0.1)
        assert tap.faults["c2s"]["delay_ms"] == 0               # set back at the end
    assert run.lost == 0 and [d for *_, d in run.phases] == [0, 100]
    assert run.median_ms(0) < 30
    assert 200 <= run.median_ms(100) < 260                       # 100 ms each way
    rows = run.table().rows
    assert [r["2 × delay"] for r in rows] == ["0 ms", "200 ms"] and rows[1]["pings"] >= 4
    ax = plots.rtt(run.points(), run.phases)
    assert any("median" in t.get_text() for t in ax.texts)
    ax.figure.canvas.draw()


def test_measure_detection_lies_between_timeout_and_interval_plus_timeout():
    run = measure_detection(ping_interval=1.0, ping_timeout=0.3, trials=3)
    assert len(run.trials) == 3 and [round(t.phase, 1) for t in run.trials] == [0.2, 0.5, 0.8]
    for trial in run.trials:
        assert (trial.close_code, trial.close_reason) == (1011, "keepalive ping timeout")
        assert 0.3 - 0.05 <= trial.detected <= 1.0 + 0.3 + 0.15
        assert abs(trial.detected - (1.0 - trial.phase + 0.3)) < 0.15           # the theory, per trial
    assert len(run.table().rows) == 3
    ax = plots.detection([t.phase for t in run.trials], run.times, 1.0, 0.3, predicted=(0.3, 1.3))
    assert len(ax.lines) >= 3
    ax.figure.canvas.draw()


def test_a_frozen_peer_on_the_timeline(fast_server):
    """The lesson's scene: last pong, freeze, unanswered ping, the server's 1011, all on tap.timeline()."""
    with Tap(fast_server, quiet=True) as tap:
        client = BackgroundClient(tap, "sleepy", ping_interval=None)
        try:
            wait_until(lambda: tap.frames(direction="c2s", opcode="pong"), timeout=3)
            tap.freeze()
            frozen = tap.events("fault")[-1]
            close = wait_until(lambda: tap.frames(direction="s2c", opcode="close"), timeout=3)[0]
            assert close.close_code == 1011
            unanswered = [f for f in tap.frames(direction="s2c", opcode="ping") if f.t > frozen.t][0]
            assert 0.5 - 0.05 < close.t - unanswered.t < 0.5 + 0.15
            tap.thaw()
            wait_until(lambda: client.ws.close_code is not None, timeout=3)
            assert client.ws.close_code == 1011
        finally:
            client.close()
        timeline = tap.timeline()
    ax = plots.frame_timeline(timeline, spans=[(frozen.t, close.t, "detected")],
                              notes=[(unanswered.t, "s2c", "unanswered ping")], title="frozen")
    labels = [t.get_text() for t in ax.texts]
    assert "close 1011" in labels and "detected" in labels and "unanswered ping" in labels
    assert any("freeze" in label for label in labels) and any("thaw" in label for label in labels)
    ax.figure.canvas.draw()


# -- exercises ------------------------------------------------------------------------------------


def right_pong(ping_bytes, key):
    ping, _ = decode_frame(ping_bytes)
    return encode_frame(Frame(True, Opcode.PONG, ping.payload), mask_key=key)


def test_pong_right_answer_passes():
    assert check("04.pong", right_pong)


@pytest.mark.parametrize("wrong, words", [
    (lambda p, k: encode_frame(Frame(True, Opcode.PONG, decode_frame(p)[0].payload)), "MASK is 0"),
    (lambda p, k: encode_frame(Frame(True, Opcode.PING, decode_frame(p)[0].payload), mask_key=k), "ping again"),
    (lambda p, k: encode_frame(Frame(True, Opcode.PONG, b""), mask_key=k), "exactly the ping's payload"),
    (lambda p, k: encode_frame(Frame(True, Opcode.PONG, decode_frame(p)[0].payload), mask_key=b"abcd"), "masking key"),
    (lambda p, k: bytes([0x8A, 0x80 | (p[1] & 0x7F)]) + k + p[2:], "exactly the ping's payload"),   # key not applied
    (lambda p, k: p, "ping again"),                                             # the ping itself
    (lambda p, k: None, "as bytes"),
])
def test_pong_wrong_answers_fail_and_say_why(wrong, words):
    result = check("04.pong", wrong)
    assert not result and words in result.message, result.message


def test_detection_time():
    interval, timeout = DETECTION_SETTINGS["ping_interval"], DETECTION_SETTINGS["ping_timeout"]
    assert check("04.detection_time", {"earliest": timeout, "latest": interval + timeout})
    assert check("04.detection_time", {"earliest": 0.51, "latest": 2.49})


@pytest.mark.parametrize("answer, words", [
    ({"earliest": 0.5, "latest": 2.0}, "still waits"),
    ({"earliest": 0, "latest": 2.5}, "at once"),
    ({"earliest": 2.5, "latest": 0.5}, "later than"),
    ({"earliest": 1.0, "latest": 2.5}, "earliest"),
    ({"earliest": 0.5, "latest": 4.0}, "latest"),
    ({"earliest": ..., "latest": ...}, "numbers"),
    ({"earliest": "0.5", "latest": "2.5"}, "numbers"),
    ({"min": 0.5, "max": 2.5}, "dict"),
])
def test_detection_time_wrong_answers(answer, words):
    result = check("04.detection_time", answer)
    assert not result and words in result.message, result.message


@pytest.mark.parametrize("interval, timeout", [(20, 10), (15, 15), (25, 5), (1, 3)])
def test_choose_intervals_accepts_every_choice_that_meets_the_rules(interval, timeout):
    assert check("04.choose_intervals", {"ping_interval": interval, "ping_timeout": timeout})


@pytest.mark.parametrize("interval, timeout, words", [
    (60, 5, "more often"),            # the proxy closes the line first
    (90, 5, "more often"),
    (20, 20, "deadline"),             # the course's defaults notice in up to 40 s: too slow here
    (25, 10, "deadline"),
    (5, 1, "bad link"),               # throws out a live student on a slow phone
    (10, 2, "bad link"),
    (0.5, 3, "for nothing"),
    (-1, 5, "positive"),
])
def test_choose_intervals_rejects_each_broken_rule(interval, timeout, words):
    result = check("04.choose_intervals", {"ping_interval": interval, "ping_timeout": timeout})
    assert not result and words in result.message, result.message
    assert SCENARIO == {"idle_timeout": 60.0, "deadline": 30.0, "worst_rtt": 2.0}


def test_idle_timeouts_are_cited():
    rows = idle_timeout_table().rows
    assert rows == IDLE_TIMEOUTS and len(rows) >= 5
    assert all(r["what"] and r["idle time-out"] and r["note"] for r in rows)
