"""Finishing write-through operations whose writer vanished, as SQL says they ended.

A write-through add, pop or clear is recorded in its shard's in-flight hash
while its SQL transaction runs. If the writer dies (or its last Redis call never
arrives), a flusher finds the record after ``inflight_timeout`` and looks in SQL
whether the operation landed: an add whose rows are all there is completed (its
pending entries are kept), a pop whose row is gone is completed, a clear that
left no rows is completed; anything else is rolled back in Redis, exactly as
the writer's own failure path would have done.

Example:
    >>> import asyncio
    >>> from tiered_session import TieredStore
    >>> async def main():
    ...     async with TieredStore.from_url() as store:
    ...         recovery = Recovery(store.hot, store.sql, store.config, store.counters)
    ...         return await recovery.recover(b"p|1|gone")
    >>> asyncio.run(main())
    False
"""

from __future__ import annotations

import logging
import time
from typing import cast

from .._codec import envelope
from .._config import StoreConfig
from .._stats import Counters
from ..cold.catalog import Catalog
from ..cold.tier import SqlTier
from ..hot.keys import ShardKeys
from ..hot.scripts import OpKind
from ..hot.tier import HotTier

__all__ = ["Recovery"]

log = logging.getLogger("tiered_session.flusher")

#: bounds of the pause between two looks at the in-flight hashes (seconds)
_LOOK_EVERY = (0.2, 5.0)
_NAMES = {OpKind.ADD: "add", OpKind.POP: "pop", OpKind.CLEAR: "clear"}


class Recovery:
    """Finds in-flight operations older than ``inflight_timeout`` and finishes them."""

    def __init__(self, hot: HotTier, sql: SqlTier, config: StoreConfig, counters: Counters) -> None:
        self.hot = hot
        self.sql = sql
        self.catalog = Catalog(sql)
        self.window = config.hot_items
        self.timeout = config.inflight_timeout
        self.counters = counters
        self._next = 0.0

    def due(self) -> bool:
        """Whether :meth:`sweep` would look now."""
        return time.monotonic() >= self._next

    async def sweep(self, shards: list[ShardKeys]) -> None:
        """Recover what outlived its writer in these shards (at most every few seconds)."""
        now = time.monotonic()
        if now < self._next or not shards:
            return
        self._next = now + min(_LOOK_EVERY[1], max(_LOOK_EVERY[0], self.timeout / 4))
        cutoff = int((time.time() - self.timeout) * 1000)
        for sh in shards:
            entries = cast(
                dict[bytes, bytes], await self.hot.call(self.hot.redis.hgetall(sh.inflight))
            )
            for op_id, started in entries.items():
                if int(started) <= cutoff:
                    await self.recover(op_id)

    async def recover(self, op_id: bytes) -> bool:
        """Finish one in-flight operation; False if it had settled meanwhile."""
        kind = op_id[:1]
        parts = op_id.split(b"|", 3 if kind == OpKind.ADD else 2)
        sid = parts[-1].decode("utf-8", "surrogatepass")
        seq = int(parts[1])
        k = self.hot.keys.session(sid)
        envs: list[bytes] = []  # a pop that did not land: the item to put back
        if kind == OpKind.ADD:
            landed = await self.catalog.add_landed(sid, seq, int(parts[2]))
        elif kind == OpKind.POP:
            data = await self.catalog.row_data(sid, seq)
            landed = data is None
            if data is not None:
                envs = [envelope(seq, data.encode())]
        else:
            reserved = [int(x) for x in await self.hot.call(self.hot.redis.smembers(k.reserved))]
            landed = await self.catalog.clear_landed(sid, seq, reserved)
        if not await self.hot.recover(k, [op_id, sid, int(landed), self.window, *envs]):
            return False
        self.counters.recovered_operations += 1
        log.warning(
            "write-through %s on session %r outlived its writer; %s it as SQL shows",
            _NAMES.get(kind, "clear"),
            sid,
            "completed" if landed else "rolled back",
        )
        return True
