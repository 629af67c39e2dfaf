"""Self-checks for the lessons' exercises: ``check("02.accept_key", my_function)``.

Every exercise is a *checker*: a function that takes the student's answer
(a number, a dict, a function ...), tries it, and either returns (right) or
raises :class:`Wrong` saying what is wrong.  Answers are tested, not compared
as strings: the ``02.accept_key`` checker calls the student's function on
RFC 6455's key, the article's key and fresh random keys.

Registering an exercise is one decorator::

    @exercise("03.unmask", hint="XOR payload byte i with key[i % 4] (RFC 6455 §5.3)")
    def _(answer):                                 # answer: the student's unmask(data, key)
        key = os.urandom(4)
        expect(answer(frames.apply_mask(b"hello", key), key) == b"hello", "unmasking gave the wrong bytes")
        return "masking and unmasking are one operation"   # optional message shown on success

The checker may ``raise Wrong(why, hint=...)`` (or use :func:`expect`) for a
wrong answer; anything else it raises while running the student's code is
reported as that code's error.  Each lesson's exercises live in that lesson's
module (``chat_lesson/lessons/lessonNN.py``), listed in :data:`LESSON_MODULES`:
:func:`check` imports the module of lesson NN the first time it meets an
``NN.*`` id it does not know yet.

``check`` returns a :class:`Result`, truthy when right, that renders as a
green or red box in Jupyter and as one line of text elsewhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import html
import importlib
import sys
from typing import Any
from collections.abc import Callable

Checker = Callable[[Any], "str | None"]


class Wrong(Exception):
    """Raised by a checker: the answer is wrong; ``hint`` (optional) replaces the exercise's own hint."""

    def __init__(self, why: str, hint: str | None = None) -> None:
        super().__init__(why)
        self.hint = hint


class UnknownExercise(LookupError):
    """``check()`` was given an id no lesson registered."""


@dataclasses.dataclass(frozen=True)
class Exercise:
    id: str
    checker: Checker
    hint: str
    title: str


@dataclasses.dataclass(frozen=True)
class Result:
    """The outcome of one ``check()``: truthy when the answer is right."""

    exercise: str
    passed: bool
    message: str
    hint: str | None = None

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        mark = "✅" if self.passed else "❌"
        text = f"{mark} {self.exercise}: {self.message}"
        if self.hint and not self.passed:
            text += f"\n   hint: {self.hint}"
        return text

    __repr__ = __str__

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        colour, background = ("#166534", "#dcfce7") if self.passed else ("#991b1b", "#fee2e2")
        mark = "✅" if self.passed else "❌"
        hint = ""
        if self.hint and not self.passed:
            hint = f'<div style="margin-top:.3em"><b>Hint:</b> {html.escape(self.hint)}</div>'
        message = html.escape(self.message).replace("\n", "<br>")
        return (f'<div style="border-left:4px solid {colour};background:{background};color:{colour};'
                f'padding:.5em .8em;margin:.3em 0;border-radius:4px;font-family:sans-serif">'
                f'{mark} <b>{html.escape(self.exercise)}</b>: {message}{hint}</div>')


EXERCISES: dict[str, Exercise] = {}
"""Every registered exercise, by id ("02.accept_key")."""


def exercise(exercise_id: str, *, hint: str, title: str | None = None) -> Callable[[Checker], Checker]:
    """Register the decorated function as the checker of ``exercise_id``.

    ``hint`` is shown when an answer is wrong (unless the checker's
    :class:`Wrong` brings a sharper one); ``title`` defaults to the first line
    of the checker's docstring.
    """

    def register(checker: Checker) -> Checker:
        old = EXERCISES.get(exercise_id)
        if old is not None and (old.checker.__module__, old.checker.__qualname__) != (
                checker.__module__, checker.__qualname__):
            raise ValueError(f"exercise {exercise_id!r} is already registered by {old.checker.__module__}")
        doc = (checker.__doc__ or "").strip().splitlines()
        EXERCISES[exercise_id] = Exercise(exercise_id, checker, hint, title or (doc[0] if doc else exercise_id))
        return checker

    return register


def expect(condition: Any, why: str, hint: str | None = None) -> None:
    """Raise :class:`Wrong` with ``why`` (and ``hint``) unless ``condition`` holds."""
    if not condition:
        raise Wrong(why, hint)


LESSON_MODULES = {
    "01": "chat_lesson.lessons.lesson01",
    "02": "chat_lesson.lessons.lesson02",
    "03": "chat_lesson.lessons.lesson03",
    "04": "chat_lesson.lessons.lesson04",
    "05": "chat_lesson.lessons.lesson05",
    "06": "chat_lesson.lessons.lesson06",
    "07": "chat_lesson.lessons.lesson07",
    "08": "chat_lesson.lessons.lesson08",
}
"""Where each lesson's exercises are registered: the id's first two characters name the lesson."""


