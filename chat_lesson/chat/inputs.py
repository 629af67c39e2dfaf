"""What a client may send, checked: one text frame of JSON in, a clean dict out, or a ChatError saying why.

Pure: the room calls :func:`parse_input` on every frame before any rule
applies, so a rule never sees a lone surrogate, a non-string name or JSON
nested four thousand deep.
"""

from __future__ import annotations

import json
from typing import Any

from .names import BadName, check_name
from .wire import DEFAULTS

__all__ = ["TEACHER_COMMANDS", "ChatError", "check_email", "check_username", "parse_input"]


class ChatError(ValueError):
    """A client's mistake, answered with an ``error`` event; ``code`` is machine-readable."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


def _text(value: Any, field: str) -> str:
    """``value`` if it is a string that UTF-8 can carry (a lone surrogate such as "\\ud800" cannot)."""
    if not isinstance(value, str):
        raise ChatError("bad_field", f"{field} must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ChatError("bad_field", f"{field} holds a lone surrogate (half of a UTF-16 pair), which is not text") from None
    return value


def check_username(value: Any, limit: int = DEFAULTS.max_username) -> str:
    try:
        return check_name(_text(value, "username"), limit)
    except BadName as why:
        raise ChatError("bad_name", f"this name cannot be used: {why}") from None


def check_email(value: Any) -> str:
    if value is None:
        return ""
    value = _text(value, "email")
    if len(value) > 254:
        raise ChatError("bad_field", "email must be a string of at most 254 characters")
    return value


def parse_input(raw: str | bytes, max_text: int = DEFAULTS.max_message,
                max_username: int = DEFAULTS.max_username) -> dict[str, Any]:
    """Validate one client frame and return it as a dict with a ``type``.

    Accepts the Go original's ``{"username", "email", "message"}`` (type
    ``message``), our ``{"type": "join", "username", "email"}``, a ``rename``,
    and the teacher's commands (``kick``, ``mute``, ``unmute``, ``ban``,
    ``lock``, ``unlock``, ``clear``).
    """
    if isinstance(raw, bytes):
        raise ChatError("bad_frame", "send JSON in a text frame, not a binary frame")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ChatError("bad_json", f"not valid JSON: {exc}") from None
    except RecursionError:
        raise ChatError("bad_json", "JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise ChatError("bad_json", "expected a JSON object like {\"username\": ..., \"message\": ...}")
    kind = data.get("type", "message")
    if kind == "join":
        secret = data.get("teacher")
        return {"type": "join", "username": check_username(data.get("username"), max_username),
                "email": check_email(data.get("email")),
                "teacher": _text(secret, "teacher") if secret is not None else None}
    if kind == "rename":
        return {"type": "rename", "username": check_username(data.get("username"), max_username)}
    if kind in TEACHER_COMMANDS:
        target = data.get("target")
        if kind in ("kick", "mute", "unmute", "ban") and (not isinstance(target, int) or isinstance(target, bool)):
            raise ChatError("bad_field", f"{kind} needs a target: the id of a person in the room")
        seconds = data.get("seconds")
        if seconds is not None and (not isinstance(seconds, (int, float)) or isinstance(seconds, bool)
                                    or not 0 < seconds <= 86400):
            raise ChatError("bad_field", "seconds must be a number from 1 to 86400")
        return {"type": kind, "target": target, "seconds": seconds}
    if kind == "resume":
        last = data.get("last")
        if not isinstance(last, int) or isinstance(last, bool) or last < 0:
            raise ChatError("bad_field", "resume needs last: the id of the last message you have (0 for none)")
        return {"type": "resume", "last": last}
    if kind != "message":
        raise ChatError("bad_field", f"unknown type {str(kind)[:40]!r}: use 'join', 'rename' or 'message'")
    text = _text(data.get("message"), "message")
    if not text.strip():
        raise ChatError("bad_field", "message must be a non-empty string")
    if len(text.encode()) > max_text:
        raise ChatError("too_long", f"message is longer than {max_text} bytes")
    name = data.get("username")
    return {"type": "message", "username": name if isinstance(name, str) else None,
            "email": check_email(data.get("email")), "message": text}


TEACHER_COMMANDS = ("kick", "mute", "unmute", "ban", "lock", "unlock", "clear")
