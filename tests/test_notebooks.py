"""Every notebook in notebooks/ runs top to bottom, headless, in under 60 s, and has the lesson's form.

The notebooks are found by glob, so a new lesson is tested as soon as it is
committed.  Each runs in a fresh kernel of *this* Python (the venv's, the one
running pytest), with cwd = notebooks/ and MPLBACKEND=Agg.  Cells tagged
``skip-in-tests`` are not run.

Solutions are never code cells, so Run All cannot run them: each is a markdown
cell holding a collapsed block (``SOLUTION_RE``) that the student opens by
clicking "Show a solution".  The tests execute each notebook once, as a copy in
which every solution block has become a code cell at its place: that one run
checks the whole notebook and requires each solution's ``check`` to say ✅.
(tests/test_run_all.py runs the notebooks as committed, solutions not run.)

Set CHAT_LESSON_NOTEBOOKS=/some/dir to test notebooks elsewhere (e.g. a draft).
"""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = Path(os.environ.get("CHAT_LESSON_NOTEBOOKS", ROOT / "notebooks"))
PATHS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
LESSONS = [p for p in PATHS if not p.name.startswith("00_")]
TIME_LIMIT = 60          # seconds per notebook, top to bottom
SKIP_TAG = "skip-in-tests"
KERNEL_NAME = "chat-lesson-test"
SUMMARY = "Show a solution"
SOLUTION_RE = re.compile(                 # blank lines around the fence: JupyterLab renders markdown inside <details> then
    r"\A\s*<details>\s*<summary>" + re.escape(SUMMARY) + r"</summary>\n\n```python\n(?P<code>.*?)\n```\n\n</details>\s*\Z", re.S)
SOLUTION_TAG = "solution"                 # marks, in the executed copy, the code cells made from solution blocks
CHECK_RE = re.compile(r"""\bcheck\(\s*["']([^"']+)["']""")

ids = [p.stem for p in PATHS]


def source(cell) -> str:
    return cell.source if isinstance(cell.source, str) else "".join(cell.source)


def is_hidden(cell) -> bool:
    return bool(cell.metadata.get("jupyter", {}).get("source_hidden"))


def solution_code(cell) -> str | None:
    """The code of a markdown cell that is a solution block, else None."""
    if cell.cell_type != "markdown":
        return None
    match = SOLUTION_RE.match(source(cell))
    return match["code"] if match else None


def is_exercise(cell) -> bool:
    """A code cell where the student answers: it calls check()."""
    return cell.cell_type == "code" and bool(CHECK_RE.search(source(cell)))