def _load(prefix: str) -> None:
    """Import the module of the lesson ``prefix`` starts with (every lesson's if it names none)."""
    lesson = str(prefix)[:2]
    for number, module in LESSON_MODULES.items():
        if lesson in ("", number) or len(lesson) == 1 and number.startswith(lesson):
            importlib.import_module(module)


def get(exercise_id: str) -> Exercise:
    """The registered exercise; on first use of an id "NN.name", imports lesson NN's module to register it."""
    if isinstance(exercise_id, str) and exercise_id not in EXERCISES:
        _load(exercise_id[:2])
    try:
        return EXERCISES[exercise_id]
    except (KeyError, TypeError):
        near = difflib.get_close_matches(str(exercise_id), EXERCISES, n=3)
        lesson = [e for e in sorted(EXERCISES) if e[:3] == str(exercise_id)[:3]]
        suggestion = f" Did you mean {' or '.join(map(repr, near))}?" if near else ""
        known = f" Exercises of this lesson: {', '.join(lesson)}." if lesson else f" Known: {', '.join(sorted(EXERCISES))}."
        raise UnknownExercise(f"no exercise {exercise_id!r}.{suggestion}{known}") from None


def check(exercise_id: str, answer: Any) -> Result:
    """Check ``answer`` to exercise ``exercise_id``; returns a :class:`Result` (truthy when right).

    In Jupyter, put ``check(...)`` last in the cell to see the result box.
    Run as a plain script, it also prints the result.
    """
    ex = get(exercise_id)
    if answer is ... or answer is None:
        result = Result(ex.id, False, "no answer yet: replace the ... with yours", ex.hint)
    else:
        try:
            message = ex.checker(answer)
        except Wrong as wrong:
            result = Result(ex.id, False, str(wrong), wrong.hint or ex.hint)
        except Exception as error:  # the student's code raised: report it, do not crash the cell
            result = Result(ex.id, False, f"your answer raised {type(error).__name__}: {error}", ex.hint)
        else:
            result = Result(ex.id, True, message or "right!")
    if not _interactive():
        print(result)
    return result


def hint(exercise_id: str) -> str:
    """The hint of an exercise, without checking anything."""
    return get(exercise_id).hint


def list_exercises(prefix: str = "") -> list[str]:
    """The ids of the registered exercises starting with ``prefix`` (e.g. "02")."""
    _load(prefix)
    return sorted(e for e in EXERCISES if e.startswith(prefix))


def _interactive() -> bool:
    """True in IPython/Jupyter or the Python REPL, where the returned value is shown anyway."""
    return "IPython" in sys.modules and _ipython_running() or hasattr(sys, "ps1")


def _ipython_running() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


def need_dict(answer: Any, keys: list[str]) -> dict[str, Any]:
    """The answer as a dict with exactly ``keys`` filled in (not ``...``)."""
    expect(isinstance(answer, dict), f"expected a dict like {{{keys[0]!r}: ...}}, got {type(answer).__name__}")
    missing = [k for k in keys if k not in answer]
    unknown = [k for k in answer if k not in keys]
    expect(not unknown, f"unknown key(s) {', '.join(map(repr, unknown))}: the keys are {', '.join(map(repr, keys))}")
    expect(not missing, f"missing: {', '.join(map(repr, missing))}")
    empty = [k for k in keys if answer[k] is ... or answer[k] is None]
    expect(not empty, f"still to answer: {', '.join(map(repr, empty))} (replace the ...)")
    return answer


def need_choices(answer: Any, truth: dict[str, tuple[str, str]], choices: dict[str, str], choices_name: str) -> None:
    """A multiple-choice answer: ``{item: choice}`` for every item of ``truth`` ({item: (right choice, why)}).

    An unknown choice is refused first; then every wrong item is named, with
    its explanation as the hint.
    """
    answer = need_dict(answer, list(truth))
    unknown = {k: v for k, v in answer.items() if v not in choices}
    expect(not unknown, f"choose each answer from {choices_name}: " + ", ".join(f"{k}={v!r}" for k, v in unknown.items()),
           "the choices are: " + ", ".join(choices))
    wrong = [k for k, (right, _) in truth.items() if answer[k] != right]
    expect(not wrong, f"{len(truth) - len(wrong)} of {len(truth)} right; look again at "
           + ", ".join(f"{k} (you said {answer[k]!r})" for k in wrong),
           " · ".join(f"{k}: {truth[k][1]}" for k in wrong))


def need_function(answer: Any, example: str) -> Callable[..., Any]:
    expect(callable(answer), f"pass your function itself (e.g. {example}), not {type(answer).__name__}",
           "write `def f(...): ...` in a cell, then check(..., f) without calling f")
    return answer


__all__ = ["EXERCISES", "LESSON_MODULES", "Exercise", "Result", "UnknownExercise", "Wrong", "check", "exercise",
           "expect", "get", "hint", "list_exercises", "need_choices", "need_dict", "need_function"]
