"""The chat through a Jupyter server: how JupyterHub, Binder and remote labs reach it.

There the learner's browser cannot open ``http://127.0.0.1:PORT/`` (that is
the *kernel's* machine); it reaches the chat through the Jupyter server
itself, whose jupyter-server-proxy extension forwards
``<base_url>proxy/PORT/...`` to ``127.0.0.1:PORT/...``, WebSocket included.

These tests start a real ``jupyter server`` (on 127.0.0.1, a free port, a
random token, base URL ``/user/alice/`` as JupyterHub gives a user) and a
ChatServer, then:

- two Chromium pages chat through the proxy: proves the page's relative
  URLs, the WebSocket URL built from the page's location (app.js
  ``wsURL()``), and the Origin rule admitting the proxied page;
- a WebSocket with a foreign Origin, sent through the proxy, is refused by
  the chat (the Jupyter server itself lets a token-authenticated request
  through whatever its Origin, so the chat's own check is what stops it);
- a page served over https by a proxy in front (X-Forwarded-Proto) is
  admitted, and without that header refused (RFC 6455 §10.2, RFC 7239).

Without jupyter-server-proxy or Chromium they are skipped, or fail in CI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import unavailable

from chat_lesson.chat.server import ChatServer
from chat_lesson.chat.wire import SUBPROTOCOL
from chat_lesson.notebook import link_for, wait_until

BASE_PATH = "/user/alice/"
START_TIMEOUT = 60      # s for the Jupyter server to start: 2 shared cores, and it imports a lot
TIMEOUT = 15_000        # ms for every wait on a page


@dataclass
class Jupyter:
    port: int
    token: str

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def proxied(self, chat_port: int, path: str = "", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{BASE_PATH}proxy/{chat_port}/{path}"


def _server_info(runtime: Path, pid: int) -> dict | None:
    """The Jupyter server's own record of where it listens (``jpserver-<pid>.json``), once it is up."""
    try:
        return json.loads((runtime / f"jpserver-{pid}.json").read_text())
    except (OSError, ValueError):
        return None


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory):
    """A ``jupyter server`` with jupyter-server-proxy, on 127.0.0.1 and a port of its choosing, stopped after the module."""
    if importlib.util.find_spec("jupyter_server_proxy") is None:
        unavailable("jupyter-server-proxy is not installed: `pip install jupyter-server-proxy` (a runtime dependency)")
    root = tmp_path_factory.mktemp("jupyter")
    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    env.update(JUPYTER_RUNTIME_DIR=str(root / "runtime"), JUPYTER_CONFIG_DIR=str(root / "config"),
               JUPYTER_DATA_DIR=str(root / "data"), JUPYTER_PLATFORM_DIRS="1")
    args = [sys.executable, "-m", "jupyter_server", "--no-browser", "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.base_url={BASE_PATH}",
            f"--ServerApp.root_dir={root}", "--ServerApp.jpserver_extensions=jupyter_server_proxy=True"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--allow-root")
    log = (root / "jupyter.log").open("wb")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        info = None
        while info is None:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"jupyter server did not start within {START_TIMEOUT} s (exit code {process.poll()}):\n"
                            + (root / "jupyter.log").read_text(errors="replace")[-3000:])
            time.sleep(0.1)
            info = _server_info(root / "runtime", process.pid)
        jupyter = Jupyter(int(info["port"]), token)
        with urllib.request.urlopen(f"{jupyter.origin}{BASE_PATH}api/status?token={token}", timeout=10) as answer:
            assert answer.status == 200
        yield jupyter
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def ws_connect(jupyter: Jupyter, chat_port: int, origin: str | None, **headers: str):
    """A WebSocket to the chat through the Jupyter server, authenticated with the token in a header."""
    from websockets.sync.client import connect

    return connect(jupyter.proxied(chat_port, "ws", scheme="ws"), origin=origin, subprotocols=[SUBPROTOCOL],
                   additional_headers={"Authorization": f"token {jupyter.token}", **headers}, open_timeout=10)


