"""Frames: RFC 6455 §5.7 byte for byte, every §5 rule, and websockets interop."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode as WsOpcode
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.streams import StreamReader
from websockets.uri import parse_uri

from chat_lesson.protocol.frames import (
    CloseCode, Frame, FrameError, IncompleteFrame, Message, MessageAssembler, Opcode,
    apply_mask, decode_close, describe, decode_frame, encode_close, encode_frame,
    header_size, length_form,
)
from chat_lesson.protocol.handshake import build_request, check_request, check_response

KEY = bytes.fromhex("37fa213d")  # the masking key of RFC 6455 §5.7
BIN256 = bytes(range(256))
BIN64K = bytes(range(256)) * 256

# RFC 6455 §5.7, each example as (frame, wire bytes).
RFC_EXAMPLES = [
    (Frame(True, Opcode.TEXT, b"Hello"), "81 05 48 65 6c 6c 6f"),
    (Frame(True, Opcode.TEXT, b"Hello", mask_key=KEY), "81 85 37 fa 21 3d 7f 9f 4d 51 58"),
    (Frame(False, Opcode.TEXT, b"Hel"), "01 03 48 65 6c"),
    (Frame(True, Opcode.CONT, b"lo"), "80 02 6c 6f"),
    (Frame(True, Opcode.PING, b"Hello"), "89 05 48 65 6c 6c 6f"),
    (Frame(True, Opcode.PONG, b"Hello", mask_key=KEY), "8a 85 37 fa 21 3d 7f 9f 4d 51 58"),
    (Frame(True, Opcode.BINARY, BIN256), "82 7e 01 00" + BIN256.hex()),
    (Frame(True, Opcode.BINARY, BIN64K), "82 7f 00 00 00 00 00 01 00 00" + BIN64K.hex()),
]


def ids(example):
    return f"{example[0].opcode.name}-{len(example[0].payload)}-{'masked' if example[0].mask_key else 'plain'}"


@pytest.mark.parametrize("frame, wire", RFC_EXAMPLES, ids=map(ids, RFC_EXAMPLES))
def test_rfc_examples_encode(frame, wire):
    assert encode_frame(frame) == bytes.fromhex(wire)


@pytest.mark.parametrize("frame, wire", RFC_EXAMPLES, ids=map(ids, RFC_EXAMPLES))
def test_rfc_examples_decode(frame, wire):
    assert decode_frame(bytes.fromhex(wire)) == (frame, len(bytes.fromhex(wire)))


def test_mask_key_argument_overrides_frame():
    frame = Frame(True, Opcode.TEXT, b"Hello", mask_key=b"\x00" * 4)
    assert encode_frame(frame, KEY).hex(" ") == "81 85 37 fa 21 3d 7f 9f 4d 51 58"


def test_fragmented_hello_assembles():
    assembler = MessageAssembler()
    assert assembler.feed(decode_frame(bytes.fromhex("010348656c"))[0]) == []
    assert assembler.feed(decode_frame(bytes.fromhex("80026c6f"))[0]) == [Message(Opcode.TEXT, "Hello", 2)]


def test_opcodes_and_close_codes():
    assert [op for op in Opcode if op.is_control] == [Opcode.CLOSE, Opcode.PING, Opcode.PONG]
    assert [int(c) for c in CloseCode] == [*range(1000, 1004), *range(1005, 1016)]


# -- Masking and lengths -----------------------------------------------------


@pytest.mark.parametrize("n", range(10))
def test_apply_mask_matches_the_definition(n):
    data = bytes(range(100, 100 + n))
    assert apply_mask(data, KEY) == bytes(b ^ KEY[i % 4] for i, b in enumerate(data))
    assert apply_mask(apply_mask(data, KEY), KEY) == data


def test_apply_mask_needs_four_bytes():
    with pytest.raises(ValueError, match="4 bytes"):
        apply_mask(b"abc", b"\x01\x02\x03")


@pytest.mark.parametrize("n, form, plain, masked", [
    (0, "7-bit", 2, 6), (125, "7-bit", 2, 6), (126, "16-bit", 4, 8),
    (65535, "16-bit", 4, 8), (65536, "64-bit", 10, 14),
])
def test_length_forms(n, form, plain, masked):
    assert (length_form(n), header_size(n, False), header_size(n, True)) == (form, plain, masked)
    frame = Frame(True, Opcode.BINARY, bytes(n))
    assert len(encode_frame(frame)) - n == plain and len(encode_frame(frame, KEY)) - n == masked


# -- Every rule of §5, one test each ----------------------------------------


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7])
def test_reserved_non_control_opcode(opcode):
    with pytest.raises(FrameError, match=f"reserved non-control opcode 0x{opcode:X}"):
        decode_frame(bytes([0x80 | opcode, 0]))


@pytest.mark.parametrize("opcode", [0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_control_opcode(opcode):
    with pytest.raises(FrameError, match=f"reserved control opcode 0x{opcode:X}"):
        decode_frame(bytes([0x80 | opcode, 0]))


@pytest.mark.parametrize("bit", [0x20, 0x10], ids=["RSV2", "RSV3"])
def test_rsv2_rsv3_rejected(bit):
    with pytest.raises(FrameError, match="RSV2 and RSV3 must be 0"):
        decode_frame(bytes([0x81 | bit, 0]))


def test_rsv1_allowed_for_permessage_deflate():
    frame, used = decode_frame(bytes.fromhex("c107f248cdc9c90700"))
    assert frame.rsv1 and frame.payload == bytes.fromhex("f248cdc9c90700") and used == 9


def test_control_frame_too_long():
    assert decode_frame(b"\x89\x7d" + bytes(125))[0].payload == bytes(125)
    with pytest.raises(FrameError, match=r"control frame \(PING\) payload exceeds 125 bytes"):
        decode_frame(b"\x89\x7e\x00\x7e" + bytes(126))


def test_control_frame_fragmented():
    with pytest.raises(FrameError, match=r"control frame \(CLOSE\) must not be fragmented"):
        decode_frame(b"\x08\x00")


def test_64_bit_length_msb_set():
    with pytest.raises(FrameError, match="most significant bit"):
        decode_frame(b"\x82\x7f\x80" + bytes(7))


@pytest.mark.parametrize("length", [0, 125])
def test_non_minimal_16_bit_length(length):
    with pytest.raises(FrameError, match=f"length {length} sent in the 16-bit form"):
        decode_frame(b"\x82\x7e" + length.to_bytes(2, "big") + bytes(length))


@pytest.mark.parametrize("length", [0, 125, 126, 65535])
def test_non_minimal_64_bit_length(length):
    with pytest.raises(FrameError, match=f"length {length} sent in the 64-bit form"):
        decode_frame(b"\x82\x7f" + length.to_bytes(8, "big") + bytes(length))


def test_server_requires_masked_frames():
    with pytest.raises(FrameError, match="a client must mask every frame"):
        decode_frame(bytes.fromhex("810548656c6c6f"), masked=True)


def test_client_rejects_masked_frames():
    with pytest.raises(FrameError, match="a server must not mask frames"):
        decode_frame(bytes.fromhex("818537fa213d7f9f4d5158"), masked=False)


def test_max_size_closes_with_1009():
    assert decode_frame(b"\x82\x05" + bytes(5), max_size=5)[1] == 7
    with pytest.raises(FrameError, match="exceeds max_size 4") as error:
        decode_frame(b"\x82\x05", max_size=4)  # refused before the payload arrives
    assert error.value.code == CloseCode.MESSAGE_TOO_BIG


def test_encoder_applies_the_same_rules():
    with pytest.raises(FrameError, match="exceeds 125"):
        encode_frame(Frame(True, Opcode.PING, bytes(126)))
    with pytest.raises(FrameError, match="must not be fragmented"):
        encode_frame(Frame(False, Opcode.PONG, b""))
    with pytest.raises(FrameError, match="RSV2 and RSV3"):
        encode_frame(Frame(True, Opcode.TEXT, b"", rsv3=True))
    with pytest.raises(FrameError, match="reserved non-control opcode 0x3"):
        encode_frame(Frame(True, 3, b""))


def test_strict_false_builds_broken_frames_for_lessons():
    wire = encode_frame(Frame(False, Opcode.PING, b"x", rsv2=True), strict=False)
    assert wire == b"\x29\x01x"
    with pytest.raises(FrameError):
        decode_frame(wire)


# -- Partial input -----------------------------------------------------------

CUT_FRAMES = [
    Frame(True, Opcode.TEXT, b"Hello"),
    Frame(True, Opcode.TEXT, b"Hello", mask_key=KEY),
    Frame(True, Opcode.CLOSE, b""),
    Frame(False, Opcode.BINARY, BIN256),
    Frame(True, Opcode.BINARY, BIN256, mask_key=KEY),
    Frame(True, Opcode.BINARY, BIN64K + b"!"),
    Frame(True, Opcode.BINARY, BIN64K + b"!", mask_key=KEY),
]


@pytest.mark.parametrize("frame", CUT_FRAMES, ids=lambda f: f"{len(f.payload)}-{bool(f.mask_key)}")
def test_incomplete_at_every_cut(frame):
    wire = encode_frame(frame)
    view = memoryview(wire)  # slicing a memoryview copies nothing, so all 65 547 cuts stay fast
    for cut in range(len(wire)):
        with pytest.raises(IncompleteFrame) as error:
            decode_frame(view[:cut])
        assert 1 <= error.value.needed <= len(wire) - cut
    assert decode_frame(wire + b"\x81\x00trailing") == (frame, len(wire))


def test_needed_is_exact_once_header_is_known():
    wire = encode_frame(Frame(True, Opcode.BINARY, BIN256, mask_key=KEY))
    with pytest.raises(IncompleteFrame) as error:
        decode_frame(wire[:10])
    assert error.value.needed == len(wire) - 10


def test_decoding_a_stream_of_frames():
    stream = b"".join(bytes.fromhex(wire) for _, wire in RFC_EXAMPLES)
    frames = []
    while stream:
        frame, used = decode_frame(stream)
        frames.append(frame)
        stream = stream[used:]
    assert frames == [frame for frame, _ in RFC_EXAMPLES]


# -- Close payloads ------------------------------------------------------------


def test_close_payload_round_trip():
    assert encode_close(1000, "bye") == b"\x03\xe8bye"
    assert decode_close(b"\x03\xe8bye") == (CloseCode.NORMAL_CLOSURE, "bye")
    assert decode_close(encode_close(4321, "é" * 61)) == (4321, "é" * 61)


def test_empty_close_payload_means_no_status():
    assert decode_close(b"") == (CloseCode.NO_STATUS_RCVD, "")


def test_one_byte_close_payload():
    with pytest.raises(FrameError, match="1 byte"):
        decode_close(b"\x03")


def test_close_reason_must_be_utf8():
    with pytest.raises(FrameError, match="not valid UTF-8") as error:
        decode_close(b"\x03\xe8\xff")
    assert error.value.code == CloseCode.INVALID_DATA


def test_close_payload_fits_a_control_frame():
    encode_close(1000, "x" * 123)
    with pytest.raises(FrameError, match="at most 123"):
        encode_close(1000, "x" * 124)
    with pytest.raises(FrameError, match="exceeds 125"):
        decode_close(b"\x03\xe8" + b"x" * 124)


@pytest.mark.parametrize("code", [1004, 1005, 1006, 1015])
def test_close_codes_never_sent(code):
    with pytest.raises(FrameError, match="must never be sent"):
        encode_close(code)
    with pytest.raises(FrameError, match="must never be sent"):
        decode_close(code.to_bytes(2, "big"))


@pytest.mark.parametrize("code", [0, 999, 1016, 2999, 5000, 65535])
def test_close_codes_out_of_range(code):
    with pytest.raises(FrameError, match="outside the valid ranges"):
        encode_close(code)
    with pytest.raises(FrameError, match="outside the valid ranges"):
        decode_close(code.to_bytes(2, "big"))


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999])
def test_close_codes_valid(code):
    assert decode_close(encode_close(code)) == (code, "")


# -- Reassembling messages -----------------------------------------------------


def text(payload, fin=True, opcode=Opcode.TEXT):
    return Frame(fin, opcode, payload)


def test_ping_between_fragments_passes_through():
    assembler = MessageAssembler()
    ping = Frame(True, Opcode.PING, b"are you there?")
    assert assembler.feed(text(b"Hel", fin=False)) == []
    assert assembler.feed(ping) == [ping]
    assert assembler.in_progress
    assert assembler.feed(text(b"lo", opcode=Opcode.CONT)) == [Message(Opcode.TEXT, "Hello", 2)]
    assert not assembler.in_progress


def test_multibyte_character_split_across_fragments():
    euro = "€".encode()  # e2 82 ac
    assembler = MessageAssembler()
    assert assembler.feed(text(b"1 " + euro[:1], fin=False)) == []
    assert assembler.feed(text(euro[1:2], fin=False, opcode=Opcode.CONT)) == []
    assert assembler.feed(text(euro[2:], opcode=Opcode.CONT)) == [Message(Opcode.TEXT, "1 €", 3)]


def test_invalid_utf8_fails_only_when_the_message_completes():
    assembler = MessageAssembler()
    assert assembler.feed(text(b"ok \xff", fin=False)) == []  # no error yet
    with pytest.raises(FrameError, match=r"not valid UTF-8.*§8\.1") as error:
        assembler.feed(text(b"more", opcode=Opcode.CONT))
    assert error.value.code == CloseCode.INVALID_DATA


def test_truncated_character_at_the_end_is_invalid():
    with pytest.raises(FrameError, match="not valid UTF-8"):
        MessageAssembler().feed(text("€".encode()[:2]))


def test_binary_message_is_bytes():
    assert MessageAssembler().feed(Frame(True, Opcode.BINARY, b"\xff")) == [Message(Opcode.BINARY, b"\xff")]


def test_continuation_without_start():
    with pytest.raises(FrameError, match="continuation frame with no message in progress"):
        MessageAssembler().feed(text(b"lo", opcode=Opcode.CONT))


def test_new_data_frame_mid_message():
    assembler = MessageAssembler()
    assembler.feed(text(b"Hel", fin=False))
    with pytest.raises(FrameError, match="BINARY frame inside a fragmented message"):
        assembler.feed(Frame(True, Opcode.BINARY, b"x"))


def test_rsv1_without_an_inflater():
    with pytest.raises(FrameError, match="RSV1 set, but no extension"):
        MessageAssembler().feed(Frame(True, Opcode.TEXT, b"x", rsv1=True))


def test_message_max_size_counts_all_fragments():
    assembler = MessageAssembler(max_size=4)
    assembler.feed(text(b"abc", fin=False))
    with pytest.raises(FrameError, match="max_size 4") as error:
        assembler.feed(text(b"de", opcode=Opcode.CONT))
    assert error.value.code == CloseCode.MESSAGE_TOO_BIG


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40), st.data())
def test_any_fragmentation_reassembles(message, data):
    payload = message.encode()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(payload)), max_size=5)))
    pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)])]
    assembler, out = MessageAssembler(), []
    for i, piece in enumerate(pieces):
        out += assembler.feed(Frame(i == len(pieces) - 1, Opcode.CONT if i else Opcode.TEXT, piece))
    assert out == [Message(Opcode.TEXT, message, len(pieces))]


# -- Describing a header -------------------------------------------------------


def test_describe_masked_16_bit_frame():
    fields = describe(encode_frame(Frame(True, Opcode.BINARY, BIN256), KEY))
    assert [(f.name, f.start, f.width, f.bits, f.value) for f in fields] == [
        ("FIN", 0, 1, "1", 1),
        ("RSV1", 1, 1, "0", 0),
        ("RSV2", 2, 1, "0", 0),
        ("RSV3", 3, 1, "0", 0),
        ("opcode", 4, 4, "0010", 2),
        ("MASK", 8, 1, "1", 1),
        ("payload len", 9, 7, "1111110", 126),
        ("extended payload length", 16, 16, "0000000100000000", 256),
        ("masking key", 32, 32, "00110111111110100010000100111101", 0x37FA213D),
    ]
    meanings = {f.name: f.meaning for f in fields}
    assert meanings["FIN"] == "final fragment"
    assert meanings["opcode"] == "binary frame"
    assert meanings["payload len"] == "126: the length follows in the next 16 bits"
    assert meanings["extended payload length"] == "payload length 256 in the 16-bit form"
    assert "37 fa 21 3d" in meanings["masking key"]


def test_describe_small_and_large_and_broken_frames():
    small = describe(bytes.fromhex("810548656c6c6f"))
    assert [f.name for f in small][-1] == "payload len"
    assert small[-1].meaning == "payload length 5 in the 7-bit form"
    large = describe(encode_frame(Frame(True, Opcode.BINARY, BIN64K)))
    assert (large[-1].name, large[-1].width, large[-1].value) == ("extended payload length", 64, 65536)
    broken = describe(b"\x2b\x00")  # RSV2 and opcode 0xB: described, not rejected
    assert broken[2].meaning.endswith("invalid") and broken[4].meaning == "reserved opcode 11 (invalid)"
    with pytest.raises(IncompleteFrame):
        describe(b"\x81\xfe\x01")


# -- Property tests against websockets' own parser and serializer ------------

EDGES = [0, 1, 125, 126, 127, 65535, 65536, 65537]


@st.composite
def frames(draw, rsv1=st.just(False)):
    opcode = draw(st.sampled_from(list(Opcode)))
    control = opcode.is_control
    length = draw(st.sampled_from([0, 1, 124, 125]) | st.integers(0, 125) if control
                  else st.sampled_from(EDGES) | st.integers(0, 300))
    seed = draw(st.binary(min_size=1, max_size=16))
    payload = (seed * (length // len(seed) + 1))[:length]
    fin = True if control else draw(st.booleans())
    key = draw(st.none() | st.binary(min_size=4, max_size=4))
    return Frame(fin, opcode, payload, rsv1=False if control else draw(rsv1), mask_key=key)


def ws_parse(wire, mask):
    """Run websockets' generator-based parser over `wire` like its Protocol does."""
    reader = StreamReader()
    reader.feed_data(wire)
    parser = WsFrame.parse(reader.read_exact, mask=mask)
    with pytest.raises(StopIteration) as done:
        next(parser)  # a complete frame never makes the parser wait
    assert not reader.buffer  # it used exactly our bytes
    return done.value.value


