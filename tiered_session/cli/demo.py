"""``tiered-session demo``: a simulated multi-session chat workload, explained.

Each simulated user runs turns as ``Runner.run`` does (read the newest
``--history`` items, then add the new turn). ``--evict N`` sessions are
dropped from Redis on the way, each just before its user's next read, which
then loads the session back from SQL. At the end every session is checked
item by item in both tiers.

The figures add up: every read is a *cache hit* (Redis held every item asked
for) or a *cold read* (older items came from SQL, beyond the hot window);
every *load* (a session Redis did not hold, loaded from SQL before its read)
is a new session's first read or a read after an eviction.

Example:
    $ tiered-session demo --sessions 20 --turns 10
    $ tiered-session demo --hot-items 5 --evict 20      # cold reads and loads
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

import click

from .._codec import decode_item
from .._config import default
from .._progress import Progress
from .._workload import turn_items
from ..store import TieredStore
from .common import ExitCode, Target, echo_json
from .options import json_option, storage_options
from .output import Bar, print_pairs

__all__ = ["DemoResult", "register", "run_demo"]


@dataclass
class DemoResult:
    """Figures of one demo run (``reads == cache_hits + cold_reads + degraded_reads``)."""

    sessions: int
    turns: int
    write_mode: str
    hot_items: int
    history: int
    seconds: float
    turns_per_second: float
    #: one per turn
    reads: int
    #: reads that found every item asked for in Redis
    cache_hits: int
    cache_hit_ratio: float
    #: reads that also read older items from SQL (beyond the hot window)
    cold_reads: int
    #: reads served by SQL alone because Redis was unreachable
    degraded_reads: int
    #: sessions loaded from SQL into Redis before a read
    cache_misses: int
    #: ... of which first reads of new sessions
    loads_new_sessions: int
    #: ... of which reads right after an eviction
    loads_after_eviction: int
    evictions: int
    flush_lag_max_seconds: float
    flush_lag_final_seconds: float
    sessions_verified: int
    sessions_mismatched: int


def register(group: click.Group) -> None:
    """Add the ``demo`` command."""
    group.add_command(demo)


@click.command(short_help="Run a simulated chat workload; explain its reads.")
@click.option(
    "--sessions",
    type=click.IntRange(1, 100_000),
    default=100,
    show_default=True,
    help="Simulated users, one session each.",
)
@click.option(
    "--turns",
    type=click.IntRange(1, 100_000),
    default=30,
    show_default=True,
    help="Turns per user (3 items each).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 10_000),
    default=32,
    show_default=True,
    help="Users active at once.",
)
@click.option(
    "--history",
    type=click.IntRange(1, 1_000_000),
    default=20,
    show_default=True,
    help="Items each turn reads (the limit of get_items).",
)
@click.option(
    "--hot-items",
    type=click.IntRange(1, 1_000_000),
    default=50,
    show_default=True,
    help="Hot window: items per session kept in Redis. Below --history, reads of "
    "long sessions become cold reads.",
)
@click.option(
    "--evict",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    metavar="N",
    help="Sessions to evict from Redis on the way (each then loaded from SQL by its "
    "next read); 0 for none.",
)
@click.option(
    "--write-mode",
    type=click.Choice(["through", "behind"]),
    default=default("write_mode"),
    show_default=True,
    help="through: add_items commits to SQL; behind: to Redis, a flusher moves it to SQL.",
)
@json_option
@storage_options("demo")
def demo(target: Target, as_json: bool, **opts: Any) -> int:
    """Run a simulated multi-session chat workload and explain where reads were served.

    With no --redis-url/--sql-url it runs on the embedded backend (an in-process
    Redis and in-memory SQLite). Exit 1 if a session differs between the tiers.
    """
    store = target.store(
        write_mode=opts["write_mode"], hot_items=opts["hot_items"], create_tables=True
    )
    if not as_json:
        click.echo(
            f"tiered-session demo: {opts['sessions']} sessions x {opts['turns']} turns, "
            f"write-{opts['write_mode']}, hot window {opts['hot_items']} items, reads of the "
            f"newest {opts['history']}; {target.describe()}"
        )

    async def run() -> DemoResult:
        async with store:
            with Bar("turns", unit="turns", total=opts["sessions"] * opts["turns"]) as bar:
                return await run_demo(
                    store,
                    sessions=opts["sessions"],
                    turns=opts["turns"],
                    concurrency=opts["concurrency"],
                    history=opts["history"],
                    evict=opts["evict"],
                    progress=bar,
                )

    result = asyncio.run(run())
    if as_json:
        echo_json(asdict(result))
    else:
        print_pairs(_report(result))
    return ExitCode.OK if result.sessions_mismatched == 0 else ExitCode.NOT_FOUND


async def run_demo(
    store: TieredStore,
    *,
    sessions: int = 100,
    turns: int = 30,
    concurrency: int = 32,
    history: int = 20,
    evict: int = 10,
    progress: Progress | None = None,
    run_id: str | None = None,
) -> DemoResult:
    """Run the workload on ``store`` and verify every session afterwards."""
    run_id = run_id or f"demo-{random.getrandbits(32):08x}"
    ids = [f"{run_id}-{i}" for i in range(sessions)]
    expected: dict[str, list[Any]] = {sid: [] for sid in ids}
    gate = asyncio.Semaphore(concurrency)
    bad: set[str] = set()
    lags: list[float] = []
    rng = random.Random(7)
    # An eviction happens just before a user's read (never its first): that read loads.
    slots = [(n, t) for n in range(sessions) for t in range(1, turns)]
    plan = set(rng.sample(slots, min(evict, len(slots))))
    evictions = 0

    async def user(n: int, sid: str) -> None:
        nonlocal evictions
        session = store.session(sid)
        async with gate:
            for t in range(turns):
                if (n, t) in plan:
                    await store.evict(sid)
                    evictions += 1
                got = await session.get_items(limit=history)
                if got != expected[sid][-history:]:
                    bad.add(sid)
                new = turn_items(n, t)
                await session.add_items(new)
                expected[sid].extend(new)
                if progress is not None:
                    progress.advance()

    async def sample_lag(stop: asyncio.Event) -> None:
        while not stop.is_set():
            lags.append((await store.stats())["flush_lag_seconds"])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)

    before = await store.stats()
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_lag(stop))
    start = time.perf_counter()
    try:
        await asyncio.gather(*(user(n, sid) for n, sid in enumerate(ids)))
    finally:
        stop.set()
        await sampler
    seconds = time.perf_counter() - start
    if progress is not None:
        progress.close()
    final_lag = (await store.stats())["flush_lag_seconds"]
    after = await store.stats()  # (before the checks below, which read too)
    await store.flush()

    for sid in ids:
        hot = await store.session(sid).get_items()
        sql = [decode_item(d) for _, d in await store.sql.latest(sid, None, None)]
        if hot != expected[sid] or sql != expected[sid]:
            bad.add(sid)

    def delta(name: str) -> int:
        value: int = after[name] - before[name]  # type: ignore[literal-required]
        return value

    hits, cold, misses = delta("cache_hits"), delta("cold_reads"), delta("cache_misses")
    reads = sessions * turns
    return DemoResult(
        sessions=sessions,
        turns=reads,
        write_mode=store.config.write_mode,
        hot_items=store.config.hot_items,
        history=history,
        seconds=round(seconds, 3),
        turns_per_second=round(reads / seconds, 1) if seconds > 0 else 0.0,
        reads=reads,
        cache_hits=hits,
        cache_hit_ratio=round(hits / reads, 4),
        cold_reads=cold,
        degraded_reads=delta("degraded_reads"),
        cache_misses=misses,
        loads_new_sessions=min(misses, sessions),
        loads_after_eviction=max(0, misses - sessions),
        evictions=evictions,
        flush_lag_max_seconds=max([*lags, final_lag]),
        flush_lag_final_seconds=final_lag,
        sessions_verified=sessions - len(bad),
        sessions_mismatched=len(bad),
    )


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.1f} %" if total else "-"


def _report(r: DemoResult) -> list[tuple[str, str]]:
    """The result in words; each group of figures adds up."""
    if r.cold_reads:
        cold = (
            f"{r.cold_reads:,} ({_pct(r.cold_reads, r.reads)}) also read older items from SQL "
            f"(beyond the hot window of {r.hot_items})"
        )
    else:
        cold = (
            f"0: every read of {r.history} items found them in the hot window of "
            f"{r.hot_items} (a --hot-items below --history makes reads of long sessions cold)"
        )
    loads = (
        f"{r.cache_misses:,} sessions Redis did not hold, loaded before their read: "
        f"{r.loads_new_sessions:,} new (first read) + {r.loads_after_eviction:,} after an "
        f"eviction ({r.evictions:,} evicted by --evict)"
    )
    rows = [
        ("turns", f"{r.turns:,} in {r.seconds:.2f} s"),
        ("turns/s", f"{r.turns_per_second:,.0f}"),
        ("reads", f"{r.reads:,}, one per turn = cache hits + cold reads"),
        (
            "  cache hit ratio",
            f"{_pct(r.cache_hits, r.reads)}: {r.cache_hits:,} reads found every item in Redis",
        ),
        ("  cold reads", cold),
    ]
    if r.degraded_reads:
        rows.append(("  degraded reads", f"{r.degraded_reads:,} from SQL alone (Redis down)"))
    rows += [
        ("loads from SQL", loads),
        (
            "flush lag",
            f"max {r.flush_lag_max_seconds:.3f} s, at end {r.flush_lag_final_seconds:.3f} s "
            f"(age of the oldest write not yet in SQL; write-{r.write_mode})",
        ),
        ("verified", f"{r.sessions_verified}/{r.sessions} sessions identical in Redis and SQL"),
    ]
    return rows
