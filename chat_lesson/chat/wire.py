"""The chat's wire constants and defaults, defined once.

The server's signature, ``python -m chat_lesson serve --help``, the
docstrings and the browser page all read their numbers from here (the page
reads them from ``/limits.json`` and from the ``welcome`` event the server
sends first), so a default
changed here is changed everywhere.

The wire protocol (DESIGN.md): a client sends JSON text frames,
``{"type": "join", "username", "email"}`` then ``{"username", "email",
"message"}``; the server sends typed JSON events (``welcome``, ``message``,
``join``, ``leave``, ``presence``, ``history``, ``error``).  A client that
offers the subprotocol :data:`SUBPROTOCOL` gets them all; one that offers
none (the Go original's page) is *legacy* and gets only ``message`` events.
"""

from __future__ import annotations

import dataclasses

__all__ = ["DEFAULTS", "HELP", "SUBPROTOCOL", "Limits"]

SUBPROTOCOL = "chat-lesson.v1"


@dataclasses.dataclass(frozen=True)
class Limits:
    """Every number a chat room enforces; ``Limits()`` holds the defaults."""

    max_message: int = 4096          # bytes of chat text in one message
    max_frame: int = 8192            # bytes in one WebSocket message; larger closes 1009
    max_username: int = 32           # characters in a name
    rate_limit: float = 10.0         # messages per second per client, 0 = off
    burst: int = 20                  # messages allowed at once above the rate
    bytes_rate: float = 8192.0       # bytes of chat text per second per address, 0 = off ...
    bytes_burst: int = 16384         # ... after a first few long messages
    max_buffer: int = 256 * 1024     # unsent bytes after which a client that stopped reading is closed
    ping_interval: float = 20.0      # seconds between pings, 0 = none
    ping_timeout: float = 20.0       # seconds to wait for a pong
    client_ping_rate: float = 20.0   # pings a client may send per second, 0 = any number ...
    client_ping_burst: int = 50      # ... after the first few (a browser sends none)
    history: int = 50                # recent messages shown to a newcomer, 0 = none
    rename_rate: float = 0.1         # renames per second per address (one every 10 s) ...
    rename_burst: int = 3            # ... after the first few
    connect_rate: float = 2.0        # new connections per second per address ...
    connect_burst: int = 10          # ... after the first few (a page reload, a second tab)
    max_per_address: int = 10        # open connections per address
    max_connections: int = 1000      # open connections in all (kept below the open-file limit)
    mute_seconds: float = 300.0      # how long the teacher's mute lasts unless told
    announce_after: float = 2.0      # seconds a newcomer stays before the class hears it joined, 0 = at once
    announce_rate: float = 20.0      # joins announced per second at most (a whole class reconnecting trickles in)

    def public(self) -> dict[str, float]:
        """What a page needs to know (sent in the ``welcome`` event)."""
        return {"max_message": self.max_message, "max_frame": self.max_frame, "max_username": self.max_username,
                "rate_limit": self.rate_limit, "burst": self.burst}


DEFAULTS = Limits()

HELP = {
    "max_message": "longest chat text in bytes",
    "max_frame": "largest WebSocket message in bytes; larger closes 1009",
    "max_username": "longest name in characters",
    "rate_limit": "messages per second per client, 0 = off",
    "burst": "messages allowed at once above the rate",
    "bytes_rate": "bytes of chat text per second per address, 0 = off",
    "bytes_burst": "bytes of chat text allowed at once above the rate",
    "max_buffer": "unsent bytes after which a client that stopped reading is closed",
    "ping_interval": "seconds between pings, 0 = none",
    "ping_timeout": "seconds to wait for a pong",
    "client_ping_rate": "pings a client may send per second before it is closed (1008), 0 = any number",
    "client_ping_burst": "pings a client may send at once above the rate",
    "history": "recent messages shown to a newcomer, 0 = none",
    "rename_rate": "renames per second per address",
    "rename_burst": "renames allowed at once above the rate",
    "connect_rate": "new connections per second per address, 0 = off",
    "connect_burst": "new connections allowed at once above the rate",
    "max_per_address": "open connections per address, 0 = no cap",
    "max_connections": "open connections in all",
    "mute_seconds": "how long a mute lasts",
    "announce_after": "seconds a newcomer stays before the class hears it joined, 0 = at once",
    "announce_rate": "joins announced per second at most",
}
