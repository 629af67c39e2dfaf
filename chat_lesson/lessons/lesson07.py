"""Lesson 07's tools: run the learner's own server from a cell, grade it, measure it.

The server itself lives in the notebook, every line of it visible; this
module only holds what is not the server:

- :class:`StreamServer`: ``asyncio.start_server`` with the learner's
  ``handle(reader, writer)``, on a background loop (``.start()``/``.stop()``
  like ``ChatServer``); an exception in a handler ends that connection and is
  counted in ``.errors``, never printed as a traceback.
- :class:`WebsocketsServer`: the same for a ``websockets`` handler (the
  reference echo server).
- :func:`page_file`: the chat page's files (``static/``) as an HTTP answer.
- :func:`scores_table`, :func:`cases_table`: conformance reports side by side.
- :func:`fanout`, :func:`fanout_table`: ``python -m chat_lesson.bench fanout --url``
  against a server of this kernel, whose CPU time is read from /proc.
- The graders of ``07.pong``, ``07.close_echo``, ``07.mask`` and ``07.fail``:
  each puts the learner's function into a copy of the lesson's server and
  runs the battery's cases that need it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from typing import Any
from collections.abc import Awaitable, Callable

from .. import conformance
from ..chat.static import CONTENT_TYPES, STATIC_DIR, static_file
from ..notebook import CellService, show_link
from ..protocol.frames import (CloseCode, Frame, FrameError, Message, MessageAssembler, Opcode, decode_close,
                               decode_frame, encode_close, encode_frame)
from ..protocol.handshake import Answer, check_request
from ..protocol.reader import Reader
from .display import Table
from .exercises import exercise, expect, need_function

__all__ = ["StreamServer", "WebsocketsServer", "cases_table", "fanout", "fanout_table", "page_file", "scores_table"]

log = logging.getLogger(__name__)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# -- running servers from cells ----------------------------------------------------------------


class StreamServer(CellService):
    """``asyncio.start_server(handle, host, port)`` on a loop of its own: ``StreamServer(handle, port=0).start()``."""

    def __init__(self, handle: Handler, host: str = "127.0.0.1", port: int = 0, *, name: str = "Your server",
                 quiet: bool = False) -> None:
        self.handle, self.host, self.port, self.name, self.quiet = handle, host, port, name, quiet
        self.errors: list[str] = []          # what ended connections abnormally, newest last (at most 100)
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def _guarded(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as error:
            self.errors.append(f"{type(error).__name__}: {error}")
        except Exception as error:  # noqa: BLE001 - the learner's bug ends one connection, not the server
            self.errors.append(f"{type(error).__name__}: {error}")
        finally:
            del self.errors[:-100]
            writer.close()

    async def astart(self) -> StreamServer:
        self._server = await asyncio.start_server(self._guarded, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._claim_port()
        if not self.quiet:
            show_link(self.url, f"{self.name} at")
        return self

    async def astop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        if hasattr(self._server, "close_clients"):       # Python 3.13+
            self._server.close_clients()
        try:
            await asyncio.wait_for(self._server.wait_closed(), 2)
        except TimeoutError:
            pass
        self._server = None
        self._release_port()

    def __repr__(self) -> str:
        state = "running" if self._server is not None else "stopped"
        return f"<{self.name} {self.ws_url} {state}: {self.connections} connections, {len(self.errors)} ended by errors>"


class WebsocketsServer(CellService):
    """A ``websockets`` server for ``handler(ws)``, on a loop of its own; its logs are kept quiet."""

    def __init__(self, handler: Callable[[Any], Awaitable[None]], host: str = "127.0.0.1", port: int = 0,
                 **options: Any) -> None:
        self.handler, self.host, self.port, self.options = handler, host, port, options
        self._server: Any = None

    async def astart(self) -> WebsocketsServer:
        from websockets.asyncio.server import serve

        quiet = logging.getLogger("chat_lesson.lesson07.websockets")
        quiet.setLevel(logging.CRITICAL)
        self._server = await serve(self.handler, self.host, self.port, logger=quiet, **self.options)
        self.port = self._server.sockets[0].getsockname()[1]
        self._claim_port()
        return self

    async def astop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            self._release_port()


def page_file(request: bytes) -> Answer:
    """The chat page's file that a plain ``GET /path`` asks for (``static/``), as an :class:`Answer`; else 404."""
    target = request.split(b" ", 2)[1].decode("ascii", "replace") if request.count(b" ") >= 2 else "/"
    found = static_file(STATIC_DIR, target)
    if found is None:
        body = b"Not found\n"
        return Answer(404, "Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                                         ("Connection", "close")], body)
    body = found.read_bytes()
    kind = CONTENT_TYPES.get(found.suffix, "application/octet-stream")
    return Answer(200, "OK", [("Content-Type", kind), ("Content-Length", str(len(body))), ("Cache-Control", "no-cache"),
                              ("Connection", "close")], body)


# -- reports side by side ------------------------------------------------------------------------


def scores_table(reports: dict[str, conformance.Report]) -> Table:
    """One row per category, one column per server: "passed (+ non-strict) / cases", and failures."""
    rows = []
    for category in [*conformance.CATEGORIES, "all"]:
        row: dict[str, Any] = {"category": category}
        for name, report in reports.items():
            s = report.score(None if category == "all" else category)
            if not s["cases"]:
                continue
            extra = f" + {s['non-strict']} non-strict" if s["non-strict"] else ""
            fails = f", {s['fail']} FAIL" if s["fail"] else ""
            row[name] = f"{s['pass']}{extra} / {s['cases']}{fails}"
        rows.append(row)
    rows.append({"category": "score", **{name: f"{r.score()['score']:.0f}% ({r.mode}, {r.seconds:.1f} s)"
                                        for name, r in reports.items()}})
    return Table(rows)


def cases_table(report: conformance.Report, verdicts: tuple[str, ...] = ("fail", "non-strict")) -> Table:
    """The cases with these verdicts: what was sent, what came back, why."""
    def cut(items: list[str], n: int = 3) -> str:
        shown = " · ".join(items[-n:] if len(items) > n else items)
        return ("… " if len(items) > n else "") + (shown if len(shown) < 160 else shown[:159] + "…")
    rows = [{"verdict": r.verdict, "case": f"{r.category}/{r.id}", "RFC": r.section, "why": r.why,
             "sent (last)": cut(r.sent), "got": cut(r.got)} for r in report.results if r.verdict in verdicts]
    rest = " or ".join(v for v in ("pass", "non-strict") if v not in verdicts)
    return Table(rows or [{"verdict": "none", "case": f"every case is {rest}"}])


# -- performance -----------------------------------------------------------------------------------


def fanout(url: str, clients: int = 50, messages: int = 100, timeout: float = 30) -> dict[str, Any]:
    """``python -m chat_lesson.bench fanout --url URL --pid <this kernel>``: the figures as a dict.

    The server runs in this kernel, so the server CPU the bench reads from
    /proc is this process's: keep other servers of the kernel idle meanwhile.
    """
    cmd = [sys.executable, "-m", "chat_lesson.bench", "fanout", "--url", url, "--pid", str(os.getpid()),
           "--clients", str(clients), "--messages", str(messages), "--timeout", "20", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"bench failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["command"] = "python -m chat_lesson.bench " + " ".join(cmd[3:])
    return figures


def fanout_table(results: dict[str, dict[str, Any]]) -> Table:
    keys = [("deliveries", "deliveries"), ("lost", "lost"), ("seconds", "seconds"),
            ("deliveries_per_s", "deliveries/s"), ("p50_ms", "p50 latency (ms)"), ("p99_ms", "p99 latency (ms)"),
            ("server_cpu_s", "server CPU (s)"), ("server_us_per_delivery", "server CPU per delivery (µs)")]
    return Table([{"": label, **{name: r.get(key) for name, r in results.items()}} for key, label in keys])


# -- graders: the learner's function inside the lesson's server ----------------------------------

MAX_SIZE = 2**20


def _fixed_reader() -> Reader:
    return Reader(masked=True, max_size=MAX_SIZE)


def _fixed_ping(frame: Frame) -> bytes:
    return encode_frame(Frame(True, Opcode.PONG, frame.payload))


def _fixed_close(frame: Frame) -> bytes:
    code, _ = decode_close(frame.payload)
    return encode_frame(Frame(True, Opcode.CLOSE, b"" if code == CloseCode.NO_STATUS_RCVD else encode_close(code)))


def _fixed_fail(error: FrameError) -> bytes:
    return encode_frame(Frame(True, Opcode.CLOSE, encode_close(error.code)))


def _echo_server(new_reader=_fixed_reader, answer_ping=_fixed_ping, answer_close=_fixed_close,
                 fail=_fixed_fail) -> Handler:
    """The lesson's echo server, as the notebook writes it, with its four small functions given."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        answer = check_request(request)
        writer.write(answer.to_bytes())
        if not answer.accepted:
            return
        frames, messages = new_reader(), MessageAssembler(max_size=MAX_SIZE)
        try:
            while data := await reader.read(65536):
                frames.receive_data(data)
                while (frame := frames.next_frame()) is not None:
                    for item in messages.feed(frame):
                        if isinstance(item, Message):
                            payload = item.data.encode() if isinstance(item.data, str) else item.data
                            writer.write(encode_frame(Frame(True, item.opcode, payload)))
                        elif item.opcode == Opcode.PING:
                            writer.write(answer_ping(item))
                        elif item.opcode == Opcode.CLOSE:
                            writer.write(answer_close(item))
                            return
        except FrameError as error:
            writer.write(fail(error))
    return handle


def _battery(only: list[str], **hooks: Any) -> conformance.Report:
    server = StreamServer(_echo_server(**hooks), quiet=True, name="graded").start()
    try:
        return conformance.run(server.ws_url, "echo", timeout=1.0, grace=0.1, only=only)
    finally:
        server.stop()


def _expect_battery(report: conformance.Report, cases: str) -> str:
    bad = [r for r in report.results if r.verdict != "pass"]
    expect(not bad, f"{len(bad)} of the {cases} cases do not pass yet: " +
           "; ".join(f"{r.id}: {r.verdict}, {r.why}" for r in bad[:3]))
    return f"the {len(report.results)} {cases} cases of the battery pass with your function inside the server"


def _frame_of(data: Any, what: str) -> Frame:
    expect(isinstance(data, (bytes, bytearray)), f"{what} must return bytes (encode_frame(...)), not {type(data).__name__}")
    expect(len(data) >= 2, f"{what} returned {len(data)} bytes: nothing would reach the client")
    frame, used = decode_frame(bytes(data))
    expect(used == len(data), f"{what} returned {len(data)} bytes, but one frame is {used}: send exactly one frame")
    expect(frame.mask_key is None, "a server must not mask its frames (§5.1): call encode_frame without a key")
    return frame


@exercise("07.pong", hint="encode_frame(Frame(True, Opcode.PONG, frame.payload)): the ping's payload, unmasked (§5.5.3)")
def _(answer: Any) -> str:
    """answer_ping(frame) -> bytes: a pong carrying the ping's payload."""
    answer = need_function(answer, "check('07.pong', answer_ping)")
    for payload in (b"", b"hello", bytes(range(125))):
        pong = _frame_of(answer(Frame(True, Opcode.PING, payload)), "answer_ping")
        expect(pong.opcode == Opcode.PONG, f"answer_ping returned a {pong.opcode.name} frame, not a PONG")
        expect(pong.payload == payload, f"the pong carries {pong.payload[:20]!r}…, not the ping's payload {payload[:20]!r}")
    return _expect_battery(_battery(["pings/ping-payload", "pings/ping-empty", "pings/ping-125",
                                     "fragmentation/ping-between"], answer_ping=answer), "ping")


@exercise("07.close_echo", hint="code, reason = decode_close(frame.payload); answer encode_close(code), or an empty "
                                "payload when the close had none (code 1005)")
def _(answer: Any) -> str:
    """answer_close(frame) -> bytes: a close frame echoing the client's code."""
    answer = need_function(answer, "check('07.close_echo', answer_close)")
    for code in (1000, 1001, 3000, 4999):
        reply = _frame_of(answer(Frame(True, Opcode.CLOSE, encode_close(code, "bye"))), "answer_close")
        expect(reply.opcode == Opcode.CLOSE, f"answer_close returned a {reply.opcode.name} frame, not a CLOSE")
        expect(reply.payload[:2] == code.to_bytes(2, "big"),
               f"the client closed with {code}, your answer says {reply.payload[:2].hex() or 'no code'}")
    try:
        answer(Frame(True, Opcode.CLOSE, (1005).to_bytes(2, "big")))
    except FrameError:
        pass
    else:
        expect(False, "a close with code 1005 must be refused: let decode_close raise its FrameError (§7.4.1)")
    return _expect_battery(_battery(["closing"], answer_close=answer), "closing")


@exercise("07.mask", hint="Reader(masked=True, max_size=MAX_SIZE): a server reads masked frames only (§5.1)")
def _(answer: Any) -> str:
    """new_reader() -> Reader: one that refuses unmasked client frames."""
    answer = need_function(answer, "check('07.mask', new_reader)")
    reader = answer()
    expect(isinstance(reader, Reader), f"new_reader() must return a Reader, not {type(reader).__name__}")
    expect(reader.masked is True, f"this Reader has masked={reader.masked!r}: it lets unmasked frames through")
    return _expect_battery(_battery(["framing/unmasked", "framing/text-125", "framing/binary-65536"],
                                    new_reader=answer), "masking")


@exercise("07.fail", hint="encode_frame(Frame(True, Opcode.CLOSE, encode_close(error.code))): the code the "
                          "error carries, 1002 or 1007 or 1009")
def _(answer: Any) -> str:
    """fail(error) -> bytes: the close frame that fails the connection with error.code."""
    answer = need_function(answer, "check('07.fail', fail)")
    for code in (1002, 1007, 1009):
        frame = _frame_of(answer(FrameError("test", code)), "fail")
        expect(frame.opcode == Opcode.CLOSE, f"fail returned a {frame.opcode.name} frame, not a CLOSE")
        expect(frame.payload[:2] == code.to_bytes(2, "big"),
               f"for a FrameError with code {code} your close frame says {frame.payload[:2].hex() or 'no code'}")
    return _expect_battery(_battery(["utf8", "pings/ping-126", "pings/ping-fragmented", "fragmentation/cont-alone",
                                     "framing/rsv2-set", "closing/close-reason-not-utf8"], fail=answer), "failure")
