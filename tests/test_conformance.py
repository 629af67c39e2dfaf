"""The conformance battery (chat_lesson.conformance): right about good servers, and about broken ones.

- Against the websockets library's echo server every case is acceptable
  (pass, or non-strict with a reason), and against ChatServer in chat mode too.
- A small echo server built here on the pure pieces (check_request,
  decode_frame, MessageAssembler, decode_close, encode_frame) has one switch
  per case; with no switch on it passes everything; with the switch of a case
  on, that case (run alone) says "fail".
"""

from __future__ import annotations

import asyncio
import json
import struct

import pytest

from chat_lesson import conformance
from chat_lesson.chat.server import ChatServer
from chat_lesson.lessons.lesson07 import StreamServer, WebsocketsServer
from chat_lesson.protocol.frames import (CloseCode, Frame, FrameError, Message, MessageAssembler, Opcode, apply_mask,
                                         decode_close, encode_close, encode_frame)
from chat_lesson.protocol.handshake import Answer, accept_key, check_request, parse_head

CASE_IDS = [c.id for c in conformance.CASES]


# -- a broken echo server: one switch per case -------------------------------------------------


def _parse(buf: bytearray) -> tuple[int, int, bool, bytes, int] | None:
    """(first byte, opcode, masked, payload, size) of the frame at the start of ``buf``, no rule checked."""
    if len(buf) < 2:
        return None
    n, pos, masked = buf[1] & 0x7F, 2, bool(buf[1] & 0x80)
    if n == 126:
        if len(buf) < 4:
            return None
        n, pos = struct.unpack("!H", buf[2:4])[0], 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, pos = struct.unpack("!Q", buf[2:10])[0], 10
    end = pos + 4 * masked + n
    if len(buf) < end:
        return None
    payload = bytes(buf[pos + 4 * masked:end])
    if masked:
        payload = apply_mask(payload, bytes(buf[pos:pos + 4]))
    return buf[0], buf[0] & 0x0F, masked, payload, end


def _close(code: int) -> bytes:
    return encode_frame(Frame(True, Opcode.CLOSE, encode_close(code)))


UTF8_MARKS = {"invalid-surrogate": b"\xed\xa0\x80", "invalid-overlong": b"\xc0\xaf"}
SIZES = {f"{kind}-{n}": (op, n) for kind, op in (("text", Opcode.TEXT), ("binary", Opcode.BINARY))
         for n in conformance.cases.SIZES}
ACCEPT_ANY = {"version-8", "no-version", "no-key", "short-key", "upgrade-other", "connection-no-upgrade",
              "method-post", "http-1.0"}


def _answer(request: bytes, broken: str) -> Answer:
    answer = check_request(request)
    head = parse_head(request)
    h = head.headers
    key = h.get("Sec-WebSocket-Key") or "AAAAAAAAAAAAAAAAAAAAAA=="
    forced = Answer(101, "Switching Protocols", [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                                 ("Sec-WebSocket-Accept", accept_key(key))])
    if broken in ACCEPT_ANY:
        return forced
    if broken == "upgrade-case" and h.get("Upgrade") != "websocket" or \
            broken == "connection-list" and h.get("Connection") != "Upgrade":
        return Answer(400, "Bad Request", [("Connection", "close")])
    if broken in ("valid", "origin-foreign") and (broken == "valid" or "Origin" in h) and answer.accepted:
        answer.headers[-1] = ("Sec-WebSocket-Accept", accept_key("not the key"))
    if broken == "subprotocol-unknown" and "Sec-WebSocket-Protocol" in h:
        answer.headers.append(("Sec-WebSocket-Protocol", h.get("Sec-WebSocket-Protocol")))
    return answer


