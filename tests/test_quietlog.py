"""The log filter: a flood of one line shows a few, then says how many it left out."""

from __future__ import annotations

import logging

from chat_lesson.chat.quietlog import RepeatFilter


def test_repeats_are_cut_and_counted_and_other_lines_pass():
    clock = [0.0]
    f = RepeatFilter(most=3, window=10, clock=lambda: clock[0])

    def record(msg: str, *args) -> logging.LogRecord:
        return logging.LogRecord("chat", logging.WARNING, __file__, 1, msg, args, None)

    passed = [f.filter(record("refused %s", i)) for i in range(100)]
    assert passed.count(True) == 3
    assert f.filter(record("another line"))
    clock[0] = 11
    later = record("refused %s", 101)
    assert f.filter(later) and "97 more like it" in later.getMessage()
