"""The HTTP polling baseline of lesson 01: short poll, long poll, keep-alive, Connection: close."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from chat_lesson import ChatClient, ChatServer
from chat_lesson.protocol.handshake import parse_head
from chat_lesson.lessons.polling import PollServer
from chat_lesson.notebook import wait_until


@pytest.fixture
def chat():
    with ChatServer(port=0, quiet=True, rate_limit=0) as server:
        yield server


@pytest.fixture
def poll(chat):
    with PollServer(chat, port=0) as p:
        yield p


@pytest.fixture
def alice(chat):
    client = ChatClient(chat, "alice").connect()
    yield client
    client.close()


def say(client: ChatClient, poll: PollServer, *texts: str) -> None:
    """Send chat messages and wait until the poll server holds them all."""
    target = poll.last_id + len(texts)
    for text in texts:
        client.send(text)
    deadline = time.monotonic() + 5
    while poll.last_id < target:
        assert time.monotonic() < deadline, "the poll server never got the messages"
        time.sleep(0.005)


def ask(sock: socket.socket, path: str, *headers: str, version: str = "HTTP/1.1") -> tuple[int, dict[str, str], bytes]:
    """Send one GET on ``sock`` and read exactly one response: (status, headers, body)."""
    lines = [f"GET {path} {version}", "Host: 127.0.0.1", *headers]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before the response head"
        data += chunk
    head_bytes, _, rest = data.partition(b"\r\n\r\n")
    head = parse_head(head_bytes + b"\r\n\r\n")
    length = int(head.headers.get("Content-Length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of the body"
        rest += chunk
    assert len(rest) == length, "more bytes than Content-Length: the next response must not start unasked"
    return head.status, {k.lower(): v for k, v in head.headers}, rest


def connect(poll: PollServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", poll.port), timeout=10)


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(2)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        return False


# -- short polling -----------------------------------------------------------------


def test_short_poll_returns_messages_after_since_at_once(chat, poll, alice):
    say(alice, poll, "one", "two", "three")
    with connect(poll) as sock:
        status, headers, body = ask(sock, "/poll?since=0")
        assert status == 200 and headers["content-type"] == "application/json"
        events = json.loads(body)
        assert [e["message"] for e in events] == ["one", "two", "three"]
        assert all(e["type"] == "message" and e["username"] == "alice" for e in events)
        first = events[0]["id"]
        assert [e["message"] for e in json.loads(ask(sock, f"/poll?since={first + 1}")[2])] == ["three"]
        started = time.monotonic()
        assert json.loads(ask(sock, f"/poll?since={poll.last_id}")[2]) == []
        assert time.monotonic() - started < 0.5, "a short poll answers at once, even when empty"


def test_only_message_events_are_kept(chat, poll, alice):
    bob = ChatClient(chat, "bob").connect()     # join and presence events go to the listener too
    bob.close()
    say(alice, poll, "hi")
    assert [e["type"] for e in poll.since(0)] == ["message"]


def test_history_is_bounded(chat, alice):
    with PollServer(chat, port=0, history=5) as small:
        say(alice, small, *[f"m{i}" for i in range(8)])
        assert [e["message"] for e in small.since(0)] == ["m3", "m4", "m5", "m6", "m7"]


def test_one_answer_is_capped_and_a_poller_pages_through(chat, poll, alice, monkeypatch):
    monkeypatch.setattr(PollServer, "MAX_ANSWER", 3)
    say(alice, poll, *[f"m{i}" for i in range(7)])
    with connect(poll) as sock:
        got, since = [], 0
        for _ in range(5):                                   # bounded: 7 messages in pages of 3
            page = json.loads(ask(sock, f"/poll?since={since}")[2])
            assert len(page) <= 3
            if not page:
                break
            got += [e["message"] for e in page]
            since = page[-1]["id"]
    assert got == [f"m{i}" for i in range(7)]


def test_events_carry_the_same_json_as_websocket_frames(chat, poll, alice):
    say(alice, poll, "same bytes")
    pushed = alice.recv(type="message")
    with connect(poll) as sock:
        polled = json.loads(ask(sock, f"/poll?since={pushed['id'] - 1}")[2])
    assert polled == [pushed]


# -- long polling ------------------------------------------------------------------


def test_long_poll_wakes_when_a_message_arrives(chat, poll, alice):
    since = poll.last_id
    result = {}

    def wait_for_news():
        with connect(poll) as sock:
            started = time.monotonic()
            result["answer"] = ask(sock, f"/poll?since={since}&wait=10")
            result["seconds"] = time.monotonic() - started

    waiter = threading.Thread(target=wait_for_news)
    waiter.start()
    time.sleep(0.4)
    assert "answer" not in result, "the long poll answered before there was anything to say"
    say(alice, poll, "wake up")
    waiter.join(5)
    status, _, body = result["answer"]
    assert status == 200 and [e["message"] for e in json.loads(body)] == ["wake up"]
    assert 0.35 < result["seconds"] < 3


def test_long_poll_wakes_every_waiter(chat, poll, alice):
    since, answers = poll.last_id, []

    def wait_for_news():
        with connect(poll) as sock:
            answers.append(json.loads(ask(sock, f"/poll?since={since}&wait=10")[2]))

    waiters = [threading.Thread(target=wait_for_news) for _ in range(3)]
    for w in waiters:
        w.start()
    wait_until(lambda: poll.parked == 3, what="three long polls parked on the server")   # all past `since`
    said = time.monotonic()
    say(alice, poll, "everyone")
    for w in waiters:
        w.join(5)
    assert [[e["message"] for e in a] for a in answers] == [["everyone"]] * 3
    assert time.monotonic() - said < 2 and poll.parked == 0     # woken by the message, not by wait=10


def test_long_poll_times_out_empty(poll):
    with connect(poll) as sock:
        started = time.monotonic()
        status, _, body = ask(sock, f"/poll?since={poll.last_id}&wait=0.5")
        seconds = time.monotonic() - started
    assert status == 200 and json.loads(body) == []
    assert 0.45 < seconds < 2


def test_long_poll_answers_at_once_when_news_already_waits(chat, poll, alice):
    say(alice, poll, "already here")
    with connect(poll) as sock:
        started = time.monotonic()
        body = ask(sock, f"/poll?since={poll.last_id - 1}&wait=10")[2]
    assert [e["message"] for e in json.loads(body)] == ["already here"]
    assert time.monotonic() - started < 0.5


# -- connections -------------------------------------------------------------------


def test_keep_alive_reuses_one_connection(chat, poll, alice):
    before = dict(poll.stats)
    with connect(poll) as sock:
        for i in range(4):
            say(alice, poll, f"n{i}")
            status, headers, body = ask(sock, f"/poll?since={poll.last_id - 1}")
            assert status == 200 and "connection" not in headers
            assert json.loads(body)[0]["message"] == f"n{i}"
    assert poll.stats["connections"] - before["connections"] == 1
    assert poll.stats["requests"] - before["requests"] == 4


def test_connection_close_closes(poll):
    with connect(poll) as sock:
        status, headers, _ = ask(sock, "/poll?since=0", "Connection: close")
        assert status == 200 and headers["connection"] == "close"
        assert closed_by_server(sock)


def test_http_1_0_closes_unless_keep_alive(poll):
    with connect(poll) as sock:
        ask(sock, "/poll?since=0", version="HTTP/1.0")
        assert closed_by_server(sock)
    with connect(poll) as sock:
        ask(sock, "/poll?since=0", "Connection: keep-alive", version="HTTP/1.0")
        assert ask(sock, "/poll?since=0", version="HTTP/1.1")[0] == 200


def test_errors(poll):
    with connect(poll) as sock:
        assert ask(sock, "/nothing")[0] == 404
        assert ask(sock, "/poll?since=abc")[0] == 400
        sock.sendall(b"POST /poll HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"405 Method Not Allowed" in sock.recv(4096)
    with connect(poll) as sock:
        sock.sendall(b"GET /poll?since=0 HTTP/1.1\r\nHost x\r\n\r\n")        # no colon: malformed
        assert sock.recv(4096).startswith(b"HTTP/1.1 400 ")
        assert closed_by_server(sock)


# -- life cycle ----------------------------------------------------------------------


def test_stop_frees_the_port_and_detaches(chat):
    poll = PollServer(chat, port=0).start()
    port = poll.port
    assert poll._on_event in chat.listeners
    poll.stop()
    assert poll._on_event not in chat.listeners
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    poll.stop()   # twice is harmless


def test_stop_ends_a_waiting_long_poll(chat):
    poll = PollServer(chat, port=0).start()
    sock = connect(poll)
    sock.sendall(b"GET /poll?since=0&wait=30 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    started = time.monotonic()
    poll.stop()
    assert time.monotonic() - started < 5
    assert closed_by_server(sock)
    sock.close()


def test_needs_a_started_chat_server():
    with pytest.raises(RuntimeError, match="start the ChatServer first"):
        PollServer(ChatServer(port=0, quiet=True)).start()


def test_stop_after_the_chat_server_stopped():
    chat = ChatServer(port=0, quiet=True).start()
    poll = PollServer(chat, port=0).start()
    port = poll.port
    chat.stop()
    poll.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


# -- server-sent events --------------------------------------------------------------


def read_events(sock: socket.socket, count: int, data: bytes = b"") -> tuple[list[dict[str, str]], bytes]:
    """Read from an event stream until ``count`` events (blank-line-ended blocks with a data: line) came in.

    Returns the events as {field: value} (comments dropped) and what is left over after them.
    """
    events: list[dict[str, str]] = []
    while len(events) < count:
        while b"\n\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"the stream ended after {len(events)} of {count} events"
            data += chunk
        block, _, data = data.partition(b"\n\n")
        fields = {}
        for line in block.decode().split("\n"):
            if line.startswith(":") or not line:
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        if "data" in fields:
            events.append(fields)
    return events, data


def open_stream(poll: PollServer, path: str = "/events", *headers: str) -> tuple[socket.socket, dict[str, str], bytes]:
    """GET an event stream; return the socket, the response head's fields and the bytes read after the head."""
    sock = connect(poll)
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Accept: text/event-stream", *headers]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "closed before the response head"
        data += chunk
    head_bytes, _, rest = data.partition(b"\r\n\r\n")
    head = parse_head(head_bytes + b"\r\n\r\n")
    assert head.status == 200
    return sock, {k.lower(): v for k, v in head.headers}, rest


