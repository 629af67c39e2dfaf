"""The tap (chat_lesson.tap) between real clients and real servers on 127.0.0.1.

Every test uses real sockets: the chat server, a websockets echo server, or a
bare TCP server written here, each on a free port, with the tap in front.
Waits are bounded: a condition polled until a deadline, never a bare sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import queue as queue_module
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from chat_lesson import ChatClient, ChatServer

from chat_lesson import browser as chromium
from chat_lesson.notebook import wait_until
from helpers import unavailable, until
from chat_lesson import rawclient
from chat_lesson.protocol.frames import Frame, Opcode, apply_mask, encode_close, encode_frame, header_size
from chat_lesson.protocol.handshake import check_request, parse_head
from chat_lesson.notebook import BackgroundLoop
from chat_lesson.chat.wire import SUBPROTOCOL
from chat_lesson.tap import FrameTable, Tap
from chat_lesson.protocol import deflate
from chat_lesson.protocol.handshake import build_request, make_key
from chat_lesson.tap.cli import INDENT, render
from chat_lesson.tap.recorder import Recorder
from chat_lesson.tap.records import Event, FrameRecord, HttpRecord, ReadRecord, printable

ROOT = Path(__file__).resolve().parent.parent


# -- helpers ------------------------------------------------------------------------------


def closed(tap: Tap, conn: int | None = None):
    """True once the tap has seen connection ``conn`` (or any) end."""
    return tap.events("close", conn)


class RawClient(rawclient.RawClient):
    """The course's raw client (chat_lesson.rawclient), which counts every byte, plus what these tests read.

    It sends what we tell it, byte for byte, so a test knows exactly what
    went into the tap.  ``recv_event`` is the next chat event; ``buffer``
    the bytes received and not yet taken out as a head or frame.
    """

    def recv_event(self) -> dict:
        """The next chat event (JSON text message), skipping control frames."""
        return json.loads(self.recv_message().data)

    @property
    def buffer(self) -> bytes:
        data = self.reader.take()
        if data:
            self.reader.receive_data(data)      # put back: only looked at
        return data


class RawTarget:
    """A bare TCP server for the tap to forward to.

    Plain HTTP requests get a small 200 answer with a Content-Length, and the
    connection stays open for the next one (keep-alive).  A WebSocket upgrade
    request gets the 101 that ``handshake.check_request`` writes; after it,
    every byte is echoed back unchanged: no WebSocket parsing at all, so
    even garbage comes back as it went.
    """

    def __init__(self) -> None:
        self.bg = BackgroundLoop("raw-target")
        self.port = self.bg.call(self._start())

    async def _start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = parse_head(await reader.readuntil(b"\r\n\r\n"))
                body = await reader.readexactly(int(request.headers.get("Content-Length", "0")))
                if "websocket" in request.headers.tokens("Upgrade"):
                    writer.write(check_request(request).to_bytes())
                    while data := await reader.read(65536):
                        writer.write(data)
                        await writer.drain()
                    break
                reply = f"{request.method} {request.target}: {len(body)} bytes of body".encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(reply), reply))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    def close(self) -> None:
        self.bg.call(self._stop())
        self.bg.stop()


@pytest.fixture
def raw_target():
    target = RawTarget()
    yield target
    target.close()


async def echo(ws) -> None:
    async for message in ws:
        await ws.send(message)


# -- 0. the recorder alone: bytes in, records out, no sockets ---------------------------------------

AGREED = "permessage-deflate; client_no_context_takeover; client_max_window_bits=10"


def handshake(extensions: str | None = AGREED) -> tuple[bytes, bytes]:
    """An upgrade request and the 101 that accepts it, agreeing on ``extensions``."""
    request = build_request("127.0.0.1:8000", "/ws", make_key(), extensions=["permessage-deflate; client_max_window_bits"])
    answer = check_request(request)
    if extensions:
        answer.headers = type(answer.headers)([*answer.headers, ("Sec-WebSocket-Extensions", extensions)])
    return request, answer.to_bytes()


def feed(recorder: Recorder, direction: str, data: bytes, step: int | None) -> list:
    """Give ``data`` to the recorder in reads of ``step`` bytes (None: one read); all the records back."""
    step = step or len(data)
    return [r for i in range(0, len(data), step) for r in recorder.receive(direction, data[i: i + step], t=i / 1000)]


@pytest.mark.parametrize("step", [None, 1, 7])
def test_recorder_decodes_both_directions_read_by_read(step):
    """A whole conversation, as one read per direction or split at every byte: the same records."""
    request, response = handshake()
    c2s_params, s2c_params = deflate.params_from_extension_header(AGREED)
    to_server = deflate.Deflater(c2s_params.no_context_takeover, c2s_params.window_bits)
    to_client = deflate.Deflater(s2c_params.no_context_takeover, s2c_params.window_bits)
    said = "the same words again and again " * 8
    client_frames = [
        Frame(True, Opcode.TEXT, b"plain hello"),
        Frame(False, Opcode.TEXT, b"in two "),
        Frame(True, Opcode.PING, b"between"),               # a control frame between fragments (RFC 6455 §5.4)
        Frame(True, Opcode.CONT, b"pieces"),
        Frame(True, Opcode.TEXT, to_server.compress(said.encode()), rsv1=True),
        Frame(True, Opcode.BINARY, bytes(range(256))),       # 16-bit length form
        Frame(True, Opcode.CLOSE, encode_close(1000, "bye")),
    ]
    server_frames = [
        Frame(True, Opcode.TEXT, to_client.compress(said.encode()), rsv1=True),
        Frame(True, Opcode.TEXT, to_client.compress(said.encode()), rsv1=True),   # tiny: refers to the first
        Frame(True, Opcode.PONG, b"between"),
        Frame(True, Opcode.CLOSE, encode_close(1000, "")),
    ]
    sent = [encode_frame(f, mask_key=os.urandom(4)) for f in client_frames]
    answered = [encode_frame(f) for f in server_frames]
    assert len(server_frames[1].payload) < len(server_frames[0].payload) / 2     # context takeover in s2c

    recorder = Recorder(conn=7)
    records = feed(recorder, "c2s", request + b"".join(sent), step)      # all before the 101: c2s must wait
    assert [type(r).__name__ for r in records if not isinstance(r, ReadRecord)] == ["HttpRecord"]
    records += feed(recorder, "s2c", response + b"".join(answered), step)
    records += recorder.finish(1.0)

    assert {r.n for r in records} == {0} and {r.conn for r in records} == {7}    # the caller numbers them
    heads = [r for r in records if isinstance(r, HttpRecord)]
    assert [(h.direction, h.start_line) for h in heads] == [
        ("c2s", "GET /ws HTTP/1.1"), ("s2c", "HTTP/1.1 101 Switching Protocols")]
    assert [h.raw for h in heads] == [request, response]
    events = [r for r in records if isinstance(r, Event)]
    assert [e.kind for e in events] == ["upgrade"]
    assert "c2s 10-bit window, no context takeover, s2c 15-bit window" in events[0].detail
    assert recorder.upgraded and recorder.extensions == AGREED and recorder.errors == {"c2s": None, "s2c": None}

    frames = [r for r in records if isinstance(r, FrameRecord)]
    c2s = [f for f in frames if f.direction == "c2s"]
    s2c = [f for f in frames if f.direction == "s2c"]
    assert [f.raw for f in c2s] == sent and [f.raw for f in s2c] == answered      # byte for byte
    assert all(f.masked and f.raw[f.header_bytes:] == apply_mask(f.payload, f.key) for f in c2s)
    assert not any(f.masked for f in s2c)
    assert [f.opcode.name for f in c2s] == ["TEXT", "TEXT", "PING", "CONT", "TEXT", "BINARY", "CLOSE"]
    assert [f.message for f in c2s] == ["plain hello", None, None, "in two pieces", said, bytes(range(256)), None]
    assert c2s[3].fragments == 2 and c2s[2].message_opcode is None
    assert c2s[4].compressed and c2s[4].inflated == said and not c2s[0].compressed
    assert (c2s[5].form, c2s[5].header_bytes) == ("16-bit", 8)
    assert (c2s[6].close_code, c2s[6].close_reason) == (1000, "bye")
    assert [f.inflated for f in s2c[:2]] == [said, said] and s2c[2].payload == b"between"

    for direction, stream in (("c2s", request + b"".join(sent)), ("s2c", response + b"".join(answered))):
        counts = recorder.counts[direction]
        assert b"".join(r.data for r in records if isinstance(r, ReadRecord) and r.direction == direction) == stream
        assert counts.total == len(stream) and counts.http == len(stream) - sum(
            f.wire_bytes for f in frames if f.direction == direction)
        assert counts.other == counts.pending == counts.forwarded == 0
    assert recorder.counts["c2s"].mask == 4 * len(sent) and recorder.counts["s2c"].mask == 0


def test_recorder_a_broken_frame_stops_its_direction_only():
    request, response = handshake(None)
    recorder = Recorder()
    recorder.receive("c2s", request)
    recorder.receive("s2c", response)
    garbage = b"\x83\x80" + os.urandom(4) + b"not a frame" * 3             # 0x3: a reserved opcode
    records = recorder.receive("c2s", garbage, t=0.5)
    errors = [r for r in records if isinstance(r, Event)]
    assert len(errors) == 1 and errors[0].kind == "error" and errors[0].t == 0.5
    assert "reserved" in recorder.errors["c2s"] and "reserved" in errors[0].detail
    more = encode_frame(Frame(True, Opcode.TEXT, b"ignored"), mask_key=b"abcd")
    assert [type(r) for r in recorder.receive("c2s", more)] == [ReadRecord]        # no longer decoded ...
    assert recorder.counts["c2s"].other == len(garbage) + len(more)              # ... counted as "other"
    frames = [r for r in recorder.receive("s2c", encode_frame(Frame(True, Opcode.TEXT, b"still fine")))
              if isinstance(r, FrameRecord)]
    assert [f.payload for f in frames] == [b"still fine"] and recorder.errors["s2c"] is None
    half = encode_frame(Frame(True, Opcode.TEXT, b"cut short"))[:5]
    recorder.receive("s2c", half)
    assert recorder.counts["s2c"].pending == 5
    (left,) = recorder.finish(2.0)
    assert left.kind == "error" and "5 byte(s) left undecoded" in left.detail and left.t == 2.0
    assert recorder.counts["s2c"].pending == 0 and recorder.counts["s2c"].other == 5


def test_recorder_a_refused_upgrade_goes_back_to_http():
    """The client pipelines a request after its upgrade request; the 403 sends c2s back to HTTP."""
    request, _ = handshake(None)
    recorder = Recorder()
    recorder.receive("c2s", request + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    records = recorder.receive("s2c", b"HTTP/1.1 403 Forbidden\r\nContent-Length: 3\r\n\r\nno!")
    heads = [(r.direction, r.start_line, r.body_length) for r in records if isinstance(r, HttpRecord)]
    assert heads == [("s2c", "HTTP/1.1 403 Forbidden", 3), ("c2s", "GET /next HTTP/1.1", 0)]
    assert not recorder.upgraded and recorder.counts["s2c"].payload == 3
    assert all(c.pending == c.other == 0 for c in recorder.counts.values())


def test_wire_text_is_printed_escaped():
    """A close reason or a payload with terminal escapes shows them as text: they never reach the terminal raw."""
    request, response = handshake(None)
    recorder = Recorder()
    recorder.receive("c2s", request)
    recorder.receive("s2c", response)
    nasty = "\x1b[2J\x1b]0;pwned\x07\u202eevil"
    wire = (encode_frame(Frame(True, Opcode.TEXT, nasty.encode()), mask_key=b"abcd")
            + encode_frame(Frame(True, Opcode.CLOSE, encode_close(1000, nasty)), mask_key=b"abcd"))
    text, close = [r for r in recorder.receive("c2s", wire) if isinstance(r, FrameRecord)]
    assert close.close_reason == nasty                                   # the record keeps the truth
    shown = "\\x1b[2J\\x1b]0;pwned\\x07\\u202eevil"
    for output in (text.line(), close.line(), str(FrameTable([text, close])), render(close, 0, 200),
                   Event(0, 0, 0, "error", 1, "c2s", nasty).line()):
        assert not any(c in output for c in "\x1b\x07\u202e") and shown in output
    first, *wrapped = render(close, 0, 40).split("\n")                    # too wide: wrapped under an indent
    assert first == close.fields() and all(line.startswith(INDENT) for line in wrapped)
    assert "".join(line.removeprefix(INDENT) for line in wrapped) == "1000 " + shown
    assert printable("café ☕ \\ \t") == "café ☕ \\\\ \\t"
    assert render(text, 10, 200).endswith("  \\x1b[2J\\x…")                   # --width 10: cut, one line


def test_html_table_puts_the_payload_on_its_own_wrapped_line():
    """In Jupyter a long message stays inside a 968 px output area: the header fields are columns, the payload a
    wrapped line under them (issue 15, §4); the text form keeps its columns."""
    request, response = handshake(None)
    recorder = Recorder()
    recorder.receive("c2s", request)
    recorder.receive("s2c", response)
    said = "a long line for the whole class to read, " * 6 + "<b>the end</b>"
    event = json.dumps({"type": "message", "from": 7, "username": "ann", "message": said})
    records = [r for r in recorder.receive("s2c", encode_frame(Frame(True, Opcode.TEXT, event.encode()))
                                           + encode_frame(Frame(True, Opcode.PING, b"")))
               if isinstance(r, FrameRecord)]
    table = FrameTable(records)
    assert "payload" in str(table).splitlines()[0] and "inflated" in str(table).splitlines()[0]   # text form kept
    html = table._repr_html_()
    assert html.startswith("<table") and "<th" in html and ">payload<" not in html
    assert html.count('colspan="12"') == 1                                    # the empty ping has no payload line
    assert "&lt;b&gt;the end&lt;/b&gt;" in html and "pre-wrap" in html          # whole, escaped, wrapped
    if chromium.unavailable():
        return
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = chromium.launch(p)
        try:
            page = browser.new_page(viewport={"width": 1024, "height": 768})
            page.set_content(f'<div id="area" style="width:968px">{html}</div>')
            width = page.evaluate("document.querySelector('#area table').getBoundingClientRect().width")
            text = page.evaluate("document.querySelector('#area table').innerText")
        finally:
            browser.close()
    assert width <= 968, f"the table is {width} px wide in a 968 px area"
    assert said in text                                                        # every word of it on the page


# -- 1. what goes through is what is recorded, byte for byte --------------------------------


def test_records_match_what_was_sent_byte_for_byte():
    join = json.dumps({"type": "join", "username": "ann", "email": ""})
    text = json.dumps({"username": "ann", "message": "hello through the tap :wave:"})
    binary = bytes(range(256)) * 4
    pieces = ['{"username": "ann", ', '"message": "in two pieces"}']

    with ChatServer(port=0, quiet=True, rate_limit=0) as server, Tap(server, quiet=True) as tap:
        async def scenario() -> list[str]:
            async with connect(tap.ws_url, compression=None, subprotocols=[SUBPROTOCOL]) as ws:
                for message in (join, text, binary, pieces):
                    await ws.send(message)
                pong = await ws.ping(b"tap")
                await asyncio.wait_for(pong, 5)
                received: list[str] = []
                async with asyncio.timeout(5):
                    while sum('"type": "message"' in r for r in received) < 2 or not any('"error"' in r for r in received):
                        received.append(await ws.recv())
            return received

        received = asyncio.run(scenario())
        wait_until(lambda: closed(tap), what="the connection to end")

    c2s, s2c = tap.frames(direction="c2s"), tap.frames(direction="←")
    # websockets sends an iterable as one frame per item, then an empty final CONT (FIN=1)
    assert [f.opcode.name for f in c2s] == ["TEXT", "TEXT", "BINARY", "TEXT", "CONT", "CONT", "PING", "CLOSE"]

    # what the client sent, decoded and unmasked
    assert c2s[0].payload == join.encode() and c2s[0].message == join
    assert c2s[1].message == text
    assert c2s[2].payload == binary and c2s[2].message == binary
    assert (c2s[2].form, c2s[2].header_bytes) == ("16-bit", 8)          # 1024 bytes: 126 + 16-bit length
    assert [c2s[3].fin, c2s[4].fin, c2s[5].fin] == [False, False, True]
    assert [c2s[3].payload, c2s[4].payload, c2s[5].payload] == [p.encode() for p in pieces] + [b""]
    assert c2s[4].message is None and c2s[5].message == "".join(pieces) and c2s[5].fragments == 3
    assert c2s[6].payload == b"tap"
    assert (c2s[7].close_code, c2s[7].close_reason) == (1000, "")
    # a client masks every frame, a server none (RFC 6455 §5.1)
    for f in c2s:
        assert f.masked and len(f.key) == 4
        assert f.raw[f.header_bytes:] == apply_mask(f.payload, f.key)          # the masked bytes on the wire
        assert encode_frame(Frame(f.fin, f.opcode, f.payload, f.rsv1, mask_key=f.key)) == f.raw
    assert not any(f.masked or f.key for f in s2c)

    # what came back is what the client received, in order
    assert [f.message for f in s2c if f.opcode == Opcode.TEXT][: len(received)] == received
    pong = tap.frames(direction="s2c", opcode="pong")
    assert [f.payload for f in pong] == [b"tap"]
    assert tap.frames(direction="s2c", opcode=Opcode.CLOSE)[0].close_code == 1000

    # each direction's stream, rebuilt from the records, is exactly what crossed
    counters = tap.counters()
    for direction, frames in (("c2s", c2s), ("s2c", s2c)):
        stream = tap.raw(1, direction)
        heads = b"".join(h.raw for h in tap.http(1, direction))
        assert stream == heads + b"".join(f.raw for f in frames)
        assert counters[direction]["total"] == counters[direction]["forwarded"] == len(stream)
        assert counters[direction]["other"] == counters[direction]["pending"] == 0
    assert [h.start_line for h in tap.http()] == ["GET /ws HTTP/1.1", "HTTP/1.1 101 Switching Protocols"]

    # the views
    table = tap.table(opcode=["ping", "pong"])
    assert isinstance(table, FrameTable) and [f.opcode for f in table.rows] == [Opcode.PING, Opcode.PONG]
    text_table = str(tap.table())
    assert "BINARY" in text_table and c2s[0].key_hex in text_table and "16-bit" in text_table
    assert repr(table) == str(table)
    html = tap.table()._repr_html_()
    assert html.startswith("<table") and "&quot;username&quot;" in html and "→" in html and "←" in html
    assert tap.frames(conn=1, direction="c2s", opcode="text") == [c2s[0], c2s[1], c2s[3]]
    assert tap.frames(opcode=[Opcode.CONT, 0x9]) == [c2s[4], c2s[5], c2s[6]]
    timeline = tap.timeline()
    assert len(timeline["t"]) == len(timeline["opcode"]) == len(timeline["length"]) == len(c2s) + len(s2c)
    assert timeline["t"] == sorted(timeline["t"])
    kinds = [e["kind"] for e in timeline["events"]]
    assert kinds.index("open") < kinds.index("upgrade") < kinds.index("close")


def test_compressed_fragmented_message_is_inflated_per_direction():
    """permessage-deflate: RSV1 on the first fragment only; the whole message inflates on the last."""
    long_text = "the same words again and again " * 200
    with ChatServer(port=0, quiet=True, rate_limit=0, max_frame=65536) as server, Tap(server, quiet=True) as tap:
        async def scenario() -> None:
            async with ChatClient(tap, "bea") as client:                  # compression on, like a browser
                await client.await_for(lambda e: e["type"] == "join")
                await client.ws.send([json.dumps({"username": "bea", "message": long_text[:3000]}),
                                      " "])                               # JSON allows the trailing space
                await client.ws.send(json.dumps({"username": "bea", "message": "short one"}))
                await client.await_for(lambda e: e.get("message") == "short one")

        asyncio.run(scenario())
        wait_until(lambda: closed(tap), what="the connection to end")
    c2s = tap.frames(direction="c2s", opcode=["text", "cont"])
    first, middle, last, short = c2s[-4:]          # two pieces, then websockets' empty final fragment
    assert (first.opcode, first.rsv1, first.fin) == (Opcode.TEXT, True, False)
    assert (middle.opcode, middle.rsv1, middle.fin) == (Opcode.CONT, False, False)
    assert (last.opcode, last.rsv1, last.fin) == (Opcode.CONT, False, True)
    assert first.compressed and middle.compressed and last.compressed and first.length < 3000   # it did compress
    assert first.inflated is None and middle.inflated is None and last.fragments == 3
    assert json.loads(last.inflated)["message"] == long_text[:3000]
    assert json.loads(short.inflated)["message"] == "short one"
    # the context carries over between messages in each direction ("context takeover")
    assert tap.connections()[0]["extensions"].startswith("permessage-deflate")
    assert not any(tap.connections()[0]["errors"].values())


def test_live_view_prints_lines_outside_jupyter(capsys):
    with ChatServer(port=0, quiet=True) as server, Tap(server, quiet=True) as tap:
        view = tap.live(seconds=10, interval=0.2)
        printed: list[str] = []

        def seen(text: str) -> bool:
            printed.append(capsys.readouterr().out)
            return text in "".join(printed)

        with ChatClient(tap, "cy") as client:
            client.send("live and direct")
            wait_until(lambda: seen("live and direct"), what="the live view to print the message frame")
        view.stop()
        assert view.wait(2) and view.done
    out = "".join(printed) + capsys.readouterr().out
    assert re.search(r"c1 → #\d+\s+TEXT\s+FIN=1 RSV1=1 MASK=1 key=[0-9a-f]{8}", out)
    assert "UPGRADE" in out


def test_live_view_updates_one_table_in_place_in_jupyter():
    """In a real kernel: one displayed table, updated from the tap's thread as frames arrive."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cells = [
        "from chat_lesson import ChatServer, ChatClient\n"
        "from chat_lesson.tap import Tap\n"
        "server = ChatServer(port=0, quiet=True).start()\n"
        "tap = Tap(server).start()",
        "import time\n"
        "view = tap.live(seconds=30, interval=0.2)\n"
        "bot = ChatClient(tap, 'nb').connect()\n"
        "bot.send('hi nb')\n"
        "bot.recv(type='message')\n"
        "deadline = time.monotonic() + 10\n"
        "while not any(f.inflated and 'hi nb' in f.inflated for f in tap.frames()):\n"
        "    assert time.monotonic() < deadline, 'the tap never decoded the message'\n"
        "    time.sleep(0.01)\n"
        "view.stop()\n"
        "assert view.wait(5)",          # the view's last refresh happens before wait() returns
        "bot.close(); tap.stop(); server.stop()",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    link = [o for o in nb.cells[0].outputs if o.output_type == "display_data"]
    assert len(link) == 1 and 'href="http://127.0.0.1:' in link[0].data["text/html"]      # show_link
    shown = [o for o in nb.cells[1].outputs if o.output_type == "display_data"]
    assert len(shown) == 1                                   # one table, updated, not one per refresh
    html = shown[0].data["text/html"]
    assert html.startswith("<table") and "live · " in html and "hi nb" in html