@settings(max_examples=80, deadline=None)
@given(frames())
def test_websockets_parses_our_frames(frame):
    parsed = ws_parse(encode_frame(frame), mask=frame.mask_key is not None)
    assert (parsed.opcode, bytes(parsed.data), parsed.fin, parsed.rsv1) == (frame.opcode, frame.payload, frame.fin, False)


@settings(max_examples=80, deadline=None)
@given(frames())
def test_we_parse_websockets_frames(frame):
    masked = frame.mask_key is not None
    wire = WsFrame(WsOpcode(frame.opcode), frame.payload, frame.fin).serialize(mask=masked)
    decoded, used = decode_frame(wire, masked=masked)
    assert (decoded.opcode, decoded.payload, decoded.fin, used) == (frame.opcode, frame.payload, frame.fin, len(wire))
    assert (decoded.mask_key is not None) == masked
    assert encode_frame(decoded) == wire  # the mask key we read re-creates websockets' bytes


@settings(max_examples=80, deadline=None)
@given(frames(rsv1=st.booleans()), st.binary(max_size=20))
def test_our_round_trip_keeps_everything(frame, trailing):
    wire = encode_frame(frame)
    assert len(wire) == header_size(len(frame.payload), frame.mask_key is not None) + len(frame.payload)
    assert decode_frame(wire + trailing) == (frame, len(wire))


