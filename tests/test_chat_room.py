"""The pure chat room, without a socket: strings in, (audience, event) pairs out, a fake clock."""

from __future__ import annotations

import json

import pytest

from chat_lesson.chat.room import EVERYONE, ChatError, Room, avatar_hash
from chat_lesson.chat.wire import Limits


class Clock:
    """A clock a test moves by hand, so rate budgets need no sleeping."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make_room(**limits) -> tuple[Room, Clock]:
    clock = Clock()
    return Room(Limits(**limits), clock=clock, now=lambda: "T"), clock


def join(name: str, email: str = "") -> str:
    return json.dumps({"type": "join", "username": name, "email": email})


def say(text: str, name: str = "ignored") -> str:
    return json.dumps({"username": name, "message": text})


def types(out) -> list[tuple[object, str]]:
    return [(audience, event["type"]) for audience, event in out]


def test_a_newcomer_hears_welcome_presence_and_history_alone():
    room, _ = make_room(history=2)
    alice, out = room.connect()
    assert types(out) == [(alice, "welcome"), (alice, "presence")]      # no history yet
    assert out[0][1] == {"type": "welcome", "you": alice.id, "limits": room.limits.public()}
    room.receive(alice, join("alice"))
    for text in ("one", "two", "three"):
        room.receive(alice, say(text))
    bob, out = room.connect()
    assert types(out) == [(bob, "welcome"), (bob, "presence"), (bob, "history")]
    assert [m["message"] for m in out[2][1]["messages"]] == ["two", "three"]   # the last 2


def test_join_is_broadcast_with_ids_and_never_the_email():
    room, _ = make_room()
    alice, _ = room.connect()
    out = room.receive(alice, join("alice", " Alice@Example.com"))
    assert types(out) == [(EVERYONE, "join"), (EVERYONE, "presence")]
    joined, presence = out[0][1], out[1][1]
    assert joined == {"type": "join", "time": "T", "from": alice.id, "username": "alice",
                      "avatar": avatar_hash("alice@example.com")}
    assert presence["online"] == [{"id": alice.id, "username": "alice", "avatar": joined["avatar"]}]
    assert "Alice@Example.com" not in json.dumps([event for _, event in out])
    assert room.receive(alice, join("alice", " Alice@Example.com")) == []   # the same again: nothing new


def test_a_message_is_numbered_kept_and_sent_to_everyone():
    room, _ = make_room()
    alice, _ = room.connect()
    room.receive(alice, join("alice"))
    out = room.receive(alice, say("hi <b>", name="mallory"))
    assert out == [(EVERYONE, {"type": "message", "id": 1, "time": "T", "from": alice.id, "username": "alice",
                               "avatar": "", "message": "hi <b>"})]     # the name is the connection's
    assert room.receive(alice, say("again"))[0][1]["id"] == 2
    assert [m["message"] for m in room.history] == ["hi <b>", "again"]
    assert room.stats.messages == 2


@pytest.mark.parametrize("raw, code", [
    (b"\x00binary", "bad_frame"),
    ("{oops", "bad_json"),
    ("[1, 2]", "bad_json"),
    (json.dumps({"type": "dance"}), "bad_field"),
    (json.dumps({"type": "join", "username": "x" * 33}), "bad_field"),
    (json.dumps({"type": "join", "username": "   "}), "bad_field"),
    (json.dumps({"username": "a", "message": ""}), "bad_field"),
    (json.dumps({"username": "a", "message": "é" * 2049}), "too_long"),
    (json.dumps({"username": "a", "email": 5, "message": "x"}), "bad_field"),
])
def test_bad_input_is_an_error_to_the_sender_only(raw, code):
    room, _ = make_room()
    alice, _ = room.connect()
    out = room.receive(alice, raw)
    assert types(out) == [(alice, "error")]
    assert out[0][1]["code"] == code and out[0][1]["detail"]
    assert room.stats.errors == 1 and room.history == type(room.history)()


def test_the_rate_budget_refills_with_the_clock():
    room, clock = make_room(rate_limit=2, burst=3)
    alice, _ = room.connect()
    room.receive(alice, join("alice"))                       # the join costs a token too
    sent = [room.receive(alice, say(f"m{i}"))[0][1]["type"] for i in range(4)]
    assert sent == ["message", "message", "error", "error"]
    clock.t += 0.5                                            # one token back at 2 per second
    assert room.receive(alice, say("later"))[0][1]["type"] == "message"
    assert room.receive(alice, say("too soon"))[0][1]["code"] == "rate_limited"


def test_rate_limit_zero_means_no_budget():
    room, _ = make_room(rate_limit=0)
    alice, _ = room.connect()
    room.receive(alice, join("alice"))
    assert all(room.receive(alice, say(str(i)))[0][1]["type"] == "message" for i in range(100))


def test_leaving_is_announced_only_for_those_who_joined():
    room, _ = make_room()
    alice, _ = room.connect()
    lurker, _ = room.connect()
    room.receive(alice, join("alice"))
    assert room.disconnect(lurker) == []
    out = room.disconnect(alice)
    assert types(out) == [(EVERYONE, "leave"), (EVERYONE, "presence")]
    assert out[1][1]["online"] == [] and room.online == [] and room.stats.connections == 0
    assert room.disconnect(alice) == []                       # twice is harmless


def test_a_legacy_client_is_named_by_its_messages_and_hears_nothing_first():
    room, _ = make_room()
    old, out = room.connect(legacy=True)
    assert out == []
    out = room.receive(old, say("hello", name="gopher"))
    assert types(out) == [(EVERYONE, "join"), (EVERYONE, "presence"), (EVERYONE, "message")]
    assert room.online == ["gopher"]


def test_commands_replace_or_swallow_a_message_and_may_refuse():
    room, _ = make_room()
    alice, _ = room.connect()
    room.receive(alice, join("alice"))
    room.add_command("me", lambda user, args: f"* {user} {args}")
    room.add_command("quiet", lambda user, args: None)

    def refuse(user: str, args: str) -> str:
        raise ChatError("no_dice", "not today")

    room.add_command("/dice", refuse)
    assert room.receive(alice, say("/me waves"))[0][1]["message"] == "* alice waves"
    assert room.receive(alice, say("/quiet")) == []
    assert room.receive(alice, say("/dice"))[0][1] == {"type": "error", "code": "no_dice", "detail": "not today"}
    assert room.receive(alice, say("/unknown x"))[0][1]["message"] == "/unknown x"
