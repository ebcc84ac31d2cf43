"""The ``roost`` command's entry point.

An operator command given first (``roost serve``, ``roost db upgrade``, ...) is parsed and run
without loading the client library (``commands.py``): on a small host that is a few MiB of idle
memory and about a tenth of a second of start-up that ``serve`` would never use. Everything
else, including ``roost --help``, goes through the full parser.
"""

from __future__ import annotations

import sys

from .operator import OPERATOR_COMMANDS, operator_parser


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in OPERATOR_COMMANDS:
        parsed = operator_parser().parse_args(args)
        return int(parsed.sync_handler(parsed))
    from .commands import main as main_with_every_command

    return main_with_every_command(args)


if __name__ == "__main__":
    sys.exit(main())
