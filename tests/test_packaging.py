"""The set-up files agree with each other: one list of runtime dependencies, two commands."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def name_of(requirement: str) -> str:
    return re.split(r"[<>=!~ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def runtime_dependencies() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {name_of(r) for r in project["dependencies"]}


def test_runtime_dependencies_are_the_three_named_ones():
    # nest-asyncio is gone: no cell re-enters the kernel's loop (chat_lesson.notebook says why)
    assert runtime_dependencies() == {"jupyterlab", "websockets", "matplotlib"}


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
    makefile = (ROOT / "Makefile").read_text()
    for target in ("lab", "chat", "test"):
        assert re.search(rf"^{target}:", makefile, flags=re.M)


def test_ci_runs_the_readme_test_command():
    code = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if not line.lstrip().startswith("#")]
    assert "make test" in code
    assert not any("playwright install" in line for line in code)     # Debian's Chromium, never a download
