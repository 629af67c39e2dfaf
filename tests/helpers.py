"""Helpers the tests share: waits, raw HTTP, and the skip-or-fail rule for missing tools.

Test modules import these by name (``from helpers import until``); conftest.py
holds only fixtures.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest

IN_CI = os.environ.get("CI") == "true"


def unavailable(reason: str) -> None:
    """Skip a test that needs what this machine lacks; in CI (CI=true), fail instead."""
    if IN_CI:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


async def until(condition, timeout: float = 5.0, what: str = "a condition"):
    """Wait for ``condition()`` to return something true, checking every few ms; return it.

    The coroutine form of ``chat_lesson.notebook.wait_until``: it yields to the
    event loop between checks, so the clients in the same loop keep working.
    """
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout:g} s")
        await asyncio.sleep(0.005)
    return value


def raw_http(port: int, request: bytes, timeout: float = 5) -> bytes:
    """Send ``request`` as-is on a fresh TCP connection and read until the server closes.

    Raw bytes, because an HTTP library would tidy up exactly the paths we want
    to send (``/../x``) before they reach the server.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """A raw ``GET path``; returns (status, headers with lower-case names, body)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    response = raw_http(port, ("\r\n".join(lines) + "\r\n\r\n").encode())
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in fields.items()}, body
