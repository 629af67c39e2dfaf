"""The tap's notebook views: recorded frames as a table, and a table that keeps itself up to date.

FrameTable shows FrameRecords as HTML in Jupyter (``_repr_html_``, every
cell through ``html.escape``) and as aligned text elsewhere (every payload
and close reason through ``records.printable``, so a peer's escape codes
cannot repaint your terminal).  LiveView refreshes a table from the tap's
loop while traffic flows.

This module knows the record types and nothing of the proxy: a LiveView
reads from any object shaped like :class:`Source` (the Tap is one), so the
proxy imports the views and never the other way round.
"""

from __future__ import annotations

import asyncio
import html
import logging
import threading
import time
from typing import Any, Protocol

from ..notebook import in_notebook
from .records import Event, FrameRecord

__all__ = ["COLUMNS", "FrameTable", "LiveView", "Source"]

log = logging.getLogger(__name__)

COLUMNS = ["#", "t (ms)", "conn", "dir", "FIN", "RSV1", "opcode", "MASK", "key", "len", "form", "hdr",
           "payload", "inflated"]
HTML_FIELDS = COLUMNS.index("payload")      # in HTML the header fields are columns; payload and inflated go under them
HTML_PREVIEW = 400                          # characters of payload (and of the inflated message) in the HTML table


def _row(f: FrameRecord) -> list[str]:
    return [str(f.n), f"{f.t * 1000:.1f}", str(f.conn), f.arrow, str(int(f.fin)), str(int(f.rsv1)),
            f.opcode.name, str(int(f.masked)), f.key_hex, str(f.length), f.form, str(f.header_bytes),
            f.preview(), f.inflated_preview()]


