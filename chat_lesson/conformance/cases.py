"""The battery's cases, written from RFC 6455 (not copied from Autobahn); each cites its section.

A case is a function of a :class:`Ctx`: it opens connections, sends, reads,
and ends by raising (or returning) a verdict: "pass"; "non-strict"
(acceptable, but not the RFC's strictest reading: a server that hangs up
without the close frame it SHOULD send, say); or "fail".

Three judges do most of the work:

- :func:`expect_data`: a valid message must come back (an echo, or a chat
  ``message`` event); refusing it as too big (1009) or as data the
  application does not take (1003, 1007, 1008) is allowed (§7.4.1);
- :func:`expect_failure`: after a frame that breaks a MUST, the server must
  _Fail the WebSocket Connection_ (§7.1.7), with a close frame carrying the
  right code; if nothing happens within ``grace`` s, a *probe* (a valid
  message) is sent: its reply proves the bad frame was swallowed;
- :func:`expect_refusal`: a bad opening handshake gets an HTTP error, not 101 (§4.2.1).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any
from collections.abc import Callable

from ..protocol.frames import Frame, Opcode
from .probe import Conn, Outcome, Target, Verdict

CATEGORIES = ["framing", "pings", "fragmentation", "utf8", "closing", "handshake"]
SIZES = (0, 125, 126, 65535, 65536)
APP_REFUSALS = {1003: "refused as data it does not take (1003)", 1007: "refused as not what it expects (1007)",
                1008: "refused by policy (1008)", 1009: "refused as too big (1009)"}


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    category: str
    title: str
    section: str
    run: Callable[[Ctx], Any]


CASES: list[Case] = []


def case(category: str, id: str, title: str, section: str):
    def register(fn: Callable[[Ctx], Any]) -> Callable[[Ctx], Any]:
        CASES.append(Case(id, category, title, section, fn))
        return fn
    return register


class Ctx:
    """What a case works with: the target, the logs, and connections that are closed afterwards."""

    def __init__(self, target: Target) -> None:
        self.target, self.sent, self.got = target, [], []
        self.conns: list[Conn] = []

    def connect(self, **options: Any) -> Conn:
        conn = Conn(self.target, self.sent, self.got, **options)
        self.conns.append(conn)
        return conn

    def close(self) -> None:
        for conn in self.conns:
            conn.close()


# -- the judges --------------------------------------------------------------------------------


def _ended(out: Outcome, what: str) -> Verdict:
    if out.kind == "close":
        return Verdict("fail", f"closed with {out.code} instead of {what}")
    if out.kind == "eof":
        return Verdict("fail", f"dropped the connection instead of {what}")
    if out.kind == "bad":
        return Verdict("fail", f"sent a broken frame ({out.detail}) instead of {what}")
    return Verdict("fail", f"no {what} within the time-out")


def expect_data(c: Conn, content: bytes, opcode: int = Opcode.TEXT, *, must_relay: bool = True) -> Verdict:
    """A valid message was sent: it must come back (echo, or a chat ``message`` event), or be refused politely."""
    must_relay = must_relay or not c.target.chat            # an echo server returns everything
    token = c.probe() if c.target.chat else None
    out = c.react(want=lambda i: c.is_reply(i, content, opcode) or (token is not None and c.is_reply(i, token)))
    if out.kind == "want":
        if token is not None and c.is_reply(out.item, token) and not c.is_reply(out.item, content, opcode):
            if must_relay:
                return Verdict("non-strict", "the chat dropped a valid message without a word (the next one came back)")
            return Verdict("pass", "ignored by the chat (it relays JSON text), and the connection goes on")
        return Verdict("pass", "came back unchanged" if not c.target.chat else "broadcast as a message event")
    if out.kind == "close" and out.code in APP_REFUSALS:
        return Verdict("pass", APP_REFUSALS[out.code] + ": a limit the RFC allows (§7.4.1)")
    if out.kind == "close" and not must_relay and out.code not in (1002, None):
        return Verdict("non-strict", f"closed with {out.code} on data the chat does not take; "
                                     "1003 or 1008 would say why (§7.4.1)")
    return _ended(out, "the message back")


def expect_failure(c: Conn, code: int, what: str) -> Verdict:
    """The server must _Fail the WebSocket Connection_ (§7.1.7) with ``code`` in its close frame."""
    out = c.react(c.target.grace)
    token = None
    if out.kind == "timeout":
        token = c.probe()
        out = c.react(want=lambda i: c.is_reply(i, token))
    if out.kind == "close":
        if out.code == code:
            return Verdict("pass", f"closed with {code}")
        return Verdict("non-strict", f"closed with {out.code or 'no code'}; §7.4.1 names {code} for {what}")
    if out.kind == "eof":
        return Verdict("non-strict", f"hung up without a close frame; §7.1.7: it SHOULD send one, code {code}")
    if out.kind == "want":
        return Verdict("fail", f"accepted {what} and went on (the message sent after it came back)")
    if out.kind == "bad":
        return Verdict("fail", f"answered with a broken frame: {out.detail}")
    return Verdict("fail", f"no reaction to {what} within the time-out")


def expect_refusal(status: int | None, head: Any, what: str) -> Verdict:
    if status is None:
        if head == "closed":
            return Verdict("non-strict", f"closed the connection without an HTTP status for {what} (§4.2.1: e.g. 400)")
        return Verdict("fail", f"no answer to {what}")
    if status == 101:
        return Verdict("fail", f"switched protocols (101) despite {what}")
    if 400 <= status < 500 or status == 505 and "HTTP/1.0" in what:
        return Verdict("pass", f"refused with {status}")
    return Verdict("non-strict", f"answered {status}; §4.2.1 asks for a 4xx such as 400")


def _worst(verdicts: list[tuple[str, Verdict]]) -> Verdict:
    order = {"fail": 0, "non-strict": 1, "pass": 2}
    worst = min(order[v.kind] for _, v in verdicts)
    kind = [k for k, o in order.items() if o == worst][0]
    shown = [f"{label}: {v.why}" for label, v in verdicts if v.kind == kind] if kind != "pass" else \
        [f"{label}: {v.why}" for label, v in verdicts]
    return Verdict(kind, "; ".join(shown))


def _sized(c: Conn, size: int) -> bytes:
    return c.padding_for(size)


# -- framing (§5.2, §5.6) ----------------------------------------------------------------------


def _data_case(opcode: int, size: int) -> Callable[[Ctx], Verdict]:
    def run(ctx: Ctx) -> Verdict:
        c = ctx.connect()
        if c.target.chat and size < len(c.wrap(b"")):
            c.send_frame(opcode, b"", note="empty: not a chat message")
            return expect_data(c, b"\x00never", opcode, must_relay=False)
        content = _sized(c, size)
        c.send_frame(opcode, c.wrap(content))
        return expect_data(c, content if not c.target.chat else content, opcode,
                           must_relay=opcode == Opcode.TEXT)
    return run


for _op, _kind in ((Opcode.TEXT, "text"), (Opcode.BINARY, "binary")):
    for _n in SIZES:
        form = "7-bit" if _n < 126 else "16-bit" if _n < 65536 else "64-bit"
        case("framing", f"{_kind}-{_n}", f"{_kind} message of {_n} bytes ({form} length)", "§5.2, §5.6")(
            _data_case(_op, _n))


for _bit in ("rsv1", "rsv2", "rsv3"):
    def _rsv(ctx: Ctx, bit: str = _bit) -> Verdict:
        c = ctx.connect()
        c.send_frame(Opcode.TEXT, c.wrap(b"reserved bit"), **{bit: True})
        return expect_failure(c, 1002, f"{bit.upper()} set with no extension negotiated")
    case("framing", f"{_bit}-set", f"{_bit.upper()} set, no extension negotiated", "§5.2")(_rsv)


@case("framing", "opcode-3", "reserved non-control opcode 0x3", "§5.2")
def _(ctx: Ctx) -> Verdict:
    c = ctx.connect()
    c.send_frame(3, b"reserved")
    return expect_failure(c, 1002, "a reserved opcode")


@case("framing", "opcode-b", "reserved control opcode 0xB", "§5.2")
def _(ctx: Ctx) -> Verdict:
    c = ctx.connect()
    c.send_frame(0xB, b"reserved")
    return expect_failure(c, 1002, "a reserved opcode")


@case("framing", "unmasked", "a client frame without a mask", "§5.1, §5.3")
def _(ctx: Ctx) -> Verdict:
    c = ctx.connect()
    c.send_frame(Opcode.TEXT, c.wrap(b"not masked"), masked=False)
    return expect_failure(c, 1002, "an unmasked client frame")


# -- pings and pongs (§5.5.2, §5.5.3) ----------------------------------------------------------


def _expect_pong(c: Conn, payload: bytes) -> Verdict:
    token = c.probe()
    is_pong = lambda i: isinstance(i, Frame) and i.opcode == Opcode.PONG           # noqa: E731
    out = c.react(want=lambda i: is_pong(i) or c.is_reply(i, token))
    if out.kind == "want" and not is_pong(out.item):
        out = c.react(c.target.grace, want=is_pong)
        if out.kind == "timeout":
            return Verdict("fail", "no pong: the message sent after the ping came back, the pong never did (§5.5.2)")
    if out.kind != "want":
        return _ended(out, "a pong")
    if out.item.payload != payload:
        return Verdict("fail", f"the pong carries {len(out.item.payload)} bytes, not the ping's {len(payload)} (§5.5.3)")
    return Verdict("pass", f"pong with the same {len(payload)} bytes")


for _id, _payload, _title in (("ping-payload", b"Hello, ping \x00\xff", "ping with a binary payload"),
                              ("ping-empty", b"", "ping with no payload"),
                              ("ping-125", bytes(range(125)), "ping with 125 bytes, the largest allowed")):
    def _ping(ctx: Ctx, payload: bytes = _payload) -> Verdict:
        c = ctx.connect()
        c.send_frame(Opcode.PING, payload)
        return _expect_pong(c, payload)
    case("pings", _id, f"{_title}: a pong with the same payload", "§5.5.2, §5.5.3")(_ping)


@case("pings", "ping-126", "ping with 126 bytes (over the 125 limit)", "§5.5")
def _(ctx: Ctx) -> Verdict:
    c = ctx.connect()
    c.send_frame(Opcode.PING, b"x" * 126)
    return expect_failure(c, 1002, "a 126-byte control frame")


@case("pings", "ping-fragmented", "a fragmented ping (FIN=0)", "§5.4, §5.5")
def _(ctx: Ctx) -> Verdict:
    c = ctx.connect()
    c.send_frame(Opcode.PING, b"half", fin=False)
    c.send_frame(Opcode.CONT, b"other half")
    return expect_failure(c, 1002, "a fragmented control frame")


@case("pings", "pong-unsolicited", "an unsolicited pong is ignored", "§5.5.3")
def _(ctx: Ctx) -> Verdict:
    c = ctx.connect()
    c.send_frame(Opcode.PONG, b"unsolicited")
    token = c.probe()
    out = c.react(want=lambda i: c.is_reply(i, token))
    return Verdict("pass", "ignored; the connection goes on") if out.kind == "want" else _ended(out, "the next message")


# -- fragmentation (§5.4) ----------------------------------------------------------------------


def _fragments(data: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


def _send_fragments(c: Conn, opcode: int, parts: list[bytes]) -> None:
    for i, part in enumerate(parts):
        c.send_frame(opcode if i == 0 else Opcode.CONT, part, fin=i == len(parts) - 1)


@case("fragmentation", "text-3-fragments", "a text message in three fragments", "§5.4")
def _(ctx: Ctx) -> Verdict:
    c = ctx.connect()
    content = b"fragmented-message-" + bytes(range(0x61, 0x7b))
    data = c.wrap(content)
    _send_fragments(c, Opcode.TEXT, _fragments(data, [5, len(data) - 5]))
    return expect_data(c, content)


@case("fragmentation", "binary-2-fragments", "a binary message in two fragments, one empty", "§5.4")
def _(ctx: Ctx) -> Verdict:
    c = ctx.connect()
    content = b"binary-in-pieces"
    data = c.wrap(content)
    _send_fragments(c, Opcode.BINARY, [data, b""])
    return expect_data(c, content, Opcode.BINARY, must_relay=False)


@case("fragmentation", "ping-between", "a ping between the fragments of a message", "§5.4, §5.5")
def _(ctx: Ctx) -> Verdict:
    c = ctx.connect()
    content = b"around-a-ping"
    data = c.wrap(content)
    c.send_frame(Opcode.TEXT, data[:6], fin=False)
    c.send_frame(Opcode.PING, b"between")
    c.send_frame(Opcode.CONT, data[6:])
    pong = message = False
    deadline = time.monotonic() + c.target.timeout
    while not (pong and message):
        left = max(0.0, deadline - time.monotonic()) if not message else c.target.grace   # pong due before it
        out = c.react(left, want=lambda i: (isinstance(i, Frame) and i.opcode == Opcode.PONG) or c.is_reply(i, content))
        if out.kind != "want":
            return _ended(out, "the pong" if not pong else "the message")
        if isinstance(out.item, Frame):
            if out.item.payload != b"between":
                return Verdict("fail", "the pong does not carry the ping's payload")
            pong = True
        else:
            message = True
    return Verdict("pass", "pong, and the whole message")


@case("fragmentation", "cont-alone", "a continuation frame with nothing to continue", "§5.4")
def _(ctx: Ctx) -> Verdict:
    c = ctx.connect()
    c.send_frame(Opcode.CONT, c.wrap(b"orphan"))
    return expect_failure(c, 1002, "a continuation with no message in progress")


@case("fragmentation", "new-before-end", "a new message before the last one ended", "§5.4")
def _(ctx: Ctx) -> Verdict:
    c = ctx.connect()
    c.send_frame(Opcode.TEXT, b"first, unfinished", fin=False)
    c.send_frame(Opcode.TEXT, c.wrap(b"second"))
    return expect_failure(c, 1002, "a TEXT frame inside a fragmented message")


# -- UTF-8 (§5.6, §8.1) --------------------------------------------------------------------------

VALID = "κόσμε, µ@ßöäü, 😀 end".encode()
INVALID = {"surrogate": b"edit \xed\xa0\x80 ed", "overlong": b"slash \xc0\xaf", "cut-at-end": b"ends in \xf0\x9f\x98"}


@case("utf8", "valid-multibyte", "valid multi-byte text", "§5.6")
def _(ctx: Ctx) -> Verdict:
    c = ctx.connect()
    c.send_frame(Opcode.TEXT, c.wrap(VALID))
    return expect_data(c, VALID)


@case("utf8", "valid-split-in-char", "valid text split inside a character, at a frame boundary", "§5.6, §8.1")
def _(ctx: Ctx) -> Verdict:
    c = ctx.connect()
    data = c.wrap(VALID)
    cut = data.index("😀".encode()) + 2                     # two bytes of the emoji in each frame
    _send_fragments(c, Opcode.TEXT, _fragments(data, [cut]))
    return expect_data(c, VALID)


@case("utf8", "valid-byte-fragments", "valid text sent one byte per fragment", "§5.4, §8.1")
def _(ctx: Ctx) -> Verdict:
    c = ctx.connect()
    data = c.wrap(VALID)
    c.sent.append(f"{len(data)} fragments of one byte each:")
    _send_fragments(c, Opcode.TEXT, _fragments(data, list(range(1, len(data)))))
    return expect_data(c, VALID)


for _name, _bad in INVALID.items():
    def _invalid(ctx: Ctx, bad: bytes = _bad, name: str = _name) -> Verdict:
        c = ctx.connect()
        c.send_frame(Opcode.TEXT, c.wrap(bad))
        return expect_failure(c, 1007, f"invalid UTF-8 ({name})")
    case("utf8", f"invalid-{_name}", f"invalid UTF-8 in one frame: {_name}", "§8.1")(_invalid)


@case("utf8", "invalid-across-fragments", "invalid UTF-8 split across fragments", "§8.1")
def _(ctx: Ctx) -> Verdict:
    c = ctx.connect()
    data = c.wrap(b"ok \xf0\x9f" + b"(not a continuation")    # a 4-byte start, then no continuation bytes
    cut = data.index(b"\xf0") + 2
    _send_fragments(c, Opcode.TEXT, _fragments(data, [cut]))
    return expect_failure(c, 1007, "invalid UTF-8 across fragments")


# -- closing (§5.5.1, §7) ----------------------------------------------------------------------


def _close_reply(ctx: Ctx, payload: bytes, note: str = "") -> Outcome:
    c = ctx.connect()
    c.send_frame(Opcode.CLOSE, payload, note=note)
    return c.react()


def _judge_echo(out: Outcome, code: int | None) -> Verdict:
    if out.kind != "close":
        return _ended(out, "a close frame (§5.5.1: MUST answer a close with a close)")
    if out.code == code:
        return Verdict("pass", f"answered with {code}" if code else "answered with a close frame")
    if code is None and out.code == 1000:
        return Verdict("pass", "answered 1000")
    if out.code == 1002:
        return Verdict("fail", "refused a valid close frame with 1002")
    return Verdict("non-strict", f"answered {out.code or 'no code'}; §5.5.1: it typically echoes {code}")


@case("closing", "close-1000", "close 1000 with a reason: echoed", "§5.5.1, §7.4.1")
def _(ctx: Ctx) -> Verdict:
    return _judge_echo(_close_reply(ctx, (1000).to_bytes(2, "big") + b"bye"), 1000)


@case("closing", "close-empty", "close with no payload: answered", "§5.5.1")
def _(ctx: Ctx) -> Verdict:
    return _judge_echo(_close_reply(ctx, b""), None)


@case("closing", "close-valid-codes", "close codes 1001, 1003, 1007, 1011, 3000, 4999: echoed", "§7.4.1, §7.4.2")
def _(ctx: Ctx) -> Verdict:
    return _worst([(str(code), _judge_echo(_close_reply(ctx, code.to_bytes(2, "big")), code))
                   for code in (1001, 1003, 1007, 1011, 3000, 4999)])


def _judge_bad_close(out: Outcome, sent: bytes, want: int = 1002) -> Verdict:
    if out.kind == "close":
        if out.code == want:
            return Verdict("pass", f"closed with {want}")
        if out.item.payload == sent or len(sent) == 2 and out.item.payload[:2] == sent:
            return Verdict("fail", f"echoed the invalid close payload {sent.hex(' ')} back")
        return Verdict("non-strict", f"closed with {out.code or 'no code'}; {want} is the code for this")
    if out.kind == "eof":
        return Verdict("non-strict", f"hung up without a close frame ({want} expected)")
    return _ended(out, f"a close frame with {want}")


@case("closing", "close-reserved-codes", "reserved codes 1004, 1005, 1006, 1015: refused", "§7.4.1")
def _(ctx: Ctx) -> Verdict:
    return _worst([(str(code), _judge_bad_close(_close_reply(ctx, code.to_bytes(2, "big")), code.to_bytes(2, "big")))
                   for code in (1004, 1005, 1006, 1015)])


@case("closing", "close-invalid-codes", "codes 0, 999, 1016, 2999, 5000, 65535: refused", "§7.4.2")
def _(ctx: Ctx) -> Verdict:
    return _worst([(str(code), _judge_bad_close(_close_reply(ctx, code.to_bytes(2, "big")), code.to_bytes(2, "big")))
                   for code in (0, 999, 1016, 2999, 5000, 65535)])


@case("closing", "close-reason-not-utf8", "a close reason that is not UTF-8", "§5.5.1, §8.1")
def _(ctx: Ctx) -> Verdict:
    payload = (1000).to_bytes(2, "big") + b"\xff\xfe"
    return _judge_bad_close(_close_reply(ctx, payload), payload, want=1007)


@case("closing", "close-1-byte", "a close payload of one byte", "§5.5.1")
def _(ctx: Ctx) -> Verdict:
    return _judge_bad_close(_close_reply(ctx, b"\x03"), b"\x03")


@case("closing", "close-reason-123", "a close reason of 123 bytes, the most that fits", "§5.5, §5.5.1")
def _(ctx: Ctx) -> Verdict:
    return _judge_echo(_close_reply(ctx, (1000).to_bytes(2, "big") + b"r" * 123), 1000)


@case("closing", "data-after-close", "a text frame after the client's close is not answered", "§5.5.1, §1.4")
def _(ctx: Ctx) -> Verdict:
    c = ctx.connect()
    c.send_frame(Opcode.CLOSE, (1000).to_bytes(2, "big"))
    c.send_frame(Opcode.TEXT, c.wrap(b"after-close"))
    out = c.react(want=lambda i: c.is_reply(i, b"after-close"))
    if out.kind == "want":
        return Verdict("fail", "answered a message sent after the close frame")
    if out.kind != "close":
        return _ended(out, "a close frame")
    late = c.react(c.target.grace, want=lambda i: c.is_reply(i, b"after-close"))
    if late.kind == "want":
        return Verdict("fail", "sent data after its own close frame")
    return Verdict("pass", "answered the close, ignored what came after")


@case("closing", "close-handshake-timing", "after the close handshake the server closes TCP", "§5.5.1, §7.1.1")
def _(ctx: Ctx) -> Verdict:
    c = ctx.connect()
    c.send_frame(Opcode.CLOSE, (1000).to_bytes(2, "big"))
    start = time.monotonic()
    out = c.react()
    if out.kind != "close":
        return _ended(out, "a close frame")
    answered = time.monotonic() - start
    fin = c.wait_fin(c.target.timeout)
    if fin is None:
        ctx.got.append(f"no FIN within {c.target.timeout:g} s")
        return Verdict("non-strict", "waits for the client to close TCP; §7.1.1: the server SHOULD close it first")
    ctx.got.append(f"FIN {fin * 1000:.1f} ms after its close frame")
    if fin > 1.0:
        return Verdict("non-strict", f"closed TCP only {fin:.1f} s after its close frame")
    return Verdict("pass", f"close answered in {answered * 1000:.1f} ms, TCP closed {fin * 1000:.1f} ms later")
