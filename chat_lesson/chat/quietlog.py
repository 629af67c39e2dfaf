"""Logs a troll cannot flood: the same line at most a few times per window, then one summary.

A few thousand refused connections a second would otherwise write megabytes
of identical warnings into the teacher's terminal (or the notebook's output).
The filter keys on the message's template, not its arguments, so "refused a
connection: %s" counts as one line whatever the address.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RepeatFilter", "quiet"]


class RepeatFilter(logging.Filter):
    """Let ``most`` records of one template through per ``window`` seconds; count the rest.

    When a window with suppressed records ends, the next record of that
    template carries a note saying how many were left out.
    """

    def __init__(self, most: int = 5, window: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.most, self.window, self.clock = most, window, clock
        self._seen: dict[tuple[str, str], tuple[float, int, int]] = {}   # -> window start, passed, suppressed

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self.clock()
        start, passed, suppressed = self._seen.get(key, (now, 0, 0))
        if now - start > self.window:
            if suppressed:
                record.msg = f"{record.msg} (and {suppressed} more like it in {self.window:g} s, not shown)"
            start, passed, suppressed = now, 0, 0
        if passed >= self.most:
            self._seen[key] = (start, passed, suppressed + 1)
            return False
        self._seen[key] = (start, passed + 1, suppressed)
        if len(self._seen) > 1000:                  # templates are few; this only guards against surprises
            self._seen.clear()
        return True


def quiet(logger: logging.Logger, **options: float) -> logging.Logger:
    """Attach a :class:`RepeatFilter` to ``logger`` and return it."""
    logger.addFilter(RepeatFilter(**options))
    return logger
