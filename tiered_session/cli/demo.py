"""``tiered-session demo``: a simulated multi-session chat workload.

Each simulated user runs turns like ``Runner.run`` does (read the last N
items, then add the new turn), a few sessions are evicted on the way to show
cold reads, and at the end every session is checked item by item in both
tiers.

Example:
    $ tiered-session demo --sessions 20 --turns 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

from .._codec import decode_item
from .._config import redact_url
from .._progress import Progress
from .._workload import turn_items
from ..store import TieredStore
from .common import SubParsers, add_server_args, store_from_args

__all__ = ["DemoResult", "register", "run_demo"]


@dataclass
class DemoResult:
    """Figures of one demo run."""

    sessions: int
    turns: int
    write_mode: str
    seconds: float
    turns_per_second: float
    cache_hit_ratio: float
    cold_reads: int
    cache_misses: int
    flush_lag_max_seconds: float
    flush_lag_final_seconds: float
    sessions_verified: int
    sessions_mismatched: int


def register(sub: SubParsers) -> None:
    """Add the ``demo`` subcommand."""
    p = sub.add_parser("demo", help="run a simulated multi-session chat workload")
    add_server_args(p)
    p.add_argument("--sessions", type=int, default=100, help="simulated users (default 100)")
    p.add_argument("--turns", type=int, default=30, help="turns per user (default 30)")
    p.add_argument("--concurrency", type=int, default=32, help="users active at once")
    p.add_argument("--history", type=int, default=20, help="items read per turn (limit)")
    p.add_argument("--hot-items", type=int, default=50, help="hot window per session")
    p.add_argument(
        "--write-mode", choices=["through", "behind"], default="behind", help="default: behind"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    store = store_from_args(
        args,
        write_mode=args.write_mode,
        hot_items=args.hot_items,
        create_tables=True,
    )
    if not args.json:
        print(
            f"tiered-session demo: {args.sessions} sessions x {args.turns} turns, "
            f"write_mode={args.write_mode}, redis={redact_url(args.redis_url)}, "
            f"sql={redact_url(args.sql_url)}"
        )
    result = asyncio.run(_run(store, args))
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        _report(result)
    return 0 if result.sessions_mismatched == 0 else 1


async def _run(store: TieredStore, args: argparse.Namespace) -> DemoResult:
    async with store:
        return await run_demo(
            store,
            sessions=args.sessions,
            turns=args.turns,
            concurrency=args.concurrency,
            history=args.history,
            progress=Progress(args.sessions * args.turns, "turns"),
        )


async def run_demo(
    store: TieredStore,
    *,
    sessions: int = 100,
    turns: int = 30,
    concurrency: int = 32,
    history: int = 20,
    progress: Progress | None = None,
    run_id: str | None = None,
) -> DemoResult:
    """Run the workload on ``store`` and verify every session afterwards."""
    run_id = run_id or f"demo-{random.getrandbits(32):08x}"
    ids = [f"{run_id}-{i}" for i in range(sessions)]
    expected: dict[str, list[Any]] = {sid: [] for sid in ids}
    gate = asyncio.Semaphore(max(1, concurrency))
    bad_reads = 0
    lags: list[float] = []
    rng = random.Random(7)
    evict_every = max(1, (sessions * turns) // 20)
    counter = 0

    async def user(n: int, sid: str) -> None:
        nonlocal bad_reads, counter
        session = store.session(sid)
        async with gate:
            for t in range(turns):
                got = await session.get_items(limit=history)
                if got != expected[sid][-history:]:
                    bad_reads += 1
                new = turn_items(n, t)
                await session.add_items(new)
                expected[sid].extend(new)
                counter += 1
                if counter % evict_every == 0:
                    await store.evict(ids[rng.randrange(len(ids))])
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
    await asyncio.gather(*(user(n, sid) for n, sid in enumerate(ids)))
    seconds = time.perf_counter() - start
    stop.set()
    await sampler
    if progress is not None:
        progress.close()
    final_lag = (await store.stats())["flush_lag_seconds"]
    await store.flush()
    after = await store.stats()

    mismatched = 0
    for sid in ids:
        hot = await store.session(sid).get_items()
        sql = [decode_item(d) for _, d in await store.sql.latest(sid, None, None)]
        if hot != expected[sid] or sql != expected[sid]:
            mismatched += 1
    mismatched += min(bad_reads, sessions)
    hits = after["cache_hits"] - before["cache_hits"]
    misses = after["cache_misses"] - before["cache_misses"]
    cold = after["cold_reads"] - before["cold_reads"]
    reads = hits + cold
    return DemoResult(
        sessions=sessions,
        turns=sessions * turns,
        write_mode=store.config.write_mode,
        seconds=round(seconds, 3),
        turns_per_second=round(sessions * turns / seconds, 1),
        cache_hit_ratio=round(hits / reads, 4) if reads else 1.0,
        cold_reads=cold,
        cache_misses=misses,
        flush_lag_max_seconds=max([*lags, final_lag]),
        flush_lag_final_seconds=final_lag,
        sessions_verified=sessions - mismatched,
        sessions_mismatched=mismatched,
    )


def _report(r: DemoResult) -> None:
    rows = [
        ("turns", f"{r.turns} in {r.seconds:.2f} s"),
        ("turns/s", f"{r.turns_per_second:,.0f}"),
        ("cache hit ratio", f"{r.cache_hit_ratio * 100:.1f} %"),
        ("cold reads", f"{r.cold_reads} (sessions loaded from SQL: {r.cache_misses})"),
        (
            "flush lag",
            f"max {r.flush_lag_max_seconds:.3f} s, at end {r.flush_lag_final_seconds:.3f} s",
        ),
        (
            "verified",
            f"{r.sessions_verified}/{r.sessions} sessions identical in Redis and SQL",
        ),
    ]
    for name, value in rows:
        print(f"  {name:<16} {value}")
