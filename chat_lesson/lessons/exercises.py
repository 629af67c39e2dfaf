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
reported as that code's error.  Later lessons register their exercises here,
in ``chat_lesson/lessonNN.py`` or in a ``chat_lesson/exercises_*.py``:
:func:`check` imports those the first time it meets an unknown id.

``check`` returns a :class:`Result`, truthy when right, that renders as a
green or red box in Jupyter and as one line of text elsewhere.
"""

from __future__ import annotations

import base64
import dataclasses
import difflib
import hashlib
import html
import importlib
import math
import pkgutil
import sys
from typing import Any, Callable

from ..protocol import frames, handshake

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


def _discover(exercise_id: str) -> None:
    """Import the modules that may register ``exercise_id``: ``lessonNN`` and every ``exercises_*``."""
    names = [f"lesson{exercise_id[:2]}"] if exercise_id[:2].isdigit() else []
    names += sorted(m.name for m in pkgutil.iter_modules(_package_path())
                    if m.name.startswith("exercises_"))
    for name in names:
        if exercise_id in EXERCISES:
            return
        try:
            importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__package__}.{name}":
                raise


def _package_path() -> list[str]:
    return list(importlib.import_module(__package__).__path__)


def get(exercise_id: str) -> Exercise:
    """The registered exercise; on first use of an id, imports the module that registers it.

    Exercises live here, in ``chat_lesson/lessonNN.py`` or in any
    ``chat_lesson/exercises_*.py``; those are imported when an id is not yet known.
    """
    if isinstance(exercise_id, str) and exercise_id not in EXERCISES:
        _discover(exercise_id)
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
    _discover(prefix[:2] + ".\0")     # an id no one registers: imports every module that might
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


# =============================================================================
# Lesson 01: HTTP vs WebSocket
# =============================================================================


@exercise("01.short_poll_delay", hint="A message lands at a random moment between two polls and waits for the "
          "next one: its wait is spread evenly from 0 to one interval. Half of the messages wait less than the "
          "median; 95% wait less than the p95.")
def _short_poll_delay(answer: Any) -> str:
    """Predict the median and p95 wait of a short-polled message for any poll interval."""
    f = need_function(answer, "delay(interval_ms) -> (median_ms, p95_ms)")
    for interval in (100, 500, 2000, 10_000):
        got = f(interval)
        expect(isinstance(got, (tuple, list)) and len(got) == 2,
               f"delay({interval}) returned {got!r}; return two numbers: (median_ms, p95_ms)")
        expect(... not in got, "replace each ... with your formula (in terms of interval_ms)")
        median, p95 = (float(x) for x in got)
        expect(not math.isclose(median, interval, rel_tol=0.05),
               f"delay({interval}) gives a median of {median:g} ms: that is the longest any message waits, "
               "the one that arrives just after a poll")
        expect(math.isclose(median, interval / 2, rel_tol=0.1),
               f"delay({interval}) gives a median of {median:g} ms; it should be close to {interval / 2:g} ms")
        expect(math.isclose(p95, 0.95 * interval, rel_tol=0.03),
               f"delay({interval}) gives a p95 of {p95:g} ms; 95% of the waits are shorter than it",
               "The wait is uniform between 0 and the interval; what fraction of the interval leaves 5% above it?")
    return ("median = interval / 2, p95 = 0.95 × interval (plus the network's own delay): "
            "compare with the measured values printed below")


def _frame_cases() -> dict[str, tuple[int, bool]]:
    return {"server sends 5 bytes": (5, False), "client sends 5 bytes": (5, True),
            "server sends 200 bytes": (200, False), "client sends 70000 bytes": (70_000, True)}


FRAME_HEADER_CASES = list(_frame_cases())
"""The keys of the ``01.frame_header_bytes`` answer dict."""


@exercise("01.frame_header_bytes", hint="2 bytes always; +2 when the payload length is 126-65535, +8 when it is "
          "larger; +4 for the masking key, which only client-to-server frames carry (RFC 6455 §5.2).")
def _frame_header_bytes(answer: Any) -> str:
    """How many header bytes a WebSocket frame carries in front of its payload."""
    cases = _frame_cases()
    answer = need_dict(answer, list(cases))
    wrong = []
    for name, (n, masked) in cases.items():
        right = frames.header_size(n, masked)
        if answer[name] != right:
            why = []
            form = frames.length_form(n)
            why.append(f"{n} bytes fit the {form} length form" + ("" if form == "7-bit" else
                       f" (+{2 if form == '16-bit' else 8} bytes of extended length)"))
            why.append("a client masks: +4 bytes of key" if masked else "a server does not mask")
            wrong.append(f"{name!r}: not {answer[name]!r} ({'; '.join(why)})")
    expect(not wrong, "\n".join(wrong))
    return "a frame header is 2 to 14 bytes; every HTTP exchange carries a request head and a response head"


# The article's closing table (总结), rows in its own order and words, translated.
ARTICLE_TABLE = {
    "Use HTTP for": [
        "Retrieving a resource (检索资源)",
        "Highly cacheable resources (高度可缓存的资源)",
        "Idempotency and safety (幂等性和安全性)",
        "Error scenarios (错误方案)",
    ],
    "Use WebSocket for": [
        "Fast reaction time (快速响应时间)",
        "Ongoing updates (持续更新)",
        "Ad-hoc messaging (Ad-hoc消息传递)",
    ],
    "Wrong uses of HTTP": [
        "Relying on the client polling the service rather than the user starting each request",
        "Frequent service calls to send small messages",
        "The client must react quickly to changes in a resource, and cannot predict when a change happens",
    ],
    "Wrong uses of WebSocket": [
        "The connection is used for very few events or a very short time, and the client need not react quickly",
        "Several WebSockets must be open to the same service at once",
        "Opening a WebSocket, sending a message, closing it, then doing it all again",
        "Re-implementing the request/response pattern inside the messaging layer",
    ],
}

# scenario -> (description, the better fit, the question to ask, why: the article's row it matches)
_SCENARIOS: dict[str, tuple[str, str, str, str]] = {
    "stock_ticker": ("A stock ticker whose prices change about 10 times a second", "websocket",
                     "how often does news come, and who starts each exchange?",
                     "ongoing updates; polling it would be 'frequent service calls to send small messages'"),
    "pdf_download": ("Downloading the course notes as a PDF", "http",
                     "is it one resource, fetched once, that a cache could keep?",
                     "retrieving a resource, highly cacheable; a WebSocket 'used for one event' is a wrong use"),
    "form_submit": ("Submitting a sign-up form once", "http",
                    "what tells the user that it worked or failed, and may it be retried safely?",
                    "idempotency, safety and error scenarios: HTTP has methods and status codes for exactly this; "
                    "'open, send, close, repeat' is a wrong use of WebSocket"),
    "cursors": ("Showing every player's mouse cursor in a shared whiteboard", "websocket",
                "how fast must the others see each move, and how many moves per second?",
                "fast reaction time and ad-hoc messaging, in both directions, many times a second"),
    "mobile_rest_api": ("The product catalogue API of a shopping app", "http",
                        "is it request/response on resources that caches could keep?",
                        "retrieving resources that caches can keep; over a WebSocket you would "
                        "'re-implement request/response in the messaging layer'"),
    "score_per_minute": ("A sports score that changes about once a minute, where a few seconds late is fine",
                         "http", "how many events, and must the client react fast?",
                         "very few events and no need to react quickly: the article's first wrong "
                         "use of WebSocket; an occasional (cacheable) GET does the job"),
    "class_chat": ("This course's class chat", "websocket",
                   "who speaks when, and how soon should the others see it?",
                   "ad-hoc messaging: anyone may speak at any moment, and everyone should see it at once"),
    "job_finished": ("Telling a waiting user the moment their video has finished converting (which may take "
                     "seconds or an hour)", "websocket",
                     "can the client predict when the change happens?",
                     "the client must react quickly to a change it cannot predict: the article's third "
                     "wrong use of HTTP (polling for it)"),
}

SCENARIOS = {name: text for name, (text, *_) in _SCENARIOS.items()}
"""The scenarios of ``01.when_to_use``: name -> description (answer each with "http" or "websocket")."""


def _transport(value: Any) -> str | None:
    text = str(value).strip().lower().replace(" ", "").replace("-", "")
    if text in ("http", "https", "rest", "polling"):
        return "http"
    if text in ("websocket", "websockets", "ws", "wss"):
        return "websocket"
    return None


@exercise("01.when_to_use", hint="Go back to the article's table: HTTP for resources you fetch (and cache) and for "
          "requests that need clear success or failure; WebSocket when updates keep coming and the client must "
          "react fast.")
def _when_to_use(answer: Any) -> str:
    """HTTP or WebSocket? Decide each scenario with the article's closing table."""
    answer = need_dict(answer, list(_SCENARIOS))
    unclear = [k for k in _SCENARIOS if _transport(answer[k]) is None]
    expect(not unclear, f"answer each with 'http' or 'websocket'; not understood: "
           + ", ".join(f"{k}={answer[k]!r}" for k in unclear))
    wrong = [k for k, (_, fit, _, _) in _SCENARIOS.items() if _transport(answer[k]) != fit]
    right = len(_SCENARIOS) - len(wrong)
    expect(not wrong, f"{right} of {len(_SCENARIOS)} right. Look again at: " + ", ".join(wrong),
           " · ".join(f"{k}: {_SCENARIOS[k][2]}" for k in wrong))
    return "all right. Why each:" + "".join(f"\n • {k}: {why}" for k, (_, _, _, why) in _SCENARIOS.items())


