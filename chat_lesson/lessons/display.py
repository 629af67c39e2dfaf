"""How the lessons show things in a notebook: tables of rows, bytes and payloads, coloured source code.

Every lesson's helpers return a :class:`Table` (or a figure) rather than
printing, so a cell shows it as HTML in Jupyter and as aligned text in a
terminal or a test.
"""

from __future__ import annotations

import html
from typing import Any
from collections.abc import Sequence

from ..protocol.frames import CloseCode, FrameError, Opcode, decode_close

__all__ = ["Table", "hexdump", "show_code", "show_payload", "wrap"]


class Table:
    """A list of dicts shown as an HTML table in Jupyter and as aligned text elsewhere."""

    def __init__(self, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
        self.rows = list(rows)
        self.columns = list(columns or (self.rows[0].keys() if self.rows else []))

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{html.escape(str(c))}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(str(r.get(c, '')))}</td>"
                                        for c in self.columns) + "</tr>" for r in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __str__(self) -> str:
        cells = [[str(c) for c in self.columns]] + [[str(r.get(c, "")) for c in self.columns] for r in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


def wrap(text: str, width: int = 88, indent: str = "  ") -> str:
    """``text`` wrapped at word boundaries, each of its lines on its own, continuations indented.

    JupyterLab folds a long output line wherever the area ends, often in the
    middle of a word; lines kept under ``width`` characters never fold.
    """
    import textwrap

    return "\n".join(textwrap.fill(line, width, subsequent_indent=indent, break_on_hyphens=False,
                                    break_long_words=False) if line.strip() else line
                      for line in str(text).split("\n"))


def show_code(source: str, language: str = "python") -> Any:
    """Display ``source`` with syntax colouring in Jupyter (``IPython.display.Code``)."""
    from IPython.display import Code

    return Code(source, language=language)


def hexdump(data: bytes, limit: int = 24) -> str:
    """Bytes as hex pairs, cut after ``limit`` bytes with a note of how many more."""
    data = bytes(data)
    shown = data[:limit].hex(" ")
    return shown if len(data) <= limit else f"{shown} … (+{len(data) - limit} bytes)"


def show_payload(payload: bytes, opcode: Opcode | int | None = None, limit: int = 40) -> str:
    """A payload for people: text for text frames, code and reason for close frames, else hex."""
    payload = bytes(payload)
    if opcode == Opcode.CLOSE:
        try:
            code, reason = decode_close(payload)
            return f"close code {int(code)} ({CloseCode(code).name if code in CloseCode._value2member_map_ else '?'})" + (
                f", reason {reason!r}" if reason else "")
        except FrameError as error:
            return f"invalid close payload: {error}"
    try:
        text = payload.decode("utf-8")
        if text.isprintable() and (opcode in (Opcode.TEXT, Opcode.CONT, Opcode.PING, Opcode.PONG, None)):
            return repr(text if len(text) <= limit else text[:limit] + "…")
    except UnicodeDecodeError:
        pass
    return hexdump(payload, limit // 2)
