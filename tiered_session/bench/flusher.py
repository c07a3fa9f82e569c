"""Flusher workloads: how fast the outbox drains into PostgreSQL, and how far it lags under load.

Example:
    >>> from tiered_session.bench.env import BenchEnv
    >>> from tiered_session.bench.sample import Sizes
    >>> FlushLag(Sizes(), BenchEnv(namespace="abc123", tmpdir="/tmp")).kind
    'lag'
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from tiered_session import Flusher
from tiered_session._workload import turn_items

from .env import Backend, BenchEnv
from .floors import AsyncpgFloor
from .sample import Sample, Sizes, check
from .tiered import TieredBehind
from .workload import Workload, check_sql, flatten

__all__ = ["FlushLag", "FlusherThroughput"]


class FlusherThroughput(Workload):
    """Items/s the flusher moves from the Redis outbox into PostgreSQL.

    The asyncpg row is the physical floor: the same rows by ``COPY``.
    """

    name = "flusher"
    title = "flusher: outbox -> PostgreSQL"
    unit = "item"
    kind = "throughput"

    def __init__(self, sizes: Sizes, env: BenchEnv) -> None:
        super().__init__(sizes, env)
        self.title = f"flusher: {sizes.flush_items:,} items -> PostgreSQL"

    def applies(self, b: Backend) -> bool:
        """Only the write-behind row and its floor, raw asyncpg."""
        return isinstance(b, TieredBehind | AsyncpgFloor)

    async def cell(self, b: Backend, rep: int, prepared: Any) -> Sample:
        """Fill the outbox untimed, time one flusher draining it, check the rows."""
        n_sessions = 200
        turns = self.sizes.flush_items // (3 * n_sessions) or 1
        sids = [f"flush-{rep}-{i}" for i in range(n_sessions)]
        batches = {sid: [turn_items(i, t) for t in range(turns)] for i, sid in enumerate(sids)}
        n_items = n_sessions * turns * 3
        if isinstance(b, AsyncpgFloor):
            return await _floor(b, sids, batches, n_items)
        assert isinstance(b, TieredBehind)
        store = b.flusher_store
        gate = asyncio.Semaphore(32)

        async def write(sid: str) -> None:
            s = store.session(sid)
            async with gate:
                for bt in batches[sid]:
                    await s.add_items(bt)

        await asyncio.gather(*(write(sid) for sid in sids))
        # The store runs no flusher of its own: this one finds the whole backlog waiting.
        flusher = Flusher(store)
        start = time.perf_counter()
        moved = await flusher.drain()
        seconds = time.perf_counter() - start
        await flusher.release()
        check(moved == n_sessions * turns, f"flusher moved {moved} entries")
        await check_sql(store, batches)
        return Sample([], n_items, seconds)


async def _floor(
    b: AsyncpgFloor, sids: list[str], batches: dict[str, list[list[Any]]], n_items: int
) -> Sample:
    """The same rows written by raw asyncpg with ``COPY``, one per batch a flusher would commit.

    The physical floor: no Redis, no decoding, no idempotence check, the
    fastest way asyncpg puts rows into PostgreSQL.
    """
    rows = [(sid, x) for sid in sids for bt in batches[sid] for x in bt]
    sid_col = [r[0] for r in rows]
    datas = [json.dumps(r[1], separators=(",", ":")) for r in rows]
    start = time.perf_counter()
    step = 1500  # the rows of one flusher batch: 500 entries of a 3-item turn
    for i in range(0, len(rows), step):
        await b.copy_rows(sid_col[i : i + step], datas[i : i + step])
    seconds = time.perf_counter() - start
    got = await b.session(sids[-1]).get_items()
    check(got == flatten(batches[sids[-1]]), "rows differ")
    return Sample([], n_items, seconds)


class FlushLag(Workload):
    """Age of the oldest unflushed entry, sampled under a steady write load."""

    name = "flushlag"
    title = "flush lag under 1,000 turns/s"
    unit = "turn"
    kind = "lag"

    def __init__(self, sizes: Sizes, env: BenchEnv) -> None:
        super().__init__(sizes, env)
        self.title = f"flush lag at {sizes.lag_rate:,} turns/s (p50/p99 = lag)"

    def applies(self, b: Backend) -> bool:
        """Only the write-behind row has a flush lag."""
        return isinstance(b, TieredBehind)

    async def cell(self, b: Backend, rep: int, prepared: Any) -> Sample:
        """Write at a steady rate while sampling the lag; check every row afterwards."""
        assert isinstance(b, TieredBehind)
        store = b.store
        rate, secs = self.sizes.lag_rate, self.sizes.lag_seconds
        n_sessions = 50
        sids = [f"lag-{rep}-{i}" for i in range(n_sessions)]
        sent: dict[str, list[Any]] = {sid: [] for sid in sids}
        period = n_sessions / rate  # each session is one user doing a turn every `period` s
        turns = max(1, int(secs / period))
        lags: list[int] = []
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                lags.append(int((await store.stats())["flush_lag_seconds"] * 1e9))
                await asyncio.sleep(0.01)

        async def user(i: int) -> None:
            sid = sids[i]
            s = store.session(sid)
            for t in range(turns):
                # Users are spread evenly over the period, so the load is steady, not bursts.
                delay = start + (t + i / n_sessions) * period - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                items = turn_items(i, t)
                await s.add_items(items)
                sent[sid].append(items)

        sampler = asyncio.create_task(sample())
        start = time.perf_counter()
        await asyncio.gather(*(user(i) for i in range(n_sessions)))
        seconds = time.perf_counter() - start
        k = n_sessions * turns
        stop.set()
        await sampler
        await store.flush(timeout=60)
        await check_sql(store, sent)
        return Sample(lags, k, seconds)