# -- 2. a real browser, through the tap ----------------------------------------------------------


def test_chromium_frames_are_masked_compressed_and_inflate_to_what_was_typed():
    # Not the shared `browser` fixture: playwright's sync API keeps an event loop
    # running while it is open, and the other tests here call asyncio.run().
    if not os.path.exists(chromium.CHROMIUM):
        unavailable(f"Chromium not found at {chromium.CHROMIUM}: install it with `apt-get install chromium`")
    sync_api = pytest.importorskip("playwright.sync_api")
    typed = "hello from Chromium :wave: <b>raw</b>"

    with ChatServer(port=0, quiet=True) as server, Tap(server, quiet=True) as tap, \
            sync_api.sync_playwright() as p:
        browser = chromium.launch(p)
        try:
            page = browser.new_page()
            sent: list[str] = []
            page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(
                payload if isinstance(payload, str) else payload.decode())))
            page.goto(tap.url)
            page.fill("#username", "alice")
            page.fill("#email", "alice@example.org")
            page.click("#join")
            sync_api.expect(page.locator("#status")).to_have_attribute("data-state", "online", timeout=10_000)
            page.fill("#message", typed)
            page.click("#send")
            sync_api.expect(page.locator("#messages .msg .msg-text").filter(has_text="hello from Chromium")) \
                .to_have_count(1, timeout=10_000)
            wait_until(lambda: len(tap.frames(direction="c2s", opcode="text")) >= len(sent) >= 2,
                       what="the tap to decode the browser's frames")
        finally:
            browser.close()

    frames = tap.frames(direction="c2s", opcode="text")
    assert [f.inflated for f in frames] == sent                     # byte for byte what the page sent
    for f in frames:
        assert f.masked and len(f.key) == 4 and f.raw[f.header_bytes:] == apply_mask(f.payload, f.key)
        assert f.rsv1 and f.compressed and f.fin
        assert f.payload != f.inflated.encode()                       # on the wire: DEFLATE, not JSON
    assert json.loads(frames[0].inflated) == {"type": "join", "username": "alice", "email": "alice@example.org"}
    assert json.loads(frames[-1].inflated)["message"] == typed
    assert not any(f.masked for f in tap.frames(direction="s2c"))

    # the page itself came through the tap too, and the handshake negotiated compression
    requests = [h.start_line for h in tap.http(direction="c2s")]
    assert "GET / HTTP/1.1" in requests and "GET /ws HTTP/1.1" in requests
    upgraded = [c for c in tap.connections() if c["upgraded"]]
    assert len(upgraded) == 1 and upgraded[0]["extensions"].startswith("permessage-deflate")
    assert all(not any(c["errors"].values()) for c in tap.connections())
    counters = tap.counters()
    for d in ("c2s", "s2c"):
        parts = sum(counters[d][k] for k in ("http", "header", "mask", "payload", "other", "pending"))
        assert parts == counters[d]["total"] == counters[d]["forwarded"]
    assert counters["c2s"]["mask"] == 4 * len(tap.frames(direction="c2s"))
    print("\n" + str(tap.table(conn=upgraded[0]["conn"], last=None)))
    print(tap.counters(upgraded[0]["conn"]))
    print(counters)