def broken_echo(broken: str = ""):
    """An echo server that gets every case right, except the one named ``broken``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answer = _answer(await reader.readuntil(b"\r\n\r\n"), broken)
        writer.write(answer.to_bytes())
        if not answer.accepted:
            return
        buf, assembler, fragments, closed, skip_cont = bytearray(), MessageAssembler(), 0, False, False
        current = Opcode.TEXT
        try:
            while data := await reader.read(65536):
                buf += data
                while (parsed := _parse(buf)) is not None:
                    first, opcode, masked, payload, size = parsed
                    del buf[:size]
                    if closed:
                        if broken == "data-after-close" and opcode == Opcode.TEXT:
                            writer.write(encode_frame(Frame(True, Opcode.TEXT, payload)))
                        continue
                    for bit, name in ((0x40, "rsv1-set"), (0x20, "rsv2-set"), (0x10, "rsv3-set")):
                        if first & bit and broken != name:
                            raise FrameError("reserved bit")
                    if opcode in (3, 0xB):
                        if broken != {3: "opcode-3", 0xB: "opcode-b"}[opcode]:
                            raise FrameError("reserved opcode")
                        opcode = {3: Opcode.TEXT, 0xB: Opcode.PONG}[opcode]
                    if not masked and broken != "unmasked":
                        raise FrameError("unmasked")
                    fin = bool(first & 0x80)
                    if opcode >= 8:
                        if len(payload) > 125 and broken != "ping-126":
                            raise FrameError("control frame too long")
                        if not fin:
                            if broken != "ping-fragmented":
                                raise FrameError("fragmented control frame")
                            fin, skip_cont = True, True
                    elif opcode == Opcode.CONT and skip_cont and not assembler.in_progress:
                        skip_cont = False
                        continue
                    if opcode == Opcode.CONT and not assembler.in_progress and broken == "cont-alone":
                        continue
                    if opcode in (Opcode.TEXT, Opcode.BINARY) and assembler.in_progress and broken == "new-before-end":
                        assembler, fragments = MessageAssembler(), 0
                    if opcode == Opcode.PING and assembler.in_progress and broken == "ping-between":
                        continue
                    if opcode in (Opcode.TEXT, Opcode.BINARY):
                        current, fragments = opcode, 0
                    if opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                        fragments += 1
                    frame = Frame(fin, Opcode(Opcode.BINARY if opcode == Opcode.TEXT else opcode), payload)
                    for item in assembler.feed(frame):          # text fed as binary: UTF-8 is checked below
                        if isinstance(item, Message):
                            await message(writer, item, current, fragments)
                        else:
                            closed = control(writer, item) or closed
                            if closed and broken != "data-after-close":
                                return
        except FrameError as error:
            writer.write(_close(error.code))

    async def message(writer: asyncio.StreamWriter, item: Message, opcode: Opcode, fragments: int) -> None:
        data = item.data
        for name, (op, n) in SIZES.items():
            if broken == name and op == opcode and len(data) == n:
                writer.write(_close(1011))
                return
        if broken == {Opcode.TEXT: "text-3-fragments", Opcode.BINARY: "binary-2-fragments"}[opcode] and \
                fragments == (3 if opcode == Opcode.TEXT else 2):
            writer.write(_close(1011))
            return
        if opcode == Opcode.TEXT:
            if broken == "valid-multibyte" and "κόσμε".encode() in data and fragments == 1 or \
                    broken == "valid-split-in-char" and fragments == 2 or \
                    broken == "valid-byte-fragments" and fragments > 10:
                writer.write(_close(1011))
                return
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                lenient = (broken == "invalid-cut-at-end" and data.endswith(b"\xf0\x9f\x98")
                           or broken == "invalid-across-fragments" and fragments > 1
                           or UTF8_MARKS.get(broken, b"\x00\x00\x00") in data)
                if not lenient:
                    raise FrameError("invalid UTF-8", CloseCode.INVALID_DATA) from None
        writer.write(encode_frame(Frame(True, opcode, data)))

    def control(writer: asyncio.StreamWriter, frame: Frame) -> bool:
        """Answer a control frame; True once a close was answered."""
        p = frame.payload
        if frame.opcode == Opcode.PING and len(p) > 125:        # broken == "ping-126": swallowed
            return False
        if frame.opcode == Opcode.PING:
            pong = {"ping-payload": b"", "ping-125": p[:-1]}.get(broken, p) if p or broken != "ping-empty" else None
            if not (broken == "ping-empty" and not p):
                writer.write(encode_frame(Frame(True, Opcode.PONG, pong)))
            return False
        if frame.opcode == Opcode.PONG:
            if broken == "pong-unsolicited":
                writer.write(_close(1002))
                return True
            return False
        if broken in ("close-1000", "close-handshake-timing") and p[:2] == b"\x03\xe8" or \
                broken == "close-empty" and not p:
            writer.transport.abort()
            return True
        if broken in ("close-reserved-codes", "close-invalid-codes", "close-reason-not-utf8", "close-1-byte"):
            writer.write(encode_frame(Frame(True, Opcode.CLOSE, p)))
            return True
        if broken == "close-valid-codes" and len(p) >= 2 and 3000 <= int.from_bytes(p[:2], "big") <= 4999 or \
                broken == "close-reason-123" and len(p) == 125:
            writer.write(_close(1002))
            return True
        code, _ = decode_close(p)
        writer.write(encode_frame(Frame(True, Opcode.CLOSE, b"" if code == 1005 else encode_close(code))))
        return True

    return handle


@pytest.fixture(scope="module")
def websockets_echo():
    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    with WebsocketsServer(echo, port=0, compression=None) as server:
        yield server


# -- tests ---------------------------------------------------------------------------------------


def test_cases_cite_the_rfc_and_cover_every_category():
    assert len(CASE_IDS) == len(set(CASE_IDS)) >= 50
    assert {c.category for c in conformance.CASES} == set(conformance.CATEGORIES)
    assert all(c.section.startswith("§") for c in conformance.CASES)


def test_websockets_echo_scores_100(websockets_echo):
    report = conformance.run(websockets_echo.ws_url)
    assert report.mode == "echo"
    assert report.score()["score"] == 100.0, report.table()
    non_strict = {r.id: r.why for r in report.results if r.verdict == "non-strict"}
    print("non-strict:", json.dumps(non_strict, indent=1))
    assert set(non_strict) <= {"version-8", "origin-foreign"}, non_strict
    assert all(r.sent and r.got for r in report.results)


def test_chat_server_is_detected_and_scores_100():
    with ChatServer(port=0, quiet=True, connect_rate=0, max_per_address=0) as server:
        report = conformance.run(server.ws_url)
    assert report.mode == "chat"
    assert report.score()["fail"] == 0, report.table()


def test_the_unbroken_test_server_passes_everything():
    with StreamServer(broken_echo(), port=0, quiet=True) as server:
        report = conformance.run(server.ws_url, "echo", timeout=1.0)
    assert report.score()["score"] == 100.0, report.table()
    assert {r.id for r in report.results if r.verdict != "pass"} <= {"origin-foreign"}, report.table()


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_each_case_fails_against_a_server_broken_for_it(case_id):
    case = next(c for c in conformance.CASES if c.id == case_id)
    with StreamServer(broken_echo(case_id), port=0, quiet=True) as server:
        report = conformance.run(server.ws_url, "echo", timeout=1.0, grace=0.1, only=[f"{case.category}/{case_id}"])
    (result,) = report.results
    assert result.verdict == "fail", f"{case_id}: {result.verdict}: {result.why}\nsent {result.sent}\ngot {result.got}"


def test_command_line_json(websockets_echo, capsys):
    from chat_lesson.__main__ import main

    assert main(["conform", websockets_echo.ws_url, "--json", "--only", "pings"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mode"] == "echo" and data["score"]["cases"] == 6 and data["score"]["fail"] == 0
    assert {r["category"] for r in data["results"]} == {"pings"}
    assert main(["conform", websockets_echo.ws_url, "--echo", "--only", "handshake/valid"]) == 0
    assert "handshake/valid" in capsys.readouterr().out
