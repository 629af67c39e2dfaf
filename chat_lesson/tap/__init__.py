"""The frame inspector: a proxy that records every byte both ways and decodes it.

``from chat_lesson.tap import Tap`` is all a lesson needs.  The parts, each
importing only the ones before it:

- ``recorder``: pure, bytes in, records out (HTTP heads, frames, events,
  byte counts); no sockets, no event loop, no lock;
- ``views``: FrameTable and LiveView for a notebook (records in, tables out);
- ``links``: the sockets, one reader and one sender task per direction,
  and the faults (delay, freeze, bandwidth limit, cut);
- ``proxy``: the Tap, which numbers, stores and serves the records;
- ``cli``: ``python -m chat_lesson tap``, one record per line in a terminal.
"""

from .proxy import Tap
from .views import FrameTable, LiveView

__all__ = ["FrameTable", "LiveView", "Tap"]