# -- 3. a frozen line: the server detects a dead peer ----------------------------------------------


def test_freeze_lets_the_server_detect_a_dead_peer():
    with ChatServer(port=0, quiet=True, ping_interval=1, ping_timeout=1, close_timeout=1) as server, \
            Tap(server, quiet=True) as tap:
        async def scenario() -> None:
            async with connect(tap.ws_url, ping_interval=None, compression=None) as ws:
                await until(lambda: tap.frames(direction="c2s", opcode="pong"), 4, "a first ping answered")
                tap.freeze()
                frozen_at = tap.events("fault")[-1].t
                close = await until(lambda: tap.frames(direction="s2c", opcode="close"), 5,
                                    "the server to give up and send a close frame")
                assert (close[0].close_code, close[0].close_reason) == (1011, "keepalive ping timeout")
                await until(lambda: tap.events("eof", tap.frames()[0].conn), 3, "the server to end its side")
                # the client saw nothing of it: for all it knows the connection is fine
                assert ws.state is State.OPEN
                pings = [f for f in tap.frames(direction="s2c", opcode="ping") if f.t > frozen_at]
                assert pings, "the server pinged while the line was frozen"
                assert not [f for f in tap.frames(direction="c2s") if f.t > frozen_at]
                assert close[0].t > pings[0].t
                tap.thaw()                                    # the held close frame now reaches the client
                with pytest.raises(ConnectionClosed):
                    async with asyncio.timeout(5):
                        await ws.recv()
                assert ws.close_code == 1011

        asyncio.run(scenario())
        wait_until(lambda: server.stats.connections == 0, what="the server to drop the client")

    events = tap.timeline()["events"]
    kinds = [(e["kind"], e["detail"]) for e in events]
    freeze = kinds.index(("fault", "freeze"))
    eof = next(i for i, e in enumerate(events) if e["kind"] == "eof" and e["dir"] == "s2c")
    assert freeze < eof < kinds.index(("fault", "thaw"))
    timeline = tap.timeline()
    closes = [t for t, op, code in zip(timeline["t"], timeline["opcode"], timeline["close_code"]) if code == 1011]
    assert closes and events[freeze]["t"] < closes[0] < events[eof]["t"] + 1e-9


