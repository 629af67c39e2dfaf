#!/usr/bin/env python3
"""Set up and run the course: the same commands on Linux, macOS and Windows.

    python course.py lab     first run: creates .venv and installs; then opens JupyterLab on the course
    python course.py test    same set-up, then ruff and every test
    python course.py chat    the chat server on its own (--host, --port)

Extra arguments pass through: to JupyterLab (``lab --no-browser``), to pytest
(``test -k frames``), to ``chat_lesson serve`` (``chat --rate-limit 5``).
The Makefile's targets call this script, so there is one implementation.
Standard library only: it has to run before anything is installed.
"""

import argparse
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

# Checked before anything else runs; the file itself parses on any Python 3.6+.
MINIMUM = (3, 11)
if sys.version_info < MINIMUM:
    sys.exit("course.py needs Python {}.{} or newer; this is {}.{} ({}).\n"
             "Install a newer Python, then run it with that one, e.g. `python3.11 course.py lab`,\n"
             "or on Windows `py -3.11 course.py lab`.".format(*MINIMUM, *sys.version_info[:2], sys.executable))

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".installed"          # holds pyproject.toml's hash at the last install
PYPROJECT = ROOT / "pyproject.toml"
COMMANDS = ("lab", "test", "chat")


def venv_python(venv: Path, os_name: str = os.name) -> Path:
    """The venv's interpreter: Scripts\\python.exe on Windows, bin/python elsewhere."""
    if os_name == "nt":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def fail(message: str) -> NoReturn:
    sys.exit("course.py: " + message)


def run(command: "list[str]") -> int:
    """Run a child in the course's folder and return its exit code.

    Ctrl-C reaches the child as well (same console); we keep waiting for it, so
    JupyterLab can ask "Shutdown this Jupyter server?" and finish on its own.
    """
    try:
        child = subprocess.Popen(command, cwd=ROOT)
    except OSError as error:
        fail(f"cannot run {command[0]}: {error}")
    while True:
        try:
            code = child.wait()
            break
        except KeyboardInterrupt:
            continue
    return 128 - code if code < 0 else code    # killed by signal N: 128+N, as a shell reports it


def check(command: "list[str]", what: str) -> None:
    code = run(command)
    if code != 0:
        sys.exit(f"course.py: {what} failed (exit code {code}); the command was:\n    " + " ".join(command))


def pyproject_hash() -> str:
    return hashlib.sha256(PYPROJECT.read_bytes()).hexdigest()


def create_venv() -> None:
    if importlib.util.find_spec("venv") is None or importlib.util.find_spec("ensurepip") is None:
        fail(f"this Python ({sys.executable}) cannot create a virtual environment: its venv/ensurepip module is missing.\n"
             f"On Debian or Ubuntu: sudo apt install python3-venv "
             f"(or python{sys.version_info.major}.{sys.version_info.minor}-venv), then run this again.")
    print(f"course.py: creating {VENV.name} with {sys.executable}", flush=True)
    existed = VENV.exists()
    code = run([sys.executable, "-m", "venv", str(VENV)])
    if code != 0:
        if not existed:
            shutil.rmtree(VENV, ignore_errors=True)     # a half-made venv would only confuse the next run
        fail(f"`{sys.executable} -m venv {VENV.name}` failed (exit code {code}).\n"
             "On Debian or Ubuntu: sudo apt install python3-venv, then run this again.")


def ensure_installed() -> Path:
    """Make .venv on first use; (re)install the course only when pyproject.toml changed."""
    python = venv_python(VENV)
    if not python.exists():
        create_venv()
        if not python.exists():
            fail(f"{VENV.name} was created but has no {python.relative_to(ROOT)}; delete {VENV.name} and try again.")
    wanted = pyproject_hash()
    if STAMP.exists() and STAMP.read_text().strip() == wanted:
        return python
    print(f"course.py: installing the course into {VENV.name} (pip install -e .[test])", flush=True)
    pip = [str(python), "-m", "pip"]
    if subprocess.run(pip + ["--version"], cwd=ROOT, capture_output=True).returncode != 0:
        fail(f"{VENV.name} has no pip; delete the {VENV.name} folder and run this again.")
    check(pip + ["install", "--quiet", "--upgrade", "pip"], "upgrading pip")
    check(pip + ["install", "--quiet", "-e", ".[test]"], "installing the course")
    STAMP.write_text(wanted + "\n")
    return python


def as_root() -> bool:
    """Jupyter refuses to run as root unless told; containers and CI often are root."""
    return os.name == "posix" and hasattr(os, "geteuid") and os.geteuid() == 0


def lab(python: Path, args: "list[str]") -> int:
    command = [str(python), "-m", "jupyterlab",
               "--ServerApp.root_dir=notebooks", "--LabApp.default_url=/lab/tree/00_index.ipynb"]
    if as_root():
        command.append("--allow-root")
    return run(command + args)


def test(python: Path, args: "list[str]") -> int:
    code = run([str(python), "-m", "ruff", "check", "chat_lesson", "tests"])
    if code != 0:
        return code
    return run([str(python), "-m", "pytest"] + args)


def chat(python: Path, args: "list[str]") -> int:
    parser = argparse.ArgumentParser(prog="course.py chat", add_help=False)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default="8000")
    options, rest = parser.parse_known_args(args)
    return run([str(python), "-m", "chat_lesson", "serve", "--host", options.host, "--port", options.port] + rest)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="course.py", usage="%(prog)s {lab,test,chat} [ARGS ...]", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Set up the course's .venv on first use (reinstalling only when pyproject.toml changed), then run it.",
        epilog="commands:\n"
               "  lab   [ARGS]                JupyterLab on notebooks/, opening 00_index.ipynb (ARGS go to JupyterLab)\n"
               "  test  [ARGS]                ruff check chat_lesson tests, then pytest ARGS (e.g. -k frames)\n"
               "  chat  [--host H] [--port P] the chat server alone, default http://127.0.0.1:8000/ (more options: "
               "python -m chat_lesson serve --help)\n\n"
               "The same as `make lab`, `make test`, `make chat`; on Windows use `py -3.11 course.py lab`.")
    p.add_argument("command", choices=COMMANDS, help="lab, test or chat")
    return p


def main(argv: "list[str] | None" = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        parser().parse_args(argv[:1])      # prints help (exit 0) or a usage error (exit 2)
        return 2
    command, args = argv[0], argv[1:]
    python = ensure_installed()
    return {"lab": lab, "test": test, "chat": chat}[command](python, args)


if __name__ == "__main__":
    sys.exit(main())
