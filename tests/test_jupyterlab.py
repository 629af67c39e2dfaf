"""The course where learners run it: JupyterLab 4 in Chromium, and a chat page that survives a re-run cell.

1. A real JupyterLab (``python -m jupyterlab``, this venv's) serves a temporary
   copy of notebooks/ on 127.0.0.1 with a random token, with its own config,
   data, runtime and home directories so nobody's own settings interfere.  Its
   ``python3`` kernel is this Python (sys.executable, MPLBACKEND=Agg).
   Chromium opens 00_index, clicks Run → Run All Cells, waits until the kernel
   is idle and every code cell has an execution count, finds no error output,
   follows the link the server cell shows, joins, chats, and sees the
   notebook's bot say hello.  (00_index's last cell stops the server, so after
   Run All that link is dead until the server cell is run again: the test does
   that, as a learner would, when it finds the port closed.)
2. A page is open on a server that a cell started; the cell is re-run.  The
   new server takes the same port, the page comes back online by itself and
   chats through the new server.  Once in-process (the cell exec'd the way
   ipykernel compiles it, as tests/test_cells.py does), once in JupyterLab.

The selectors are JupyterLab 4's (the menu bar's roles and labels, the status
bar's "Python 3 (ipykernel) | Idle", the toolbar's
``.jp-Notebook-ExecutionIndicator[data-status]``, the ``[n]:`` prompts);
pyproject pins ``jupyterlab>=4.0,<5`` and a test checks the major version,
installed and served.  Notebook windowing is switched off in the temporary
user settings so that every cell is in the DOM.  Without Chromium the
``browser`` fixture skips these tests (fails them in CI, helpers.unavailable).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

from playwright.sync_api import Browser, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

import jupyterlab
from chat_lesson import ChatClient, ChatServer

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
OUTPUT = Path(__file__).resolve().parent / "output"     # a screenshot when Run All does not finish
INDEX = "00_index.ipynb"
TIMEOUT = 15_000        # ms, for a wait on a page
KERNEL_TIMEOUT = 45_000  # ms, for Run All and for a kernel to start
JUPYTERLAB_MAJOR = 4    # the selectors below are JupyterLab 4's

expect.set_options(timeout=TIMEOUT)

# A code cell's prompt once it has run: "[3]:" (never "[ ]:" or "[*]:").
RAN = r"^\[\d+\]:$"
# Done when the kernel is idle and every prompt says it ran, or when an error stopped Run All.
STDERR = '.jp-Notebook .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
ALL_CELLS_RAN = """([ran, stderr]) => {
    const indicator = document.querySelector('.jp-Notebook-ExecutionIndicator');
    const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')];
    const failed = [...document.querySelectorAll(stderr)].some(o => o.textContent.includes('Traceback'));
    return indicator && indicator.dataset.status === 'idle' && prompts.length > 0
        && (failed || prompts.every(p => new RegExp(ran).test(p.textContent.trim())));
}"""


# -- JupyterLab, started as a learner would (but isolated) -------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refuses(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port any more."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


@dataclass
class Lab:
    base: str
    token: str
    root: Path
    log: Path
    process: subprocess.Popen

    def url(self, path: str) -> str:
        return f"{self.base}{path}{'&' if '?' in path else '?'}token={self.token}"

    def api(self, method: str, path: str, timeout: float = 10) -> object:
        request = urllib.request.Request(f"{self.base}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shut_down_kernels(self, timeout: float = 15) -> None:
        """End every session (and so every kernel, and the chat servers inside them); bounded."""
        for session in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{session['id']}", timeout=timeout)
        deadline = time.monotonic() + timeout
        while self.api("GET", "/api/kernels"):
            assert time.monotonic() < deadline, "kernels still running after their sessions were deleted"
            time.sleep(0.1)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1:<free port> with a random token, serving a copy of notebooks/."""
    tmp = tmp_path_factory.mktemp("jupyterlab")
    root = tmp / "notebooks"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    config, data = tmp / "config", tmp / "data"
    (tmp / "home").mkdir()
    # python3 is this Python: the kernel the notebooks name, so JupyterLab asks nothing
    write_json(data / "kernels" / "python3" / "kernel.json", {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python", "env": {"MPLBACKEND": "Agg"}})
    settings = config / "lab" / "user-settings" / "@jupyterlab"
    write_json(settings / "notebook-extension" / "tracker.jupyterlab-settings", {"windowingMode": "none"})
    write_json(settings / "apputils-extension" / "notification.jupyterlab-settings",
               {"fetchNews": "false", "checkForUpdates": False})
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JUPYTER", "JPY_")) and k not in ("IPYTHONDIR", "MPLBACKEND")}
    env.update(HOME=str(tmp / "home"), JUPYTER_CONFIG_DIR=str(config), JUPYTER_DATA_DIR=str(data),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(config / "lab" / "user-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(config / "lab" / "workspaces"), IPYTHONDIR=str(tmp / "ipython"),
               JUPYTER_PREFER_ENV_PATH="0",   # our data dir's python3 before the venv's (python on $PATH)
               MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    port, token = free_port(), secrets.token_urlsafe(24)
    argv = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ServerApp.token={token}",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={root}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")
    log = tmp / "jupyterlab.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT)
    lab = Lab(f"http://127.0.0.1:{port}", token, root, log, process)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"JupyterLab exited with {process.returncode}:\n{lab.log_tail()}"
            try:
                lab.api("GET", "/api/status", timeout=2)
                break
            except (OSError, urllib.error.URLError):
                assert time.monotonic() < deadline, f"JupyterLab not up within 30 s:\n{lab.log_tail()}"
                time.sleep(0.2)
        yield lab
    finally:
        try:
            if process.poll() is None:
                lab.shut_down_kernels()
                lab.api("POST", "/api/shutdown")
        except (OSError, urllib.error.URLError, AssertionError):
            pass
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


@pytest.fixture
def lab_page(lab: Lab, browser: Browser) -> Iterator[Page]:
    """A fresh browser context on JupyterLab; afterwards every kernel (and chat server in it) is shut down."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    try:
        yield page
    finally:
        context.close()
        lab.shut_down_kernels()


# -- driving JupyterLab 4 --------------------------------------------------------------------------------


def open_notebook(page: Page, lab: Lab, name: str, workspace: str) -> int:
    """Open a notebook in a workspace of its own; wait until every code cell is shown and the kernel is idle.

    Returns the number of code cells (read from the file: JupyterLab renders a notebook in chunks).
    """
    cells = json.loads((lab.root / name).read_text())["cells"]
    n = sum(1 for cell in cells if cell["cell_type"] == "code")
    page.goto(lab.url(f"/lab/workspaces/{workspace}/tree/{name}"))
    expect(code_cells(page)).to_have_count(n, timeout=KERNEL_TIMEOUT)
    kernel_idle(page)
    return n


def kernel_idle(page: Page, timeout: int = KERNEL_TIMEOUT) -> None:
    """Wait for the status bar's "Python 3 (ipykernel) | Idle" and the toolbar's indicator to agree.

    The toolbar's indicator says idle before there is a kernel at all ("No Kernel | Initializing"),
    so the status bar's kernel item is what tells that the kernel is there and idle.
    """
    kernel = page.locator('.jp-StatusBar-TextItem[title^="Change kernel for"]')
    expect(kernel).to_have_text(re.compile(r"^Python 3 \(ipykernel\) \| Idle$"), timeout=timeout)
    expect(page.locator(".jp-NotebookPanel:visible .jp-Notebook-ExecutionIndicator")).to_have_attribute(
        "data-status", "idle", timeout=timeout)


def menu(page: Page, top: str, item: str | re.Pattern) -> None:
    """Click the menu bar's ``top`` menu, then its ``item``: as a learner does."""
    page.get_by_role("menubar").get_by_role("menuitem", name=top, exact=True).click()
    page.locator(".lm-Menu").get_by_role("menuitem", name=item).first.click()


def wait_all_ran(page: Page, timeout: int = KERNEL_TIMEOUT) -> None:
    """Wait until the kernel is idle and every code cell has an execution count; say which did not."""
    try:
        page.wait_for_function(ALL_CELLS_RAN, arg=[RAN, STDERR], timeout=timeout)
    except PlaywrightTimeoutError:
        page.screenshot(path=str(OUTPUT / "jupyterlab-run-all.png"), full_page=True)
        state = page.evaluate("""() => ({
            status: document.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status,
            cells: [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')].map(c => ({
                prompt: c.querySelector('.jp-InputArea-prompt')?.textContent,
                source: c.querySelector('.jp-InputArea-editor')?.textContent.slice(0, 60),
                output: c.querySelector('.jp-OutputArea')?.textContent.slice(0, 300)}))})""")
        raise AssertionError(f"not every cell ran within {timeout / 1000:g} s: {json.dumps(state, indent=1)}") from None


def code_cells(page: Page):
    return page.locator(".jp-Notebook .jp-CodeCell")


def code_cell(page: Page, source: str):
    """The one code cell whose source contains ``source``."""
    cell = code_cells(page).filter(has=page.locator(".jp-InputArea-editor", has_text=source))
    expect(cell).to_have_count(1)
    return cell


def execution_count(cell) -> int | None:
    m = re.match(r"\[(\d+)\]:", cell.locator(".jp-InputArea-prompt").text_content().strip())
    return int(m.group(1)) if m else None


def rerun(page: Page, cell) -> int:
    """Select ``cell`` and Run → Run Selected Cell; wait for its new execution count; return it."""
    before = execution_count(cell) or 0
    cell.locator(".jp-InputArea-prompt").click()                 # select it, in command mode
    expect(cell).to_have_class(re.compile(r"\bjp-mod-selected\b"))
    menu(page, "Run", re.compile(r"^Run Selected Cell(?! and)"))
    prompt = cell.locator(".jp-InputArea-prompt")
    page.wait_for_function("([el, n]) => { const m = el.textContent.match(/\\[(\\d+)\\]/); return m && +m[1] > n; }",
                           arg=[prompt.element_handle(), before], timeout=KERNEL_TIMEOUT)
    kernel_idle(page)
    return execution_count(cell)


def error_outputs(page: Page) -> list[str]:
    """Every error in the notebook's outputs: a traceback, or stderr that names an error.

    JupyterLab renders an error output and a stderr stream alike (mime type
    application/vnd.jupyter.stderr, red); other stderr text (a warning) is printed, not failed.
    """
    texts = [text for text in page.locator(STDERR).all_text_contents() if text.strip()]
    for text in texts:
        print(f"stderr in a cell's output:\n{text}")
    return [text for text in texts if re.search(r"Traceback|Error|Exception", text)]


def chat_link(cell) -> str:
    """The href of the chat link the server cell shows ("Chat running at <a>", show_link's output)."""
    link = cell.locator(".jp-OutputArea-output").filter(has_text="Chat running at").locator("a")
    expect(link).to_have_count(1)
    href = link.get_attribute("href")
    assert re.match(r"^http://127\.0\.0\.1:\d+/$", href), href
    return href


def join(page: Page, name: str) -> None:
    page.get_by_test_id("username").fill(name)
    page.get_by_test_id("join").click()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "online")
    expect(page.get_by_test_id("online")).to_contain_text(name)


def say(page: Page, text: str) -> None:
    page.get_by_test_id("message").fill(text)
    page.get_by_test_id("send").click()
    expect(page.get_by_test_id("message")).to_have_value("")


def messages(page: Page, text: str):
    return page.locator("#messages .msg").filter(has_text=text)


def port_of(url: str) -> int:
    return int(re.match(r"http://127\.0\.0\.1:(\d+)/$", url).group(1))


# -- 1. Run All in JupyterLab, then chat ------------------------------------------------------------------


def test_jupyterlab_major_version_is_the_one_the_selectors_rely_on() -> None:
    assert int(jupyterlab.__version__.split(".")[0]) == JUPYTERLAB_MAJOR, jupyterlab.__version__
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"jupyterlab>={JUPYTERLAB_MAJOR}.0,<{JUPYTERLAB_MAJOR + 1}" in dependencies, dependencies


def test_run_all_in_jupyterlab_then_chat_through_the_link(lab: Lab, lab_page: Page, browser: Browser) -> None:
    page = lab_page
    spec = lab.api("GET", "/api/kernelspecs")
    assert spec["default"] == "python3"
    assert spec["kernelspecs"]["python3"]["spec"]["argv"][0] == sys.executable    # this venv's Python

    n = open_notebook(page, lab, INDEX, "run-all")
    served = page.evaluate("JSON.parse(document.getElementById('jupyter-config-data').textContent).appVersion")
    assert served.split(".")[0] == str(JUPYTERLAB_MAJOR), served
    cells = code_cells(page)
    assert n >= 3
    started = time.monotonic()
    menu(page, "Run", re.compile(r"^Run All Cells"))
    wait_all_ran(page)
    print(f"Run All: {time.monotonic() - started:.1f} s for {cells.count()} code cells")
    assert error_outputs(page) == []
    assert all(execution_count(cells.nth(i)) for i in range(cells.count())), "Run All stopped early"
    counts = [execution_count(cells.nth(i)) for i in range(cells.count())]
    assert counts == sorted(counts) and len(set(counts)) == len(counts), counts   # in order, each once

    server_cell = code_cell(page, "ChatServer(port=0).start()")
    link = chat_link(server_cell)
    # The teacher link works, but what the cell shows (a projector shows it too) does not give the secret away.
    teacher = server_cell.locator(".jp-OutputArea-output").filter(has_text="Teacher link").locator("a")
    expect(teacher).to_have_count(1)
    assert "#teacher=" in teacher.get_attribute("href") and "#teacher=" not in server_cell.inner_text()
    if refuses(port_of(link)):
        # 00_index's last cell ("Stop") stops the server, so after Run All the link is dead
        # (connection refused) until the learner runs the server cell again: do as they would.
        print(f"after Run All, {link} refuses connections: the Stop cell stopped it; re-running the server cell")
        rerun(page, server_cell)
        link = chat_link(server_cell)
        assert error_outputs(page) == []

    context = browser.new_context()
    try:
        chat = context.new_page()
        chat.goto(link)
        join(chat, "learner")
        say(chat, "hello from JupyterLab's link")
        expect(messages(chat, "hello from JupyterLab's link")).to_have_count(1)
        expect(messages(chat, "hello from JupyterLab's link").locator(".msg-name")).to_have_text("learner")

        # the notebook's next cell: a bot says hello from Python, and the page shows it at once
        bot_cell = code_cell(page, 'ChatClient(server, "course-bot")')
        earlier = messages(chat, "Hello from a notebook cell!").count()   # Run All's bot, in the history
        rerun(page, bot_cell)
        expect(messages(chat, "Hello from a notebook cell!")).to_have_count(earlier + 1)
        expect(chat.get_by_test_id("online")).to_contain_text("course-bot")
        assert error_outputs(page) == []
    finally:
        context.close()

    lab.shut_down_kernels()              # the kernel, and the chat server in it, end
    port = port_of(link)
    deadline = time.monotonic() + 10
    while not refuses(port):
        assert time.monotonic() < deadline, f"a chat server still listens on {port} after the kernel shut down"
        time.sleep(0.1)


# -- 2. a re-run cell: the open page comes back online through the new server --------------------------------


def run_cell(source: str, name: str, scope: dict) -> None:
    """Run ``source`` as ipykernel would: compiled under a file name made from the cell's hash."""
    exec(compile(textwrap.dedent(source), f"/tmp/ipykernel_{os.getpid()}/{name}.py", "exec"), scope)


def test_rerun_cell_in_process_page_reconnects_to_the_new_server(browser: Browser) -> None:
    scope: dict = {"ChatServer": ChatServer}
    cell = "server = ChatServer(port=0, quiet=True).start()"
    run_cell(cell, "5e7ae7", scope)
    first = scope["server"]
    second = None
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT)
        page.goto(first.url)
        join(page, "alice")
        say(page, "before the re-run")
        expect(messages(page, "before the re-run")).to_have_count(1)

        run_cell(cell, "5e7ae7", scope)                  # the same cell again
        second = scope["server"]
        assert second is not first and second.port == first.port and first._server is None

        status = page.get_by_test_id("status")
        expect(page.locator("#messages .sys-conn").filter(has_text="1001")).to_have_count(1)  # the old server went away
        expect(status).to_have_attribute("data-state", "online", timeout=20_000)      # backoff 0.5 s, then 1 s ...
        expect(page.locator("#messages .sys-conn").last).to_contain_text("Reconnected")
        expect(page.get_by_test_id("online")).to_contain_text("alice")
        assert "alice" in second.clients

        with ChatClient(second, "watcher") as watcher:
            say(page, "after the re-run")
            event = watcher.wait_for(lambda e: e.get("type") == "message" and e.get("message") == "after the re-run")
            assert event["username"] == "alice"
        expect(messages(page, "after the re-run")).to_have_count(1)
    finally:
        context.close()
        first.stop()
        scope["server"].stop()
    assert refuses(first.port)


def test_rerun_cell_in_jupyterlab_page_reconnects_to_the_new_server(lab: Lab, lab_page: Page, browser: Browser) -> None:
    page = lab_page
    open_notebook(page, lab, INDEX, "rerun")
    server_cell = code_cell(page, "ChatServer(port=0).start()")
    rerun(page, server_cell)                             # the first run
    link = chat_link(server_cell)

    context = browser.new_context()
    try:
        chat = context.new_page()
        chat.set_default_timeout(TIMEOUT)
        chat.goto(link)
        join(chat, "bob")
        chat.evaluate("""() => { const status = document.getElementById('status');
            window.seenStates = [];
            new MutationObserver(() => window.seenStates.push(status.dataset.state))
                .observe(status, {attributes: true, attributeFilter: ['data-state']}); }""")

        rerun(page, server_cell)                         # the same cell again: a new server, the same port
        assert chat_link(server_cell) == link
        assert error_outputs(page) == []
        status = chat.get_by_test_id("status")
        expect(status).to_have_attribute("data-state", "online", timeout=20_000)
        expect(chat.locator("#messages .sys-conn").last).to_contain_text("Reconnected")
        states = chat.evaluate("window.seenStates")
        assert "offline" in states and states[-1] == "online", states     # it went offline, then came back
        say(chat, "through the new server")
        expect(messages(chat, "through the new server")).to_have_count(1)
    finally:
        context.close()