class FrameTable:
    """Frames as a table: HTML in Jupyter, aligned text everywhere else.

    ``rows`` are the FrameRecords shown.  Columns: # (frame number), t (ms
    since the tap started), conn, dir (→ client to server, ← server to
    client), FIN, RSV1, opcode, MASK, key (the masking key, hex), len
    (payload bytes), form (7-, 16- or 64-bit length), hdr (header bytes,
    mask key included), payload (first characters: text, or hex when
    binary or compressed), inflated (the message, for compressed ones).
    """

    def __init__(self, rows: list[FrameRecord], caption: str = "") -> None:
        self.rows, self.caption = rows, caption

    def __len__(self) -> int:
        return len(self.rows)

    def __str__(self) -> str:
        cells = [COLUMNS] + [_row(f) for f in self.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
        lines = [self.caption] if self.caption else []
        for r in cells:
            lines.append("  ".join(c.ljust(w) if i >= len(COLUMNS) - 2 or i in (3, 6, 8, 10) else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if not self.rows:
            lines.append("(no frames yet)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        """One row of header fields per frame, and the payload on a line of its own under it, wrapped.

        The payload and the inflated message get the table's whole width
        (``HTML_PREVIEW`` characters at most, wrapped anywhere), so a long
        message never pushes the table past the notebook's edge.
        """
        style = "font-family:monospace;font-size:12px;border-collapse:collapse;max-width:100%"
        cell = "padding:1px 6px;white-space:pre;text-align:left"
        line = "border-bottom:1px solid rgba(128,128,128,.25)"
        wrap = ("padding:0 6px 3px 2.5em;text-align:left;white-space:pre-wrap;overflow-wrap:anywhere;"
                "word-break:break-all")
        tint = {"c2s": "rgba(66,133,244,.08)", "s2c": "rgba(52,168,83,.08)"}
        fields = COLUMNS[:HTML_FIELDS]
        head = "".join(f'<th style="{cell};{line}">{html.escape(c)}</th>' for c in fields)
        body = []
        for f in self.rows:
            cells = _row(f)[:HTML_FIELDS]
            payload, inflated = f.preview(HTML_PREVIEW), f.inflated_preview(HTML_PREVIEW)
            lines = [f"payload: {payload}"] if payload else []
            if inflated:
                lines.append(f"inflated: {inflated}")
            top = cell if lines else f"{cell};{line}"      # the line under a frame goes under its last row
            body.append(f'<tr style="background:{tint[f.direction]}">'
                        + "".join(f'<td style="{top}">{html.escape(c)}</td>' for c in cells) + "</tr>")
            if lines:
                body.append(f'<tr style="background:{tint[f.direction]}"><td colspan="{len(fields)}" '
                            f'style="{wrap};{line}">{html.escape(chr(10).join(lines))}</td></tr>')
        caption = f"<caption style='text-align:left'>{html.escape(self.caption)}</caption>" if self.caption else ""
        empty = "" if self.rows else f'<tr><td colspan="{len(fields)}" style="{cell}">(no frames yet)</td></tr>'
        return (f'<table style="{style}">{caption}<thead><tr>{head}</tr></thead>'
                f'<tbody>{"".join(body)}{empty}</tbody></table>')


class Source(Protocol):
    """What a LiveView reads from: the Tap, or anything with these (a test's fake, say)."""

    @property
    def running(self) -> bool: ...

    def frames(self, conn: int | None = None, direction: str | None = None, opcode: Any = None) -> list[FrameRecord]: ...

    def events(self, kind: str | None = None, conn: int | None = None) -> list[Event]: ...

    def table(self, conn: int | None = None, direction: str | None = None, opcode: Any = None,
              last: int | None = 100) -> FrameTable: ...

    def status(self) -> str: ...

    def last_number(self, kind: str) -> int: ...


class LiveView:
    """A view of the frames that keeps itself up to date while traffic flows.

    In Jupyter it is a table displayed once (``display_id=True``) and
    updated in place from the tap's loop thread, at most every ``interval``
    seconds, so the cell returns at once and the table keeps changing under
    it.  Elsewhere it prints one line per new frame or event.  It ends
    after ``seconds`` (None: when stopped), at ``stop()``, or when the tap
    stops; ``wait()`` blocks until then.  The source's loop runs ``run()``
    (``tap.live()`` starts it there).
    """

    def __init__(self, tap: Source, seconds: float | None, filters: dict[str, Any], rows: int,
                 interval: float, notebook: bool | None = None) -> None:
        self.tap, self.seconds, self.filters, self.rows = tap, seconds, filters, rows
        self.interval = max(0.2, interval)
        self.notebook = in_notebook() if notebook is None else notebook
        self._stopped = threading.Event()
        self._done = threading.Event()
        self._handle = None
        self._shown = (0, 0)          # last frame number and last event number already printed/shown
        if self.notebook:
            from IPython.display import display

            self._handle = display(self._table(), display_id=True)
        else:
            self._shown = (tap.last_number("frame"), tap.last_number("event"))

    def _table(self) -> FrameTable:
        table = self.tap.table(last=self.rows, **self.filters)
        table.caption = f"live · {self.tap.status()}"
        return table

    async def run(self) -> None:
        """Refresh every ``interval`` s until the end; on the source's loop."""
        start = time.monotonic()
        try:
            while not self._stopped.is_set() and self.tap.running:
                left = None if self.seconds is None else self.seconds - (time.monotonic() - start)
                if left is not None and left <= 0:
                    break
                await asyncio.sleep(self.interval if left is None else min(self.interval, left))
                self._refresh()
        finally:
            self._refresh()
            self._done.set()

    def _refresh(self) -> None:
        try:
            if self.notebook:
                seen = (self.tap.last_number("frame"), self.tap.last_number("event"))
                if seen != self._shown:
                    self._shown = seen
                    self._handle.update(self._table())
                return
            last_frame, last_event = self._shown
            new = [f for f in self.tap.frames(**self.filters) if f.n > last_frame]
            events = [e for e in self.tap.events() if e.n > last_event]
            self._shown = (max([last_frame] + [f.n for f in new]), max([last_event] + [e.n for e in events]))
            for record in sorted([*new, *events], key=lambda r: r.t):
                print(record.line(), flush=True)
        except Exception:                 # a view must never take the tap down
            log.exception("live view update failed")

    def stop(self) -> None:
        """Stop updating (within ``interval`` seconds)."""
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the view has ended; True if it did within ``timeout``."""
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def __repr__(self) -> str:
        return f"<LiveView {'ended' if self.done else 'running'}>"
