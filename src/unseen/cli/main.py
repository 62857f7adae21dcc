"""The ``unseen`` command line: ``benchmark``, ``list``, ``calibrate``, ``serve``.

Each subcommand is a module of this package with a :class:`Subcommand` ``COMMAND`` (a function
adding its arguments and one running it), listed in :data:`SUBCOMMANDS`; add new ones there.
The CLI only parses arguments, calls the library and prints.

Exit status: 0 success; 1 a runtime error (missing data, a failing detector, an output location
that cannot be written, a port in use); 2 wrong usage (unknown subcommand, option, preset,
detector or hyperparameter, a bad config file); 130 interrupted. Errors print one line
``unseen: error: ...``; ``--debug`` or ``UNSEEN_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from rich.console import Console

from unseen.cli import benchmark, calibrate, serve
from unseen.cli import list as list_command
from unseen.cli._common import Subcommand, UsageError

SUBCOMMANDS: list[Subcommand] = [
    benchmark.COMMAND,
    list_command.COMMAND,
    calibrate.COMMAND,
    serve.COMMAND,
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser = _Parser(prog="unseen", description="Out-of-distribution detection toolbox.",
                     parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for cmd in SUBCOMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, parents=[common])
        cmd.configure(p)
        p.set_defaults(handler=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("UNSEEN_DEBUG") == "1" or "--debug" in argv
    # Piped output (CI logs, `| tee`) gets a width that fits the leaderboard, not rich's 80.
    console = Console(width=None if sys.stdout.isatty() else 140)
    try:
        args = build_parser().parse_args(argv)
        return int(args.handler(args, console))
    except UsageError as exc:
        if debug:
            raise
        print(f"unseen: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("unseen: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"unseen: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
