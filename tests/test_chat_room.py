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
    """A room with a hand-moved clock; joins are announced at once unless a test sets announce_after."""
    clock = Clock()
    return Room(Limits(**{"announce_after": 0, **limits}), clock=clock, now=lambda: "T"), clock


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
    assert types(out) == [(EVERYONE, "join")]              # a diff: the whole list only goes to newcomers
    joined = out[0][1]
    assert joined == {"type": "join", "time": "T", "from": alice.id, "username": "alice",
                      "avatar": avatar_hash("alice@example.com")}
    assert room.presence()["online"] == [{"id": alice.id, "username": "alice", "avatar": joined["avatar"]}]
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
    (json.dumps({"type": "join", "username": "x" * 33}), "bad_name"),
    (json.dumps({"type": "join", "username": "   "}), "bad_name"),
    (json.dumps({"type": "join", "username": "\ud800"}), "bad_field"),
    (json.dumps({"username": "a", "message": "half a pair \ud83d"}), "bad_field"),
    ("[" * 4000 + "]" * 4000, "bad_json"),
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
    assert room.stats.errors == 1 and not room.history


def test_the_rate_budget_refills_with_the_clock():
    room, clock = make_room(rate_limit=2, burst=3)
    alice, _ = room.connect()
    room.receive(alice, join("alice"))                       # the join costs a token too
    sent = [[e["type"] for _, e in room.receive(alice, say(f"m{i}"))] for i in range(4)]
    assert sent == [["message"], ["message"], ["error"], []]  # one warning a second, not one per frame
    clock.t += 0.5                                            # one token back at 2 per second
    assert room.receive(alice, say("later"))[0][1]["type"] == "message"
    assert room.receive(alice, say("too soon")) == []        # still within the second of the warning
    clock.t += 0.6
    assert room.receive(alice, say("again"))[0][1]["type"] == "message"


def test_a_flood_over_budget_is_closed_and_its_address_waits_to_reconnect():
    room, clock = make_room(rate_limit=1, burst=2, connect_burst=3)
    assert room.admit("10.0.0.5") is None
    troll, _ = room.connect(address="10.0.0.5")
    room.receive(troll, join("troll"))
    outs = [room.receive(troll, say("spam")) for _ in range(60)]
    closes = [e for out in outs for _, e in out if e["type"] == "close"]
    errors = [e for out in outs for _, e in out if e["type"] == "error"]
    assert len(closes) == 1 and closes[0]["code"] == 1008 and len(errors) == 1    # one close, however many follow
    room.penalize(troll)
    assert "too many new connections" in room.admit("10.0.0.5")


def test_long_messages_spend_a_byte_budget_per_address():
    room, _ = make_room(rate_limit=100, burst=100, bytes_rate=1000, bytes_burst=4000)
    member, _ = room.connect(address="10.0.0.5")
    room.receive(member, join("writer"))
    kinds = [room.receive(member, say("x" * 1500))[0][1].get("code", "message") for _ in range(4)]
    assert kinds == ["message", "message", "rate_limited", "rate_limited"]


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
    assert types(out) == [(EVERYONE, "leave")]
    assert out[0][1]["from"] == alice.id and room.online == [] and room.stats.connections == 0
    assert room.disconnect(alice) == []                       # twice is harmless


def test_a_legacy_client_is_named_by_its_first_message_and_hears_nothing_first():
    room, _ = make_room()
    old, out = room.connect(legacy=True)
    assert out == []
    out = room.receive(old, say("hello", name="gopher"))
    assert types(out) == [(EVERYONE, "join"), (EVERYONE, "message")]
    out = room.receive(old, say("now I am someone else", name="teacher"))
    assert out[0][1]["username"] == "gopher"                 # the first message fixed the name
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


# -- a class with a troll in it: identity ------------------------------------------------------