def test_event_stream_pushes_each_message_with_its_id(chat, poll, alice):
    say(alice, poll, "before")
    before = poll.last_id
    sock, headers, rest = open_stream(poll, f"/events?since={before}")
    with sock:
        assert headers["content-type"] == "text/event-stream"
        assert "content-length" not in headers and headers["cache-control"] == "no-store"
        assert rest.startswith(b"retry: 1000\n\n") or rest == b""
        wait_until(lambda: poll.streams == 1, timeout=5)
        say(alice, poll, "one", "two")
        events, _ = read_events(sock, 2, rest)
        assert [json.loads(e["data"])["message"] for e in events] == ["one", "two"]
        assert [int(e["id"]) for e in events] == [before + 1, before + 2]
        assert all(json.loads(e["data"])["id"] == int(e["id"]) for e in events)
    assert poll.stats["streams"] == 1


def test_event_stream_since_replays_what_is_held(chat, poll, alice):
    say(alice, poll, "a", "b", "c")
    sock, _, rest = open_stream(poll, f"/events?since={poll.last_id - 2}")
    with sock:
        events, _ = read_events(sock, 2, rest)
    assert [json.loads(e["data"])["message"] for e in events] == ["b", "c"]


def test_last_event_id_resumes_after_a_reconnect(chat, poll, alice):
    """What a browser's EventSource does by itself: reconnect with the last id it saw, and lose nothing."""
    start = poll.last_id
    sock, _, rest = open_stream(poll, f"/events?since={start}")
    wait_until(lambda: poll.streams == 1, timeout=5)
    say(alice, poll, "first", "second")
    events, _ = read_events(sock, 2, rest)
    last_seen = events[-1]["id"]
    sock.close()                                           # the connection drops
    wait_until(lambda: poll.streams == 0, timeout=5)
    say(alice, poll, "missed 1", "missed 2")               # said while nobody listened
    sock, _, rest = open_stream(poll, f"/events?since={start}", f"Last-Event-ID: {last_seen}")
    with sock:
        events, rest = read_events(sock, 2, rest)          # Last-Event-ID wins over since=
        assert [json.loads(e["data"])["message"] for e in events] == ["missed 1", "missed 2"]
        say(alice, poll, "live again")
        events, _ = read_events(sock, 1, rest)
        assert json.loads(events[0]["data"])["message"] == "live again"


