"""Lesson 03's helpers, figures and exercises: right answers pass, wrong ones are named, live capture works."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from chat_lesson import ChatClient, ChatServer

from chat_lesson.lessons import plots  # noqa: E402
from chat_lesson.lessons.exercises import check  # noqa: E402
from chat_lesson.protocol.frames import (Frame, Opcode, apply_mask, decode_frame, describe, encode_close,  # noqa: E402
                                encode_frame, header_size)
from chat_lesson.browser import BrowserUnavailable, run_chromium  # noqa: E402
from chat_lesson.lessons.capture import browser_frames, compression_table  # noqa: E402
from chat_lesson.lessons.display import show_payload  # noqa: E402
from chat_lesson.lessons.lesson03 import (MYSTERY_FRAMES, RFC_EXAMPLES, RFC_KEY, assemble,  # noqa: E402
                                          buggy_decode, close_code_table, decoder_cases, field_table, frame_summary,
                                          length_table, mask_table, overhead_data, takeover_table, websockets_parse,
                                          websockets_serialize)
from chat_lesson.tap import Tap  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def chromium_available() -> bool:
    if not os.path.exists("/usr/bin/chromium"):
        return False
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return True


# -- helpers -----------------------------------------------------------------------------------


def test_rfc_examples_decode_as_the_rfc_says_and_websockets_agrees():
    expected = {
        "single-frame unmasked text": (True, Opcode.TEXT, b"Hello", None),
        "single-frame masked text": (True, Opcode.TEXT, b"Hello", RFC_KEY),
        "fragmented text, first frame": (False, Opcode.TEXT, b"Hel", None),
        "fragmented text, last frame": (True, Opcode.CONT, b"lo", None),
        "unmasked ping": (True, Opcode.PING, b"Hello", None),
        "masked pong": (True, Opcode.PONG, b"Hello", RFC_KEY),
        "256 bytes binary, unmasked": (True, Opcode.BINARY, bytes(range(256)), None),
        "64 KiB binary, unmasked": (True, Opcode.BINARY, bytes(range(256)) * 256, None),
    }
    assert list(expected) == list(RFC_EXAMPLES)
    for name, (fin, opcode, payload, key) in expected.items():
        raw = RFC_EXAMPLES[name]
        frame, used = decode_frame(raw)
        assert used == len(raw)
        assert (frame.fin, frame.opcode, frame.payload, frame.mask_key) == (fin, opcode, payload, key)
        theirs = websockets_parse(raw, mask=key is not None)
        assert (theirs.fin, int(theirs.opcode), bytes(theirs.data)) == (fin, int(opcode), payload)
        if key is None:
            assert websockets_serialize(opcode, payload, fin=fin) == raw


def test_tables_show_what_the_bytes_say():
    rows = frame_summary(RFC_EXAMPLES).rows
    assert [r["header"] for r in rows] == [2, 6, 2, 2, 2, 6, 4, 10]
    assert rows[1]["key"] == "37 fa 21 3d" and rows[1]["payload (unmasked)"] == "'Hello'"
    fields = field_table(RFC_EXAMPLES["single-frame masked text"]).rows
    assert [f["field"] for f in fields] == ["FIN", "RSV1", "RSV2", "RSV3", "opcode", "MASK", "payload len", "masking key"]
    assert fields[4]["value"] == "0x1" and fields[7]["value"] == "37 fa 21 3d"
    table = mask_table("Hello", RFC_KEY).rows
    assert [r["hex"].split(" = ")[1] for r in table] == ["7f", "9f", "4d", "51", "58"]   # RFC 6455 §5.7's masked bytes
    assert [r["i % 4"] for r in table] == [0, 1, 2, 3, 0]


def test_length_table_edges():
    rows = length_table([0, 125, 126, 65535, 65536]).rows
    assert [r["header bytes"] for r in rows] == [2, 2, 4, 4, 10]
    assert [r["form"] for r in rows] == ["7-bit", "7-bit", "16-bit", "16-bit", "64-bit"]
    assert rows[2]["header on the wire"] == "82 7e 00 7e" and rows[3]["extended length"] == "ff ff"
    masked = length_table([125, 126], masked=True).rows
    assert [r["header bytes"] for r in masked] == [6, 8]


def test_overhead_data_is_measured_and_matches_header_size():
    sizes, server, client = overhead_data([126, 0, 125, 65536, 65535, 5])
    assert sizes == [0, 5, 125, 126, 65535, 65536]
    assert server == [header_size(n, False) for n in sizes] == [2, 2, 2, 4, 4, 10]
    assert client == [header_size(n, True) for n in sizes]


def test_assemble_glues_fragments_and_reports_broken_rules():
    pieces = [encode_frame(Frame(False, Opcode.TEXT, b"Hel")), encode_frame(Frame(True, Opcode.PING, b"!")),
              encode_frame(Frame(True, Opcode.CONT, b"lo"))]
    rows = assemble(pieces).rows
    assert rows[0]["assembler gives"].startswith("nothing yet") and rows[0]["in progress"]
    assert rows[1]["assembler gives"].startswith("PING frame, handled at once")
    assert rows[2]["assembler gives"] == "message 'Hello' in 2 frame(s)" and not rows[2]["in progress"]
    bad = assemble([encode_frame(Frame(False, Opcode.PING, b"x"), strict=False)]).rows[0]
    assert "FrameError, close 1002" in bad["assembler gives"] and "fragmented" in bad["assembler gives"]
    orphan = assemble([encode_frame(Frame(True, Opcode.CONT, b"x"))]).rows[0]
    assert "no message in progress" in orphan["assembler gives"]


def test_close_codes_table_and_show_payload():
    rows = {r["code"]: r for r in close_code_table().rows}
    assert {c for c, r in rows.items() if r["in a close frame?"] != "yes"} == {1005, 1006, 1015}
    assert all(r["meaning"] for r in rows.values())
    assert show_payload(encode_close(1001, "bye"), Opcode.CLOSE) == "close code 1001 (GOING_AWAY), reason 'bye'"
    assert show_payload(b"\xde\xad", Opcode.BINARY) == "de ad"


def test_takeover_table_shows_rfc7692_numbers():
    rows = takeover_table(["Hello", "Hello"]).rows
    assert [r["compressed alone"] for r in rows] == [7, 7]
    assert [r["with context takeover"] for r in rows] == [7, 5]          # RFC 7692 §7.2.3.2


# -- figures -----------------------------------------------------------------------------------


def test_frame_layout_draws_every_field_of_the_longest_header():
    ax = plots.frame_layout()
    texts = " ".join(t.get_text() for t in ax.texts)
    for name in ("FIN", "RSV1", "RSV2", "RSV3", "opcode", "MASK", "payload len", "extended payload length",
                 "masking key", "payload data"):
        assert name in texts
    assert [t.get_text() for t in ax.texts[:plots.ROW_BITS]] == [str(i) for i in range(plots.ROW_BITS)]  # the ruler
    ax.figure.canvas.draw()


@pytest.mark.parametrize("draw", [plots.frame_layout, lambda: plots.frame_bits(RFC_EXAMPLES["single-frame masked text"]),
                                  lambda: plots.frame_bits(RFC_EXAMPLES["64 KiB binary, unmasked"], max_payload=4)])
def test_frame_figures_are_legible_on_a_projector(draw):
    """No text under plots.SMALL points, and the figure fits a notebook's output area at 1024×768 (issue 15)."""
    ax = draw()
    sizes = [t.get_fontsize() for t in ax.texts + [ax._left_title] if t.get_text()]
    assert min(sizes) >= plots.SMALL >= 10
    assert ax.figure.get_figwidth() * ax.figure.dpi <= 968
    ax.figure.canvas.draw()