@pytest.mark.parametrize("fake", ["alice", "ALICE", " Alice ", "Alíce", "\u0410lice", "al\u0456ce", "ａｌｉｃｅ"])
def test_a_name_that_looks_like_an_online_one_is_taken(fake):
    room, _ = make_room()
    alice, _ = room.connect(address="10.0.0.1")
    room.receive(alice, join("Alice"))
    troll, _ = room.connect(address="10.0.0.2")
    out = room.receive(troll, join(fake))
    assert out[0][1]["code"] == "name_taken", fake
    assert "pick another name" in out[0][1]["detail"]


@pytest.mark.parametrize("name, why", [
    ("evil\u202egnp.exe", "direction"), ("zero\u200bwidth", "invisible"), ("ring\x07", "control"),
    ("e" + "\u0301" * 31, "accents"), ("\ue000", "not a character"),
])
def test_names_that_hide_or_disguise_are_refused_with_the_reason(name, why):
    room, _ = make_room()
    member, _ = room.connect()
    (_, error), = room.receive(member, join(name))
    assert error["code"] == "bad_name" and why in error["detail"]


def test_one_name_per_connection_and_renames_are_explicit_budgeted_and_seen():
    room, clock = make_room(rename_rate=0.1, rename_burst=1)
    alice, _ = room.connect(address="10.0.0.1")
    room.receive(alice, join("alice"))
    assert room.receive(alice, join("teacher2"))[0][1]["code"] == "already_joined"
    out = room.receive(alice, json.dumps({"type": "rename", "username": "alicia"}))
    assert out == [(EVERYONE, {"type": "rename", "time": "T", "from": alice.id, "old": "alice",
                               "username": "alicia", "avatar": ""})]
    assert room.receive(alice, json.dumps({"type": "rename", "username": "ali"}))[0][1]["code"] == "rate_limited"
    clock.t += 10
    assert room.receive(alice, json.dumps({"type": "rename", "username": "ali"}))[0][1]["type"] == "rename"
    bob, _ = room.connect(address="10.0.0.2")
    assert room.receive(bob, join("alicia"))[0][1]["type"] == "join"     # the old name is free again


def test_a_copied_email_does_not_copy_the_face():
    room, _ = make_room()
    alice, _ = room.connect(address="10.0.0.1")
    room.receive(alice, join("alice", "alice@example.org"))
    troll, _ = room.connect(address="10.0.0.2")
    out = room.receive(troll, join("mallory", "alice@example.org"))
    assert out[0][1]["avatar"] == "" and alice.avatar == avatar_hash("alice@example.org")


def test_teacher_names_are_reserved():
    room, _ = make_room()
    troll, _ = room.connect()
    assert room.receive(troll, join("Teacher"))[0][1]["code"] == "bad_name"
    assert room.receive(troll, join("T3acher"))[0][1]["code"] == "bad_name"


# -- the teacher ----------------------------------------------------------------------------------

def teacher_and_student(**limits):
    room, clock = make_room(**limits)
    teacher, _ = room.connect(address="10.0.0.9")
    out = room.receive(teacher, json.dumps({"type": "join", "username": "Teacher", "teacher": room.secret}))
    assert out[0][1]["teacher"] is True
    bob, _ = room.connect(address="10.0.0.2")
    room.receive(bob, join("bob"))
    return room, clock, teacher, bob


def test_a_wrong_secret_is_refused_and_nobody_else_gets_the_badge():
    room, _ = make_room()
    troll, _ = room.connect()
    out = room.receive(troll, json.dumps({"type": "join", "username": "x", "teacher": "guess"}))
    assert out[0][1]["code"] == "not_teacher" and troll.username is None
    room.receive(troll, join("x"))
    assert "teacher" not in room.receive(troll, say("hi"))[0][1]
    assert room.receive(troll, json.dumps({"type": "kick", "target": 1}))[0][1]["code"] == "not_teacher"


def test_the_teacher_kicks_and_the_class_sees_it():
    room, _, teacher, bob = teacher_and_student()
    out = room.receive(teacher, json.dumps({"type": "kick", "target": bob.id}))
    assert out[0][0] is EVERYONE and out[0][1]["action"] == "kick" and out[0][1]["target"]["username"] == "bob"
    assert out[1] == (bob, {"type": "close", "code": 4001, "reason": "removed by the teacher"})


