"""chat.history: the room's messages in SQLite, in memory or in a file that survives a restart."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import datetime

import pytest

from chat_lesson.chat.history import History, export_main, text_line


def message(i: int, text: str | None = None, name: str = "alice") -> dict:
    return {"type": "message", "id": i, "time": f"2026-11-26T04:41:{i % 60:02d}.123Z", "from": 3,
            "username": name, "avatar": "0bc83cb571cd1c50ba6f3e8a78ef1346", "message": text or f"m{i}"}


def local(stamp: str) -> str:
    return datetime.fromisoformat(stamp).astimezone().strftime("%H:%M:%S")


@pytest.fixture(params=["memory", "file"])
def history(request, tmp_path):
    h = History(None if request.param == "memory" else tmp_path / "data" / "chat.sqlite3", keep=3)
    yield h
    h.close()


def test_a_new_history_is_empty_and_numbers_from_one(history):
    assert history.recent() == [] and len(history) == 0 and not history
    assert history.next_id() == 1
    assert history.export("text") == "" and json.loads(history.export("json")) == []


def test_recent_is_the_last_keep_oldest_first_and_export_is_everything(history):
    for i in range(1, 6):
        history.append(message(i))
    assert history.recent() == [message(3), message(4), message(5)]
    assert list(history) == history.recent() and len(history) == 3 and history
    assert history.total() == 5 and history.next_id() == 6
    assert json.loads(history.export("json")) == [message(i) for i in range(1, 6)]


def test_the_file_and_its_folder_are_created_in_wal_mode(tmp_path):
    path = tmp_path / "a" / "b" / "chat.sqlite3"
    with History(path) as h:
        h.append(message(1))
    assert path.is_file()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT id, time, from_id, username, avatar, message FROM messages").fetchall() == [
        (1, "2026-11-26T04:41:01.123Z", 3, "alice", "0bc83cb571cd1c50ba6f3e8a78ef1346", "m1")]
    db.close()


def test_a_restart_replays_the_last_n_in_order_and_ids_go_on(tmp_path):
    path = tmp_path / "chat.sqlite3"
    first = History(path, keep=50)
    for i in range(1, 61):
        first.append(message(i))
    first.close()
    again = History(path, keep=50)
    assert [e["id"] for e in again.recent()] == list(range(11, 61))
    assert again.next_id() == 61
    again.append(message(61))
    again.close()
    with History(path, keep=2) as third:       # another keep on the same file
        assert third.recent() == [message(60), message(61)] and third.total() == 61


def test_clear_empties_recent_and_export_but_not_the_numbering(history):
    for i in range(1, 5):
        history.append(message(i))
    history.clear()
    assert history.recent() == [] and not history and history.total() == 0
    assert history.export("text") == "" and json.loads(history.export("json")) == []
    assert list(csv.reader(io.StringIO(history.export("csv")))) == [["id", "time", "from", "username", "avatar", "message"]]
    assert history.next_id() == 5                # ids are never reused, even after a clear
    history.append(message(5))
    assert history.recent() == [message(5)] and history.next_id() == 6


def test_clear_survives_a_restart_and_leaves_no_text_in_the_file(tmp_path):
    path = tmp_path / "chat.sqlite3"
    with History(path) as h:
        h.append(message(1, "secret-marker-42"))
        h.clear()
    assert b"secret-marker-42" not in path.read_bytes()
    with History(path) as h:
        assert h.recent() == [] and h.next_id() == 2


def test_export_formats_parse_back(history):
    events = [message(1, "hi"), message(2, "a, \"quoted\"\nsecond line", name="bob"), message(3, "x")]
    for e in events:
        history.append(e)
    assert json.loads(history.export("json")) == events
    rows = list(csv.DictReader(io.StringIO(history.export("csv"))))
    assert [r["message"] for r in rows] == [e["message"] for e in events]
    assert rows[1] == {"id": "2", "time": events[1]["time"], "from": "3", "username": "bob",
                       "avatar": events[1]["avatar"], "message": events[1]["message"]}
    text = history.export("text")
    assert text.splitlines() == [f"{local(events[0]['time'])}  alice: hi",
                                 f"{local(events[1]['time'])}  bob: a, \"quoted\"",
                                 "  second line",                     # a further line is indented
                                 f"{local(events[2]['time'])}  alice: x"]
    with pytest.raises(ValueError, match="unknown format"):
        history.export("html")


UNUSUAL = ["<b>bold</b> & <script>alert(1)</script>", "&lt;already escaped&gt;", "héllo 世界 🎉 ‮rtl",
           "=SUM(A1:A9)", "tab\there", "'; DROP TABLE messages; --", "\\n is not a newline", "\x00nul"]


def test_unicode_and_html_looking_text_survive_unchanged(tmp_path):
    path = tmp_path / "chat.sqlite3"
    with History(path, keep=100) as h:
        for i, text in enumerate(UNUSUAL, 1):
            h.append(message(i, text, name="<i>ünï</i>"))
    with History(path, keep=100) as h:
        assert [e["message"] for e in h.recent()] == UNUSUAL
        assert [e["message"] for e in json.loads(h.export("json"))] == UNUSUAL
        assert [r[5] for r in list(csv.reader(io.StringIO(h.export("csv"))))[1:]] == UNUSUAL
        text = h.export("text")
        for line, expected in zip(text.splitlines(), UNUSUAL):
            assert line.endswith(f"  <i>ünï</i>: {expected}")
        assert "&lt;b&gt;" not in text and "&amp;" not in text


def test_keep_zero_replays_nothing_but_keeps_the_transcript():
    with History(keep=0) as h:
        h.append(message(1))
        assert h.recent() == [] and not h and len(h) == 0
        assert h.total() == 1 and h.next_id() == 2 and "alice: m1" in h.export()


def test_other_events_and_odd_times_still_make_a_line():
    assert text_line({"type": "join", "time": "2026-11-26T04:41:34.123Z", "username": "bob"}).endswith("  * bob join")
    assert text_line({"type": "message", "time": "T", "username": "bob", "message": "hi"}) == "T  bob: hi"


def test_a_closed_history_says_so(history):
    history.close()
    history.close()                              # twice is fine
    with pytest.raises(ValueError, match="closed"):
        history.append(message(1))
    assert "closed" in repr(history)


def test_another_process_sees_appends_and_clears_at_once(tmp_path):
    path = tmp_path / "chat.sqlite3"
    with History(path) as server, History(path) as teacher:   # two connections, as two processes would have
        server.append(message(1))
        assert teacher.recent() == [message(1)]
        teacher.clear()
        assert server.recent() == [] and server.next_id() == 2


def test_export_command_writes_each_format_and_can_clear(tmp_path, capsys):
    path = tmp_path / "chat.sqlite3"
    with History(path) as h:
        h.append(message(1, "hé <b>"))
        h.append(message(2, "bye", name="bob"))
    assert export_main(["--history-file", str(path)]) == 0
    assert capsys.readouterr().out == (f"{local(message(1)['time'])}  alice: hé <b>\n"
                                       f"{local(message(2)['time'])}  bob: bye\n")
    out = tmp_path / "out" / "class.json"
    out.parent.mkdir()
    assert export_main(["--history-file", str(path), "--format", "json", "-o", str(out)]) == 0
    assert json.loads(out.read_text(encoding="utf-8")) == [message(1, "hé <b>"), message(2, "bye", name="bob")]
    csv_out = tmp_path / "class.csv"
    assert export_main(["--history-file", str(path), "--format", "csv", "-o", str(csv_out), "--clear"]) == 0
    with open(csv_out, newline="", encoding="utf-8") as f:
        assert [row["message"] for row in csv.DictReader(f)] == ["hé <b>", "bye"]
    assert "cleared 2 messages" in capsys.readouterr().err
    with History(path) as h:
        assert h.total() == 0 and h.next_id() == 3


def test_export_command_refuses_a_missing_file_without_creating_it(tmp_path, capsys):
    missing = tmp_path / "typo.sqlite3"
    assert export_main(["--history-file", str(missing)]) == 1
    assert "no history file" in capsys.readouterr().err and not missing.exists()
    with pytest.raises(SystemExit):
        export_main(["--history-file", str(missing), "--format", "html"])