def with_solutions(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` in which every solution block is a code cell, tagged SOLUTION_TAG, at its place."""
    nb = copy.deepcopy(nb)
    for i, cell in enumerate(nb.cells):
        code = solution_code(cell)
        if code is not None:
            new = nbformat.v4.new_code_cell(code, metadata={"tags": [SOLUTION_TAG]})
            new.id = cell.get("id", new.id)
            nb.cells[i] = new
    return nb


@pytest.fixture(scope="session")
def kernel_specs(tmp_path_factory):
    """A kernelspec that runs ipykernel with sys.executable, whatever `jupyter kernelspec list` says."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL_NAME
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "chat_lesson tests",
        "language": "python",
        "env": {"MPLBACKEND": "Agg"},
    }))
    return KernelSpecManager(kernel_dirs=[str(root)])


def execute(path: Path, kernel_specs: KernelSpecManager) -> tuple[nbformat.NotebookNode, float]:
    """Run the notebook with its solutions inserted (``with_solutions``), once; return it and the seconds taken."""
    nb = with_solutions(nbformat.read(path, as_version=4))
    km = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=kernel_specs)
    client = NotebookClient(nb, km=km, timeout=TIME_LIMIT, kernel_name=KERNEL_NAME,
                            skip_cells_with_tag=SKIP_TAG, resources={"metadata": {"path": str(NOTEBOOKS)}})
    start = time.monotonic()
    try:
        client.execute()
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    return nb, time.monotonic() - start


def outputs_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif "data" in out:
            parts.append(str(out["data"].get("text/plain", "")))
        elif out.get("output_type") == "error":
            parts.append("\n".join(out.get("traceback", [])))
    return "\n".join(parts)


_executed: dict[Path, tuple[nbformat.NotebookNode, float]] = {}


@pytest.fixture
def executed(request, kernel_specs):
    """Each notebook is executed once per session, whichever tests ask for it."""
    path = request.param
    if path not in _executed:
        _executed[path] = execute(path, kernel_specs)
    return path, *_executed[path]


def test_there_are_notebooks():
    assert PATHS, f"no notebooks in {NOTEBOOKS}"
    assert (NOTEBOOKS / "00_index.ipynb").exists()


@pytest.mark.parametrize("executed", PATHS, ids=ids, indirect=True)
def test_runs_top_to_bottom_in_time(executed):
    path, nb, seconds = executed
    print(f"{path.name}: {seconds:.1f} s")
    assert seconds < TIME_LIMIT, f"{path.name} took {seconds:.1f} s (limit {TIME_LIMIT} s)"
    skipped = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and SKIP_TAG in c.metadata.get("tags", [])]
    ran = [c for c in nb.cells if c.cell_type == "code" and source(c).strip()
           and SKIP_TAG not in c.metadata.get("tags", [])]
    assert all(c.get("execution_count") for c in ran), "some cells did not run"
    assert len(skipped) <= 1, f"{path.name}: keep cells tagged {SKIP_TAG} rare (found {len(skipped)})"


@pytest.mark.parametrize("executed", PATHS, ids=ids, indirect=True)
def test_solutions_run_and_pass(executed):
    """Each solution block, run as a code cell at its place in the one execution, ran and its check said ✅."""
    path, nb, _ = executed
    solutions = [c for c in nb.cells if c.cell_type == "code" and SOLUTION_TAG in c.metadata.get("tags", [])]
    for cell in solutions:
        assert cell.get("execution_count"), f"{path.name}: solution not executed:\n{source(cell)}"
        text = outputs_text(cell)
        assert "✅" in text and "❌" not in text, f"{path.name}: solution did not pass:\n{source(cell)}\n---\n{text}"


@pytest.mark.parametrize("path", PATHS, ids=ids)
def test_run_all_runs_no_solution(path):
    """No code cell is a solution: none hidden, none starting with '# Solution'; every <details> is a well-formed block."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not is_hidden(cell), f"{path.name} cell {i} is a hidden code cell: Run All would run it"
            assert not source(cell).lstrip().startswith("# Solution"), \
                f"{path.name} cell {i} is a solution in a code cell: make it a '{SUMMARY}' block"
        elif "<details" in source(cell):
            assert solution_code(cell) is not None, (
                f"{path.name} cell {i}: a solution block is exactly <details><summary>{SUMMARY}</summary>, a blank "
                "line, a ```python fence, a blank line, </details>")


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_has_at_least_two_exercises(path):
    """At least two exercises, each with a solution block that runs the same check."""
    nb = nbformat.read(path, as_version=4)
    solutions = [code for code in map(solution_code, nb.cells) if code is not None]
    assert len(solutions) >= 2, f"{path.name}: {len(solutions)} '{SUMMARY}' blocks; a lesson needs two"
    checked = {ex for c in nb.cells if is_exercise(c) for ex in CHECK_RE.findall(source(c))}
    assert len(checked) >= 2, f"{path.name}: exercises checked: {sorted(checked)}; a lesson needs two"
    for ex in checked:
        assert any(ex in CHECK_RE.findall(code) for code in solutions), f"{path.name}: no solution block for {ex}"
    for code in solutions:
        assert CHECK_RE.search(code), f"{path.name}: a solution calls check(...):\n{code}"


def _names(code: str) -> tuple[set[str], set[str]]:
    """The names a cell binds and the names it reads (top-level await allowed)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        tree = ast.parse("async def _cell():\n" + "\n".join("    " + line for line in code.splitlines()))
    bound, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, ast.Store) else read).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name != "_cell":
            bound.add(node.name)
    return bound, read


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_no_cell_depends_on_an_answer(path):
    """No cell reads a name last bound by an exercise or a solution: it must work whether the answer is right, wrong or untouched."""
    nb = nbformat.read(path, as_version=4)
    last_binder: dict[str, str] = {}        # name -> "answer" or "course"
    for i, cell in enumerate(nb.cells):
        code = source(cell) if cell.cell_type == "code" else solution_code(cell)
        if code is None or not code.strip():
            continue
        bound, read = _names(code)
        answer = cell.cell_type == "markdown" or is_exercise(cell)     # a solution block, or an exercise
        if not answer:
            uses = sorted(n for n in read - bound if last_binder.get(n) == "answer")
            assert not uses, f"{path.name} cell {i} uses {uses}, defined by an exercise or its solution:\n{code}"
        for name in bound:
            last_binder[name] = "answer" if answer else "course"


def nav_ok(text: str, last_lesson: bool) -> bool:
    """A nav line: Prev, Contents (00_index) and Next (the last lesson may have no Next)."""
    return bool(re.search(r"Prev", text) and re.search(r"\[Contents\]\(00_index\.ipynb\)", text)
                and (last_lesson or re.search(r"Next", text)))


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_form(path):
    """Objectives, time and prerequisites on top; nav lines top and bottom; key points at the end (DESIGN.md)."""
    nb = nbformat.read(path, as_version=4)
    markdown = [source(c) for c in nb.cells if c.cell_type == "markdown"]
    last_lesson = path == LESSONS[-1]
    assert nb.cells[0].cell_type == "markdown", "the first cell is the lesson's title cell"
    top = markdown[0]
    assert re.match(r"#\s+\d\d", top), "the title starts with '# NN'"
    assert re.search(r"\*\*(Objectives|You will)", top), f"{path.name}: the top cell lists the **Objectives**"
    assert re.search(r"^\s*[-*] ", top, re.M), f"{path.name}: objectives as bullets"
    assert re.search(r"\*\*Time:?\*\*:?[^\n]*?\d+\s*min", top), f"{path.name}: give the **Time:** in minutes"
    assert re.search(r"\*\*(Prerequisites|Before this)", top), f"{path.name}: the top cell names the **Prerequisites**"
    assert any(nav_ok(m, last_lesson) for m in markdown[:2]), f"{path.name}: a Prev · Contents · Next line at the top"
    assert nav_ok(markdown[-1], last_lesson), f"{path.name}: the last cell is the Prev · Contents · Next line again"
    assert any(re.search(r"^#+\s*Key points", m, re.M) for m in markdown[-2:]), \
        f"{path.name}: key points at the end, just before the nav line"
    number = int(path.name[:2])
    links = re.findall(r"\]\(([^)]+\.ipynb)\)", " ".join(markdown[:2]))
    assert any(link.startswith(f"{number - 1:02d}_") for link in links), "Prev links the previous lesson"
    assert last_lesson or any(link.startswith(f"{number + 1:02d}_") for link in links), "Next links the next lesson"


@pytest.mark.parametrize("path", PATHS, ids=ids)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.get("outputs"), f"{path.name} cell {i} has outputs: clear them before committing"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has an execution count"


@pytest.mark.parametrize("path", PATHS, ids=ids)
def test_servers_use_port_0_and_are_stopped(path):
    """Notebooks never collide on a port in tests, and free what they start."""
    nb = nbformat.read(path, as_version=4)
    code = re.sub(r"#[^\n]*", "", "\n".join(source(c) for c in nb.cells if c.cell_type == "code"))
    starts = re.findall(r"(?:ChatServer|PollServer)\(([^)]*)\)\.start\(\)", code)
    for args in starts:
        assert "port=0" in args, f"{path.name}: start servers with port=0 (found {args!r})"
    if starts and not path.name.startswith("00_"):   # the index's chat is meant to outlive Run All
        assert re.search(r"\.stop\(\)", code), f"{path.name}: stop the servers at the end"
