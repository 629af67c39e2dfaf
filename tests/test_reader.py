"""protocol.reader.Reader: however TCP cuts the stream, the same heads and frames come out."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat_lesson.protocol.frames import Frame, FrameError, Opcode, decode_frame, encode_close, encode_frame
from chat_lesson.protocol.handshake import HandshakeError, build_request
from chat_lesson.protocol.reader import Reader

FRAMES = [
    Frame(True, Opcode.TEXT, b"hello"),
    Frame(False, Opcode.BINARY, bytes(range(200))),            # 16-bit length
    Frame(True, Opcode.CONT, b"x" * 70_000),                   # 64-bit length
    Frame(True, Opcode.PING, b""),
    Frame(True, Opcode.CLOSE, encode_close(1000, "bye")),
]
SERVER_STREAM = b"".join(encode_frame(f) for f in FRAMES)
CLIENT_STREAM = b"".join(encode_frame(f, mask_key=os.urandom(4)) for f in FRAMES)
HEAD = build_request("127.0.0.1:9", "/ws", protocols=["chat-lesson.v1"])


def decode_all(stream: bytes, masked: bool | None) -> list[Frame]:
    """The reference: decode_frame over the whole stream at once."""
    out, pos = [], 0
    while pos < len(stream):
        frame, used = decode_frame(stream[pos:], masked=masked)
        out.append(frame)
        pos += used
    return out


def feed(reader: Reader, stream: bytes, cuts: list[int]) -> list[Frame]:
    """Feed ``stream`` cut at ``cuts``; take out every frame as soon as it is whole."""
    got, start = [], 0
    for end in [*sorted(set(cuts)), len(stream)]:
        reader.receive_data(stream[start:end])
        start = end
        while (frame := reader.next_frame()) is not None:
            got.append(frame)
    return got


@pytest.mark.parametrize("stream,masked", [(SERVER_STREAM, False), (CLIENT_STREAM, True)])
def test_one_byte_at_a_time_gives_the_frames_of_the_whole(stream, masked):
    expected = decode_all(stream, masked)
    assert [f.payload for f in expected] == [f.payload for f in FRAMES]
    reader = Reader(masked=masked)
    assert feed(reader, stream, list(range(1, len(stream)))) == expected
    assert reader.buffered == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, len(SERVER_STREAM)), max_size=40), st.booleans())
def test_random_splits_give_the_frames_of_the_whole(cuts, client):
    stream, masked = (CLIENT_STREAM, True) if client else (SERVER_STREAM, False)
    cuts = [c * len(stream) // len(SERVER_STREAM) for c in cuts]
    assert feed(Reader(masked=masked), stream, cuts) == decode_all(stream, masked)


def test_none_while_incomplete_then_the_frame():
    wire = encode_frame(Frame(True, Opcode.TEXT, b"x" * 300))
    reader = Reader(masked=False)
    for i in range(len(wire) - 1):
        reader.receive_data(wire[i:i + 1])
        assert reader.next_frame() is None and reader.buffered == i + 1
    reader.receive_data(wire[-1:])
    frame, size = reader.next_frame_with_size()
    assert frame.payload == b"x" * 300 and size == len(wire) and reader.next_frame_with_size() == (None, 0)


def test_broken_frames_raise_frame_error_with_the_close_code():
    reader = Reader(masked=True)
    reader.receive_data(encode_frame(Frame(True, Opcode.TEXT, b"unmasked")))      # a client must mask
    with pytest.raises(FrameError, match="MASK"):
        reader.next_frame()
    reserved = Reader()
    reserved.receive_data(b"\x83\x00")                                             # opcode 0x3 is reserved
    with pytest.raises(FrameError, match="reserved") as error:
        reserved.next_frame()
    assert error.value.code == 1002
    big = Reader(max_size=10)
    big.receive_data(encode_frame(Frame(True, Opcode.BINARY, b"y" * 11))[:4])      # the length alone is enough
    with pytest.raises(FrameError) as error:
        big.next_frame()
    assert error.value.code == 1009


@pytest.mark.parametrize("step", [1, 7, len(HEAD) + len(SERVER_STREAM)])
def test_a_head_then_frames(step):
    stream = HEAD + SERVER_STREAM
    reader = Reader(masked=False)
    head = None
    for i in range(0, len(stream), step):
        reader.receive_data(stream[i:i + step])
        if head is None and (head := reader.next_head()) is None:
            assert reader.next_head() is None                # still not whole: asking again changes nothing
    assert head.method == "GET" and head.headers.get("Sec-WebSocket-Protocol") == "chat-lesson.v1"
    assert reader.buffered == len(SERVER_STREAM)             # the frames after the head stay in the reader
    assert feed(reader, b"", []) == decode_all(SERVER_STREAM, False)


def test_take_hands_out_a_body_and_leaves_the_rest():
    reader = Reader()
    reader.receive_data(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nnope!" + encode_frame(Frame(True, Opcode.PING, b"")))
    head = reader.next_head()
    assert head.status == 403
    assert reader.take(int(head.headers.get("Content-Length"))) == b"nope!"
    assert reader.next_frame().opcode == Opcode.PING
    assert reader.take() == b"" and reader.take(10) == b""


def test_a_head_without_its_blank_line_is_refused_past_max_head():
    reader = Reader(max_head=64)
    reader.receive_data(b"GET / HTTP/1.1\r\n" + b"X-Long: " + b"a" * 100)
    with pytest.raises(HandshakeError):
        reader.next_head()


def test_empty_data_marks_the_end_of_the_stream():
    reader = Reader()
    assert not reader.eof
    reader.receive_data(b"")
    assert reader.eof and reader.next_frame() is None
