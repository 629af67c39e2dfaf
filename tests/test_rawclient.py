"""chat_lesson.rawclient.RawClient against a real ChatServer on 127.0.0.1 (port 0); every wait bounded."""

from __future__ import annotations

import json
import socket
import time

import pytest

from chat_lesson import ChatServer
from chat_lesson.chat.wire import SUBPROTOCOL
from chat_lesson.protocol.frames import Opcode, decode_close
from chat_lesson.protocol.handshake import HandshakeError, build_request, make_key
from chat_lesson.rawclient import RawClient

DEFLATE = "permessage-deflate; client_max_window_bits"


@pytest.fixture(scope="module")
def server():
    with ChatServer(port=0, quiet=True) as server:
        yield server


def join(client: RawClient, name: str) -> dict:
    client.send_text(json.dumps({"type": "join", "username": name}))
    got = client.recv_until(lambda f: f.opcode == Opcode.TEXT and json.loads(f.payload).get("username") == name)
    return json.loads(got.frame.payload)


def test_handshake_join_ping_and_close_are_all_logged(server):
    client = RawClient(server.port, protocols=[SUBPROTOCOL])
    assert client.subprotocol == SUBPROTOCOL and client.response.status == 101
    assert join(client, "raw")["type"] == "join"
    assert 0 < client.ping(b"rtt?") < 2
    assert decode_close(client.close_handshake(1000, "bye").payload)[0] == 1000
    client.close()
    kinds = [(e.direction, e.kind) for e in client.log]
    assert kinds[:2] == [("→", "http"), ("←", "http")]
    assert kinds[-2:] == [("←", "eof"), ("→", "eof")]             # the server's FIN first (§7.1.1), then ours
    sent = [e for e in client.log if e.direction == "→" and e.frame is not None]
    assert all(e.frame.mask_key is not None and e.header == len(e.raw) - len(e.frame.payload) for e in sent)
    received = [e for e in client.log if e.direction == "←" and e.frame is not None]
    assert all(e.frame.mask_key is None for e in received)
    assert client.sent == sum(len(e.raw) for e in client.log if e.direction == "→")
    assert client.received == sum(len(e.raw) for e in client.log if e.direction == "←")   # every byte was parsed
    assert [e.t for e in client.log] == sorted(e.t for e in client.log)


def test_compression_is_negotiated_and_messages_inflate(server):
    with RawClient(server.port, protocols=[SUBPROTOCOL], extensions=[DEFLATE]) as client:
        assert client.deflater is not None
        join(client, "squeezed")
        text = "compressible " * 50
        wire = client.send_text(json.dumps({"username": "squeezed", "message": text}))
        assert wire[0] & 0x40 and len(wire) < len(text)           # RSV1: compressed (RFC 7692 §6)
        while (event := json.loads(client.recv_message().data)).get("message") != text:
            pass
        assert event["username"] == "squeezed"


def test_a_refused_handshake_says_why(server):
    with pytest.raises(HandshakeError, match="403"):
        RawClient(server.port, protocols=[SUBPROTOCOL], origin="http://evil.example")


def test_handshake_by_hand(server):
    client = RawClient(server.port, handshake=False)
    key = make_key()
    client.send_raw(build_request(f"127.0.0.1:{server.port}", "/ws", key, protocols=[SUBPROTOCOL]))
    head = client.recv_head()
    assert head.startswith(b"HTTP/1.1 101") and client.log[0].kind == "http"
    client.close()


def test_waits_are_bounded(server):
    with RawClient(server.port, protocols=[SUBPROTOCOL]) as client:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="no frame"):
            client.recv_until(lambda f: False, timeout=0.3)
        assert time.monotonic() - started < 1.5


def test_a_small_receive_buffer_is_set_before_connecting(server):
    client = RawClient(server.port, protocols=[SUBPROTOCOL], rcvbuf=4096)
    assert client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) <= 2 * 4096     # Linux doubles it
    client.close()
