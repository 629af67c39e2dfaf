"""Lesson 03, live: a browser's chat message caught by a tap, and what compression did to it.

:func:`browser_frames` waits for a message from a real browser, or drives
headless Chromium to send one (:func:`~chat_lesson.browser.run_chromium`), or
(no browser at all) has a ``ChatClient`` send it; the :class:`Capture` it
returns says which of the three sent the frames.  :func:`compression_table`
lists the compressed messages the tap saw, on the wire against inflated.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any
from collections.abc import Callable

from ..browser import BrowserUnavailable, run_chromium
from ..notebook import BackgroundLoop, wait_until
from ..protocol.frames import Opcode
from .display import Table, hexdump, show_payload

__all__ = ["Capture", "browser_frames", "compression_table"]


@dataclasses.dataclass
class Capture:
    """A chat message caught by the tap: the client's frame, the server's reply, and who sent it."""

    source: str                 # "your browser", "headless Chromium (driven by playwright)", "ChatClient (websockets)"
    user_agent: str | None
    conn: int
    sent: Any                   # tap.FrameRecord: the client's frame (masked; compressed if RSV1)
    reply: Any | None           # tap.FrameRecord: the server's broadcast of it on the same connection
    text: str                   # the chat message typed
    note: str = ""              # why a fallback was used

    def table(self) -> Table:
        """The client's frame and the server's reply, layer by layer."""
        f, r = self.sent, self.reply
        header = f.raw[: f.header_bytes]
        rows = [
            {"": "client → server", "what": "the frame on the wire", "bytes": len(f.raw), "value": hexdump(f.raw, 20)},
            {"": "", "what": "header (FIN, RSV1, opcode, MASK, length)", "bytes": f.header_bytes - 4 * f.masked,
             "value": f"{header[:f.header_bytes - 4 * f.masked].hex(' ')}  FIN={int(f.fin)} RSV1={int(f.rsv1)} "
                      f"opcode={f.opcode.name} MASK={int(f.masked)} len={f.length}"},
            {"": "", "what": "masking key", "bytes": 4 if f.masked else 0, "value": f.key.hex(" ") if f.key else "-"},
            {"": "", "what": "payload as sent (masked)", "bytes": f.length, "value": hexdump(f.raw[f.header_bytes:], 20)},
            {"": "", "what": "payload unmasked" + (" = DEFLATE data (RSV1=1)" if f.rsv1 else ""), "bytes": f.length,
             "value": hexdump(f.payload, 20) if f.rsv1 else show_payload(f.payload, Opcode.TEXT, 60)},
        ]
        if f.rsv1:
            inflated = f.inflated if isinstance(f.inflated, str) else str(f.message)
            rows.append({"": "", "what": "inflated: the text", "bytes": len(inflated.encode()),
                         "value": show_payload(inflated.encode(), Opcode.TEXT, 80)})
        if r is not None:
            rows += [
                {"": "server → client", "what": "the frame on the wire", "bytes": len(r.raw), "value": hexdump(r.raw, 20)},
                {"": "", "what": "header", "bytes": r.header_bytes,
                 "value": f"{r.raw[:r.header_bytes].hex(' ')}  FIN={int(r.fin)} RSV1={int(r.rsv1)} "
                          f"opcode={r.opcode.name} MASK={int(r.masked)} len={r.length} ({r.form})"},
                {"": "", "what": "payload (not masked, not compressed)", "bytes": r.length,
                 "value": show_payload(r.payload, Opcode.TEXT, 80)},
            ]
        return Table(rows)


def _is_browser(user_agent: str | None, headless: bool | None = None) -> bool:
    """A browser's User-Agent starts with "Mozilla/"; headless Chromium's says "HeadlessChrome"."""
    if not (user_agent and user_agent.startswith("Mozilla/")):
        return False
    return headless is None or headless == ("HeadlessChrome" in user_agent)


def _user_agent(tap: Any, conn: int) -> str | None:
    requests = [h for h in tap.http(conn, "c2s") if "websocket" in h.head.headers.tokens("Upgrade")]
    return requests[-1].head.headers.get("User-Agent") if requests else None


def _chat_frames(tap: Any, predicate: Callable[[dict, Any], bool]) -> list[tuple[Any, dict]]:
    """The client frames that complete a chat message (JSON with "message"), newest first."""
    found = []
    for f in reversed(tap.frames(direction="c2s", opcode=["text", "cont"])):
        if not isinstance(f.message, str):
            continue
        try:
            data = json.loads(f.message)
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("message"), str) and data.get("type", "message") == "message":
            if predicate(data, f):
                found.append((f, data))
    return found


def _reply(tap: Any, sent: Any, data: dict) -> Any | None:
    for r in tap.frames(conn=sent.conn, direction="s2c", opcode="text"):
        if r.t < sent.t or not isinstance(r.message, str):
            continue
        try:
            event = json.loads(r.message)
        except ValueError:
            continue
        if event.get("type") == "message" and event.get("message") == data["message"]:
            return r
    return None


def _capture(tap: Any, source: str, predicate: Callable[[dict, Any], bool], note: str = "",
             timeout: float = 5.0) -> Capture | None:
    try:
        found = wait_until(lambda: _chat_frames(tap, predicate), timeout, f"chat message from {source}", step=0.05)
    except TimeoutError:
        return None
    sent, data = found[0]
    try:
        reply = wait_until(lambda: _reply(tap, sent, data), timeout, "reply from the server", step=0.05)
    except TimeoutError:
        reply = None
    return Capture(source, _user_agent(tap, sent.conn), sent.conn, sent, reply, data["message"], note)


def browser_frames(tap: Any, wait: float = 5.0, text: str = "Hello from headless Chromium",
                   use_chromium: bool = True) -> Capture:
    """A chat message sent through ``tap`` by a browser, with the server's reply: a :class:`Capture`.

    1. Waits up to ``wait`` seconds for a message from a real browser (a
       connection whose User-Agent starts with "Mozilla/"); one sent before
       the call counts too, the newest wins.
    2. None came: drives headless Chromium through ``tap.url`` (Playwright)
       to type ``text`` twice (the same text twice shows whether
       compression remembers earlier messages: context takeover).
    3. No Chromium either: a ``ChatClient`` (websockets, which masks and
       compresses like a browser) sends ``text`` twice.

    ``Capture.source`` says which of the three produced the frames.
    """
    found = _capture(tap, "your browser", lambda d, f: _is_browser(_user_agent(tap, f.conn), headless=False),
                     timeout=wait)
    if found:
        return found
    note = ""
    if use_chromium:
        try:
            run_chromium(tap.url, "headless-chromium", [text, text])
            found = _capture(tap, "headless Chromium (driven by playwright)",
                             lambda d, f: d["message"] == text and _is_browser(_user_agent(tap, f.conn), headless=True))
            if found:
                # the first of the two: the second is shown by compression_table()
                firsts = _chat_frames(tap, lambda d, f: d["message"] == text and f.conn == found.conn)
                if len(firsts) >= 2:
                    found.sent = firsts[-1][0]
                    found.reply = _reply(tap, found.sent, firsts[-1][1])
                return found
            note = "headless Chromium ran, but its frames did not show up in the tap"
        except BrowserUnavailable as error:
            note = f"no browser to drive: {error}"
    else:
        note = "use_chromium=False"
    return _client_capture(tap, text, note)


def _client_capture(tap: Any, text: str, note: str) -> Capture:
    from ..chat.client import ChatClient

    loop = BackgroundLoop("lesson03-client")
    client = ChatClient(tap, "python-client")
    try:
        async def talk() -> None:
            await client.aconnect()
            for _ in range(2):
                await client.asend(text)
                await client.await_for(lambda e: e.get("type") == "message" and e.get("message") == text)
            await client.aclose()

        loop.call(talk(), timeout=15)
    finally:
        loop.stop()
    found = _capture(tap, "ChatClient (websockets)", lambda d, f: d["message"] == text
                     and (_user_agent(tap, f.conn) or "").startswith("Python/"), note)
    if found is None:
        raise RuntimeError("the ChatClient's message did not show up in the tap")
    firsts = _chat_frames(tap, lambda d, f: d["message"] == text and f.conn == found.conn)
    if len(firsts) >= 2:
        found.sent = firsts[-1][0]
        found.reply = _reply(tap, found.sent, firsts[-1][1])
    return found


def compression_table(tap: Any, conn: int | None = None) -> Table:
    """Every compressed client message the tap saw: bytes on the wire against bytes once inflated.

    Only messages sent in one frame (a browser's chat messages are) are
    listed; ``saved`` is the share of the payload compression took away.
    The last row sums them up.
    """
    rows = []
    total_wire = total_plain = 0
    for f in tap.frames(conn=conn, direction="c2s", opcode="text"):
        if not (f.compressed and f.fin and isinstance(f.message, str)):
            continue
        plain = len(f.message.encode())
        total_wire += f.length
        total_plain += plain
        rows.append({"#": f.n, "conn": f.conn, "payload on the wire (DEFLATE)": f.length, "inflated text": plain,
                     "saved": f"{100 * (1 - f.length / plain):.0f}%" if plain else "-",
                     "text": show_payload(f.message.encode(), Opcode.TEXT, 56)})
    if rows:
        rows.append({"#": "all", "conn": "", "payload on the wire (DEFLATE)": total_wire, "inflated text": total_plain,
                     "saved": f"{100 * (1 - total_wire / total_plain):.0f}%" if total_plain else "-", "text": ""})
    return Table(rows)