@pytest.mark.parametrize("raw", [RFC_EXAMPLES["single-frame masked text"], RFC_EXAMPLES["64 KiB binary, unmasked"],
                                 encode_frame(Frame(True, Opcode.BINARY, bytes(300)), mask_key=b"abcd")])
def test_frame_bits_draws_every_header_bit_and_the_payload(raw):
    ax = plots.frame_bits(raw, max_payload=4)
    header_bits = sum(f.width for f in describe(raw))
    bits = [t.get_text() for t in ax.texts if t.get_text() in ("0", "1") and t.get_fontfamily() == ["monospace"]]
    assert len(bits) == header_bits + 8 * 4
    assert "".join(bits[:header_bits]) == "".join(f.bits for f in describe(raw))
    assert ax.get_title(loc="left").startswith(f"{len(raw)} bytes")
    if decode_frame(raw)[0].mask_key:
        assert any("→" in t.get_text() for t in ax.texts)          # masked byte → unmasked byte
    ax.figure.canvas.draw()


def test_overhead_plot():
    sizes, server, client = overhead_data([0, 10, 125, 126, 1000, 65535, 65536, 100000])
    left, right = plots.overhead(sizes, server, client, marks={"a chat message": 60})
    assert [max(line.get_ydata()) for line in left.lines[:2]] == [14, 10]
    assert len(left.figure.legends) == 1
    left.figure.canvas.draw()


