"""Bytes in, records out: what the tap saw, decoded, with no socket in sight.

The tap's proxy reads chunks from two sockets; this module turns each chunk
into records and *returns* them.  One :class:`Recorder` per TCP connection::

    recorder = Recorder(conn=1)
    records = recorder.receive("c2s", chunk, t=0.012)   # [ReadRecord, HttpRecord, FrameRecord, Event, ...]
    recorder.counts["c2s"]                              # its bytes by kind: http, header, mask, payload ...

Each direction, "c2s" (client to server) and "s2c", has a decoder: a small
state machine over a :class:`~chat_lesson.protocol.reader.Reader`, which
keeps the bytes that do not make a whole head or frame yet (TCP keeps no
message boundaries: one read may hold three frames, or a third of one).

- First HTTP (RFC 9112): requests c2s, responses s2c, several on one
  keep-alive connection, bodies skipped by their Content-Length (§6.3).
- After ``101 Switching Protocols`` (RFC 6455 §4.2.2) both directions carry
  frames (§5.2), unmasked (§5.3), glued into messages (§5.4) and, with
  permessage-deflate, inflated (RFC 7692 §7.2.2) with one context per
  direction, set up with the parameters the 101 agreed (§7.1).
- A decoding error stops decoding for that direction only: an "error"
  Event says why, and its bytes count as "other" from then on.  Forwarding
  is not our business: the proxy has sent the bytes on, unchanged, before
  it shows them to us.

The records come back with ``n=0``: whoever stores them numbers them
(``dataclasses.replace(record, n=...)``), so the records of every connection
share one sequence.  Nothing here locks, waits or does I/O; one caller at a
time per Recorder (the tap's loop, or a test).

The record types themselves live in ``records``.
"""

from __future__ import annotations

import collections
import logging
import math

from ..protocol import deflate
from ..protocol.frames import (CloseCode, Frame, FrameError, Message, MessageAssembler, Opcode, decode_close,
                               encode_frame, length_form)
from ..protocol.handshake import Head, HandshakeError, parse_head
from ..protocol.reader import Reader
from .records import DIRECTIONS, Counts, Event, FrameRecord, HttpRecord, ReadRecord, Record

__all__ = ["Recorder"]

log = logging.getLogger(__name__)


# -- One connection: two directions ------------------------------------------------------