# -- 4. the byte counters add up to what crossed ---------------------------------------------------


def test_counters_add_up_to_the_bytes_on_the_socket():
    with ChatServer(port=0, quiet=True) as server, Tap(server, quiet=True) as tap:
        client = RawClient(tap.port, protocols=[SUBPROTOCOL], extensions=["permessage-deflate; client_max_window_bits"])
        frames = [
            (Opcode.TEXT, json.dumps({"type": "join", "username": "raw"}).encode()),
            (Opcode.TEXT, json.dumps({"username": "raw", "message": "counted " * 40}).encode()),    # 16-bit length
            (Opcode.PING, b"ping!"),
        ]
        for opcode, payload in frames:
            client.send_frame(opcode, payload)
        while client.recv_event().get("message") != "counted " * 40:
            pass
        client.send_frame(Opcode.CLOSE, encode_close(1000, "bye"))
        client.read_to_eof()                        # the server's close frame, then its FIN
        client.close()
        wait_until(lambda: closed(tap), what="the tap to see the connection end")

    counters = tap.counters()
    c2s, s2c = counters["c2s"], counters["s2c"]
    assert c2s["total"] == c2s["forwarded"] == client.sent
    assert s2c["total"] == s2c["forwarded"] == client.received
    for part in (c2s, s2c):
        assert part["http"] + part["header"] + part["mask"] + part["payload"] + part["other"] == part["total"]
        assert part["other"] == part["pending"] == 0
    payloads = [p for _, p in frames] + [encode_close(1000, "bye")]
    assert c2s["http"] == len(client.request)
    assert c2s["mask"] == 4 * len(payloads)
    assert c2s["header"] == sum(header_size(len(p), True) - 4 for p in payloads)
    assert c2s["payload"] == sum(len(p) for p in payloads)
    assert s2c["http"] == len(client.response_head) and s2c["mask"] == 0
    assert s2c["header"] == sum(f.header_bytes for f in tap.frames(direction="s2c"))
    assert tap.counters(conn=1) == counters and tap.counters(conn=99)["c2s"]["total"] == 0


