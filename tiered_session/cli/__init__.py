r"""The ``tiered-session`` command line.

Example:
    $ tiered-session demo                       # embedded default, no servers
    $ tiered-session demo --redis-url redis://localhost:6379/0 \\
          --sql-url postgresql+asyncpg://postgres@localhost/test
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .._errors import TieredSessionError
from . import bench, dead_letters, demo, flush, imports, schema, sessions, stats

__all__ = ["main"]

# Each module adds its subcommands with register(subparsers).
_COMMANDS = [demo, bench, flush, dead_letters, stats, sessions, imports, schema]


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="tiered-session",
        description="Two-tier (Redis + SQL) conversation memory for the OpenAI Agents SDK.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except TieredSessionError as e:
        print(f"tiered-session: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
