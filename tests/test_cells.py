"""Cells as a student runs them: Run All queues cells, re-runs repeat them, and Windows lacks Unix modules.

A re-run is simulated the way ipykernel compiles a cell: to a file name made
from a hash of the cell's source, so running the same source twice gives the
same name.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

from chat_lesson import ChatClient, ChatServer
from chat_lesson.notebook import CellService, calling_cell


def run_cell(source: str, name: str, scope: dict) -> None:
    exec(compile(textwrap.dedent(source), f"/tmp/ipykernel_4242/{name}.py", "exec"), scope)


def test_a_rerun_cell_replaces_its_server_on_the_same_port_even_with_port_0():
    scope: dict = {"ChatServer": ChatServer}
    cell = "server = ChatServer(port=0, quiet=True).start()"
    run_cell(cell, "a1b2c3", scope)
    first = scope["server"]
    try:
        run_cell(cell, "a1b2c3", scope)
        second = scope["server"]
        assert second is not first and second.port == first.port
        assert first._server is None                          # the first one is stopped
        running = [s for s in CellService._by_port.values() if isinstance(s, ChatServer)]
        assert running == [second]
        with ChatClient(second, "after-rerun") as bot:        # and the port serves the chat
            assert bot.recv(type="join")["username"] == "after-rerun"
    finally:
        scope["server"].stop()
        first.stop()


def test_two_cells_keep_two_servers():
    scope: dict = {"ChatServer": ChatServer}
    run_cell("one = ChatServer(port=0, quiet=True).start()", "cell1", scope)
    run_cell("two = ChatServer(port=0, quiet=True).start()", "cell2", scope)
    try:
        assert scope["one"]._server is not None and scope["two"]._server is not None
        assert scope["one"].port != scope["two"].port
    finally:
        scope["one"].stop()
        scope["two"].stop()


def test_outside_a_notebook_there_is_no_cell():
    assert calling_cell() is None


def test_plain_client_calls_never_run_the_callers_loop():
    """What Run All needs: a blocking call from a cell must not let other work on the kernel's loop run."""
    with ChatServer(port=0, quiet=True) as server:
        async def cell():
            ran_inside: list[str] = []
            asyncio.get_running_loop().call_soon(lambda: ran_inside.append("queued cell"))
            bot = ChatClient(server, "bot").connect()            # plain calls, inside a running loop
            bot.send("hello")
            assert bot.recv(type="message")["message"] == "hello"
            assert ran_inside == []                               # nothing queued ran in the middle
            bot.close()
            await asyncio.sleep(0)
            assert ran_inside == ["queued cell"]

        asyncio.run(cell())


def test_await_forms_reach_a_client_connected_with_plain_calls():
    with ChatServer(port=0, quiet=True) as server:
        bot = ChatClient(server, "mixed").connect()

        async def cell():
            await bot.asend("from an awaiting cell")
            return (await bot.arecv(type="message"))["message"]

        assert asyncio.run(cell()) == "from an awaiting cell"
        bot.close()


BLOCK_UNIX = """
import importlib.abc, sys
class NoUnix(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name in ("resource", "fcntl", "termios"):
            raise ImportError(f"No module named {name!r} (as on Windows)")
sys.meta_path.insert(0, NoUnix())
for name in ("resource", "fcntl", "termios"):
    sys.modules.pop(name, None)
"""

ROUND_TRIP = """
from chat_lesson import ChatClient, ChatServer
import chat_lesson.bench, chat_lesson.tap, chat_lesson.lessons.lesson06
with ChatServer(port=0, quiet=True) as server:
    with ChatClient(server, "win") as a:
        a.send("hi from a machine without resource")
        print(a.recv(type="message")["message"])
"""


def test_the_package_imports_and_chats_without_unix_only_modules():
    out = subprocess.run([sys.executable, "-c", BLOCK_UNIX + ROUND_TRIP], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "hi from a machine without resource"


def test_bench_says_in_one_line_that_it_needs_linux():
    code = ("import os, sys; real = os.path.isdir; os.path.isdir = lambda p: False if p == '/proc/self' else real(p); "
            "from chat_lesson.bench import main; sys.exit(main(['fanout']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "only Linux has" in out.stderr and "Traceback" not in out.stderr