# -- 5. robustness ---------------------------------------------------------------------------------------


def test_garbage_is_forwarded_unchanged_and_the_error_recorded(raw_target):
    garbage = b"\x83\x80" + os.urandom(4) + b"\x00not a frame at all\xff" * 10    # 0x3: a reserved opcode
    with Tap(("127.0.0.1", raw_target.port), quiet=True) as tap:
        bad = RawClient(tap.port)
        bad.send_raw(garbage)
        while len(bad.buffer) < len(garbage):
            assert bad.recv_some(), "the echo ended early"
        assert bad.buffer == garbage                           # through the tap and back, unchanged
        wait_until(lambda: all(c["errors"]["c2s"] and c["errors"]["s2c"] for c in tap.connections()),
                   what="decoding errors in both directions")
        error = tap.connections()[0]["errors"]["c2s"]
        assert "reserved" in error and "opcode" in error

        good = RawClient(tap.port)                             # the tap still works for others
        sent = good.send_frame(Opcode.TEXT, b"still fine")
        while len(good.buffer) < len(sent):
            assert good.recv_some()
        bad.close()
        good.close()
        wait_until(lambda: len(tap.events("close")) == 2, what="both connections to end")

    assert [f.payload for f in tap.frames(conn=2, direction="c2s")] == [b"still fine"]
    assert tap.connections()[1]["errors"] == {"c2s": None, "s2c": None}
    first = tap.counters(conn=1)
    assert first["c2s"]["other"] == len(garbage) and first["c2s"]["forwarded"] == bad.sent
    assert any("decoding stopped" in e.detail for e in tap.events("error", conn=1))


