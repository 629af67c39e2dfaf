"""``python -m chat_lesson tap --to HOST:PORT``: the tap on a terminal, one record at a time.

Every HTTP head, frame and event is printed as it is recorded.  A frame's
header fields (FIN, RSV1, opcode, MASK, key, length form ...) make its first
line; when the whole does not fit the terminal, its payload and, for a
compressed message, the inflated text (after ``⇒``) follow on indented
lines, wrapped, so a broadcast's whole message is there to read::

      1234.5 ms  c1 ← #7    TEXT   FIN=1 RSV1=1 MASK=0 len=52 (7-bit) hdr=2
                 aa 56 2a a9 2c 48 55 b2 52 50 ca 4d 2d 2e 4e 4c 4f …
                 ⇒ {"type": "message", "username": "ann", "message": "the whole text, however long ...

``--width N`` cuts each text at N characters instead (0, the default: all
of it); payloads shown in hex (binary, compressed) are cut at 60 characters
when N is 0, since the ``⇒`` line has the message itself.  What came off
the wire is printed through ``records.printable``: escape sequences in a
payload or close reason show up as ``\\x1b[...``, they do not act.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import textwrap
from typing import Any

from .proxy import Tap
from .records import FrameRecord, Record

__all__ = ["render", "run_cli"]

INDENT = " " * 15          # under the time column: "   1234.5 ms  "


def render(record: Record, width: int = 0, columns: int = 100) -> str:
    """``record`` for a terminal ``columns`` wide: its line, or when too long, wrapped under an indent.

    ``width``: characters of text shown per payload (0: all).  Wrapping
    breaks inside words when it must and drops nothing, so the wrapped
    lines, indent removed, join back to the text.
    """
    line = record.line(width)
    if len(line) <= columns:
        return line
    wrap = dict(width=max(columns, len(INDENT) + 20), initial_indent=INDENT, subsequent_indent=INDENT,
                break_long_words=True, break_on_hyphens=False, drop_whitespace=False)
    if not isinstance(record, FrameRecord):
        first, *rest = textwrap.wrap(line, **{**wrap, "initial_indent": "", "drop_whitespace": True})
        return "\n".join([first, *rest])
    parts = [record.preview(width)]
    if record.inflated is not None:
        parts.append(f"⇒ {record.inflated_preview(width)}")
    return "\n".join([record.fields(), *(piece for part in parts for piece in textwrap.wrap(part, **wrap))])


async def run_cli(target: str, port: int = 8001, host: str = "127.0.0.1", *, delay: float = 0,
                  limit: float | None = None, width: int = 0, columns: int | None = None, out: Any = None) -> None:
    """Print every HTTP head, frame and event until cancelled (Ctrl-C).

    ``delay`` (ms each way) and ``limit`` (bytes/s) set faults from the
    start; ``width`` as in :func:`render`; ``columns``: the terminal's
    width when None (100 when output is not a terminal).
    """
    out = out or sys.stdout
    columns = columns or shutil.get_terminal_size((100, 24)).columns
    tap = Tap(target, port, host, quiet=True)
    tap.add_listener(lambda record: print(render(record, width, columns), file=out, flush=True))
    async with tap:
        if delay:
            tap.delay(delay)
        if limit:
            tap.limit(limit)
        to_host, to_port = tap.target_address
        print(f"Tap listening on {tap.url} -> {to_host}:{to_port} (Ctrl-C stops it)", file=out, flush=True)
        await asyncio.get_running_loop().create_future()