# =============================================================================
# Lesson 02: the handshake
# =============================================================================

RFC_KEY, RFC_ACCEPT = "dGhlIHNhbXBsZSBub25jZQ==", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="        # RFC 6455 §1.3
ARTICLE_KEY, ARTICLE_ACCEPT = "w4v7O6xFTi36lq3RNcgctw==", "Oy4NRAQ13jhfONC7bP8dTKb4PTU="  # the article's pair


def _accept_mistakes(key: str) -> dict[str, str]:
    """What common wrong versions of accept_key return for ``key``, and what each did wrong."""
    guid = handshake.GUID
    digest = hashlib.sha1((key + guid).encode()).digest()
    hexdigest = hashlib.sha1((key + guid).encode()).hexdigest()
    mistakes = {
        hexdigest: "you returned the SHA-1 as hex; the header wants base64 of the 20 raw bytes (.digest())",
        base64.b64encode(hexdigest.encode()).decode():
            "you base64-encoded the hex text; encode the 20 raw bytes from .digest() instead",
        base64.b64encode(hashlib.sha1(key.encode()).digest()).decode(): "you forgot to append the GUID",
        base64.b64encode(hashlib.sha1((guid + key).encode()).digest()).decode():
            "the GUID goes after the key, not before",
        base64.b64encode(hashlib.sha1((key + guid.lower()).encode()).digest()).decode():
            "the GUID is upper case: 258EAFA5-E914-47DA-95CA-C5AB0DC85B11",
        base64.b64encode(hashlib.sha1((key + " " + guid).encode()).digest()).decode():
            "no space between key and GUID: plain concatenation",
        base64.b64encode(hashlib.sha256((key + guid).encode()).digest()).decode(): "the hash is SHA-1, not SHA-256",
        base64.urlsafe_b64encode(digest).decode(): "use standard base64 (+ and /), not the URL-safe alphabet",
        key: "you returned the key itself: the server must prove it computed something from it",
    }
    try:
        raw = base64.b64decode(key)
        mistakes[base64.b64encode(hashlib.sha1(raw + guid.encode()).digest()).decode()] = (
            "do not base64-decode the key first: concatenate the 24 characters as they came")
    except ValueError:
        pass
    return mistakes


