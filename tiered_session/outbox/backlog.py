"""Backlog figures read from Redis: entries not yet in SQL, their age, dead letters, flushers.

Example:
    >>> import asyncio
    >>> from tiered_session.hot.connection import embedded_redis
    >>> from tiered_session.hot.keys import KeySpace
    >>> from tiered_session.hot.tier import HotTier
    >>> async def main():
    ...     async with embedded_redis() as redis:
    ...         return await read_backlog(HotTier(redis, KeySpace("doc", shards=2)))
    >>> asyncio.run(main())
    Backlog(entries=0, lag_seconds=0.0, dead_letters=0, live_flushers=0)
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from .._stats import Counters, StoreStats
from .._time import now_ms
from ..hot.tier import HotTier

__all__ = ["Backlog", "read_backlog", "store_stats"]


class Backlog(NamedTuple):
    """The outbox as Redis sees it, global to the key prefix."""

    #: outbox entries not yet committed to SQL
    entries: int
    #: age of the oldest of them
    lag_seconds: float
    dead_letters: int
    #: flushers that sent a heartbeat within their lease time
    live_flushers: int


async def read_backlog(hot: HotTier) -> Backlog:
    """Read the backlog of every shard in one pipelined round trip."""
    commands: list[tuple[str, tuple[Any, ...]]] = []
    for sh in hot.keys.all_shards():
        commands += [("xlen", (sh.outbox,)), ("xrange", (sh.outbox, "-", "+", 1))]
        commands.append(("xlen", (sh.dead,)))
    commands.append(("zcount", (hot.keys.flushers, now_ms(), "+inf")))
    res = await hot.pipeline(commands)
    live = int(res.pop())
    oldest = [int(r[0][0].split(b"-")[0]) for r in res[1::3] if r]
    lag = max(0.0, time.time() - min(oldest) / 1000) if oldest else 0.0
    return Backlog(sum(res[0::3]), round(lag, 3), sum(res[2::3]), live)


async def store_stats(hot: HotTier, counters: Counters, write_mode: str) -> StoreStats:
    """This process's counters plus the backlog figures read from Redis."""
    backlog = await read_backlog(hot)
    c = counters
    return StoreStats(
        write_mode=write_mode,
        cache_hits=c.cache_hits,
        cache_misses=c.cache_misses,
        cold_reads=c.cold_reads,
        degraded_reads=c.degraded_reads,
        corrupt_rows=c.corrupt_rows,
        items_added=c.items_added,
        flush_batches=c.flush_batches,
        flushed_entries=c.flushed_entries,
        flush_errors=c.flush_errors,
        ack_errors=c.ack_errors,
        recovered_operations=c.recovered_operations,
        backlog=backlog.entries,
        flush_lag_seconds=backlog.lag_seconds,
        dead_letters=backlog.dead_letters,
        live_flushers=backlog.live_flushers,
    )