def test_mute_lasts_its_time_and_lock_silences_all_but_the_teacher():
    room, clock, teacher, bob = teacher_and_student()
    room.command("mute", "bob", seconds=60)
    assert room.receive(bob, say("let me talk"))[0][1]["code"] == "muted"
    clock.t += 61
    assert room.receive(bob, say("thanks"))[0][1]["type"] == "message"
    room.command("lock")
    assert room.receive(bob, say("hello?"))[0][1]["code"] == "locked"
    assert room.receive(teacher, say("listen"))[0][1]["teacher"] is True
    late, _ = room.connect(address="10.0.0.3")
    assert room.receive(late, join("late"))[0][1]["code"] == "locked"
    room.command("unlock")
    assert room.receive(late, join("late"))[0][1]["type"] == "join"


def test_a_mute_outlives_a_reconnect_from_the_same_address_but_not_its_time():
    room, clock, teacher, bob = teacher_and_student()
    room.command("mute", "bob", seconds=60)
    room.disconnect(bob)
    clock.t += 30                                                  # long enough for every bucket to refill
    again, _ = room.connect(address="10.0.0.2")                    # a reload of the page
    room.receive(again, join("bob"))
    assert room.receive(again, say("I'm back"))[0][1]["code"] == "muted"
    other, _ = room.connect(address="10.0.0.3")
    room.receive(other, join("carol"))
    assert room.receive(other, say("hi"))[0][1]["type"] == "message"     # another machine is not muted
    room.command("unmute", again.id)
    assert room.receive(again, say("sorry"))[0][1]["type"] == "message"
    room.command("mute", again.id, seconds=10)
    room.disconnect(again)
    clock.t += 11
    back, _ = room.connect(address="10.0.0.2")
    room.receive(back, join("bob"))
    assert room.receive(back, say("later"))[0][1]["type"] == "message"


def test_a_student_in_the_room_when_it_was_locked_may_come_back_after_losing_the_connection():
    room, _, teacher, bob = teacher_and_student()
    room.command("lock")
    room.disconnect(bob)                                           # bob's Wi-Fi drops
    again, _ = room.connect(address="10.0.0.2")
    assert room.receive(again, join("bob"))[0][1]["type"] == "join"
    assert room.receive(again, say("still here"))[0][1]["code"] == "locked"    # in, but only the teacher writes
    stranger, _ = room.connect(address="10.0.0.4")
    assert room.receive(stranger, join("eve"))[0][1]["code"] == "locked"
    room.command("unlock")
    room.command("lock")                                           # a new lock: who is in now
    assert room.receive(stranger, join("eve"))[0][1]["code"] == "locked"


def test_a_ban_closes_every_connection_of_that_address_and_refuses_it():
    room, _, teacher, bob = teacher_and_student()
    second, _ = room.connect(address="10.0.0.2")                 # bob's second tab
    out = room.command("ban", bob.id)
    closed = {audience.id for audience, event in out if event["type"] == "close"}
    assert closed == {bob.id, second.id}
    assert "banned" in room.admit("10.0.0.2") and room.admit("10.0.0.7") is None


def test_clear_forgets_the_history_and_tells_everyone():
    room, _, teacher, bob = teacher_and_student()
    room.receive(bob, say("something regrettable"))
    (_, event), = room.command("clear")
    assert event["action"] == "clear" and list(room.history) == []


def test_the_teacher_cannot_be_kicked():
    room, _, teacher, bob = teacher_and_student()
    with pytest.raises(ChatError):
        room.command("kick", teacher.id)


# -- budgets per address --------------------------------------------------------------------------

def test_connections_are_budgeted_per_address_not_per_connection():
    room, clock = make_room(connect_rate=1, connect_burst=3, max_per_address=100)
    admitted = [room.admit("10.0.0.5") is None for _ in range(5)]
    assert admitted == [True, True, True, False, False]
    assert room.admit("10.0.0.6") is None                         # another student is not affected
    clock.t += 1
    assert room.admit("10.0.0.5") is None


