"""A conformance battery for WebSocket servers, written from RFC 6455.

    python -m chat_lesson conform ws://127.0.0.1:8000/ws            # a table, per case and per category
    python -m chat_lesson conform ws://127.0.0.1:8000/ws --json     # the same as JSON
    python -m chat_lesson conform ws://127.0.0.1:8000/ws --chat     # the chat protocol of lesson 05

From a cell or a test::

    report = conformance.run("ws://127.0.0.1:8765/ws")
    report.score()            # {"pass": 52, "non-strict": 3, "fail": 0, "cases": 55, "score": 100.0}
    print(report.table())

About sixty cases in six categories (framing, pings, fragmentation, utf8,
closing, handshake), each citing the RFC's section (``cases.py``).  Each
reports what it sent, what came back, and a verdict: *pass*, *non-strict*
(acceptable, but not the RFC's strictest reading) or *fail*; the score
counts pass and non-strict as acceptable.  Two kinds of server can be graded:
an *echo* server, and a *chat* server speaking lesson 05's protocol
(``{"type": "join"}``, then ``{"username", "message"}``, broadcast back as
``{"type": "message", ...}``); ``mode="auto"`` tells them apart by what
comes back from a first message.  Every wait is bounded; the battery
connects only to the URL it is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import urllib.parse
from collections.abc import Iterable

from . import handshake_cases  # noqa: F401  (registers the handshake cases)
from .cases import CASES, CATEGORIES, Case, Ctx
from .probe import Conn, Target, Verdict

__all__ = ["CASES", "CATEGORIES", "Report", "Result", "detect_mode", "main", "run", "target_of"]


@dataclasses.dataclass
class Result:
    """One case's outcome: what was sent, what came back, and the verdict."""

    id: str
    category: str
    title: str
    section: str
    verdict: str          # "pass", "non-strict" or "fail"
    why: str
    sent: list[str]
    got: list[str]
    seconds: float


@dataclasses.dataclass
class Report:
    """Every result of one run against one server."""

    url: str
    mode: str
    results: list[Result]
    seconds: float

    def score(self, category: str | None = None) -> dict[str, float]:
        rows = [r for r in self.results if category is None or r.category == category]
        counts = {k: sum(r.verdict == k for r in rows) for k in ("pass", "non-strict", "fail")}
        ok = counts["pass"] + counts["non-strict"]
        return {**counts, "cases": len(rows), "score": round(100 * ok / len(rows), 1) if rows else 0.0}

    def by_category(self) -> dict[str, dict[str, float]]:
        return {c: self.score(c) for c in CATEGORIES if any(r.category == c for r in self.results)}

    def failures(self, kinds: Iterable[str] = ("fail",)) -> list[Result]:
        return [r for r in self.results if r.verdict in tuple(kinds)]

    def to_dict(self) -> dict:
        return {"url": self.url, "mode": self.mode, "seconds": round(self.seconds, 3), "score": self.score(),
                "categories": self.by_category(), "results": [dataclasses.asdict(r) for r in self.results]}

    def to_json(self, **options) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, **options)

    def table(self, verbose: bool = False, width: int = 60) -> str:
        """The cases as aligned text, then the scores per category."""
        def cut(text: str) -> str:
            return text if len(text) <= width else text[: width - 1] + "…"
        lines = [f"{self.url} ({self.mode} server), {len(self.results)} cases in {self.seconds:.1f} s", ""]
        lines.append(f"{'verdict':<11} {'case':<34} {'RFC':<16} why")
        for r in self.results:
            lines.append(f"{r.verdict:<11} {r.category + '/' + r.id:<34} {r.section:<16} {cut(r.why)}")
            if verbose or r.verdict != "pass":
                lines += [f"{'':<12}sent: {cut(' · '.join(r.sent))}", f"{'':<12}got:  {cut(' · '.join(r.got))}"]
        lines += ["", f"{'category':<15} pass  non-strict  fail  score"]
        for name, s in {**self.by_category(), "all": self.score()}.items():
            lines.append(f"{name:<15} {s['pass']:>4}  {s['non-strict']:>10}  {s['fail']:>4}  {s['score']:>5.1f}%")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def target_of(url: str, mode: str = "echo", timeout: float = 2.0) -> Target:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "ws" or not parts.hostname or not parts.port:
        raise ValueError(f"expected ws://HOST:PORT/PATH, not {url!r} (wss is not supported)")
    return Target(parts.hostname, parts.port, parts.path or "/", mode, timeout)


def detect_mode(url: str, timeout: float = 2.0) -> str:
    """"echo" if a first message comes back as sent, "chat" if it comes back as a chat message event."""
    target = target_of(url, "chat", timeout)
    conn = Conn(target, [], [], join=False)
    try:
        join = json.dumps({"type": "join", "username": conn.name}).encode()
        conn.send_frame(1, join)
        token = conn.probe()
        sent = conn.wrap(token.encode())
        out = conn.react(want=lambda i: getattr(i, "data", None) in (join.decode(), sent.decode())
                         or conn.is_reply(i, token))
        if out.kind != "want":
            raise ConnectionError(f"cannot tell the kind of server at {url}: {out.kind} after a first message")
        return "echo" if out.item.data in (join.decode(), sent.decode()) else "chat"
    finally:
        conn.close()


def run(url: str, mode: str = "auto", *, timeout: float = 2.0, grace: float = 0.25,
        only: Iterable[str] | None = None) -> Report:
    """Run the battery against ``url``; ``only`` picks categories or case ids."""
    start = time.monotonic()
    if mode == "auto":
        mode = detect_mode(url, timeout)
    target = dataclasses.replace(target_of(url, mode, timeout), grace=grace)
    wanted = set(only) if only is not None else None
    results = []
    for case in CASES:
        if wanted is not None and not ({case.id, case.category, f"{case.category}/{case.id}"} & wanted):
            continue
        results.append(run_case(case, target))
    return Report(url, mode, results, time.monotonic() - start)


def run_case(case: Case, target: Target) -> Result:
    ctx = Ctx(target)
    t0 = time.monotonic()
    try:
        verdict = case.run(ctx)
    except Verdict as raised:
        verdict = raised
    except Exception as error:  # noqa: BLE001 - a case that could not even connect fails, with the reason
        verdict = Verdict("fail", f"{type(error).__name__}: {error}")
    finally:
        ctx.close()
    return Result(case.id, case.category, case.title, case.section, verdict.kind, verdict.why,
                  ctx.sent, ctx.got, round(time.monotonic() - t0, 4))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chat_lesson conform", description=__doc__.split("\n\n")[0])
    p.add_argument("url", help="the server's WebSocket URL, e.g. ws://127.0.0.1:8000/ws")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--chat", action="store_const", const="chat", dest="mode",
                       help="the server speaks lesson 05's chat protocol")
    group.add_argument("--echo", action="store_const", const="echo", dest="mode", help="the server echoes")
    p.add_argument("--only", action="append", metavar="CATEGORY|ID", help="run only these (repeatable)")
    p.add_argument("--timeout", type=float, default=2.0, help="the longest single wait, in s (default 2)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="show what was sent and received for every case")
    args = p.parse_args(argv)
    try:
        report = run(args.url, args.mode or "auto", timeout=args.timeout, only=args.only)
    except (OSError, ValueError) as error:
        print(f"conform: {error}", file=sys.stderr)
        return 2
    print(report.to_json(indent=1) if args.json else report.table(args.verbose))
    return 0 if not report.failures() else 1