def test_a_last_event_id_that_is_not_ours_falls_back_to_since(chat, poll, alice):
    say(alice, poll, "x")
    sock, _, rest = open_stream(poll, f"/events?since={poll.last_id - 1}", "Last-Event-ID: not-a-number")
    with sock:
        events, _ = read_events(sock, 1, rest)
    assert json.loads(events[0]["data"])["message"] == "x"


def test_event_stream_sends_heartbeat_comments_when_silent(chat, alice):
    with PollServer(chat, port=0, heartbeat=0.2, retry_ms=None) as poll:
        sock, _, rest = open_stream(poll, f"/events?since={poll.last_id}")
        with sock:
            sock.settimeout(5)
            data = rest
            while data.count(b": heartbeat\n\n") < 2:
                chunk = sock.recv(4096)
                assert chunk
                data += chunk
            assert b"data:" not in data and b"retry:" not in data
        assert poll.stats["heartbeats"] >= 2


def test_event_stream_ends_when_the_client_leaves_and_when_the_server_stops(chat):
    poll = PollServer(chat, port=0).start()
    sock, _, _ = open_stream(poll)
    wait_until(lambda: poll.streams == 1, timeout=5)
    sock.close()
    wait_until(lambda: poll.streams == 0, timeout=5)       # noticed at once, not at the next heartbeat
    sock, _, _ = open_stream(poll)
    wait_until(lambda: poll.streams == 1, timeout=5)
    started = time.monotonic()
    poll.stop()
    assert time.monotonic() - started < 5
    sock.settimeout(2)
    while chunk := sock.recv(4096):        # what was still unread (the retry: line), then the end
        assert b"data:" not in chunk
    sock.close()


def test_event_stream_head_and_bad_since(poll):
    with connect(poll) as sock:
        sock.sendall(b"HEAD /events HTTP/1.1\r\nHost: x\r\n\r\n")
        head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 200 ") and b"text/event-stream" in head
        assert head.endswith(b"\r\n\r\n") and closed_by_server(sock)
    with connect(poll) as sock:
        assert ask(sock, "/events?since=abc")[0] == 400
