"""The battery's opening-handshake cases (RFC 6455 §4.1, §4.2, §4.4, §10.2): version, key, tokens, Origin.

They register themselves in :data:`~chat_lesson.conformance.cases.CASES`
when this module is imported (the package's ``__init__`` does it).
"""

from __future__ import annotations

from typing import Any

from ..protocol.handshake import HandshakeError, check_response, make_key
from .cases import Ctx, Verdict, case, expect_refusal
from .probe import Target, raw_exchange


# -- the opening handshake (§4.1, §4.2, §4.4, §10.2) ----------------------------------------------


def request(t: Target, *, method: str = "GET", version: str = "HTTP/1.1", key: str | None = None,
            replace: dict[str, str | None] | None = None, extra: tuple[tuple[str, str], ...] = ()) -> tuple[bytes, str]:
    key = key or make_key()
    headers = {"Host": f"{t.host}:{t.port}", "Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13"}
    for name, value in (replace or {}).items():
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    lines = [f"{method} {t.path} {version}", *(f"{n}: {v}" for n, v in [*headers.items(), *extra])]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), key


def _accepts(ctx: Ctx, what: str, **options: Any) -> Verdict:
    data, key = request(ctx.target, **options)
    status, head = raw_exchange(ctx.target, data, ctx.sent, ctx.got)
    if status is None:
        return Verdict("fail", f"no 101 for {what}: {head}")
    try:
        check_response(key, head)
    except HandshakeError as error:
        return Verdict("fail", f"{what}: {error}")
    return Verdict("pass", "101 with the right Sec-WebSocket-Accept, Upgrade and Connection")


def _refuses(ctx: Ctx, what: str, **options: Any) -> Verdict:
    status, head = raw_exchange(ctx.target, request(ctx.target, **options)[0], ctx.sent, ctx.got)
    return expect_refusal(status, head, what)


@case("handshake", "valid", "a valid request gets 101 and the right Sec-WebSocket-Accept", "§4.2.2, §1.3")
def _(ctx: Ctx) -> Verdict:
    return _accepts(ctx, "a valid request")


@case("handshake", "version-8", "Sec-WebSocket-Version 8: refused, naming version 13", "§4.2.2, §4.4")
def _(ctx: Ctx) -> Verdict:
    status, head = raw_exchange(ctx.target, request(ctx.target, replace={"Sec-WebSocket-Version": "8"})[0],
                                ctx.sent, ctx.got)
    verdict = expect_refusal(status, head, "version 8")
    if verdict.kind == "pass" and "13" not in (head.headers.get("Sec-WebSocket-Version") or ""):
        return Verdict("non-strict", f"refused with {status} but without Sec-WebSocket-Version: 13 (§4.4)")
    return verdict


@case("handshake", "no-version", "no Sec-WebSocket-Version: refused", "§4.2.1")
def _(ctx: Ctx) -> Verdict:
    return _refuses(ctx, "no version", replace={"Sec-WebSocket-Version": None})


@case("handshake", "no-key", "no Sec-WebSocket-Key: refused", "§4.2.1")
def _(ctx: Ctx) -> Verdict:
    return _refuses(ctx, "no key", replace={"Sec-WebSocket-Key": None})


@case("handshake", "short-key", "a key that is not 16 bytes of base64: refused", "§4.2.1, §4.1")
def _(ctx: Ctx) -> Verdict:
    return _refuses(ctx, "a 10-byte key", key="dGhlIHNhbXBsZQ==")


@case("handshake", "upgrade-case", "Upgrade: WebSocket (tokens are case-insensitive): accepted", "§4.2.1")
def _(ctx: Ctx) -> Verdict:
    return _accepts(ctx, "Upgrade: WebSocket", replace={"Upgrade": "WebSocket"})


@case("handshake", "connection-list", "Connection: keep-alive, Upgrade (a token list): accepted", "§4.2.1")
def _(ctx: Ctx) -> Verdict:
    return _accepts(ctx, "Connection: keep-alive, Upgrade", replace={"Connection": "keep-alive, Upgrade"})


@case("handshake", "upgrade-other", "Upgrade: h2c (no websocket token): refused", "§4.2.1")
def _(ctx: Ctx) -> Verdict:
    return _refuses(ctx, "Upgrade: h2c", replace={"Upgrade": "h2c"})


@case("handshake", "connection-no-upgrade", "Connection: keep-alive (no Upgrade token): refused", "§4.2.1")
def _(ctx: Ctx) -> Verdict:
    return _refuses(ctx, "Connection without Upgrade", replace={"Connection": "keep-alive"})


@case("handshake", "method-post", "POST instead of GET: refused", "§4.1, §4.2.1")
def _(ctx: Ctx) -> Verdict:
    return _refuses(ctx, "a POST", method="POST", extra=(("Content-Length", "0"),))


@case("handshake", "http-1.0", "HTTP/1.0: refused", "§4.1, §4.2.1")
def _(ctx: Ctx) -> Verdict:
    return _refuses(ctx, "HTTP/1.0", version="HTTP/1.0")


@case("handshake", "origin-foreign", "Origin of another site: refused with 403 (or accepted: non-strict)", "§4.2.2, §10.2")
def _(ctx: Ctx) -> Verdict:
    data, key = request(ctx.target, extra=(("Origin", "http://attacker.example"),))
    status, head = raw_exchange(ctx.target, data, ctx.sent, ctx.got)
    if status == 403:
        return Verdict("pass", "refused with 403")
    if status == 101:
        try:
            check_response(key, head)
        except HandshakeError as error:
            return Verdict("fail", f"a broken 101: {error}")
        return Verdict("non-strict", "accepts any Origin: fine for a service without browsers, "
                                     "a browser-facing server should check it (§10.2)")
    return expect_refusal(status, head, "a foreign Origin")


@case("handshake", "subprotocol-unknown", "an unknown subprotocol offered: not chosen", "§4.2.2")
def _(ctx: Ctx) -> Verdict:
    data, key = request(ctx.target, extra=(("Sec-WebSocket-Protocol", "conform.example"),))
    status, head = raw_exchange(ctx.target, data, ctx.sent, ctx.got)
    if status is not None and status != 101:
        return Verdict("pass", f"refused with {status}")
    if status is None:
        return Verdict("fail", f"no answer: {head}")
    chosen = head.headers.get("Sec-WebSocket-Protocol")
    if chosen is not None:
        return Verdict("fail", f"chose {chosen!r}, which means nothing here")
    return Verdict("pass", "101 without a Sec-WebSocket-Protocol header")