# -- exercises ----------------------------------------------------------------------------------

MYSTERY_RIGHT = {
    "A": {"opcode": "text", "fin": True, "masked": True, "payload": "hi!"},
    "B": {"opcode": "binary", "fin": False, "masked": False, "payload": bytes.fromhex("deadbeef")},
    "C": {"opcode": "close", "fin": True, "masked": False, "payload": (1001, "bye")},
}


def mystery(**changes):
    answer = {k: dict(v) for k, v in MYSTERY_RIGHT.items()}
    for key, value in changes.items():
        frame, field = key.split("_", 1)
        answer[frame][field] = value
    return answer


def test_mystery_frames_right_answers_pass_in_any_reasonable_spelling():
    assert check("03.mystery_frames", MYSTERY_RIGHT)
    assert check("03.mystery_frames", mystery(A_opcode=1, B_opcode="0x2", C_opcode=Opcode.CLOSE, A_fin=1, B_fin=0,
                                              B_payload="de ad be ef", C_payload=bytes.fromhex("03e9627965")))


@pytest.mark.parametrize("changes, words", [
    ({"A_payload": bytes.fromhex("794b12")}, "unmask it first"),          # the masked bytes, as on the wire
    ({"A_masked": False}, "MASK"),
    ({"B_fin": True}, "FIN"),
    ({"B_opcode": "text"}, "opcode"),
    ({"C_opcode": "ping"}, "opcode"),
    ({"C_payload": (1000, "bye")}, "payload"),
    ({"C_payload": "bye"}, "payload"),
    ({"A_opcode": "banana"}, "not one I know"),
    ({"A_payload": ...}, "still to answer"),
])
def test_mystery_frames_wrong_answers_fail_and_say_why(changes, words):
    result = check("03.mystery_frames", mystery(**changes))
    assert not result and words in result.message


def test_mystery_frames_rejects_a_wrong_shape():
    assert not check("03.mystery_frames", {"A": {}})
    assert not check("03.mystery_frames", [1, 2, 3])
    assert not check("03.mystery_frames", ...)
    assert set(MYSTERY_FRAMES) == {"A", "B", "C"}


def right_ping(payload, key):
    if len(payload) > 125:
        raise ValueError("too long")
    return bytes([0x89, 0x80 | len(payload)]) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_masked_ping_right_answer_passes():
    assert check("03.masked_ping", right_ping)


@pytest.mark.parametrize("wrong, words", [
    (lambda p, k: bytes([0x89, len(p)]) + p, "MASK must be 1"),
    (lambda p, k: bytes([0x09, 0x80 | len(p)]) + k + apply_mask(p, k), "FIN must be 1"),
    (lambda p, k: bytes([0x8A, 0x80 | len(p)]) + k + apply_mask(p, k), "opcode"),
    (lambda p, k: bytes([0x89, 0x80 | len(p)]) + k + p, "not masked"),
    (lambda p, k: bytes([0x89, 0x80 | len(p)]) + k + bytes(b ^ k[0] for b in p), "key[0]"),
    (lambda p, k: bytes([0x89, 0x80 | len(p)]) + apply_mask(p, k), "masking key"),
    (lambda p, k: (bytes([0x89, 0x80 | len(p)]) + k + apply_mask(p, k)).hex(), "return bytes"),
    (lambda p, k: encode_frame(Frame(True, Opcode.PING, p), mask_key=k, strict=False), "125"),   # no length check
    (lambda p, k: None, "return bytes"),
])
def test_masked_ping_wrong_answers_fail_and_say_why(wrong, words):
    result = check("03.masked_ping", wrong)
    assert not result and words in result.message, result.message


def fixed(data):
    frame, _ = decode_frame(data)
    return frame.fin, int(frame.opcode), frame.payload


def test_fix_decoder_accepts_a_fix_and_rejects_the_bug():
    assert check("03.fix_decoder", fixed)
    result = check("03.fix_decoder", buggy_decode)
    assert not result and "copy it" in result.message

    def copied_bug(data):
        return buggy_decode(data)

    result = check("03.fix_decoder", copied_bug)
    assert not result and "16-bit" in result.message