@exercise("02.accept_key", hint="Sec-WebSocket-Accept = base64( SHA-1( key + \"258EAFA5-E914-47DA-95CA-C5AB0DC85B11\" ) ): "
          "hashlib.sha1(...).digest(), then base64.b64encode(...).decode() (RFC 6455 §4.2.2).")
def _accept_key(answer: Any) -> str:
    """Write accept_key(key) -> str, the value a server puts in Sec-WebSocket-Accept."""
    f = need_function(answer, "accept_key")
    keys = [(RFC_KEY, "RFC 6455's example key"), (ARTICLE_KEY, "the article's key")]
    keys += [(handshake.make_key(), "a fresh random key") for _ in range(3)]
    for key, where in keys:
        got = f(key)
        if isinstance(got, bytes):
            raise Wrong(f"accept_key({key!r}) returned bytes {got!r}; a header value is text: add .decode()")
        expect(isinstance(got, str), f"accept_key({key!r}) returned {type(got).__name__}, expected a str")
        right = handshake.accept_key(key)
        if got != right:
            diagnosis = _accept_mistakes(key).get(got.strip())
            if got.strip() == right:
                diagnosis = "remove the surrounding whitespace or newline"
            raise Wrong(f"wrong for {where} {key!r}: got {got!r}, expected {right!r}", diagnosis)
    return (f"right for RFC 6455's pair ({RFC_KEY} → {RFC_ACCEPT}), the article's pair "
            f"({ARTICLE_KEY} → {ARTICLE_ACCEPT}) and 3 random keys")


def _request(*lines: str, start: str = "GET /ws HTTP/1.1") -> bytes:
    return ("\r\n".join([start, *lines]) + "\r\n\r\n").encode()


BROKEN_HANDSHAKES: dict[str, tuple[str, bytes]] = {
    "A": ("a client's request", _request(
        "Host: 127.0.0.1:8000", "Upgrade: websocket", "Connection: keep-alive",
        f"Sec-WebSocket-Key: {RFC_KEY}", "Sec-WebSocket-Version: 13")),
    "B": ("a client's request", _request(
        "Host: 127.0.0.1:8000", "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Key: aGVsbG8gd29ybGQ=", "Sec-WebSocket-Version: 13")),
    "C": (f"a server's answer to a request with Sec-WebSocket-Key: {RFC_KEY}", _request(
        "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Accept: {RFC_KEY}",
        start="HTTP/1.1 101 Switching Protocols")),
}
"""Three handshakes with one fault each: name -> (what it is, the bytes)."""

