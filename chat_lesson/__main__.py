"""Command line: ``python -m chat_lesson serve|tap|bench ...`` (also ``chat-lesson ...``)."""

from __future__ import annotations

import argparse
import gc
import dataclasses
import asyncio
import logging
import sys


def serve_parser(sub: argparse._SubParsersAction) -> None:
    from .chat.wire import DEFAULTS, HELP

    p = sub.add_parser("serve", help="run the chat server (Ctrl-C stops it)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 for a classroom LAN (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="TCP port, 0 for any free one (default 8000)")
    for field in dataclasses.fields(DEFAULTS):          # every limit, its default and help from chat/wire.py
        name = field.name
        default = getattr(DEFAULTS, name)
        p.add_argument("--" + name.replace("_", "-"), type=type(default), default=default,
                       help=f"{HELP[name]} (default {default:g})")
    p.add_argument("--origin", action="append", default=[], metavar="URL", help="another Origin allowed to connect (repeatable)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another name this server is reached by, e.g. chat.school.example (repeatable)")
    p.add_argument("--no-compression", action="store_true", help="do not negotiate permessage-deflate")
    p.add_argument("--static", default=None, metavar="DIR", help="serve this folder instead of the course's static/")
    p.add_argument("--history-file", default=None, metavar="PATH",
                   help="keep messages in this SQLite file, so a restart replays them (e.g. chat-history.sqlite3)")
    p.add_argument("--broker", default=None, metavar="URL",
                   help="join other servers in one room through Redis, e.g. redis://127.0.0.1:6379/0 "
                        "(needs the redis package: pip install 'chat_lesson[scale]')")
    p.add_argument("-v", "--verbose", action="store_true", help="log every join, leave and refusal")


async def serve(args: argparse.Namespace) -> None:
    from .chat.server import ChatServer
    from .chat.wire import DEFAULTS

    limits = {f.name: getattr(args, f.name) for f in dataclasses.fields(DEFAULTS)}
    limits["ping_interval"] = limits["ping_interval"] or None
    limits["ping_timeout"] = limits["ping_timeout"] or None
    server = ChatServer(
        args.host, args.port, origins=args.origin, allow_hosts=args.allow_host, **limits,
        compression=None if args.no_compression else "deflate", static=args.static,
        history_file=args.history_file, broker=args.broker,
    )
    # The objects made so far (modules, classes, functions: most of this process) live as long as it
    # does: out of the cyclic collector's sight, its full passes no longer walk them (bench paced).
    gc.freeze()
    await server.serve_forever()


def tap_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tap", help="run the frame inspector: a proxy that prints every frame (Ctrl-C stops it)")
    p.add_argument("--to", required=True, metavar="HOST:PORT", help="the server to forward to, e.g. 127.0.0.1:8000")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8001, help="TCP port to listen on, 0 for any free one (default 8001)")
    p.add_argument("--delay", type=float, default=0, metavar="MS", help="added latency each way, in ms (default 0)")
    p.add_argument("--limit", type=float, default=None, metavar="BYTES_PER_S", help="bandwidth cap per connection and direction")
    p.add_argument("--width", type=int, default=0, metavar="N",
                   help="characters of each payload shown; 0 = the whole text, wrapped to the terminal (default 0)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:            # python -m chat_lesson bench ... is python -m chat_lesson.bench ...
        from .bench import main as bench_main

        return bench_main(argv[1:])
    if argv[:1] == ["conform"]:          # python -m chat_lesson conform ws://HOST:PORT/PATH [--chat] [--json]
        from .conformance import main as conform_main

        return conform_main(argv[1:])
    if argv[:1] == ["export"]:           # python -m chat_lesson export --history-file F [--format ...] [-o OUT] [--clear]
        from .chat.history import export_main

        return export_main(argv[1:])
    parser = argparse.ArgumentParser(prog="chat-lesson", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser(sub)
    tap_parser(sub)
    sub.add_parser("export", help="write the transcript kept in a --history-file: see python -m chat_lesson export --help")
    sub.add_parser("bench", help="benchmarks: see python -m chat_lesson bench --help")
    sub.add_parser("conform", help="RFC 6455 conformance battery: see python -m chat_lesson conform --help")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            asyncio.run(serve(args))
        elif args.command == "tap":
            from .tap.cli import run_cli

            asyncio.run(run_cli(args.to, args.port, args.host, delay=args.delay, limit=args.limit, width=args.width))
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
    except OSError as exc:
        print(f"chat-lesson: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
