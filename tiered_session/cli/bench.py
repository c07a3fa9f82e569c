"""``tiered-session bench``: TieredSession against the SDK's sessions and raw floors.

Example:
    $ tiered-session bench --quick                      # a smoke run, ~1 minute
    $ tiered-session bench --backends redis-floor,tiered-behind --workloads add,turn
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from .._errors import ConfigurationError, MissingDependencyError
from ..bench import ALL_BACKENDS, WORKLOADS, BenchOptions, run_bench, terminal, write_outputs
from ..bench.env import DEFAULT_PG, DEFAULT_REDIS
from .common import SubParsers

__all__ = ["add_bench_args", "options_from_args", "register"]


def register(sub: SubParsers) -> None:
    """Add the ``bench`` subcommand."""
    p = sub.add_parser("bench", help="benchmark against the SDK's sessions and raw floors")
    add_bench_args(p)
    p.set_defaults(func=_main)


def add_bench_args(p: argparse.ArgumentParser) -> None:
    """Add the benchmark options to a parser."""
    p.add_argument("--quick", action="store_true", help="small sizes, 3 repeats (a smoke run)")
    p.add_argument("--repeats", type=int, default=3, help="repeats, interleaved (default 3)")
    p.add_argument(
        "--backends",
        default=",".join(ALL_BACKENDS),
        help=f"comma-separated backends (default: all): {','.join(ALL_BACKENDS)}",
    )
    p.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated workloads (default: all): {','.join(WORKLOADS)}",
    )
    p.add_argument(
        "--out", default="benchmarks/results", help="output directory (default benchmarks/results)"
    )
    p.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    p.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS,
        help="Redis to benchmark on (default db 12; env TIERED_SESSION_BENCH_REDIS)",
    )
    p.add_argument(
        "--sql-url",
        default=DEFAULT_PG,
        help="PostgreSQL (postgresql+asyncpg://); only this run's tables are created and dropped",
    )


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    """Build BenchOptions from parsed arguments, validating the names."""
    backends = [b for b in args.backends.split(",") if b]
    workloads = [w for w in args.workloads.split(",") if w]
    for b in backends:
        if b not in ALL_BACKENDS:
            raise ConfigurationError(f"unknown backend {b!r}; choose from {ALL_BACKENDS}")
    for w in workloads:
        if w not in WORKLOADS:
            raise ConfigurationError(f"unknown workload {w!r}; choose from {WORKLOADS}")
    if not args.sql_url.startswith("postgresql+asyncpg://"):
        raise ConfigurationError("--sql-url must be a postgresql+asyncpg:// URL")
    return BenchOptions(
        quick=args.quick,
        repeats=args.repeats,
        backends=backends,
        workloads=workloads,
        redis_url=args.redis_url,
        sql_url=args.sql_url,
    )


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (non-default options only)."""
    parts = ["tiered-session bench"]
    if args.quick:
        parts.append("--quick")
    if args.repeats != 3:
        parts.append(f"--repeats {args.repeats}")
    if args.backends != ",".join(ALL_BACKENDS):
        parts.append(f"--backends {args.backends}")
    if args.workloads != ",".join(WORKLOADS):
        parts.append(f"--workloads {args.workloads}")
    return " ".join(parts)


def _main(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    if not args.no_chart:
        try:
            import matplotlib  # noqa: F401
        except ImportError as e:
            raise MissingDependencyError("matplotlib", "bench") from e
    doc = asyncio.run(run_bench(opts, command=_command(args)))
    print(terminal(doc))
    paths = write_outputs(doc, Path(args.out), png=not args.no_chart)
    print("\nwrote " + ", ".join(str(p) for p in paths))
    wrong = [
        f"{w}/{b}"
        for w, wl in doc["workloads"].items()
        for b, c in wl["cells"].items()
        if not c["ok"]
    ]
    if wrong:
        print("flagged (wrong results or errors): " + ", ".join(wrong), file=sys.stderr)
    return 0
