"""Run All as JupyterLab does it: every code cell sent to the kernel at once, before any reply.

nbclient (tests/test_notebooks.py) sends one cell and waits for its reply
before the next; JupyterLab's "Run All" queues them all.  A cell that
re-enters the kernel's event loop then runs the queued cells inside itself,
out of order.  Here every notebook must answer every cell, in order, with no
error and no traceback on stderr.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
TIME_LIMIT = 90
SKIP_TAG = "skip-in-tests"


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory):
    root = tmp_path_factory.mktemp("kernels")
    (root / "queued").mkdir()
    (root / "queued" / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "chat_lesson run-all", "language": "python", "env": {"MPLBACKEND": "Agg"}}))
    return KernelSpecManager(kernel_dirs=[str(root)])


def code_cells(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code" and SKIP_TAG not in c.metadata.get("tags", [])]


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_run_all_with_every_cell_queued(path, kernel_specs):
    cells = code_cells(path)
    km = KernelManager(kernel_name="queued", kernel_spec_manager=kernel_specs)
    km.start_kernel(cwd=str(NOTEBOOKS), env={**os.environ, "MPLBACKEND": "Agg"})
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        ids = [kc.execute(source) for source in cells]          # all queued before any reply
        replies: dict[str, dict] = {}
        order: list[str] = []
        deadline = time.monotonic() + TIME_LIMIT
        while len(replies) < len(ids) and time.monotonic() < deadline:
            try:
                msg = kc.get_shell_msg(timeout=1)
            except queue.Empty:
                continue
            parent = msg["parent_header"].get("msg_id")
            if parent in ids:
                replies[parent] = msg["content"]
                order.append(parent)
        problems = []
        while True:                                              # everything the cells printed
            try:
                msg = kc.get_iopub_msg(timeout=0.5)
            except queue.Empty:
                break
            content = msg["content"]
            if msg["msg_type"] == "error":
                problems.append(f"{content['ename']}: {content['evalue']}")
            elif msg["msg_type"] == "stream" and content["name"] == "stderr":
                text = content["text"]
                if "Traceback" in text or "Task was destroyed" in text or "Error" in text:
                    problems.append(text)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    missing = [i for i, msg_id in enumerate(ids) if msg_id not in replies]
    assert not missing, f"cells {missing} of {len(ids)} never replied within {TIME_LIMIT} s"
    assert order == ids, "the kernel answered the queued cells out of order"
    failed = {i: replies[m].get("status") for i, m in enumerate(ids) if replies[m].get("status") != "ok"}
    assert not failed, f"cells that did not end ok: {failed}; {problems}"
    assert not problems, problems