class Recorder:
    """Decodes the two byte streams of one connection into records, and counts their bytes.

    ``receive(direction, data, t, wall)`` returns the records a chunk
    completes, its ReadRecord first.  The proxy splits it in two, ``read``
    when the chunk arrives and ``decode`` once it has been sent on, so the
    bytes are forwarded before any decoding starts.  ``finish()`` at the
    end.  Read ``counts``, ``errors`` (why decoding stopped, per direction),
    ``upgraded``, ``extensions`` and ``subprotocol`` at any time.

    ``max_payload`` bytes of each payload are kept in a FrameRecord (None:
    all); a frame or message over ``max_decode`` bytes stops decoding.
    """

    def __init__(self, conn: int = 1, *, max_payload: int | None = 64 * 1024,
                 max_decode: int = 16 * 1024 * 1024) -> None:
        self.conn, self.max_payload, self.max_decode = conn, max_payload, max_decode
        self.counts = {d: Counts() for d in DIRECTIONS}
        self.errors: dict[str, str | None] = {d: None for d in DIRECTIONS}
        self.requests: collections.deque[Head] = collections.deque()   # requests waiting for their response
        self.upgraded = False
        self.extensions: str | None = None
        self.subprotocol: str | None = None
        self._decoders = {d: _Decoder(self, d) for d in DIRECTIONS}
        self._woken: list[_Decoder] = []
        self._out: list[Record] = []

    def receive(self, direction: str, data: bytes, t: float = 0.0, wall: float = 0.0) -> list[Record]:
        """``read`` then ``decode``: the chunk's ReadRecord, then the heads, frames and events it completes."""
        return [self.read(direction, data, t, wall), *self.decode(direction)]

    def read(self, direction: str, data: bytes, t: float = 0.0, wall: float = 0.0) -> ReadRecord:
        """Count a chunk as read at ``t`` (and ``wall``) and keep it for :meth:`decode`."""
        decoder = self._decoders[_check(direction)]
        self.counts[direction].total += len(data)
        decoder.t, decoder.wall = t, wall
        if decoder.mode == "off":
            decoder.count("other", len(data))
        elif data:
            decoder.reader.receive_data(data)
        return ReadRecord(0, t, wall, self.conn, direction, bytes(data))

    def decode(self, direction: str) -> list[Record]:
        """Decode what ``read`` kept of ``direction``; return the records it completed (maybe none)."""
        self._out = []
        self._decoders[_check(direction)].advance()
        while self._woken:                     # a 101 or a refusal lets the c2s decoder go on
            self._woken.pop(0).advance()
        return self._out

    def finish(self, t: float = 0.0, wall: float = 0.0) -> list[Record]:
        """The connection is over: bytes still waiting (half a frame) count as "other"; say so.

        Also lets go of the buffers and the inflaters' windows: a finished
        Recorder keeps only its counts, errors and handshake details.
        """
        self._out = []
        for decoder in self._decoders.values():
            decoder.finish(t, wall)
        self.requests.clear()
        return self._out

    def _emit(self, record: Record) -> None:
        self._out.append(record)

    def _wake(self, decoder: _Decoder) -> None:
        if decoder not in self._woken:
            self._woken.append(decoder)

    def _upgrade(self, response: Head, t: float, wall: float) -> None:
        """A 101 arrived: both directions switch to frames, each with its own inflater.

        permessage-deflate keeps one DEFLATE context per direction; the
        parameters come from the Sec-WebSocket-Extensions of the 101.
        """
        self.upgraded = True
        self.extensions = response.headers.get("Sec-WebSocket-Extensions")
        self.subprotocol = response.headers.get("Sec-WebSocket-Protocol")
        negotiated = deflate.params_from_extension_header(self.extensions)
        for direction, params in zip(DIRECTIONS, negotiated or (None, None)):
            inflater = deflate.Inflater(params.no_context_takeover, params.window_bits) if params else None
            self._decoders[direction].start_frames(inflater)
        if self._decoders["c2s"].mode == "ws":
            self._wake(self._decoders["c2s"])
        detail = "switched to WebSocket"
        if negotiated:
            c, s = negotiated
            detail += f"; permessage-deflate c2s {_window(c)}, s2c {_window(s)}"
        if self.subprotocol:
            detail += f"; subprotocol {self.subprotocol}"
        self._emit(Event(0, t, wall, "upgrade", self.conn, "s2c", detail))


def _window(params: deflate.Params) -> str:
    return f"{params.window_bits}-bit window" + (", no context takeover" if params.no_context_takeover else "")


