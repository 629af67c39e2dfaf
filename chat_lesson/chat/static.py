"""The HTTP side of the chat's port: the page's files, and plain answers.

One port serves the page and the socket: websockets hands every request to
``process_request`` first, and the server answers the ones that are not the
WebSocket upgrade with a file from ``static/`` or an error.
"""

from __future__ import annotations

import http
import mimetypes
import urllib.parse
from pathlib import Path

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from ..protocol import handshake

__all__ = ["CONTENT_TYPES", "STATIC_DIR", "as_head", "http_response", "same_origin", "static_file",
           "static_response"]

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}


def same_origin(origin: str, host: str | None) -> bool:
    """True when the Origin header names the host the request was sent to.

    A page served by this server at http://H:P opens ws://H:P/ws and its
    browser sends ``Origin: http://H:P`` and ``Host: H:P``.
    """
    parsed = urllib.parse.urlsplit(origin)
    return bool(host) and parsed.scheme in ("http", "https") and parsed.netloc.lower() == host.lower()


def static_file(root: Path, url_path: str) -> Path | None:
    """The file under ``root`` that ``url_path`` names, or None (then: 404).

    Percent-decoding happens first, so ``%2e%2e`` is ``..``; any ``..``
    segment, backslash or NUL is refused outright; and the resolved path
    (symlinks followed) must still lie under ``root``.
    """
    path = urllib.parse.unquote(urllib.parse.urlsplit(url_path).path)
    if path in ("", "/"):
        path = "/index.html"
    parts = path.split("/")[1:]
    if any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
        return None
    root = root.resolve()
    candidate = root.joinpath(*parts).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file():
        return None
    return candidate


def http_response(status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> Response:
    """A complete HTTP response that websockets sends as it is (and then closes)."""
    headers = Headers({"Content-Type": content_type, "Content-Length": str(len(body)),
                       "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def static_response(root: Path, url_path: str) -> Response:
    """The file ``url_path`` names under ``root`` with its content type, or a 404."""
    found = static_file(root, url_path)
    if found is None:
        return http_response(404, b"Not found\n")
    content_type = CONTENT_TYPES.get(found.suffix) or mimetypes.guess_type(found.name)[0] or "application/octet-stream"
    return http_response(200, found.read_bytes(), content_type)


def as_head(request: Request) -> handshake.Head:
    """websockets' parsed request as our own ``handshake.Head`` (websockets only admits GET over HTTP/1.1)."""
    return handshake.Head(f"GET {request.path} HTTP/1.1", handshake.Headers(request.headers.raw_items()),
                          "HTTP/1.1", method="GET", target=request.path)
