"""A blocking WebSocket client made of one socket and the course's pure code.

Nothing is hidden in a library: the opening handshake is
:func:`~chat_lesson.protocol.handshake.build_request` and
:func:`~chat_lesson.protocol.handshake.check_response` (RFC 6455 §4.1), every
frame is :func:`~chat_lesson.protocol.frames.encode_frame` (masked, as a
client must: §5.3), and what arrives goes through a
:class:`~chat_lesson.protocol.reader.Reader`, which hands out whole heads and
frames however TCP cut the byte stream.  Every byte exchanged is kept in
:attr:`RawClient.log`, with when it crossed::

    with RawClient(server.port, protocols=["chat-lesson.v1"]) as ws:
        ws.send_text('{"type": "join", "username": "raw"}')
        got = ws.recv_until(lambda f: b'"join"' in f.payload)   # an Exchange: .frame, .raw, .t
        rtt = ws.ping(b"still there?")                          # seconds until the pong (§5.5.2-3)

Lessons 02 and 04 draw and tabulate its log; lesson 06 uses it as the client
that never reads (``rcvbuf=``, then no ``recv`` at all); the tap's
tests count its bytes.  It waits on a socket time-out, never longer.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from typing import Any
from collections.abc import Callable, Iterable

from .protocol import deflate
from .protocol.frames import Frame, FrameError, Message, MessageAssembler, Opcode, decode_frame, encode_close, encode_frame
from .protocol.handshake import Head, build_request, check_response, make_key
from .protocol.reader import Reader

__all__ = ["Exchange", "RawClient"]


@dataclasses.dataclass(frozen=True)
class Exchange:
    """One thing that crossed the wire, as the client saw it.

    ``kind`` is "http" (a handshake head), "frame", "bytes" (sent as they
    are and not one frame) or "eof" (a FIN: that side's byte stream ended).
    A received frame's ``raw`` is its exact bytes: ``decode_frame`` accepts
    only the shortest length form (§5.2), so re-encoding a frame gives back
    the bytes it came in.
    """

    t: float                  # seconds since the TCP connection was made
    direction: str            # "→" the client sent it, "←" it received it
    kind: str
    raw: bytes = b""
    frame: Frame | None = None

    @property
    def header(self) -> int | None:
        """A frame's header size in bytes (with the 4-byte masking key of a client's frame); None if no frame."""
        return None if self.frame is None else len(self.raw) - len(self.frame.payload)


class RawClient:
    """A WebSocket client on a blocking socket; it logs every head, frame and FIN with a timestamp.

    ``protocols``, ``extensions`` (offers such as
    ``"permessage-deflate; client_max_window_bits"``), ``origin`` and
    ``headers`` go into the request.  ``rcvbuf`` sets ``SO_RCVBUF`` before
    connecting, so TCP advertises a small window from the start: a client
    that then never reads (a frozen laptop) has a kernel that soon accepts
    nothing more, and the server's writes to it back up.  ``handshake=False`` only opens TCP: send a request of
    your own with :meth:`send_raw` and read the answer with :meth:`recv_head`.
    ``timeout`` bounds every wait that is not given its own.
    """

    def __init__(self, port: int, host: str = "127.0.0.1", path: str = "/ws", *, protocols: Iterable[str] = (),
                 extensions: Iterable[str] = (), origin: str | None = None,
                 headers: Iterable[tuple[str, str]] = (), rcvbuf: int | None = None, timeout: float = 5,
                 handshake: bool = True) -> None:
        self.host, self.port, self.path, self.timeout = host, port, path, timeout
        self.protocols, self.extensions = list(protocols), list(extensions)
        self.origin, self.headers = origin, list(headers)
        self.reader = Reader(masked=False)          # a server never masks (§5.1)
        self.assembler = MessageAssembler()
        self.deflater: deflate.Deflater | None = None
        self.log: list[Exchange] = []
        self.sent = self.received = 0               # bytes written to / read from the socket
        self.key = self.request = self.response_head = None   # set by handshake()
        self.response: Head | None = None
        self.close_sent = self.close_received = False
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(timeout)
            sock.connect((host, port))
            self.sock, self.t0 = sock, time.monotonic()
            if handshake:
                self.handshake()
        except BaseException:
            sock.close()
            raise

    # -- the opening handshake (§4.1) --------------------------------------------------------

    def handshake(self) -> Head:
        """Send the upgrade request, read the answer's head, check it (§4.1); return the answer.

        Raises :class:`~chat_lesson.protocol.handshake.HandshakeError` naming
        the failed check (a refusal such as 403 included).  Frames that came
        right after the head stay in the reader.  If permessage-deflate was
        agreed (RFC 7692), :meth:`send_text` compresses and
        :meth:`recv_message` inflates.
        """
        self.key = make_key()
        self.request = build_request(f"{self.host}:{self.port}", self.path, self.key, origin=self.origin,
                                     protocols=self.protocols, extensions=self.extensions, extra_headers=self.headers)
        self.send_raw(self.request)
        self.response_head = self.recv_head()
        self.response = check_response(self.key, self.response_head, self.protocols, self.extensions)
        pair = deflate.contexts(self.response.headers.get("Sec-WebSocket-Extensions"), "client")
        self.deflater, inflater = pair or (None, None)
        self.assembler = MessageAssembler(inflater)
        return self.response

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose (§4.2.2), or None."""
        return None if self.response is None else self.response.headers.get("Sec-WebSocket-Protocol")

    # -- sending -------------------------------------------------------------------------------

    def _record(self, direction: str, kind: str, raw: bytes = b"", frame: Frame | None = None) -> Exchange:
        exchange = Exchange(time.monotonic() - self.t0, direction, kind, raw, frame)
        self.log.append(exchange)
        return exchange

    def send_raw(self, data: bytes) -> int:
        """Send bytes exactly as given (a request, a frame you built, garbage); return how many.

        The log calls them "http" if they start like a request, "frame" if
        they are exactly one valid frame, "bytes" otherwise.
        """
        data = bytes(data)
        self.sock.sendall(data)
        self.sent += len(data)
        frame = None
        try:
            frame, used = decode_frame(data)
            frame = frame if used == len(data) else None
        except Exception:  # noqa: BLE001 - not one whole valid frame: logged as bytes
            pass
        kind = "http" if data[:4] == b"GET " else "frame" if frame is not None else "bytes"
        self._record("→", kind, data, frame)
        if frame is not None and frame.opcode == Opcode.CLOSE:
            self.close_sent = True
        return len(data)

    def send_frame(self, opcode: Opcode, payload: bytes = b"", *, fin: bool = True, rsv1: bool = False,
                   mask_key: bytes | None = None) -> bytes:
        """Send one frame masked with ``mask_key`` (4 fresh random bytes if None: §5.3); return its bytes."""
        wire = encode_frame(Frame(fin, Opcode(opcode), bytes(payload), rsv1), mask_key or os.urandom(4))
        self.send_raw(wire)
        return wire

    def send_text(self, text: str) -> bytes:
        """Send a text message in one frame, compressed if permessage-deflate was agreed (RFC 7692 §6)."""
        data = text.encode()
        if self.deflater is not None:
            return self.send_frame(Opcode.TEXT, self.deflater.compress(data), rsv1=True)
        return self.send_frame(Opcode.TEXT, data)

    # -- receiving -----------------------------------------------------------------------------

    def recv_some(self, size: int = 65536) -> bytes:
        """One ``recv()``: what the kernel holds (b"" once the server's FIN came), handed to the reader."""
        data = self.sock.recv(size)
        self.received += len(data)
        if data or not self.reader.eof:
            self.reader.receive_data(data)
            if not data:
                self._record("←", "eof")
        return data

    def _fill(self, deadline: float, what: str) -> None:
        """Read more bytes into the reader before ``deadline``, or say why not."""
        if self.reader.eof:
            raise ConnectionError(f"the server closed the connection before {what}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {what} within the time-out")
        self.sock.settimeout(left)
        try:
            data = self.recv_some()
        except TimeoutError:
            raise TimeoutError(f"no {what} within the time-out") from None
        finally:
            self.sock.settimeout(self.timeout)
        if not data:
            raise ConnectionError(f"the server closed the connection before {what}")

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def recv_head(self, timeout: float | None = None) -> bytes:
        """Read up to the blank line that ends the server's HTTP head; return it (bytes after it stay buffered)."""
        deadline = self._deadline(timeout)
        while (head := self.reader.next_head_bytes()) is None:
            self._fill(deadline, "end of the HTTP head (a blank line)")
        self._record("←", "http", head)
        return head

    def recv_frame(self, timeout: float | None = None) -> Exchange:
        """The next frame, whatever it is: an Exchange with ``.frame``, ``.raw`` and ``.t``.

        Raises TimeoutError if none is whole within ``timeout`` s,
        ConnectionError if the server closed TCP first, and FrameError if
        the server broke a rule of §5 (a masked frame, say).
        """
        deadline = self._deadline(timeout)
        while (frame := self.reader.next_frame()) is None:
            self._fill(deadline, "frame")
        if frame.opcode == Opcode.CLOSE:
            self.close_received = True
        return self._record("←", "frame", encode_frame(frame), frame)

    def recv_until(self, match: Opcode | Callable[[Frame], Any], timeout: float | None = None) -> Exchange:
        """Read frames (skipping others) until one has opcode ``match`` or ``match(frame)`` is true."""
        test = (lambda f: f.opcode == match) if isinstance(match, Opcode) else match
        deadline = self._deadline(timeout)
        while True:
            got = self.recv_frame(max(0.0, deadline - time.monotonic()))
            if test(got.frame):
                return got

    def recv_message(self, timeout: float | None = None) -> Message:
        """The next whole data message (§5.4: fragments joined, inflated if compressed), skipping control frames."""
        deadline = self._deadline(timeout)
        while True:
            got = self.recv_frame(max(0.0, deadline - time.monotonic()))
            for done in self.assembler.feed(got.frame):
                if isinstance(done, Message):
                    return done

    def read_to_eof(self, timeout: float | None = None) -> None:
        """Read until the server's FIN (what arrives stays in the reader, counted in ``received``)."""
        deadline = self._deadline(timeout)
        while not self.reader.eof:
            try:
                self._fill(deadline, "end of the stream")
            except ConnectionError:
                break

    # -- ping, pong, close ---------------------------------------------------------------------

    def ping(self, payload: bytes = b"", timeout: float | None = None) -> float:
        """Send a ping (§5.5.2) and wait for the pong with the same payload; return the round trip in s."""
        sent = time.monotonic()
        self.send_frame(Opcode.PING, payload)
        self.recv_until(lambda f: f.opcode == Opcode.PONG and f.payload == payload, timeout)
        return time.monotonic() - sent

    def pong(self, payload: bytes) -> bytes:
        """Answer a ping: a pong carrying exactly the ping's payload (§5.5.3), masked."""
        return self.send_frame(Opcode.PONG, payload)

    def close_handshake(self, code: int = 1000, reason: str = "", timeout: float = 2) -> Frame | None:
        """The closing handshake (§7.1.2): send a close frame, read up to the server's; return it (None if none came)."""
        if not self.close_sent:
            self.send_frame(Opcode.CLOSE, encode_close(code, reason))
        if self.close_received:
            return None
        try:
            return self.recv_until(Opcode.CLOSE, timeout).frame
        except (OSError, TimeoutError, FrameError):
            return None

    def close(self, wait_fin: float = 1) -> None:
        """Hang up TCP (after the closing handshake, if one was made).

        After the closing handshake the server closes TCP first (§7.1.1):
        we wait up to ``wait_fin`` s for its FIN, then close our side.
        Without a closing handshake this just closes: the server sees the
        connection drop (its close code is 1006, §7.1.5).
        """
        if self.sock.fileno() == -1:
            return
        if self.close_sent and self.close_received and not self.reader.eof:
            try:
                self.read_to_eof(wait_fin)
            except (OSError, TimeoutError):
                pass
        self.sock.close()
        self._record("→", "eof")

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close_handshake()
        self.close()
