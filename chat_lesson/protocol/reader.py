"""An incremental reader: feed it bytes as they arrive, take out whole heads and frames.

TCP delivers a byte stream, not messages: one ``recv()`` may hold half a
frame, or three frames and the start of a fourth.  A reader keeps what has
arrived and hands out only what is complete, the way the sans-I/O libraries
(h11, wsproto, websockets' protocol objects) do::

    reader = Reader(masked=True)           # a server reads masked client frames
    reader.receive_data(sock.recv(4096))
    head = reader.next_head()              # the HTTP upgrade request, or None: need more bytes
    while (frame := reader.next_frame()) is not None:
        ...                                # each complete frame, in order

``None`` means "not enough bytes yet" (h11 calls it NEED_DATA); a broken
frame raises :class:`~chat_lesson.protocol.frames.FrameError` with the close
code to send.  The reader never touches a socket, so it works the same under
a blocking socket, asyncio, a proxy or a test that feeds it one byte at a time.
"""

from __future__ import annotations

from .frames import Frame, IncompleteFrame, decode_frame
from .handshake import MAX_HEAD, Head, parse_head, split_head

__all__ = ["Reader"]


class Reader:
    """Bytes in (``receive_data``), complete HTTP heads and frames out.

    ``masked`` and ``max_size`` are passed to
    :func:`~chat_lesson.protocol.frames.decode_frame`: ``True`` for a server
    reading a client, ``False`` for a client reading a server, ``None`` to
    accept both (an observer such as the tap).
    """

    def __init__(self, *, masked: bool | None = None, max_size: int | None = None, max_head: int = MAX_HEAD) -> None:
        self.masked, self.max_size, self.max_head = masked, max_size, max_head
        self._buffer = bytearray()
        self._wanted = 0          # bytes a frame in progress needs in all: no decode before they are here
        self.eof = False

    def receive_data(self, data: bytes) -> None:
        """Add bytes that arrived; ``b""`` means the peer closed its side (end of stream)."""
        if data:
            self._buffer += data
        else:
            self.eof = True

    @property
    def buffered(self) -> int:
        """How many bytes wait for the rest of a head or frame."""
        return len(self._buffer)

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None until more bytes arrive (raises FrameError)."""
        return self.next_frame_with_size()[0]

    def next_frame_with_size(self) -> tuple[Frame | None, int]:
        """Like :meth:`next_frame`, with the frame's size on the wire (0 with None)."""
        if len(self._buffer) < self._wanted:
            return None, 0
        try:
            frame, used = decode_frame(self._buffer, masked=self.masked, max_size=self.max_size)
        except IncompleteFrame as incomplete:
            self._wanted = len(self._buffer) + incomplete.needed
            return None, 0
        del self._buffer[:used]
        self._wanted = 0
        return frame, used

    def next_head(self) -> Head | None:
        """The next complete HTTP head (request or response), or None until its blank line arrives.

        Raises :class:`~chat_lesson.protocol.handshake.HandshakeError` if the
        head is malformed or no blank line came within ``max_head`` bytes.
        Bytes after the head (frames, a body) stay in the reader.
        """
        raw = self.next_head_bytes()
        return None if raw is None else parse_head(raw)

    def next_head_bytes(self) -> bytes | None:
        """The next head's raw bytes (ending in CRLF CRLF), unparsed; or None."""
        split = split_head(self._buffer, self.max_head)
        if split is None:
            return None
        head, _ = split
        del self._buffer[: len(head)]
        return head

    def take(self, n: int | None = None) -> bytes:
        """Remove and return up to ``n`` buffered bytes (all of them with None): an HTTP body, say."""
        n = len(self._buffer) if n is None else min(n, len(self._buffer))
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data