def _check(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'c2s' (client to server) or 's2c' (server to client), not {direction!r}")
    return direction


class _Undecodable(Exception):
    """Decoding this direction cannot go on (reason in the message)."""


class _Decoder:
    """Turns one direction's bytes into HTTP heads and WebSocket frames, as they arrive.

    ``mode`` is where the next byte belongs:

    - ``"http"``: the start of an HTTP head (a request c2s, a response s2c);
    - ``"body"``: inside a body whose length the head announced;
    - ``"wait"``: c2s after an upgrade request, until the response says
      whether the connection switched to WebSocket (101) or not;
    - ``"ws"``: WebSocket frames;
    - ``"off"``: decoding failed; every byte is "other" from here on.

    ``advance()`` never raises: whatever goes wrong is recorded and turns
    the mode to "off".
    """

    def __init__(self, recorder: Recorder, direction: str) -> None:
        self.recorder, self.direction = recorder, direction
        self.counts = recorder.counts[direction]
        self.mode = "http"
        self.reader = Reader(masked=None, max_size=recorder.max_decode)   # either side: the tap only watches
        self.body_left: float = 0
        self.after_body = "http"
        self.assembler: MessageAssembler | None = None
        self.message: tuple[Opcode, bool] | None = None   # (opcode, compressed) of the message in progress
        self.t, self.wall = 0.0, 0.0      # when the bytes being decoded were read

    @property
    def other(self) -> _Decoder:
        return self.recorder._decoders["s2c" if self.direction == "c2s" else "c2s"]

    def advance(self) -> None:
        """Decode as much as the buffered bytes allow."""
        reason = None
        try:
            while self.mode != "off" and self._step():
                pass
        except FrameError as error:
            hint = ("; the tap decodes frames and messages up to max_decode bytes: Tap(max_decode=...) raises it"
                    if error.code == CloseCode.MESSAGE_TOO_BIG else "")
            reason = f"{error}{hint}"
        except (_Undecodable, HandshakeError, ValueError) as error:
            reason = str(error)
        except Exception as error:  # a bug of ours must not break the traffic either
            log.exception("tap decoder failed")
            reason = f"{type(error).__name__}: {error}"
        if reason is not None:      # outside the except: its traceback still holds a view of the reader's buffer
            self.stop(reason)

    def stop(self, reason: str) -> None:
        """Give up on this direction: record why, count the rest as "other"."""
        if self.mode == "off":
            return
        self.mode, self.assembler = "off", None
        self.recorder.errors[self.direction] = reason
        self._event(f"decoding stopped: {reason}")
        self.count("other", len(self.reader.take()))
        if self.direction == "s2c" and self.other.mode == "wait":
            self.other.stop("the server's answer to the upgrade request could not be decoded")

    def finish(self, t: float, wall: float) -> None:
        left = len(self.reader.take())
        if left and self.mode != "off":
            self.t, self.wall = t, wall
            self._event(f"{left} byte(s) left undecoded when the connection ended ({self.mode})")
        self.count("other", left)
        self.mode, self.assembler = "off", None

    def count(self, part: str, n: float) -> None:
        if n:
            setattr(self.counts, part, getattr(self.counts, part) + int(n))

    def _event(self, detail: str) -> None:
        self.recorder._emit(Event(0, self.t, self.wall, "error", self.recorder.conn, self.direction, detail))

    def _step(self) -> bool:
        """Decode one thing from the buffer; False when more bytes are needed."""
        if self.mode == "http":
            return self._http()
        if self.mode == "body":
            return self._body()
        if self.mode == "ws":
            return self._frame()
        if self.reader.buffered > self.recorder.max_decode:      # "wait" for the 101, yet the client floods
            raise _Undecodable(f"{self.reader.buffered} bytes sent before the server answered the upgrade")
        return False    # "wait": the other direction will wake us

    # HTTP ------------------------------------------------------------------

    def _http(self) -> bool:
        raw = self.reader.next_head_bytes()      # HandshakeError past 16 KiB without a blank line
        if raw is None:
            return False
        head = parse_head(raw)
        self.count("http", len(raw))
        body = self._request(head) if head.is_request else self._response(head)
        rec = self.recorder
        rec._emit(HttpRecord(0, self.t, self.wall, rec.conn, self.direction, head, raw, body))
        if body:
            self.after_body, self.mode, self.body_left = self.mode, "body", body
        if not head.is_request and head.status == 101:
            rec._upgrade(head, self.t, self.wall)
        return True

    def _request(self, head: Head) -> float:
        """Note the request; return its body length; an upgrade request makes c2s wait for the answer."""
        if "Transfer-Encoding" in head.headers:
            raise _Undecodable("a chunked request body is not decoded by the tap")
        self.recorder.requests.append(head)
        if "websocket" in head.headers.tokens("Upgrade"):
            self.mode = "wait"
        return _content_length(head)

    def _response(self, head: Head) -> float:
        """Return the body length of a response (RFC 9112 §6.3), given the request it answers."""
        requests = self.recorder.requests
        request = requests.popleft() if requests else None
        if head.status is not None and 100 <= head.status < 200:
            if head.status != 101 and request is not None:
                requests.appendleft(request)                  # an interim answer: the real one follows
            if head.status != 101:
                return 0
        if self.other.mode == "wait" and head.status != 101:
            self.other.mode = "http"                          # upgrade refused: plain HTTP again
            self.recorder._wake(self.other)
        if head.status == 101:
            return 0
        if (request is not None and request.method == "HEAD") or head.status in (204, 304):
            return 0
        if "Transfer-Encoding" in head.headers:
            raise _Undecodable("a chunked response body is not decoded by the tap")
        if "Content-Length" in head.headers:
            return _content_length(head)
        return math.inf                                       # no length: the body runs until the server closes

    def _body(self) -> bool:
        n = len(self.reader.take(int(min(self.body_left, self.reader.buffered))))
        if n == 0:
            return False
        self.count("payload", n)
        self.body_left -= n
        if self.body_left == 0:
            self.mode = self.after_body
        return True

    # WebSocket ---------------------------------------------------------------

    def start_frames(self, inflater: deflate.Inflater | None) -> None:
        """The handshake is done: from now on this direction carries frames."""
        if self.mode == "off":
            return
        self.assembler = MessageAssembler(inflater, max_size=self.recorder.max_decode)
        if self.mode in ("http", "wait"):
            self.mode = "ws"
        else:                                                 # e.g. still in a (strange) body: frames after it
            self.after_body = "ws"

    def _frame(self) -> bool:
        frame, used = self.reader.next_frame_with_size()   # FrameError: broken, or over max_decode
        if frame is None:
            return False
        header = used - len(frame.payload)
        masked = frame.mask_key is not None
        self.count("header", header - 4 * masked)
        self.count("mask", 4 * masked)
        self.count("payload", len(frame.payload))
        self._record(frame, header)
        return True

    def _record(self, frame: Frame, header: int) -> None:
        """Assemble, inflate, then emit the frame; an assembly error is raised after the frame.

        ``raw`` is the frame encoded again: decode_frame accepts only the
        minimal length form and the same key masks the same bytes, so it is
        byte for byte what crossed (RFC 6455 §5.2, §5.3).
        """
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            self.message = (frame.opcode, frame.rsv1)
        opcode, compressed = self.message if (self.message and not frame.opcode.is_control) else (None, False)
        error, message, fragments = None, None, 0
        try:
            for done in self.assembler.feed(frame):
                if isinstance(done, Message):
                    message, fragments = done.data, done.fragments
        except FrameError as exc:
            error = exc
        limit = self.recorder.max_payload
        keep = len(frame.payload) if limit is None else min(len(frame.payload), limit)
        truncated = keep < len(frame.payload)
        if message is not None and limit is not None and len(message) > limit:
            message, truncated = message[:limit], True
        close_code = close_reason = None
        if frame.opcode == Opcode.CLOSE:
            try:
                close_code, close_reason = decode_close(frame.payload)
                close_code = int(close_code)
            except FrameError:
                pass
        rec = self.recorder
        rec._emit(FrameRecord(
            0, self.t, self.wall, rec.conn, self.direction,
            frame.fin, frame.rsv1, frame.rsv2, frame.rsv3, frame.opcode, frame.mask_key is not None,
            frame.mask_key, len(frame.payload), length_form(len(frame.payload)), header,
            bytes(frame.payload[:keep]), encode_frame(frame, strict=False)[: header + keep], truncated=truncated,
            compressed=compressed, message_opcode=opcode, message=message, fragments=fragments,
            close_code=close_code, close_reason=close_reason))
        if frame.fin and not frame.opcode.is_control:
            self.message = None
        if error is not None:
            raise error


def _content_length(head: Head) -> int:
    value = head.headers.get("Content-Length")
    if value is None:
        return 0
    if not value.strip().isdigit():
        raise _Undecodable(f"bad Content-Length {value!r}")
    return int(value)
