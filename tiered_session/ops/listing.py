"""Listing sessions across both tiers, newest activity first, one chunk at a time.

Sessions are found in both tiers: the sessions table in SQL, and a per-shard
index in Redis (a sorted set of session ids by last write time) that also
covers sessions whose items are still only in the write-behind outbox. A
k-way merge of the shards' indexes and the table reads each ``chunk``
entries at a time, so the first pages cost little however many sessions
there are. The first chunk of every index is read in one pipeline (on a
Redis Cluster: one round trip per master, all at once).

Example:
    >>> import asyncio
    >>> from tiered_session import TieredStore
    >>> async def main():
    ...     async with TieredStore.from_url(write_mode="behind") as store:
    ...         await store.session("user-1").add_items([{"role": "user", "content": "hi"}])
    ...         lister = SessionLister(store.hot, store.sql)
    ...         return [info["session_id"] async for info in lister.iterate()]
    >>> asyncio.run(main())
    ['user-1']
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from typing import TypedDict, cast

from .._time import EPOCH, from_ms
from ..cold.catalog import Catalog
from ..cold.tier import SqlTier
from ..hot.keys import BRANCH_SEP
from ..hot.scripts import Field
from ..hot.tier import HotTier

__all__ = ["CHUNK", "SessionInfo", "SessionLister"]

#: entries read from each source at a time
CHUNK = 500


class SessionInfo(TypedDict):
    """One entry of ``TieredStore.list_sessions``."""

    session_id: str
    #: first write as recorded in SQL (None while only in the write-behind outbox)
    created_at: datetime | None
    #: last write (add, pop or clear), UTC: from the Redis session index, or
    #: from SQL for sessions written before the index existed or imported
    updated_at: datetime | None


class _Order:
    """Heap order of the merge: newest first, then session id descending."""

    __slots__ = ("at", "sid")

    def __init__(self, info: SessionInfo) -> None:
        self.at = info["updated_at"] or EPOCH
        self.sid = info["session_id"]

    def __lt__(self, other: _Order) -> bool:
        return (self.at, self.sid) > (other.at, other.sid)


class SessionLister:
    """Finds the sessions that hold items."""

    def __init__(self, hot: HotTier, sql: SqlTier) -> None:
        self.hot = hot
        self.sql = sql
        self.catalog = Catalog(sql)

    async def iterate(self, chunk: int = CHUNK) -> AsyncGenerator[SessionInfo, None]:
        """Yield sessions that hold items, newest activity first (ties: by id, descending).

        The histories of an advanced session's branches are not listed apart.
        """
        shards = self.hot.keys.all_shards()
        firsts = await self.hot.pipeline(
            [("zrevrange", (sh.index, 0, chunk - 1, True)) for sh in shards]  # withscores
        )
        sources = [
            self._indexed(sh.index, chunk, first) for sh, first in zip(shards, firsts, strict=True)
        ]
        sources.append(self._unindexed(chunk))
        heap: list[tuple[_Order, int, SessionInfo]] = []
        seen: set[str] = set()  # a flush between two pages can show a session twice
        try:
            for n, src in enumerate(sources):
                first = await anext(src, None)
                if first is not None:
                    heapq.heappush(heap, (_Order(first), n, first))
            while heap:
                _, n, info = heapq.heappop(heap)
                sid = info["session_id"]
                if sid not in seen and BRANCH_SEP not in sid:  # a branch is part of its session
                    seen.add(sid)
                    yield info
                nxt = await anext(sources[n], None)
                if nxt is not None:
                    heapq.heappush(heap, (_Order(nxt), n, nxt))
        finally:
            for src in sources:
                await src.aclose()

    async def _indexed(
        self, index: bytes, chunk: int, first: list[tuple[bytes, float]]
    ) -> AsyncGenerator[SessionInfo, None]:
        """Live sessions of one shard's index, newest write first (``first``: its first chunk)."""
        start = 0
        while True:
            entries = (
                first
                if start == 0
                else cast(
                    "list[tuple[bytes, float]]",
                    await self.hot.call(
                        self.hot.redis.zrevrange(index, start, start + chunk - 1, withscores=True)
                    ),
                )
            )
            if not entries:
                return
            start += len(entries)
            ids = [e[0].decode("utf-8", "surrogatepass") for e in entries]
            in_sql = await self.catalog.created_at(ids)
            live = await self.hot_has_items(ids)
            for sid, (_, score), hot in zip(ids, entries, live, strict=True):
                if hot is False or (hot is None and sid not in in_sql):
                    continue  # cleared (or deleted) since its last write
                yield SessionInfo(
                    session_id=sid, created_at=in_sql.get(sid), updated_at=from_ms(score)
                )

    async def _unindexed(self, chunk: int) -> AsyncGenerator[SessionInfo, None]:
        """Sessions known only to SQL (imported, or written before the index), newest first."""
        offset = 0
        while True:
            rows = await self.catalog.page(offset, chunk)
            if not rows:
                return
            offset += len(rows)
            keys = self.hot.keys
            scores = await self.hot.pipeline(
                [("zscore", (keys.session(sid).shard.index, sid)) for sid, _, _ in rows]
            )
            for (sid, created, updated), score in zip(rows, scores, strict=True):
                if score is None:
                    yield SessionInfo(session_id=sid, created_at=created, updated_at=updated)

    async def hot_has_items(self, ids: Sequence[str]) -> list[bool | None]:
        """Per session: whether Redis says it has items (None: not in Redis)."""
        commands: list[tuple[str, tuple[object, ...]]] = []
        for sid in ids:
            k = self.hot.keys.session(sid)
            commands += [("hmget", (k.meta, [Field.WHOLE])), ("llen", (k.items,))]
        res = await self.hot.pipeline(commands)
        out: list[bool | None] = []
        for (whole,), length in zip(res[0::2], res[1::2], strict=True):
            if whole is None or not length:
                out.append(None)
            else:
                out.append(whole == b"0" or int(length) > 1)  # beyond the list's header
        return out