def test_an_address_in_a_reconnect_loop_is_looping_after_one_refusal_until_its_budget_refills():
    room, clock = make_room(connect_rate=1, connect_burst=2, max_per_address=100)
    assert not room.looping("10.0.0.5")                           # unknown: a first visit is never refused early
    assert room.admit("10.0.0.5") is None and room.admit("10.0.0.5") is None
    assert not room.looping("10.0.0.5")                           # empty, but not told yet: its 503 comes first
    assert "too many new connections" in room.admit("10.0.0.5")
    assert room.looping("10.0.0.5") and not room.looping("10.0.0.6")
    clock.t += 1                                                  # a token back: judged at the handshake again
    assert not room.looping("10.0.0.5")
    assert room.admit("10.0.0.5") is None and not room.looping("10.0.0.5")


def test_connections_per_address_are_capped_and_loopback_is_the_teachers_machine():
    room, _ = make_room(max_per_address=2, connect_burst=100)
    for _ in range(2):
        assert room.admit("10.0.0.5") is None
        room.connect(address="10.0.0.5")
    assert "too many connections" in room.admit("10.0.0.5")
    assert all(room.admit("127.0.0.1") is None for _ in range(50))


def test_reconnecting_does_not_refill_the_message_budget():
    room, _ = make_room(rate_limit=1, burst=2, connect_burst=100)
    sent = 0
    for i in range(5):                                            # connect, join, talk, leave; again
        member, _ = room.connect(address="10.0.0.5")
        out = room.receive(member, join(f"t{i}")) + room.receive(member, say("spam"))
        sent += sum(1 for _, e in out if e["type"] == "message")
        room.disconnect(member)
    assert sent <= 1                                              # 2 tokens: one join and one message, in all


def test_budgets_of_gone_addresses_are_forgotten_once_refilled():
    room, clock = make_room(connect_burst=2)
    for i in range(100):
        address = f"10.1.{i // 250}.{i % 250}"
        room.admit(address)
        member, _ = room.connect(address=address)
        room.disconnect(member)
    clock.t += 3600
    room.disconnect(room.connect(address="10.9.9.9")[0])
    assert len(room._budgets) < 100


# -- announcements: who comes and goes at once costs the class nothing ------------------------

def test_a_newcomer_is_announced_only_once_it_has_stayed():
    room, clock = make_room(announce_after=2, announce_rate=100)
    alice, _ = room.connect(address="10.0.0.1")
    assert types(room.receive(alice, join("alice"))) == [(alice, "join")]   # it hears its own join at once
    assert room.tick() == [] and room.presence()["online"] == []
    clock.t += 2.1
    (audience, event), = room.tick()
    assert audience.member is alice and event["username"] == "alice"     # everyone else, now
    assert room.presence()["online"][0]["username"] == "alice"


def test_a_connection_that_comes_and_goes_is_never_announced():
    room, clock = make_room(announce_after=2)
    for i in range(50):                                          # connect, join, leave: a churning troll
        member, _ = room.connect(address="10.0.0.9")
        room.receive(member, join(f"troll{i}"))
        assert room.disconnect(member) == []
    clock.t += 5
    assert room.tick() == []


def test_a_crowd_is_announced_as_a_trickle_and_speaking_announces_at_once():
    room, clock = make_room(announce_after=1, announce_rate=10, connect_burst=1000, max_per_address=1000)
    crowd = []
    for i in range(100):
        member, _ = room.connect(address=f"10.0.{i}.1")
        room.receive(member, join(f"s{i}"))
        crowd.append(member)
    clock.t += 1.5
    assert len(room.tick()) == 10                                # one second's worth
    out = room.receive(crowd[-1], say("hello"))
    assert [(type(a).__name__, e["type"]) for a, e in out] == [("Others", "join"), ("_Everyone", "message")]