# -- A whole conversation with websockets' sans-I/O protocols -----------------


def open_pair():
    """Our client bytes against websockets' server, websockets' client against our checks."""
    server = ServerProtocol()
    request = build_request("example.com", "/chat", key="dGhlIHNhbXBsZSBub25jZQ==")
    server.receive_data(request)
    [req] = server.events_received()
    server.send_response(server.accept(req))
    [response] = server.data_to_send()
    check_response("dGhlIHNhbXBsZSBub25jZQ==", response)

    client = ClientProtocol(parse_uri("ws://example.com/chat"))
    client.send_request(client.connect())
    [their_request] = client.data_to_send()
    client.receive_data(check_request(their_request).to_bytes())
    assert server.state is OPEN and client.state is OPEN and client.handshake_exc is None
    assert [type(e).__name__ for e in client.events_received()] == ["Response"]
    return server, client


def test_websockets_client_frames_decode_here():
    _, client = open_pair()
    client.send_text(b"Hello")
    client.send_binary(b"\x00\x01", fin=False)
    client.send_continuation(b"\x02", fin=True)
    client.send_ping(b"ping?")
    client.send_close(1000, "bye")
    wire = b"".join(client.data_to_send())
    assembler, out = MessageAssembler(), []
    while wire:
        frame, used = decode_frame(wire, masked=True)
        out += assembler.feed(frame)
        wire = wire[used:]
    assert out[:2] == [Message(Opcode.TEXT, "Hello"), Message(Opcode.BINARY, b"\x00\x01\x02", 2)]
    assert [(f.opcode, f.payload) for f in out[2:]] == [(Opcode.PING, b"ping?"), (Opcode.CLOSE, b"\x03\xe8bye")]
    assert decode_close(out[3].payload) == (1000, "bye")


