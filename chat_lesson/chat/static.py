"""The HTTP side of the chat's port: the page's files, and plain answers.

One port serves the page and the socket: websockets hands every request to
``process_request`` first, and the server answers the ones that are not the
WebSocket upgrade with a file from ``static/`` or an error.
"""

from __future__ import annotations

import dataclasses
import http
import mimetypes
import urllib.parse
from pathlib import Path

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from ..protocol import handshake
from .origin import same_origin  # the Origin rule lives in origin.py; re-exported for old imports

__all__ = ["CONTENT_TYPES", "MAX_FILE", "MAX_TARGET", "STATIC_DIR", "as_head", "http_response", "same_origin",
           "static_file", "static_response"]

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"

MAX_FILE = 2 * 1024 * 1024      # bytes: a bigger file is not served (the page's own files are a few KiB)
MAX_TARGET = 2048               # characters in a request target; longer gets 414 (RFC 9110 §15.5.15)

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


def static_file(root: Path, url_path: str) -> Path | None:
    """The file under ``root`` that ``url_path`` names, or None (then: 404).

    Percent-decoding happens first, so ``%2e%2e`` is ``..``; any ``..``
    segment, dotfile or dot-folder (``.git/config``, ``.env``), backslash or
    NUL is refused outright; the resolved path (symlinks followed) must still
    lie under ``root``; and a name the file system refuses (too long, say)
    is simply not found.
    """
    path = urllib.parse.unquote(urllib.parse.urlsplit(url_path).path)
    if path in ("", "/"):
        path = "/index.html"
    parts = path.split("/")[1:]
    if any(p == "" or p.startswith(".") or "\\" in p or "\0" in p for p in parts):
        return None
    try:
        root = root.resolve()
        candidate = root.joinpath(*parts).resolve()
        if not candidate.is_relative_to(root) or not candidate.is_file():
            return None
    except (OSError, ValueError):
        return None
    return candidate


def http_response(status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> Response:
    """A complete HTTP response that websockets sends as it is (and then closes)."""
    headers = Headers({"Content-Type": content_type, "Content-Length": str(len(body)),
                       "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def static_response(root: Path, url_path: str, method: str = "GET") -> Response:
    """The file ``url_path`` names under ``root`` with its content type, or the error that says why not.

    It reads the disk, so the server calls it in a worker thread, never on
    its event loop.  HEAD gets the headers of GET and no body (RFC 9110 §9.3.2).
    """
    if method not in ("GET", "HEAD"):
        return http_response(405, b"Only GET and HEAD here\n")
    if len(url_path) > MAX_TARGET:
        return http_response(414, b"URI too long\n")
    found = static_file(root, url_path)
    if found is None:
        return http_response(404, b"Not found\n")
    content_type = CONTENT_TYPES.get(found.suffix) or mimetypes.guess_type(found.name)[0] or "application/octet-stream"
    try:
        with found.open("rb") as f:
            body = f.read(MAX_FILE + 1)
    except OSError:
        return http_response(404, b"Not found\n")
    if len(body) > MAX_FILE:
        return http_response(403, f"Files over {MAX_FILE} bytes are not served here\n".encode())
    response = http_response(200, body, content_type)
    if method == "HEAD":
        response = dataclasses.replace(response, body=b"")
    return response


def as_head(request: Request) -> handshake.Head:
    """websockets' parsed request as our own ``handshake.Head`` (websockets only admits GET over HTTP/1.1)."""
    return handshake.Head(f"GET {request.path} HTTP/1.1", handshake.Headers(request.headers.raw_items()),
                          "HTTP/1.1", method="GET", target=request.path)