FAULTS = {
    "method": "the method is not GET",
    "version": "Sec-WebSocket-Version is not 13",
    "host": "the Host header is missing",
    "upgrade": "the Upgrade header does not say websocket",
    "connection": "the Connection header does not contain Upgrade",
    "key": "Sec-WebSocket-Key is not base64 of 16 bytes",
    "accept": "Sec-WebSocket-Accept is not the value computed from the key",
    "status": "the status is not 101",
    "origin": "the Origin is not allowed",
}
"""The answers to choose from for ``02.broken_handshakes``."""

_BROKEN_TRUTH = {
    "A": ("connection", "Upgrade: websocket is there, but Connection must list the token Upgrade (Firefox sends "
                        "'keep-alive, Upgrade', which is fine); 'keep-alive' alone is not."),
    "B": ("key", "decode the key: aGVsbG8gd29ybGQ= is base64 of 'hello world', 11 bytes; a key is 16 random bytes."),
    "C": ("accept", "compare the Accept value with the key: the server echoed the key back instead of computing "
                    "base64(SHA-1(key + GUID))."),
}


def _verdict(name: str) -> str:
    """What our own handshake code says about a broken handshake (run live, not stored)."""
    what, raw = BROKEN_HANDSHAKES[name]
    if raw.startswith(b"HTTP/"):
        try:
            handshake.check_response(RFC_KEY, raw)
        except handshake.HandshakeError as error:
            return f"the client fails the connection: {error}"
        return "accepted"
    answer = handshake.check_request(raw)
    return f"the server answers {answer.status} {answer.reason}: {answer.body.decode().strip()}"


@exercise("02.broken_handshakes", hint="Check each header against RFC 6455 §4.1 (the client's request) and §4.2.2 "
          "(the server's answer): Upgrade, Connection, the key's length, the accept value.")
def _broken_handshakes(answer: Any) -> str:
    """Name the one fault in each of three broken handshakes (choose from FAULTS)."""
    need_choices(answer, _BROKEN_TRUTH, FAULTS, "FAULTS")
    return "right. What our handshake code says:" + "".join(f"\n • {k}: {_verdict(k)}" for k in BROKEN_HANDSHAKES)


REFUSAL_CASES = {
    "wrong_version": "a request with Sec-WebSocket-Version: 8",
    "missing_key": "a request without Sec-WebSocket-Key",
    "foreign_origin": "a request with Origin: http://evil.example (the page came from elsewhere)",
    "plain_get": "a plain GET /ws, as a browser's address bar sends it (no Upgrade, no key)",
}
"""The requests of ``02.refusal_codes``: name -> description (answer each with a status code)."""


def _refusal_request(name: str) -> bytes:
    base = ["Host: 127.0.0.1:8000", "Upgrade: websocket", "Connection: Upgrade",
            f"Sec-WebSocket-Key: {RFC_KEY}", "Sec-WebSocket-Version: 13"]
    if name == "wrong_version":
        base[-1] = "Sec-WebSocket-Version: 8"
    elif name == "missing_key":
        del base[3]
    elif name == "foreign_origin":
        base.append("Origin: http://evil.example")
    elif name == "plain_get":
        base = ["Host: 127.0.0.1:8000", "Accept: text/html"]
    return _request(*base)


def _same_origin_only(origin: str | None) -> bool:
    return origin is None or origin == "http://127.0.0.1:8000"


@exercise("02.refusal_codes", hint="400 Bad Request: the request is not a valid handshake; 403 Forbidden: valid, but "
          "the server will not serve this Origin (RFC 6455 §4.2.2, §10.2); 426 Upgrade Required: valid, but a "
          "protocol version the server does not speak, answered with the versions it does (§4.4).")
def _refusal_codes(answer: Any) -> str:
    """Which status code does our server answer to each refused request?"""
    answer = need_dict(answer, list(REFUSAL_CASES))
    truth = {name: handshake.check_request(_refusal_request(name), allowed_origins=_same_origin_only)
             for name in REFUSAL_CASES}
    wrong = []
    for name, verdict in truth.items():
        try:
            given = int(answer[name])
        except (TypeError, ValueError):
            raise Wrong(f"{name}: give a status code as a number, like 400, not {answer[name]!r}") from None
        if given != verdict.status:
            wrong.append(name)
    expect(not wrong, "not right yet: " + ", ".join(f"{n} (not {answer[n]})" for n in wrong))
    return "right:" + "".join(f"\n • {n} → {v.status} {v.reason}" for n, v in truth.items())


__all__ = ["check", "exercise", "expect", "hint", "list_exercises", "Result", "Wrong", "UnknownExercise",
           "EXERCISES", "SCENARIOS", "ARTICLE_TABLE", "BROKEN_HANDSHAKES", "FAULTS", "REFUSAL_CASES",
           "FRAME_HEADER_CASES"]
