"""``tiered-session stats``: the store's counters, backlog, flush lag and dead letters.

Example:
    $ tiered-session stats --json --redis-url redis://localhost:6379/0 --sql-url ...
"""

from __future__ import annotations

import argparse
import asyncio
import json

from ..store import TieredStore
from .common import SubParsers, add_server_args, store_from_args

__all__ = ["register"]


def register(sub: SubParsers) -> None:
    """Add the ``stats`` subcommand."""
    s = sub.add_parser("stats", help="print store statistics (backlog, flush lag, dead letters)")
    add_server_args(s)
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=_stats_main)


def _stats_main(args: argparse.Namespace) -> int:
    return asyncio.run(_stats(store_from_args(args, run_flusher=False), args))


async def _stats(store: TieredStore, args: argparse.Namespace) -> int:
    async with store:
        stats = await store.stats()
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        for key, value in stats.items():
            print(f"{key:<22} {value}")
    return 0