def test_http_keep_alive_several_requests_on_one_connection(raw_target):
    requests = (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    with Tap(("127.0.0.1", raw_target.port), quiet=True) as tap:
        with socket.create_connection(("127.0.0.1", tap.port), timeout=5) as sock:
            sock.sendall(requests[:20])                       # a head split across reads, too
            wait_until(lambda: tap.reads(direction="c2s"), what="the first part to arrive")
            sock.sendall(requests[20:])
            answer = b""
            while answer.count(b"bytes of body") < 2:
                answer += sock.recv(65536)
        wait_until(lambda: closed(tap), what="the connection to end")
    heads = [h.start_line for h in tap.http()]
    assert heads == ["POST /a HTTP/1.1", "GET /b HTTP/1.1", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK"]
    counters = tap.counters()
    assert counters["c2s"]["payload"] == 5 and counters["c2s"]["http"] == len(requests) - 5
    bodies = [b"POST /a: 5 bytes of body", b"GET /b: 0 bytes of body"]
    assert counters["s2c"]["payload"] == sum(map(len, bodies))
    assert counters["s2c"]["http"] + counters["s2c"]["payload"] == len(answer) == counters["s2c"]["total"]
    assert not tap.events("error")


def test_large_messages_split_across_many_reads():
    big = os.urandom(1 << 20)
    text = "".join(f"line {i}: the quick brown fox\n" for i in range(10_000))     # ~300 KB, compressible

    async def scenario() -> None:
        async with serve(echo, "127.0.0.1", 0, max_size=None) as server:
            port = server.sockets[0].getsockname()[1]
            async with Tap(("127.0.0.1", port), quiet=True, max_payload=2 << 20) as tap:   # the async form
                async with connect(tap.ws_url, max_size=None, compression=None) as ws:
                    await ws.send(big)
                    assert await ws.recv() == big
                async with connect(tap.ws_url, max_size=None) as ws:          # permessage-deflate
                    await ws.send([text[:100_000], text[100_000:]])
                    assert await ws.recv() == text
                await until(lambda: len(tap.events("close")) == 2, 5, "both connections to end")
            for direction in ("c2s", "s2c"):
                frame = tap.frames(conn=1, direction=direction, opcode="binary")[0]
                assert (frame.length, frame.form, frame.payload == big, frame.truncated) == (1 << 20, "64-bit", True, False)
                assert len(tap.reads(conn=1, direction=direction)) > 1     # it arrived in pieces
                message = [f for f in tap.frames(conn=2, direction=direction) if f.message is not None][0]
                assert message.inflated == text and message.compressed
            assert not tap.events("error")
            counters = tap.counters()
            assert all(counters[d]["total"] == counters[d]["forwarded"] > (1 << 20) for d in ("c2s", "s2c"))

    asyncio.run(scenario())


def test_payloads_are_truncated_in_storage_not_on_the_wire():
    async def scenario() -> None:
        async with serve(echo, "127.0.0.1", 0, max_size=None) as server:
            port = server.sockets[0].getsockname()[1]
            async with Tap(("127.0.0.1", port), quiet=True, max_payload=1000, max_records=3) as tap:
                async with connect(tap.ws_url, compression=None) as ws:
                    for i in range(3):
                        await ws.send(bytes([i]) * 5000)
                        assert await ws.recv() == bytes([i]) * 5000
            kept = tap.frames()
            assert len(kept) == 3 and tap.dropped["frames"] > 0 and tap.dropped["reads"] > 0
            frame = tap.frames(opcode="binary")[-1]
            assert frame.truncated and len(frame.payload) == 1000 and frame.length == 5000
            assert tap.counters()["c2s"]["payload"] >= 15000               # the counters keep everything

    asyncio.run(scenario())


def test_twenty_simultaneous_connections():
    with ChatServer(port=0, quiet=True) as server, Tap(server, quiet=True) as tap:
        async def scenario() -> None:
            clients = await asyncio.gather(*(ChatClient(tap, f"user{i}").aconnect() for i in range(20)))
            await asyncio.gather(*(c.asend(f"hi from user{i}") for i, c in enumerate(clients)))
            for client in clients:
                seen: set[str] = set()
                while len(seen) < 20:
                    event = await client.arecv(type="message")
                    seen.add(event["message"])
            await asyncio.gather(*(c.aclose() for c in clients))

        asyncio.run(scenario())
        wait_until(lambda: len(tap.events("close")) == 20, what="all 20 connections to end")
    conns = tap.connections()
    assert len(conns) == 20 and all(c["upgraded"] and not any(c["errors"].values()) for c in conns)
    said = [json.loads(f.inflated)["message"] for f in tap.frames(direction="c2s", opcode="text")
            if "message" in json.loads(f.inflated)]
    assert sorted(said) == sorted(f"hi from user{i}" for i in range(20))
    for conn in conns:
        assert len([f for f in tap.frames(conn=conn["conn"], direction="s2c") if f.message and "hi from" in f.message]) == 20
        for d in ("c2s", "s2c"):
            assert conn["counters"][d]["total"] == conn["counters"][d]["forwarded"]
            assert conn["counters"][d]["pending"] == conn["counters"][d]["other"] == 0


def test_closed_connections_are_forgotten_past_max_closed(raw_target):
    """Records of at most ``max_closed`` ended connections are kept; the tap's byte sums keep them all."""
    sent = 0
    with Tap(("127.0.0.1", raw_target.port), quiet=True, max_closed=2) as tap:
        for i in range(1, 5):
            client = RawClient(tap.port)
            client.send_frame(Opcode.TEXT, f"connection {i}".encode())
            client.close()
            sent += client.sent
            wait_until(lambda i=i: closed(tap, i), what=f"connection {i} to end")
        assert [c["conn"] for c in tap.connections()] == [3, 4]
        assert {f.conn for f in tap.frames()} == {r.conn for r in tap.reads()} == {h.conn for h in tap.http()} == {3, 4}
        assert {e.conn for e in tap.events()} == {None, 3, 4}
        assert tap.counters()["c2s"]["total"] == tap.counters()["c2s"]["forwarded"] == sent
        assert tap.counters(conn=1)["c2s"]["total"] == 0


# -- 6. faults ---------------------------------------------------------------------------------------------------


def test_latency_is_added_each_way():
    async def scenario() -> None:
        async with serve(echo, "127.0.0.1", 0) as server:
            async with Tap(("127.0.0.1", server.sockets[0].getsockname()[1]), quiet=True) as tap:
                async with connect(tap.ws_url) as ws:
                    tap.delay(150)
                    start = time.monotonic()
                    await ws.send("are you there?")
                    assert await ws.recv() == "are you there?"
                    assert time.monotonic() - start >= 0.3                # 150 ms there, 150 ms back
                    tap.delay(0, direction="s2c")
                    start = time.monotonic()
                    await asyncio.wait_for(await ws.ping(), 5)
                    assert time.monotonic() - start >= 0.15
                    assert tap.faults["c2s"]["delay_ms"] == 150 and tap.faults["s2c"]["delay_ms"] == 0
                    tap.heal()
                faults = [e.detail for e in tap.events("fault")]
                assert faults == ["delay 150 ms", "delay 0 ms (s2c)", "heal: no faults"]

    asyncio.run(scenario())


def test_cut_resets_both_sides():
    with ChatServer(port=0, quiet=True) as server, Tap(server, quiet=True) as tap:
        client = RawClient(tap.port, protocols=[SUBPROTOCOL])
        client.send_frame(Opcode.TEXT, json.dumps({"type": "join", "username": "cut"}).encode())
        while client.recv_event()["type"] != "join":
            pass
        assert server.stats.connections == 1
        assert tap.cut() == 1
        with pytest.raises(ConnectionResetError):                  # an RST, not a polite FIN
            while client.recv_some():
                pass
        wait_until(lambda: server.stats.connections == 0, what="the server to see its side cut")
        wait_until(lambda: closed(tap), what="the tap to record the end")
        client.close()
    assert tap.events("fault")[-1].detail == "cut 1 connection(s): RST both sides"


def test_bandwidth_limit_is_a_lower_bound_on_transfer_time():
    size, rate = 20_000, 100_000

    async def scenario() -> None:
        async with serve(echo, "127.0.0.1", 0) as server:
            async with Tap(("127.0.0.1", server.sockets[0].getsockname()[1]), quiet=True) as tap:
                async with connect(tap.ws_url, compression=None) as ws:
                    tap.limit(rate)
                    start = time.monotonic()
                    await ws.send(b"x" * size)
                    assert await ws.recv() == b"x" * size
                    elapsed = time.monotonic() - start
                    assert elapsed >= 2 * size / rate          # there and back, each at most `rate` B/s
                    tap.limit(None)
                    start = time.monotonic()
                    await ws.send(b"y" * size)
                    await ws.recv()
                    assert time.monotonic() - start < elapsed   # lifted: faster than limited

    asyncio.run(scenario())


def test_freeze_holds_bytes_and_thaw_releases_them():
    received: list[str] = []

    async def recording_echo(ws) -> None:
        async for message in ws:
            received.append(message)
            await ws.send(message)

    async def scenario() -> None:
        async with serve(recording_echo, "127.0.0.1", 0) as server:
            async with Tap(("127.0.0.1", server.sockets[0].getsockname()[1]), quiet=True) as tap:
                async with connect(tap.ws_url, compression=None) as ws:
                    tap.freeze(direction="c2s")
                    await ws.send("held")
                    await until(lambda: tap.frames(direction="c2s", opcode="text"), 5, "the tap to see the frame")
                    await asyncio.sleep(0)               # (the frame is recorded; nothing may have left)
                    assert received == [] and tap.counters()["c2s"]["forwarded"] < tap.counters()["c2s"]["total"]
                    tap.thaw()
                    assert await asyncio.wait_for(ws.recv(), 5) == "held"
                    assert received == ["held"]

    asyncio.run(scenario())


# -- 7. the command line -------------------------------------------------------------------------------------------


def test_cli_prints_whole_messages_wrapped_and_stops_on_ctrl_c():
    with ChatServer(port=0, quiet=True) as server:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "100"}
        proc = subprocess.Popen([sys.executable, "-m", "chat_lesson", "tap", "--to", f"127.0.0.1:{server.port}",
                                 "--port", "0"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        lines: queue_module.Queue = queue_module.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()

        def next_line_with(pattern: str, timeout: float = 10) -> str:
            deadline = time.monotonic() + timeout
            while True:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
                if re.search(pattern, line):
                    return line

        try:
            url = next_line_with(r"Tap listening on http://127\.0\.0\.1:\d+/")
            port = int(re.search(r":(\d+)/", url).group(1))
            said = "via cli: " + "a message longer than any preview, " * 6          # > 200 characters
            with ChatClient(f"ws://127.0.0.1:{port}/ws", "cli") as client:
                client.send(said)
                # a record: its first line, then the lines indented under it (the payload, wrapped)
                record: list[str] = []
                shown: dict[str, list[str]] = {}
                while len(shown) < 2:                          # the client's frame and the server's broadcast
                    line = lines.get(timeout=10).rstrip("\n")
                    record = record + [line.removeprefix(INDENT)] if line.startswith(INDENT) else [line]
                    if said in "".join(record[1:]):
                        shown[record[0]] = record
            sent, broadcast = sorted(shown, key=lambda first: "←" in first)
            assert re.search(r"c1 → #\d+\s+TEXT\s+FIN=1 RSV1=1 MASK=1 key=[0-9a-f]{8} len=\d+ \(7-bit\) hdr=6$", sent)
            assert re.search(r"c1 ← #\d+\s+TEXT\s+FIN=1 RSV1=[01] MASK=0 len=\d+ \((7|16)-bit\) hdr=[24]$", broadcast)
            assert all(len(line) <= 100 for line in shown[sent])                      # wrapped (COLUMNS=100)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
