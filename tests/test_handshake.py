"""The opening handshake: RFC 6455 §1.3 and §4, and websockets interop."""

import base64
import re

import pytest
from websockets.client import ClientProtocol
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from chat_lesson.protocol.handshake import (
    GUID, Answer, HandshakeError, Head, accept_key, build_request, check_request,
    check_response, make_key, parse_extensions, parse_head, split_head,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def request(*lines, start="GET /chat HTTP/1.1"):
    return ("\r\n".join([start, *lines]) + "\r\n\r\n").encode()


GOOD = ["Host: server.example.com", "Upgrade: websocket", "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 13"]


def without(name, *extra):
    return request(*[line for line in GOOD if not line.startswith(name + ":")], *extra)


def response(*lines, start="HTTP/1.1 101 Switching Protocols"):
    return request(*lines, start=start)


OK_RESPONSE = ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Accept: {ACCEPT}"]


# -- The accept key ----------------------------------------------------------


def test_rfc_6455_section_1_3_example():
    assert GUID == "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    assert accept_key(KEY) == ACCEPT


def test_go_article_pair():
    assert accept_key("w4v7O6xFTi36lq3RNcgctw==") == "Oy4NRAQ13jhfONC7bP8dTKb4PTU="


def test_make_key_is_16_random_bytes():
    keys = {make_key() for _ in range(20)}
    assert len(keys) == 20 and all(len(base64.b64decode(k, validate=True)) == 16 for k in keys)


# -- Building a request ------------------------------------------------------


def test_build_request_exact_bytes():
    assert build_request("server.example.com", "/chat", key=KEY) == (
        b"GET /chat HTTP/1.1\r\n"
        b"Host: server.example.com\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"\r\n"
    )


def test_build_request_optional_headers():
    wire = build_request("h:8000", key=KEY, origin="http://example.com", protocols=["chat", "superchat"],
                         extensions=["permessage-deflate; client_max_window_bits"], extra_headers=[("X-Name", "ada")])
    h = parse_head(wire).headers
    assert parse_head(wire).start_line == "GET / HTTP/1.1"
    assert (h.get("origin"), h.get("sec-websocket-protocol"), h.get("X-NAME")) == (
        "http://example.com", "chat, superchat", "ada")
    assert parse_extensions(h.get("Sec-WebSocket-Extensions")) == [("permessage-deflate", {"client_max_window_bits": None})]


def test_build_request_generates_a_valid_key():
    assert check_request(build_request("h")).accepted


def test_build_request_refuses_header_injection():
    with pytest.raises(HandshakeError, match="refusing to write header"):
        build_request("h", extra_headers=[("X-Evil", "a\r\nInjected: yes")])


# -- Parsing a head ----------------------------------------------------------


def test_parse_request_head():
    head = parse_head(request(*GOOD, "Connection: keep-alive", "upgrade: WebSocket"))
    assert (head.method, head.target, head.version, head.status, head.is_request) == ("GET", "/chat", "HTTP/1.1", None, True)
    assert head.headers.get("HOST") == "server.example.com"
    assert head.headers.get_all("connection") == ["Upgrade", "keep-alive"]
    assert head.headers.get("Connection") == "Upgrade, keep-alive"  # repeated lines join with ", "
    assert head.headers.tokens("Upgrade") == ["websocket", "websocket"]
    assert head.headers.get("Missing") is None and "missing" not in head.headers and "host" in head.headers


def test_parse_response_head():
    head = parse_head(response(*OK_RESPONSE, "Sec-WebSocket-Extensions: a", "Sec-WebSocket-Extensions: b; x=1"))
    assert (head.version, head.status, head.reason, head.method, head.is_request) == (
        "HTTP/1.1", 101, "Switching Protocols", None, False)
    assert head.headers.get("sec-websocket-extensions") == "a, b; x=1"


def test_parse_head_strips_whitespace_and_allows_empty_reason():
    head = parse_head(b"HTTP/1.1 200 \r\nX:   padded\t \r\nEmpty:\r\n\r\n")
    assert (head.reason, head.headers.get("x"), head.headers.get("empty")) == ("", "padded", "")


def test_parse_head_ignores_what_follows():
    assert parse_head(response(*OK_RESPONSE) + b"\x81\x05Hello").status == 101


def test_split_head_finds_the_blank_line():
    wire = response(*OK_RESPONSE)
    assert split_head(wire + b"\x81\x05Hello") == (wire, b"\x81\x05Hello")
    assert all(split_head(wire[:cut]) is None for cut in range(len(wire)))


def test_split_head_gives_up_on_endless_heads():
    assert split_head(b"x" * 100, max_size=100) is None
    with pytest.raises(HandshakeError, match="no blank line"):
        split_head(b"x" * 101, max_size=100)


@pytest.mark.parametrize("wire, message", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n", "no blank line"),
    (b"GET /\r\n\r\n", "bad request line"),
    (b"GET  / HTTP/1.1\r\n\r\n", "bad request line"),
    (b"GET / HTTP/one\r\n\r\n", "bad request line"),
    (b"HTTP/1.1 OK\r\n\r\n", "bad status line"),
    (b"HTTP/1.1 1010 Hm\r\n\r\n", "bad status line"),
    (b"HTTP/1.1 101 Switching\x00\r\n\r\n", "bad status line"),
    (b"GET /a\x7fb HTTP/1.1\r\n\r\n", "bad request line"),
    (b"GET / HTTP/1.1\r\nHost x\r\n\r\n", "without a colon"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", "obs-fold"),
    (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", "bad header name"),
    (b"GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n", "non-ASCII byte 0xc3 at offset 25"),
    (b"GET / HTTP/1.1\nHost: x\r\n\r\n", "bare CR or LF"),
    (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", "control character"),
])
def test_malformed_heads(wire, message):
    with pytest.raises(HandshakeError, match=re.escape(message)):
        parse_head(wire)


def test_parse_extensions():
    value = 'permessage-deflate; client_max_window_bits="10"; server_no_context_takeover, x-other, , foo;bar=1'
    assert parse_extensions(value) == [
        ("permessage-deflate", {"client_max_window_bits": "10", "server_no_context_takeover": None}),
        ("x-other", {}),
        ("foo", {"bar": "1"}),
    ]
    assert parse_extensions(None) == [] == parse_extensions("")


@pytest.mark.parametrize("value, message", [
    ("permessage-deflate; a; a", "duplicate extension parameter 'a'"),
    ("permessage-deflate; a=", "bad extension parameter"),
    ("permessage-deflate; a=b c", "bad extension parameter"),
    ("bad name", "bad extension name"),
])
def test_parse_extensions_errors(value, message):
    with pytest.raises(HandshakeError, match=message):
        parse_extensions(value)


# -- The server's decision ---------------------------------------------------


def test_valid_request_gets_101():
    answer = check_request(request(*GOOD))
    assert (answer.status, answer.reason, answer.accepted) == (101, "Switching Protocols", True)
    assert answer.to_bytes() == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"\r\n"
    )


@pytest.mark.parametrize("lines", [
    ["Connection: keep-alive, Upgrade"],
    ["Connection: keep-alive", "Connection: UPGRADE"],
    ["Upgrade: WebSocket"],
])
def test_tolerant_token_lists(lines):
    names = {line.split(":")[0] for line in lines}
    wire = request(*[line for line in GOOD if line.split(":")[0] not in names], *lines)
    assert check_request(wire).accepted


def test_newer_http_versions_are_fine():
    assert check_request(request(*GOOD, start="GET /chat HTTP/1.2")).accepted


def test_accepts_a_parsed_head():
    assert check_request(parse_head(request(*GOOD))).accepted


def refusal(wire, status, message, **kwargs):
    answer = check_request(wire, **kwargs)
    assert (answer.status, answer.accepted) == (status, False)
    assert message in answer.body.decode()
    head = parse_head(answer.to_bytes())  # the refusal is a well-formed response with its reason as body
    assert head.status == status and int(head.headers.get("Content-Length")) == len(answer.body)
    assert answer.to_bytes().endswith(answer.body)
    return answer


@pytest.mark.parametrize("wire, message", [
    (without("Sec-WebSocket-Key"), "there is no Sec-WebSocket-Key header"),
    (without("Sec-WebSocket-Key", "Sec-WebSocket-Key: not base64!"), "must be base64 of exactly 16 bytes"),
    (without("Sec-WebSocket-Key", "Sec-WebSocket-Key: " + base64.b64encode(bytes(15)).decode()), "base64 of exactly 16"),
    (without("Sec-WebSocket-Key", "Sec-WebSocket-Key: " + base64.b64encode(bytes(17)).decode()), "base64 of exactly 16"),
    (request(*GOOD, f"Sec-WebSocket-Key: {KEY}"), "base64 of exactly 16 bytes"),  # two keys
    (without("Upgrade"), "there is no Upgrade header"),
    (without("Upgrade", "Upgrade: h2c"), "it must contain 'websocket'"),
    (without("Connection"), "there is no Connection header"),
    (without("Connection", "Connection: keep-alive"), "it must contain 'Upgrade'"),
    (request(*GOOD, start="POST /chat HTTP/1.1"), "is a GET request"),
    (request(*GOOD, start="GET /chat HTTP/1.0"), "needs HTTP/1.1 or higher, not HTTP/1.0"),
    (without("Host"), "exactly one Host"),
    (without("Sec-WebSocket-Version"), "no Sec-WebSocket-Version"),
    (b"GET /chat HTTP/1.1\r\nHost x\r\n\r\n", "Malformed HTTP request: header line without a colon"),
    (response(*OK_RESPONSE), "is a GET request"),
])
def test_bad_requests_get_400(wire, message):
    refusal(wire, 400, message)


@pytest.mark.parametrize("version", ["8", "12", "14", "13, 8"])
def test_other_versions_get_426_with_our_version(version):
    answer = refusal(without("Sec-WebSocket-Version", f"Sec-WebSocket-Version: {version}"), 426, "speaks 13")
    assert ("Sec-WebSocket-Version", "13") in answer.headers and answer.reason == "Upgrade Required"
    # RFC 9110 §15.5.22 and §7.8: a 426 names the protocol, and Connection lists "upgrade"
    assert ("Upgrade", "websocket") in answer.headers and ("Connection", "Upgrade, close") in answer.headers


def test_refused_origin_gets_403():
    wire = request(*GOOD, "Origin: http://evil.example")
    refusal(wire, 403, "'http://evil.example' is not allowed", allowed_origins={"http://good.example"})
    refusal(wire, 403, "is not allowed", allowed_origins=lambda origin: origin.endswith("good.example"))
    refusal(request(*GOOD), 403, "Origin None is not allowed", allowed_origins={"http://good.example"})


def test_allowed_origins():
    good = request(*GOOD, "Origin: http://good.example")
    assert check_request(good, allowed_origins={"http://good.example"}).accepted
    assert check_request(good, allowed_origins=lambda o: o == "http://good.example").accepted
    assert check_request(request(*GOOD), allowed_origins={"http://good.example", None}).accepted
    assert check_request(good).accepted  # None: every origin


def test_subprotocol_selection():
    wire = request(*GOOD, "Sec-WebSocket-Protocol: chat, superchat")
    assert ("Sec-WebSocket-Protocol", "superchat") in check_request(wire, protocols=["superchat", "chat"]).headers
    assert not any(n == "Sec-WebSocket-Protocol" for n, _ in check_request(wire, protocols=["Chat"]).headers)


# -- The client's check --------------------------------------------------------


def test_check_response_accepts_the_rfc_answer():
    head = check_response(KEY, response(*OK_RESPONSE, "Sec-WebSocket-Protocol: chat"), protocols=["chat"])
    assert isinstance(head, Head) and head.headers.get("Sec-WebSocket-Protocol") == "chat"
    assert check_response(KEY, check_request(request(*GOOD)).to_bytes()).status == 101
    assert check_response(KEY, response("Upgrade: WebSocket", "Connection: keep-alive, upgrade", f"Sec-WebSocket-Accept: {ACCEPT}"))


def drop(name, *extra):
    return response(*[line for line in OK_RESPONSE if not line.startswith(name + ":")], *extra)


@pytest.mark.parametrize("wire, message", [
    (response(*OK_RESPONSE, start="HTTP/1.1 403 Forbidden"), "server answered 403 Forbidden, not 101"),
    (response(*OK_RESPONSE, start="HTTP/1.1 200 OK"), "server answered 200 OK"),
    (drop("Upgrade"), "there is no Upgrade header"),
    (drop("Upgrade", "Upgrade: h2c"), "Upgrade header is 'h2c'"),
    (drop("Connection"), "there is no Connection header"),
    (drop("Connection", "Connection: close"), "Connection header is 'close'"),
    (drop("Sec-WebSocket-Accept"), "Sec-WebSocket-Accept is None"),
    (drop("Sec-WebSocket-Accept", f"Sec-WebSocket-Accept: {accept_key(make_key())}"), f"expected '{ACCEPT}'"),
    (drop("Sec-WebSocket-Accept", f"Sec-WebSocket-Accept: {ACCEPT.lower()}"), "Sec-WebSocket-Accept is"),
    (response(*OK_RESPONSE, f"Sec-WebSocket-Accept: {ACCEPT}"), "Sec-WebSocket-Accept is"),  # twice
    (response(*OK_RESPONSE, "Sec-WebSocket-Extensions: permessage-deflate"), "extension 'permessage-deflate'"),
    (response(*OK_RESPONSE, "Sec-WebSocket-Protocol: chat"), "subprotocol 'chat', which we did not offer"),
    (request(*GOOD), "expected an HTTP response"),
    (b"HTTP/1.1 101 Switching Protocols\r\n", "no blank line"),
])
def test_check_response_failures(wire, message):
    with pytest.raises(HandshakeError, match=re.escape(message)):
        check_response(KEY, wire)


def test_check_response_allows_offered_extension():
    wire = response(*OK_RESPONSE, "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover")
    assert check_response(KEY, wire, extensions=["permessage-deflate; client_max_window_bits"]).status == 101


# -- Interop with websockets' sans-I/O protocols -------------------------------


def test_websockets_client_request_is_accepted_here():
    client = ClientProtocol(parse_uri("ws://example.com:8000/chat?room=1"), origin="http://example.com")
    client.send_request(client.connect())
    [wire] = client.data_to_send()
    head = parse_head(wire)
    assert (head.method, head.target, head.headers.get("host")) == ("GET", "/chat?room=1", "example.com:8000")
    answer = check_request(wire, allowed_origins={"http://example.com"})
    assert ("Sec-WebSocket-Accept", accept_key(client.key)) in answer.headers
    client.receive_data(answer.to_bytes())
    assert client.state is OPEN and client.handshake_exc is None


def test_websockets_client_rejects_our_refusal():
    client = ClientProtocol(parse_uri("ws://example.com/"))
    client.send_request(client.connect())
    client.receive_data(check_request(client.data_to_send()[0], allowed_origins=set()).to_bytes())
    assert client.state is not OPEN and "403" in str(client.handshake_exc)


def test_our_request_is_accepted_by_websockets():
    key = make_key()
    server = ServerProtocol(origins=["http://example.com"], subprotocols=["chat"])
    server.receive_data(build_request("example.com", "/chat", key=key, origin="http://example.com", protocols=["chat"]))
    [req] = server.events_received()
    assert (req.path, req.headers["Sec-WebSocket-Key"]) == ("/chat", key)
    server.send_response(server.accept(req))
    [wire] = server.data_to_send()
    head = check_response(key, wire, protocols=["chat"])
    assert server.state is OPEN and head.headers.get("Sec-WebSocket-Protocol") == "chat"


def test_websockets_refusals_fail_our_check():
    server = ServerProtocol(origins=["http://good.example"])
    server.receive_data(build_request("example.com", origin="http://evil.example"))
    server.send_response(server.accept(server.events_received()[0]))
    with pytest.raises(HandshakeError, match="server answered 403 Forbidden"):
        check_response(make_key(), server.data_to_send()[0])


def test_answer_can_take_extra_headers():
    answer = Answer(101, "Switching Protocols")
    answer.headers.append(("X-Served-By", "lesson"))
    assert answer.to_bytes() == b"HTTP/1.1 101 Switching Protocols\r\nX-Served-By: lesson\r\n\r\n"
