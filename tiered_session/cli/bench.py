"""``tiered-session bench``: TieredSession against the SDK's sessions and raw floors.

Results go to ``--out`` (default ``benchmarks/results`` under the current
directory; the output says where): ``results.json``, ``results.md`` and, with
matplotlib, ``results.png``. On a terminal a progress bar shows the cell
running and the time left.

Example:
    $ tiered-session bench --quick                      # a smoke run, under 30 s
    $ tiered-session bench --backends redis-floor,tiered-behind --workloads add,turn
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .._errors import ConfigurationError, MissingDependencyError
from ..bench import ALL_BACKENDS, WORKLOADS, BenchOptions, run_bench, terminal, write_outputs
from ..bench.env import DEFAULT_PG, DEFAULT_REDIS
from .common import ExitCode, echo_json
from .options import json_option, verbose_option
from .output import Bar

__all__ = ["register"]

#: the default of --out, relative to the current directory
DEFAULT_OUT = Path("benchmarks") / "results"


def register(group: click.Group) -> None:
    """Add the ``bench`` command."""
    group.add_command(bench)


def _names(choices: list[str], what: str) -> Callable[[click.Context, click.Parameter, str], str]:
    def check(ctx: click.Context, param: click.Parameter, value: str) -> str:
        names = [n.strip() for n in value.split(",") if n.strip()]
        unknown = [n for n in names if n not in choices]
        if unknown or not names:
            raise click.BadParameter(
                f"unknown {what} {', '.join(map(repr, unknown)) or '(none given)'}; "
                f"choose from {', '.join(choices)}"
            )
        return ",".join(names)

    return check


def _pg_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.startswith("postgresql+asyncpg://"):
        raise click.BadParameter("must be a postgresql+asyncpg:// URL")
    return value


@click.command(
    short_help="Benchmark against the SDK's sessions and raw floors.",
    epilog="Exit codes: 0 done; 1 a backend returned wrong results (flagged); "
    "2 usage, or no backend could be opened.",
)
@click.option("--quick", is_flag=True, help="Small sizes: a smoke run (under 30 s on 2 cores).")
@click.option(
    "--repeats",
    type=click.IntRange(1, 100),
    default=3,
    show_default=True,
    help="Repeats; backends are interleaved inside each one.",
)
@click.option(
    "--backends",
    default=",".join(ALL_BACKENDS),
    callback=_names(ALL_BACKENDS, "backend"),
    help=f"Comma-separated backends (default: all): {', '.join(ALL_BACKENDS)}.",
)
@click.option(
    "--workloads",
    default=",".join(WORKLOADS),
    callback=_names(WORKLOADS, "workload"),
    help=f"Comma-separated workloads (default: all): {', '.join(WORKLOADS)}.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
    help="Directory for the results (a relative path is under the current directory).",
)
@click.option("--no-chart", is_flag=True, help="Skip the PNG chart (no matplotlib needed).")
@click.option(
    "--redis-url",
    metavar="URL",
    default=DEFAULT_REDIS,
    show_default=True,
    envvar="TIERED_SESSION_BENCH_REDIS",
    show_envvar=True,
    help="Redis to benchmark on; only this run's keys are written, then deleted.",
)
@click.option(
    "--sql-url",
    metavar="URL",
    default=DEFAULT_PG,
    show_default=True,
    envvar="TIERED_SESSION_BENCH_PG",
    show_envvar=True,
    callback=_pg_url,
    help="PostgreSQL (postgresql+asyncpg://); only this run's tables are created, then dropped.",
)
@json_option
@verbose_option
def bench(**opts: Any) -> int:
    """Benchmark TieredSession against the SDK's sessions and raw redis-py / asyncpg."""
    if not opts["no_chart"]:
        try:
            import matplotlib  # noqa: F401
        except ImportError as e:
            raise MissingDependencyError("matplotlib", "bench") from e
    out: Path = opts["out"].resolve()
    as_json: bool = opts["as_json"]
    backends = opts["backends"].split(",")
    workloads = opts["workloads"].split(",")
    repeats = opts["repeats"]
    click.echo(
        f"tiered-session bench: {'quick, ' if opts['quick'] else ''}{repeats} repeat(s), "
        f"{len(backends)} backend(s), {len(workloads)} workload(s); results to {out}",
        err=as_json,
    )

    def note(msg: str) -> None:
        click.echo(f"tiered-session bench: {msg.strip()}", err=True)

    with Bar("bench", unit="cells") as bar:

        def progress(step: str, done: int, total: int) -> None:
            bar.total = total
            bar.describe(step)
            bar.advance(done - bar.done)

        bench_opts = BenchOptions(
            quick=opts["quick"],
            repeats=repeats,
            backends=backends,
            workloads=workloads,
            redis_url=opts["redis_url"],
            sql_url=opts["sql_url"],
            log=note,
            progress=progress,
        )
        doc = asyncio.run(run_bench(bench_opts, command=_command(opts)))
    skipped = doc["meta"]["skipped"]
    if skipped and len(skipped) == len(backends):
        raise ConfigurationError(
            "no backend could be opened (are Redis and PostgreSQL reachable at --redis-url "
            "and --sql-url?): " + "; ".join(f"{k}: {v}" for k, v in skipped.items())
        )
    if as_json:
        echo_json(doc)
    else:
        click.echo(terminal(doc))
    paths = write_outputs(doc, out, png=not opts["no_chart"])
    click.echo(f"\nwrote {', '.join(str(p) for p in paths)}", err=as_json)
    wrong = [
        f"{w}/{b}"
        for w, wl in doc["workloads"].items()
        for b, c in wl["cells"].items()
        if not c["ok"]
    ]
    if wrong:
        note("flagged (wrong results or errors): " + ", ".join(wrong))
        return ExitCode.NOT_FOUND
    return ExitCode.OK


def _command(opts: dict[str, Any]) -> str:
    """The command line that reproduces this run (non-default options only)."""
    parts = ["tiered-session bench"]
    if opts["quick"]:
        parts.append("--quick")
    if opts["repeats"] != 3:
        parts.append(f"--repeats {opts['repeats']}")
    if opts["backends"] != ",".join(ALL_BACKENDS):
        parts.append(f"--backends {opts['backends']}")
    if opts["workloads"] != ",".join(WORKLOADS):
        parts.append(f"--workloads {opts['workloads']}")
    return " ".join(parts)