@pytest.mark.parametrize("wrong", [
    lambda d: (fixed(d)[0], fixed(d)[1], d[2:2 + (d[1] & 0x7F)]),                # ignores forms and masks
    lambda d: fixed(d)[:2] + (decode_frame(d)[0].payload[:-1] if len(d) > 200 else fixed(d)[2],),
    lambda d: (True, fixed(d)[1], fixed(d)[2]),                                    # FIN always 1
    lambda d: None,
])
def test_fix_decoder_rejects_other_wrong_decoders(wrong):
    assert not check("03.fix_decoder", wrong)


def test_decoder_cases_cover_every_form_masked_and_not():
    forms = {(decode_frame(raw)[0].mask_key is not None, len(decode_frame(raw)[0].payload) >= 126,
              len(decode_frame(raw)[0].payload) >= 65536) for _, raw in decoder_cases()}
    assert forms == {(m, a, b) for m in (False, True) for a, b in ((False, False), (True, False), (True, True))}
    broken = [name for name, raw in decoder_cases() if buggy_decode(raw)[2] != decode_frame(raw)[0].payload]
    assert broken and all(n.split()[0].isdigit() and int(n.split()[0]) >= 126 or "KiB" in n or "256" in n
                          for n in broken)


# -- the live capture ----------------------------------------------------------------------------


def test_browser_frames_falls_back_to_a_chatclient():
    with ChatServer(port=0, quiet=True) as server, Tap(server, quiet=True) as tap:
        captured = browser_frames(tap, wait=0.2, text="fallback please", use_chromium=False)
        compression = compression_table(tap, conn=captured.conn).rows
    assert captured.source == "ChatClient (websockets)" and captured.note == "use_chromium=False"
    assert captured.user_agent.startswith("Python/")
    sent, reply = captured.sent, captured.reply
    assert sent.masked and sent.rsv1 and sent.opcode == Opcode.TEXT and '"fallback please"' in sent.message
    assert sent.raw[sent.header_bytes:] == apply_mask(sent.payload, sent.key)
    assert reply is not None and not reply.masked and not reply.rsv1 and '"fallback please"' in reply.message
    assert reply.t >= sent.t
    rows = [r["what"] for r in captured.table().rows]
    assert "masking key" in rows and "inflated: the text" in rows and "payload (not masked, not compressed)" in rows
    assert compression[-1]["#"] == "all" and len(compression) >= 4       # join + two messages + the sum
    assert compression[-1]["inflated text"] == sum(r["inflated text"] for r in compression[:-1])


def test_browser_frames_takes_a_real_browsers_message_without_driving_one():
    """A client whose User-Agent says Mozilla/ (not headless) counts as "your browser"."""
    with ChatServer(port=0, quiet=True) as server, Tap(server, quiet=True) as tap:
        with ChatClient(tap, "student", user_agent_header="Mozilla/5.0 (X11; Linux) Firefox/140.0") as student:
            student.send("from a student's browser")
            student.wait_for(lambda e: e.get("message") == "from a student's browser")
            captured = browser_frames(tap, wait=2, use_chromium=False)
    assert captured.source == "your browser" and captured.text == "from a student's browser"
    assert "Firefox" in captured.user_agent and captured.reply is not None


@pytest.mark.skipif(not chromium_available(), reason="needs Chromium at /usr/bin/chromium and playwright")
def test_browser_frames_drives_headless_chromium():
    with ChatServer(port=0, quiet=True) as server, Tap(server, quiet=True) as tap:
        captured = browser_frames(tap, wait=0.2, text="driven")
        texts = [f.message for f in tap.frames(conn=captured.conn, direction="c2s", opcode="text")]
    assert captured.source == "headless Chromium (driven by playwright)"
    assert "HeadlessChrome" in captured.user_agent
    assert captured.sent.masked and captured.sent.rsv1 and captured.reply is not None
    assert sum('"driven"' in t for t in texts) == 2 and captured.sent.n < max(
        f.n for f in tap.frames(conn=captured.conn, direction="c2s", opcode="text"))   # the first of the two


def test_without_playwright_the_chatclient_stands_in(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)       # "import" now raises ImportError
    with pytest.raises(BrowserUnavailable, match="playwright"):
        run_chromium("http://127.0.0.1:9/", timeout=2)
    with ChatServer(port=0, quiet=True) as server, Tap(server, quiet=True) as tap:
        captured = browser_frames(tap, wait=0.1, text="no browser here")
    assert captured.source == "ChatClient (websockets)"
    assert captured.note.startswith("no browser to drive: ModuleNotFoundError")
