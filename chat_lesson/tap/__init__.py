"""The frame inspector: a proxy that records every byte both ways and decodes it.

``from chat_lesson.tap import Tap`` is all a lesson needs; the parts are
``recorder`` (pure: bytes in, records out), ``proxy`` (the sockets and the
faults) and ``views`` (tables for a notebook).
"""

from .proxy import Tap
from .views import FrameTable, LiveView

__all__ = ["FrameTable", "LiveView", "Tap"]
