"""Loading a session's newest items from SQL into Redis: warm-ups and refills.

Example:
    >>> import asyncio
    >>> from tiered_session import TieredStore
    >>> async def main():
    ...     async with TieredStore.from_url(write_mode="behind") as store:
    ...         await store.session("s").add_items([{"n": 1}])
    ...         await store.evict("s")                      # only SQL has it now
    ...         return await store.session("s").get_items()  # warmed on this read
    >>> asyncio.run(main())
    [{'n': 1}]
"""

from __future__ import annotations

from .._codec import envelope
from .._config import StoreConfig
from .._errors import StorageUnavailableError
from .._stats import Counters
from ..cold.tier import SqlTier
from ..hot.keys import SessionKeys
from ..hot.scripts import Status
from ..hot.tier import HotTier
from .expiry import ExpiryClock

__all__ = ["WARM_ATTEMPTS", "Warmer"]

#: installs tried before giving up on a session evicted again and again meanwhile
WARM_ATTEMPTS = 20


class Warmer:
    """Installs SQL snapshots of sessions in Redis (first writer wins)."""

    def __init__(
        self,
        hot: HotTier,
        sql: SqlTier,
        config: StoreConfig,
        counters: Counters,
        expiry: ExpiryClock,
    ) -> None:
        self.hot = hot
        self.sql = sql
        self.window = config.hot_items
        self.counters = counters
        self.expiry = expiry

    async def _window(self, sid: str, before: int | None) -> tuple[list[tuple[int, str]], bool]:
        """The newest ``window`` rows below ``before``, and whether they are all of them."""
        rows = await self.sql.latest(sid, before, self.window + 1)
        full = len(rows) <= self.window
        return (rows if full else rows[1:]), full

    async def warm(self, k: SessionKeys) -> None:
        """Load a session's newest items from SQL into Redis.

        The eviction generation is read before SQL: if the session is evicted
        while SQL is read (a write may have landed in between), the snapshot is
        not installed and SQL is read again.
        """
        self.counters.cache_misses += 1
        for _ in range(WARM_ATTEMPTS):
            gen = await self.hot.call(self.hot.redis.get(k.gen)) or b"0"
            rows, full = await self._window(k.session_id, None)
            n = rows[-1][0] if rows else 0
            floor = rows[0][0] if rows else n + 1
            envs = [envelope(q, d.encode()) for q, d in rows]
            status = await self.hot.warm(k, [n, floor, int(full), self.expiry.ttl_ms, gen, *envs])
            if status == Status.LIST_LOST:
                raise StorageUnavailableError(
                    f"session {k.session_id!r}: its hot list is gone from Redis while writes "
                    "are pending (was it evicted by a maxmemory policy?). Run Redis with "
                    "maxmemory-policy noeviction (or volatile-*: pending keys carry no expiry)"
                )
            if status == Status.META_LOST:
                raise StorageUnavailableError(
                    f"session {k.session_id!r}: its metadata is gone from Redis while its hot "
                    "list holds writes not in SQL yet (evicted by a maxmemory policy?). Refused "
                    "until a flusher has moved them to SQL; run Redis with maxmemory-policy "
                    "noeviction (or volatile-*: pending keys carry no expiry)"
                )
            if status == Status.OK:  # installed with a fresh expiry
                self.expiry.refreshed(k)
            if status != Status.STALE_SNAPSHOT:
                return
        raise StorageUnavailableError(
            f"session {k.session_id!r} was evicted {WARM_ATTEMPTS} times while loading it"
        )

    async def refill(self, k: SessionKeys, floor: int) -> None:
        """Move older items from SQL below the floor into the empty hot list."""
        rows, full = await self._window(k.session_id, floor)
        new_floor = rows[0][0] if rows else floor
        envs = [envelope(q, d.encode()) for q, d in reversed(rows)]
        self.counters.cold_reads += 1
        await self.hot.refill(k, [floor, new_floor, int(full), *envs])