def test_websockets_server_frames_decode_here():
    server, _ = open_pair()
    server.send_text(b"Hello")
    server.send_ping(b"")
    wire = b"".join(server.data_to_send())
    first, used = decode_frame(wire, masked=False)
    assert first == Frame(True, Opcode.TEXT, b"Hello")
    assert decode_frame(wire[used:], masked=False) == (Frame(True, Opcode.PING, b""), 2)


def test_our_frames_are_accepted_by_websockets():
    server, client = open_pair()
    sent = [Frame(False, Opcode.TEXT, b"Hel"), Frame(True, Opcode.PING, b"?"), Frame(True, Opcode.CONT, b"lo"),
            Frame(True, Opcode.BINARY, BIN256), Frame(True, Opcode.CLOSE, encode_close(1001, "going"))]
    server.receive_data(b"".join(encode_frame(f, KEY) for f in sent))
    assert server.parser_exc is None
    events = server.events_received()
    assert [(e.opcode, bytes(e.data), e.fin) for e in events] == [(f.opcode, f.payload, f.fin) for f in sent]
    client.receive_data(encode_frame(Frame(True, Opcode.TEXT, "héllo".encode())))
    [event] = client.events_received()
    assert (event.opcode, bytes(event.data)) == (WsOpcode.TEXT, "héllo".encode())


def test_websockets_fails_on_what_we_reject():
    server, _ = open_pair()
    server.receive_data(b"\x81\x05Hello")  # unmasked from a client: §5.1
    assert server.events_received() == []
    assert decode_frame(b"".join(server.data_to_send()), masked=False)[0].payload[:2] == b"\x03\xea"  # 1002
