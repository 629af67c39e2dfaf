"""permessage-deflate: RFC 7692 §7.2.3 byte for byte, and websockets interop."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory, PerMessageDeflate, ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode as WsOpcode
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from chat_lesson.protocol.deflate import (
    Deflater, Inflater, Negotiated, Params, contexts, params_from_extension_header, respond_to_offer,
)
from chat_lesson.protocol.frames import CloseCode, Frame, FrameError, Message, MessageAssembler, Opcode, decode_frame, encode_frame
from chat_lesson.protocol.handshake import HandshakeError, build_request, check_request, check_response, make_key, parse_head

HELLO = bytes.fromhex("f248cdc9c90700")  # RFC 7692 §7.2.3.1
HELLO_AGAIN = bytes.fromhex("f200110000")  # RFC 7692 §7.2.3.2


def test_rfc_7692_hello():
    assert Deflater().compress(b"Hello") == HELLO
    assert Inflater().decompress(HELLO) == b"Hello"


def test_rfc_7692_shared_window():
    deflater, inflater = Deflater(), Inflater()
    assert [deflater.compress(b"Hello") for _ in range(2)] == [HELLO, HELLO_AGAIN]
    assert [inflater.decompress(m) for m in (HELLO, HELLO_AGAIN)] == [b"Hello", b"Hello"]


def test_no_context_takeover_forgets_between_messages():
    deflater = Deflater(no_context_takeover=True)
    assert [deflater.compress(b"Hello") for _ in range(2)] == [HELLO, HELLO]
    inflater = Inflater(no_context_takeover=True)
    assert inflater.decompress(HELLO) == b"Hello"
    with pytest.raises(FrameError, match="not valid DEFLATE data"):
        inflater.decompress(HELLO_AGAIN)  # refers back to a window that was reset


@pytest.mark.parametrize("payload", [
    "00 05 00 fa ff 48 65 6c 6c 6f 00",  # §7.2.3.3: a block with no compression
    "f3 48 cd c9 c9 07 00 00",  # §7.2.3.4: a block with BFINAL set
    "f2 48 05 00 00 00 ff ff ca c9 c9 07 00",  # §7.2.3.5: two blocks in one message
])
def test_rfc_7692_other_encodings_of_hello(payload):
    inflater = Inflater()
    assert inflater.decompress(bytes.fromhex(payload)) == b"Hello"
    assert inflater.decompress(HELLO) == b"Hello"  # and the context still works afterwards


def test_empty_message():
    assert Deflater().compress(b"") == b"\x00"
    assert Inflater().decompress(b"\x00") == b""


def test_inflate_limit_stops_zip_bombs():
    bomb = Deflater().compress(bytes(1_000_000))
    assert len(bomb) < 2000
    assert len(Inflater().decompress(bomb, max_size=1_000_000)) == 1_000_000
    with pytest.raises(FrameError, match="more than max_size 999999") as error:
        Inflater().decompress(bomb, max_size=999_999)
    assert error.value.code == CloseCode.MESSAGE_TOO_BIG


def test_corrupt_data():
    with pytest.raises(FrameError, match="not valid DEFLATE data") as error:
        Inflater().decompress(b"\xff\xff\xff")
    assert error.value.code == CloseCode.PROTOCOL_ERROR


def test_window_bits():
    with pytest.raises(ValueError, match="zlib refuses 8"):
        Deflater(window_bits=8)
    with pytest.raises(ValueError):
        Inflater(window_bits=16)
    data = bytes(range(256)) * 8 + b"tail"
    assert Inflater(window_bits=9).decompress(Deflater(window_bits=9).compress(data)) == data
    assert Inflater(window_bits=8).decompress(Deflater(window_bits=9).compress(b"x" * 200)) == b"x" * 200


# -- Interop with websockets' PerMessageDeflate -------------------------------

messages = st.lists(st.binary(max_size=300) | st.sampled_from([b"Hello", b"Hello, Hello", bytes(5000)]),
                    min_size=1, max_size=5)


def theirs(takeover, bits=15):
    return PerMessageDeflate(not takeover, not takeover, bits, bits)


@pytest.mark.parametrize("takeover", [True, False], ids=["takeover", "no-takeover"])
@settings(max_examples=40, deadline=None)
@given(messages)
def test_they_compress_we_inflate(takeover, batch):
    ext, inflater = theirs(takeover), Inflater(no_context_takeover=not takeover)
    for data in batch:
        frame = ext.encode(WsFrame(WsOpcode.BINARY, data))
        assert frame.rsv1
        assert inflater.decompress(bytes(frame.data)) == data


@pytest.mark.parametrize("takeover", [True, False], ids=["takeover", "no-takeover"])
@settings(max_examples=40, deadline=None)
@given(messages)
def test_we_compress_they_inflate(takeover, batch):
    ext, deflater = theirs(takeover), Deflater(no_context_takeover=not takeover)
    for data in batch:
        frame = ext.decode(WsFrame(WsOpcode.BINARY, deflater.compress(data), rsv1=True))
        assert bytes(frame.data) == data and not frame.rsv1


@pytest.mark.parametrize("bits", [9, 12, 15])
def test_window_bits_interop(bits):
    ext, deflater, inflater = theirs(True, bits), Deflater(window_bits=bits), Inflater(window_bits=bits)
    data = bytes(range(256)) * 20
    assert inflater.decompress(bytes(ext.encode(WsFrame(WsOpcode.BINARY, data)).data)) == data
    assert bytes(ext.decode(WsFrame(WsOpcode.BINARY, deflater.compress(data), rsv1=True)).data) == data


def test_fragmented_compressed_message_from_websockets():
    ext = theirs(True)
    first = ext.encode(WsFrame(WsOpcode.TEXT, "héllo ".encode(), fin=False))
    last = ext.encode(WsFrame(WsOpcode.CONT, "wörld".encode()))
    assert first.rsv1 and not last.rsv1
    assembler = MessageAssembler(inflater=Inflater())
    assert assembler.feed(Frame(False, Opcode.TEXT, bytes(first.data), rsv1=True)) == []
    assert assembler.feed(Frame(True, Opcode.CONT, bytes(last.data))) == [Message(Opcode.TEXT, "héllo wörld", 2, True)]


def test_assembler_rsv1_rules_with_an_inflater():
    assembler = MessageAssembler(inflater=Inflater())
    assert assembler.feed(Frame(True, Opcode.TEXT, b"plain")) == [Message(Opcode.TEXT, "plain")]
    with pytest.raises(FrameError, match="RSV1 set on a PING frame"):
        assembler.feed(Frame(True, Opcode.PING, b"", rsv1=True))
    assembler.feed(Frame(False, Opcode.TEXT, HELLO[:3], rsv1=True))
    with pytest.raises(FrameError, match="RSV1 set on a CONT frame"):
        assembler.feed(Frame(True, Opcode.CONT, HELLO[3:], rsv1=True))


def test_assembler_bounds_inflated_size():
    with pytest.raises(FrameError, match="max_size") as error:
        MessageAssembler(Inflater(), max_size=100).feed(Frame(True, Opcode.BINARY, Deflater().compress(bytes(101)), rsv1=True))
    assert error.value.code == CloseCode.MESSAGE_TOO_BIG


# -- Negotiated parameters -----------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("permessage-deflate", Negotiated(Params(), Params())),
    ("permessage-deflate; server_no_context_takeover; client_max_window_bits=10",
     Negotiated(Params(False, 10), Params(True, 15))),
    ('x-other, permessage-deflate; client_no_context_takeover; server_max_window_bits="9"',
     Negotiated(Params(True, 15), Params(False, 9))),
    ("x-other", None),
    (None, None),
])
def test_params_from_extension_header(value, expected):
    assert params_from_extension_header(value) == expected


@pytest.mark.parametrize("value, message", [
    ("permessage-deflate; mystery", "unknown permessage-deflate parameter 'mystery'"),
    ("permessage-deflate; server_max_window_bits=16", "must be a number from 8 to 15"),
    ("permessage-deflate; server_max_window_bits=09", "must be a number from 8 to 15"),
    ("permessage-deflate; client_max_window_bits", "must be a number from 8 to 15"),  # only offers omit the value
    ("permessage-deflate; server_no_context_takeover=1", "takes no value"),
    ("permessage-deflate, permessage-deflate", "only once"),
])
def test_bad_negotiated_params(value, message):
    with pytest.raises(HandshakeError, match=message):
        params_from_extension_header(value)


def test_contexts_per_role():
    value = "permessage-deflate; server_no_context_takeover; client_max_window_bits=10"
    client_deflater, client_inflater = contexts(value, "client")
    server_deflater, server_inflater = contexts(value, "server")
    assert (client_deflater.no_context_takeover, client_deflater.window_bits) == (False, 10)
    assert (client_inflater.no_context_takeover, client_inflater.window_bits) == (True, 15)
    assert (server_deflater.no_context_takeover, server_deflater.window_bits) == (True, 15)
    assert (server_inflater.no_context_takeover, server_inflater.window_bits) == (False, 10)
    assert contexts(None, "client") is None
    with pytest.raises(ValueError, match="role"):
        contexts(value, "proxy")


@pytest.mark.parametrize("offer, answer", [
    ("permessage-deflate; client_max_window_bits", "permessage-deflate"),
    ("permessage-deflate; server_no_context_takeover; client_no_context_takeover",
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
    ("permessage-deflate; server_max_window_bits=10; client_max_window_bits=12",
     "permessage-deflate; server_max_window_bits=10; client_max_window_bits=12"),
    ("permessage-deflate; server_max_window_bits=8, permessage-deflate; mystery, permessage-deflate",
     "permessage-deflate"),
    ("x-webkit-deflate-frame", None),
    (None, None),
])
def test_respond_to_offer(offer, answer):
    assert respond_to_offer(offer) == answer


@pytest.mark.parametrize("factory", [
    ClientPerMessageDeflateFactory(),
    ClientPerMessageDeflateFactory(server_no_context_takeover=True, client_no_context_takeover=True),
    ClientPerMessageDeflateFactory(server_max_window_bits=10, client_max_window_bits=11),
], ids=["default", "no-takeover", "window-bits"])
def test_websockets_client_accepts_our_answer_and_messages(factory):
    # Handshake: websockets offers, we answer.
    client = ClientProtocol(parse_uri("ws://example.com/"), extensions=[factory])
    client.send_request(client.connect())
    [request] = client.data_to_send()
    answer = check_request(request)
    offer = parse_head(request).headers.get("Sec-WebSocket-Extensions")
    agreed = respond_to_offer(offer)
    answer.headers.append(("Sec-WebSocket-Extensions", agreed))
    client.receive_data(answer.to_bytes())
    assert client.state is OPEN and client.handshake_exc is None
    client.events_received()
    deflater, inflater = contexts(agreed, "server")

    # Messages both ways, several so that context takeover matters.
    assembler = MessageAssembler(inflater=inflater)
    for text in ["Hello", "Hello", "héllo " * 50, ""]:
        client.send_text(text.encode())
        frame, _ = decode_frame(b"".join(client.data_to_send()), masked=True)
        assert frame.rsv1 and assembler.feed(frame) == [Message(Opcode.TEXT, text, 1, True)]
        client.receive_data(encode_frame(Frame(True, Opcode.TEXT, deflater.compress(text.encode()), rsv1=True)))
        [event] = client.events_received()
        assert bytes(event.data).decode() == text


def test_websockets_server_negotiates_with_our_client():
    key = make_key()
    offer = "permessage-deflate; client_max_window_bits"
    server = ServerProtocol(extensions=[ServerPerMessageDeflateFactory(server_max_window_bits=12,
                                                                      client_max_window_bits=11)])
    server.receive_data(build_request("example.com", key=key, extensions=[offer]))
    server.send_response(server.accept(server.events_received()[0]))
    head = check_response(key, server.data_to_send()[0], extensions=[offer])
    agreed = head.headers.get("Sec-WebSocket-Extensions")
    assert params_from_extension_header(agreed) == Negotiated(Params(False, 11), Params(False, 12))
    deflater, inflater = contexts(agreed, "client")
    assembler = MessageAssembler(inflater=inflater)
    for text in ["Hello", "Hello", "ünïcode " * 30]:
        server.send_text(text.encode())
        frame, _ = decode_frame(b"".join(server.data_to_send()), masked=False)
        assert assembler.feed(frame) == [Message(Opcode.TEXT, text, 1, True)]
        server.receive_data(encode_frame(Frame(True, Opcode.TEXT, deflater.compress(text.encode()), rsv1=True),
                                         b"\x01\x02\x03\x04"))
        [event] = server.events_received()
        assert bytes(event.data).decode() == text