def refused(jupyter: Jupyter, chat_port: int, origin: str, **headers: str) -> bool:
    """True when the chat would not talk to this client.

    The proxy answers the browser's handshake before it connects upstream,
    so the chat's 403 reaches the client as a 101 followed by a close (or
    as an error status, should a later version check first): either way no
    event ever arrives.
    """
    from websockets.exceptions import ConnectionClosed, InvalidHandshake

    try:
        with ws_connect(jupyter, chat_port, origin, **headers) as ws:
            ws.recv(timeout=10)
    except (InvalidHandshake, ConnectionClosed, TimeoutError):
        return True
    return False


def test_the_start_cell_shows_the_proxied_link_under_a_hub(monkeypatch, capsys):
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", BASE_PATH)
    with ChatServer(port=0) as server:                                  # link="auto"
        shown = capsys.readouterr().out
        assert f"Chat running at {BASE_PATH}proxy/{server.port}/ " in shown
        assert server.link_url == f"{BASE_PATH}proxy/{server.port}/"
        assert server.url == f"http://127.0.0.1:{server.port}/"         # what clients and tests connect to: unchanged
    with ChatServer(port=0, link="direct") as server:
        assert capsys.readouterr().out.splitlines()[0] == f"Chat running at http://127.0.0.1:{server.port}/"
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX")
    assert link_for("http://127.0.0.1:8000/") == "http://127.0.0.1:8000/"     # a lab on this machine: direct
    with pytest.raises(ValueError, match="'proxy'"):
        ChatServer(port=0, link="hub")


def test_through_the_proxy_the_jupyter_page_is_admitted_and_a_foreign_page_refused(jupyter, server):
    with ws_connect(jupyter, server.port, jupyter.origin) as ws:       # the proxied page's Origin is Jupyter's
        assert json.loads(ws.recv(timeout=10))["type"] == "welcome"
    assert server.stats.refused_origin == 0
    assert refused(jupyter, server.port, "http://evil.example")
    assert server.stats.refused_origin == 1                            # the chat refused it, not the proxy
    assert refused(jupyter, server.port, f"http://127.0.0.1:{server.port}")   # the chat's own origin, but not its Host
    assert server.stats.refused_origin == 2


def test_an_https_page_needs_the_proxy_in_front_to_say_so(jupyter, server):
    https = f"https://127.0.0.1:{jupyter.port}"
    assert refused(jupyter, server.port, https)                        # scheme differs: refused
    assert server.stats.refused_origin == 1
    with ws_connect(jupyter, server.port, https, **{"X-Forwarded-Proto": "https"}) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "welcome"    # jupyter-server-proxy passes it on, from 127.0.0.1
    assert server.stats.refused_origin == 1


@pytest.mark.browser
def test_two_browsers_chat_through_the_jupyter_server(browser, jupyter, server):
    page_url = jupyter.proxied(server.port) + f"?token={jupyter.token}"
    expected_ws = jupyter.proxied(server.port, "ws", scheme="ws")
    sockets: list[str] = []
    contexts = [browser.new_context() for _ in range(2)]     # two laptops: separate cookies and localStorage
    try:
        pages = []
        for context, name in zip(contexts, ("alice", "bob")):
            page = context.new_page()
            page.set_default_timeout(TIMEOUT)
            page.on("websocket", lambda ws: sockets.append(ws.url))
            page.goto(page_url)
            page.fill("#username", name)
            page.click("#join")
            page.wait_for_function("() => window.chat && window.chat.state.status === 'online'")
            pages.append(page)
        wait_until(lambda: sorted(server.clients) == ["alice", "bob"], timeout=10, what="both students online")

        for sender, receiver, text in ((pages[0], pages[1], "hello from alice via the proxy"),
                                       (pages[1], pages[0], "bob answers through /user/alice/")):
            sender.fill("#message", text)
            sender.click("#send")
            receiver.wait_for_function("t => document.getElementById('messages').textContent.includes(t)", arg=text)

        assert sockets and set(sockets) == {expected_ws}, sockets       # the page's directory + "ws", not host + "/ws"
        assert server.stats.refused_origin == 0
    finally:
        for context in contexts:
            context.close()
