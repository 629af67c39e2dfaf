"""check(): right answers pass, wrong answers fail with a useful hint, for every exercise of lessons 01-02."""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from chat_lesson.lessons import exercises
from chat_lesson.lessons.exercises import (
    EXERCISES, LESSON_MODULES, Result, UnknownExercise, Wrong, check, exercise, expect, hint, list_exercises,
)
from chat_lesson.lessons.lesson01 import FRAME_HEADER_CASES, SCENARIOS
from chat_lesson.lessons.lesson02 import BROKEN_HANDSHAKES, FAULTS, REFUSAL_CASES

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def good_accept(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


RIGHT = {
    "01.short_poll_delay": [lambda ms: (ms / 2, 0.95 * ms), lambda ms: [ms * 0.5, ms - ms / 20]],
    "01.frame_header_bytes": [{"server sends 5 bytes": 2, "client sends 5 bytes": 6,
                               "server sends 200 bytes": 4, "client sends 70000 bytes": 14}],
    "01.when_to_use": [
        {"stock_ticker": "websocket", "pdf_download": "http", "form_submit": "http", "cursors": "websocket",
         "mobile_rest_api": "http", "score_per_minute": "http", "class_chat": "websocket",
         "job_finished": "websocket"},
        {"stock_ticker": "WebSocket", "pdf_download": "HTTP", "form_submit": " http ", "cursors": "ws",
         "mobile_rest_api": "REST", "score_per_minute": "https", "class_chat": "wss", "job_finished": "Web-Socket"},
        # one-way news: server-sent events fit too; a finished job may also be a push notification
        {"stock_ticker": "sse", "pdf_download": "http", "form_submit": "http", "cursors": "websocket",
         "mobile_rest_api": "http", "score_per_minute": "http", "class_chat": "websocket",
         "job_finished": "Server-Sent Events"},
        {"stock_ticker": "EventSource", "pdf_download": "http", "form_submit": "http", "cursors": "websocket",
         "mobile_rest_api": "http", "score_per_minute": "http", "class_chat": "websocket", "job_finished": "push"},
    ],
    "02.accept_key": [good_accept, lambda k: base64.b64encode(hashlib.sha1(f"{k}{GUID}".encode()).digest()).decode()],
    "02.broken_handshakes": [{"A": "connection", "B": "key", "C": "accept"}],
    "02.refusal_codes": [{"wrong_version": 426, "missing_key": 400, "foreign_origin": 403, "plain_get": 400},
                         {"wrong_version": "426", "missing_key": 400.0, "foreign_origin": 403, "plain_get": 400}],
}

# (answer, a fragment expected in the message or the hint)
WRONG = {
    "01.short_poll_delay": [
        (lambda ms: (ms, ms), "longest"),
        (lambda ms: (ms / 2, ms), "p95"),
        (lambda ms: (ms / 4, 0.95 * ms), "median"),
        (lambda ms: ms / 2, "two numbers"),
        (lambda ms: (..., ...), "replace"),
        (250, "function"),
        (lambda: (1, 2), "raised TypeError"),
    ],
    "01.frame_header_bytes": [
        ({"server sends 5 bytes": 2, "client sends 5 bytes": 6, "server sends 200 bytes": 4,
          "client sends 70000 bytes": 10}, "64-bit"),
        ({"server sends 5 bytes": 2, "client sends 5 bytes": 2, "server sends 200 bytes": 4,
          "client sends 70000 bytes": 14}, "masks"),
        ({"server sends 5 bytes": 2, "client sends 5 bytes": 6, "server sends 200 bytes": 2,
          "client sends 70000 bytes": 14}, "16-bit"),
        ({"server sends 5 bytes": 2}, "missing"),
        ({**dict.fromkeys(FRAME_HEADER_CASES, 2), "extra": 1}, "unknown key"),
        ([2, 6, 4, 14], "dict"),
    ],
    "01.when_to_use": [
        (dict.fromkeys(SCENARIOS, "http"), "4 of 8"),
        (dict.fromkeys(SCENARIOS, "websocket"), "4 of 8"),
        ({**RIGHT["01.when_to_use"][0], "score_per_minute": "websocket"}, "score_per_minute"),
        ({**RIGHT["01.when_to_use"][0], "job_finished": "http"}, "predict"),
        ({**RIGHT["01.when_to_use"][0], "cursors": "maybe"}, "not understood"),
        ({**RIGHT["01.when_to_use"][0], "class_chat": "sse"}, "one more HTTP request"),
        ({**RIGHT["01.when_to_use"][0], "cursors": "push"}, "Web Push"),
        ({**RIGHT["01.when_to_use"][0], "pdf_download": "sse"}, "pdf_download"),
    ],
    "02.accept_key": [
        (lambda k: hashlib.sha1((k + GUID).encode()).hexdigest(), "hex"),
        (lambda k: base64.b64encode(hashlib.sha1((k + GUID).encode()).hexdigest().encode()).decode(), "hex text"),
        (lambda k: base64.b64encode(hashlib.sha1((k + GUID).encode()).digest()), "bytes"),
        (lambda k: base64.b64encode(hashlib.sha1(k.encode()).digest()).decode(), "forgot to append the GUID"),
        (lambda k: base64.b64encode(hashlib.sha1((GUID + k).encode()).digest()).decode(), "after the key"),
        (lambda k: base64.b64encode(hashlib.sha1((k + GUID.lower()).encode()).digest()).decode(), "upper case"),
        (lambda k: base64.b64encode(hashlib.sha1(base64.b64decode(k) + GUID.encode()).digest()).decode(), "decode"),
        (lambda k: base64.b64encode(hashlib.sha256((k + GUID).encode()).digest()).decode(), "SHA-256"),
        (lambda k: base64.urlsafe_b64encode(hashlib.sha1((k + GUID).encode()).digest()).decode(), "URL-safe"),
        (lambda k: good_accept(k) + "\n", "whitespace"),
        (lambda k: k, "key itself"),
        (lambda k: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "the article's key"),   # hard-coded RFC answer
        (lambda k: None, "NoneType"),
        (lambda k: 1 / 0, "ZeroDivisionError"),
        ("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "function itself"),
    ],
    "02.broken_handshakes": [
        ({"A": "upgrade", "B": "key", "C": "accept"}, "Connection must list"),
        ({"A": "connection", "B": "version", "C": "accept"}, "hello world"),
        ({"A": "connection", "B": "key", "C": "status"}, "echoed"),
        ({"A": "connection", "B": "key", "C": "nonsense"}, "choose"),
    ],
    "02.refusal_codes": [
        (dict.fromkeys(REFUSAL_CASES, 400), "wrong_version"),
        ({"wrong_version": 426, "missing_key": 400, "foreign_origin": 401, "plain_get": 400}, "foreign_origin"),
        ({"wrong_version": 426, "missing_key": 400, "foreign_origin": 403, "plain_get": 200}, "plain_get"),
        ({"wrong_version": "four hundred", "missing_key": 400, "foreign_origin": 403, "plain_get": 400}, "number"),
    ],
}


def test_every_exercise_of_lessons_01_02_is_tested_both_ways():
    mine = list_exercises("01") + list_exercises("02")
    assert sorted(mine) == sorted(RIGHT) == sorted(WRONG)


def test_every_exercise_the_notebooks_check_is_registered():
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            for ex in re.findall(r"""\bcheck\(\s*["']([^"']+)["']""", cell.source):
                exercises.get(ex)   # raises UnknownExercise


@pytest.mark.parametrize("exercise_id,answer", [(k, a) for k, answers in RIGHT.items() for a in answers])
def test_right_answers_pass(exercise_id, answer):
    result = check(exercise_id, answer)
    assert result, str(result)
    assert isinstance(result, Result) and result.passed and result.hint is None
    assert str(result).startswith("✅")


@pytest.mark.parametrize("exercise_id,answer,fragment",
                         [(k, a, f) for k, cases in WRONG.items() for a, f in cases])
def test_wrong_answers_fail_with_a_hint(exercise_id, answer, fragment):
    result = check(exercise_id, answer)
    assert not result, f"{exercise_id} accepted a wrong answer"
    assert str(result).startswith("❌")
    assert result.hint, "every failure comes with a hint"
    assert fragment.lower() in (result.message + " " + result.hint).lower(), str(result)


@pytest.mark.parametrize("exercise_id", sorted(RIGHT))
def test_placeholder_answers_fail(exercise_id):
    assert not check(exercise_id, ...)
    assert not check(exercise_id, None)


@pytest.mark.parametrize("exercise_id", ["01.frame_header_bytes", "01.when_to_use", "02.broken_handshakes",
                                         "02.refusal_codes"])
def test_dict_with_placeholders_fails_naming_them(exercise_id):
    answer = dict.fromkeys(RIGHT[exercise_id][0], ...)
    result = check(exercise_id, answer)
    assert not result and "still to answer" in result.message


def test_unknown_exercise_is_a_clear_error():
    with pytest.raises(UnknownExercise, match=r"Did you mean '02\.accept_key'"):
        check("02.acept_key", good_accept)
    with pytest.raises(UnknownExercise, match="no exercise 'nope'"):
        check("nope", 1)
    with pytest.raises(UnknownExercise, match="Known:"):
        check("99.anything", 1)      # no chat_lesson.lesson99 module: still a clear error


def test_result_renders_as_text_and_html():
    bad = check("02.accept_key", lambda k: "<b>" + k)
    page = bad._repr_html_()
    assert "❌" in page and "Hint:" in page and "&lt;b&gt;" in page and "<b>&lt;b&gt;" not in page
    good = check("02.accept_key", good_accept)
    assert "✅" in good._repr_html_() and "Hint" not in good._repr_html_()
    assert repr(good) == str(good)


def test_check_prints_outside_jupyter(capsys):
    check("01.short_poll_delay", lambda ms: (ms / 2, 0.95 * ms))
    assert capsys.readouterr().out.startswith("✅ 01.short_poll_delay")


def test_hint_and_listing():
    assert "GUID" in hint("02.accept_key") or "258EAFA5" in hint("02.accept_key")
    assert list_exercises("02") == ["02.accept_key", "02.broken_handshakes", "02.refusal_codes"]
    assert FAULTS and all(k in FAULTS for k in ("connection", "key", "accept")) and set(BROKEN_HANDSHAKES) == {"A", "B", "C"}


def test_registering_is_one_decorator():
    try:
        @exercise("98.double", hint="multiply by two")
        def _double(answer):
            """Write double(x)."""
            for x in (0, 3, -4):
                expect(answer(x) == 2 * x, f"double({x}) gave {answer(x)!r}")
            return "doubled"

        assert EXERCISES["98.double"].title == "Write double(x)."
        assert check("98.double", lambda x: x * 2).message == "doubled"
        wrong = check("98.double", lambda x: x + 2)
        assert not wrong and wrong.message == "double(0) gave 2" and wrong.hint == "multiply by two"

        @exercise("98.sharp", hint="general hint")
        def _sharp(answer):
            raise Wrong("nope", hint="sharper hint")

        assert check("98.sharp", 1).hint == "sharper hint"
        assert check("98.sharp", 1).message == "nope"

        with pytest.raises(ValueError, match="already registered"):
            @exercise("98.double", hint="another")
            def _other(answer):
                return None
    finally:
        EXERCISES.pop("98.double", None)
        EXERCISES.pop("98.sharp", None)


def test_right_message_defaults():
    try:
        @exercise("98.silent", hint="h")
        def _silent(answer):
            expect(answer == 1, "not one")

        assert check("98.silent", 1).message == "right!"
    finally:
        EXERCISES.pop("98.silent", None)


def test_each_lesson_registers_its_exercises_in_its_own_module():
    for lesson, module in LESSON_MODULES.items():
        ids = list_exercises(lesson)
        assert ids, f"lesson {lesson} registers no exercise"
        assert {EXERCISES[e].checker.__module__ for e in ids} == {module}


def test_check_imports_only_the_lesson_it_needs():
    code = ("import sys; from chat_lesson.lessons.exercises import get; get('05.me_command'); "
            "print(*('chat_lesson.lessons.' + m in sys.modules for m in ('lesson05', 'lesson06')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "False"], out.stderr
