"""The set-up files agree with each other: one list of runtime dependencies, two commands, one script behind them."""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COURSE = ROOT / "course.py"


def load_course():
    spec = importlib.util.spec_from_file_location("course", COURSE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)       # defines functions only; main() runs under __main__
    return module


def name_of(requirement: str) -> str:
    return re.split(r"[<>=!~ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def runtime_dependencies() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {name_of(r) for r in project["dependencies"]}


def test_runtime_dependencies_include_the_three_named_ones():
    # Read from pyproject, not fixed here: others (jupyter-server-proxy) may join; the conda files must follow.
    assert {"jupyterlab", "websockets", "matplotlib"} <= runtime_dependencies()
    # nest-asyncio is gone: no cell re-enters the kernel's loop (chat_lesson.notebook says why)
    assert "nest-asyncio" not in runtime_dependencies()


def test_conda_environments_list_the_same_dependencies():
    for path in (ROOT / "environment.yml", ROOT / "binder" / "environment.yml"):
        env = yaml.safe_load(path.read_text())
        conda = {name_of(d) for d in env["dependencies"] if isinstance(d, str)} - {"python", "pip"}
        assert conda == runtime_dependencies(), path
        assert "conda-forge" in env["channels"]
    pip = next(d["pip"] for d in yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"] if isinstance(d, dict))
    assert pip == ["-e ."]


def test_readme_quick_start_is_the_two_make_commands():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^    (make \w+)", quick, flags=re.M)
    assert commands == ["make lab", "make test"]
    for command in ("python course.py lab", "python course.py test"):     # the same two, without make
        assert command in quick


def test_the_makefile_targets_call_course_py():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("lab", "chat", "test"):
        recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, flags=re.M)
        assert recipe, target
        assert re.fullmatch(rf"\t\$\(PYTHON\) course\.py {target}\b.*\n", recipe[1]), recipe[1]
    assert "$(ARGS)" in makefile and "--host $(HOST) --port $(PORT)" in makefile
    for variable in ("PYTHON", "HOST", "PORT", "ARGS"):
        assert re.search(rf"^{variable}\s*\?=", makefile, flags=re.M), variable


def test_venv_paths_on_windows_and_posix():
    course = load_course()
    venv = Path("somewhere") / ".venv"
    assert course.venv_python(venv, "nt").relative_to(venv).parts == ("Scripts", "python.exe")
    assert course.venv_python(venv, "posix").relative_to(venv).parts == ("bin", "python")


def test_course_py_passes_extra_arguments_through(monkeypatch):
    course = load_course()
    calls = []
    monkeypatch.setattr(course, "run", lambda command: calls.append(command) or 0)
    monkeypatch.setattr(course, "as_root", lambda: False)
    python = Path("py")
    course.lab(python, ["--no-browser"])
    course.test(python, ["-k", "frames"])
    course.chat(python, ["--port", "9000", "--rate-limit", "5"])
    assert calls == [
        ["py", "-m", "jupyterlab", "--ServerApp.root_dir=notebooks", "--LabApp.default_url=/lab/tree/00_index.ipynb", "--no-browser"],
        ["py", "-m", "ruff", "check", "chat_lesson", "tests"],
        ["py", "-m", "pytest", "-k", "frames"],
        ["py", "-m", "chat_lesson", "serve", "--host", "127.0.0.1", "--port", "9000", "--rate-limit", "5"],
    ]


def test_course_py_imports_only_the_standard_library():
    # It runs before anything is installed, on a bare Python.
    tree = ast.parse(COURSE.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module
            names.add(node.module.split(".")[0])
    assert names and names <= sys.stdlib_module_names, names - sys.stdlib_module_names


def test_course_py_help_lists_the_commands():
    out = subprocess.run([sys.executable, str(COURSE), "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    for command in ("lab", "test", "chat"):
        assert command in out.stdout


def test_ci_runs_the_readme_test_command():
    code = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if not line.lstrip().startswith("#")]
    assert "make test" in code
    assert not any("playwright install" in line for line in code)     # Debian's Chromium, never a download
