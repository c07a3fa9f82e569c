"""Session management: list, exists, per-session stats, delete, clean up idle sessions.

Example:
    >>> import asyncio
    >>> from tiered_session import TieredStore
    >>> async def main():
    ...     async with TieredStore.from_url(write_mode="behind") as store:
    ...         await store.session("user-1").add_items([{"role": "user", "content": "hi"}])
    ...         page = await store.list_sessions()
    ...         stats = await store.session_stats("user-1")
    ...         return [s["session_id"] for s in page], stats["items"]
    >>> asyncio.run(main())
    (['user-1'], 1)
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypedDict

from .._codec import settled, split_envelope
from .._config import validate_session_id
from .._errors import InvalidInputError
from .._progress import Progress
from .._time import from_ms, now_ms, utc
from ..cold.advanced import AdvancedSql, existing
from ..cold.catalog import Catalog
from ..cold.tier import SqlTier
from ..hot.keys import BRANCH_SEP, base_session_id
from ..hot.scripts import Field
from ..hot.tier import HotTier
from .listing import CHUNK, SessionInfo, SessionLister
from .writes import Writes

__all__ = ["Admin", "SessionInfo", "SessionStats"]


class SessionStats(TypedDict):
    """What ``TieredStore.session_stats`` returns."""

    session_id: str
    exists: bool
    #: items in the session (what ``get_items()`` would return)
    items: int
    #: items held in the Redis hot list
    hot_items: int
    #: items accepted in Redis but not yet committed to SQL
    unflushed_items: int
    #: write operations (adds, pops, clears) not yet settled in SQL
    pending_operations: int
    #: size of the items' stored JSON text
    bytes: int
    created_at: datetime | None
    updated_at: datetime | None


_STATS_FIELDS = [
    Field.WHOLE, Field.FLOOR, Field.IN_SQL, Field.BEHIND_OPS, Field.RESERVED_COUNT, Field.TAKES,
]  # fmt: skip


class Admin:
    """Operations over whole sessions."""

    def __init__(
        self,
        hot: HotTier,
        sql: SqlTier,
        writes: Writes,
        flush: Callable[[], Awaitable[None]],
        ready: Callable[[], Awaitable[None]],
    ) -> None:
        self.hot = hot
        self.sql = sql
        self.catalog = Catalog(sql)
        self.writes = writes
        self.lister = SessionLister(hot, sql)
        self._flush = flush
        self._ready = ready

    async def all_sessions(self) -> list[SessionInfo]:
        """Every session that holds items, newest activity first."""
        await self._ready()
        return [info async for info in self.lister.iterate()]

    async def list_sessions(self, limit: int = 100, offset: int = 0) -> list[SessionInfo]:
        """Return sessions that hold items, newest activity first, one page at a time.

        Includes sessions whose items are still only in the write-behind outbox.
        Merges the Redis session indexes and the SQL sessions table, reading
        about ``offset + limit`` entries of each shard.

        Args:
            limit: page size (at least 1).
            offset: sessions to skip (``offset=limit`` is the second page).
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidInputError(f"limit must be a positive int, got {limit!r}")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidInputError(f"offset must be an int >= 0, got {offset!r}")
        await self._ready()
        page: list[SessionInfo] = []
        async with contextlib.aclosing(self.lister.iterate(min(CHUNK, offset + limit))) as it:
            async for info in it:
                if offset:
                    offset -= 1
                    continue
                page.append(info)
                if len(page) == limit:
                    break
        return page

    async def session_exists(self, session_id: str) -> bool:
        """Return whether the session (or a branch's history) holds an item, in either tier."""
        sid = session_id
        validate_session_id(base_session_id(sid))
        await self._ready()
        (live,) = await self.lister.hot_has_items([sid])
        if live is not None:
            return live
        return await self.catalog.has_items(sid)

    async def session_stats(self, session_id: str) -> SessionStats:
        """Return item counts (total, hot, unflushed), size and times of one session."""
        sid = validate_session_id(session_id)
        await self._ready()
        k = self.hot.keys.session(sid)
        meta, envs, score = await self.hot.pipeline(
            [
                ("hmget", (k.meta, _STATS_FIELDS)),
                ("lrange", (k.items, 1, -1)),  # after the header
                ("zscore", (k.shard.index, sid)),
            ]
        )
        whole, floor, in_sql, behind, reserved, takes = meta
        hot = unflushed = hot_bytes = 0
        if whole is not None:
            for env in envs:
                seq, data = split_envelope(settled(env))
                hot += 1
                hot_bytes += len(data)
                if int(behind or 0) > 0 and seq > int(in_sql or 0):
                    unflushed += 1
        # Redis holds every item from the floor up; SQL holds the older ones.
        below = int(floor) if whole is not None else None
        cold, cold_bytes, times = await self.catalog.summary(sid, below, count=whole != b"1")
        created, updated = (utc(times[0]), utc(times[1])) if times else (None, None)
        items = hot + cold
        return SessionStats(
            session_id=sid,
            exists=items > 0,
            items=items,
            hot_items=hot,
            unflushed_items=unflushed,
            pending_operations=int(behind or 0) + int(reserved or 0) + int(takes or 0),
            bytes=hot_bytes + cold_bytes,
            created_at=created,
            updated_at=from_ms(float(score)) if score is not None else updated,
        )

    async def delete_session(self, session_id: str) -> bool:
        """Delete a session (with its branches and usage) from both tiers; whether it held items.

        Ordered after every write accepted before the call (its pending
        write-behind operations are flushed first), so nothing reappears.
        """
        sid = validate_session_id(session_id)
        existed = await self.session_exists(sid)
        adv = await existing(self.sql)
        ids = [sid, *await self._branch_histories(sid, adv)]
        for one in sorted(ids):
            await self.writes.clear_session(self.hot.keys.session(one))
        await self._flush()
        for one in sorted(ids):
            await self.hot.drop(self.hot.keys.session(one), now_ms())
        if adv is not None:
            await adv.forget(sid)
            await self.hot.command("DEL", self.hot.keys.session(sid).current)
        return existed

    async def cleanup(
        self, older_than: timedelta, *, dry_run: bool = False, progress: Progress | None = None
    ) -> int:
        """Delete every session idle for longer than ``older_than`` from both tiers.

        A session written meanwhile, or with writes not yet in SQL, is kept.

        Returns:
            How many sessions were deleted (with ``dry_run``: would be).
        """
        if not isinstance(older_than, timedelta) or older_than < timedelta(0):
            raise InvalidInputError(f"older_than must be a timedelta >= 0, got {older_than!r}")
        cutoff = datetime.now(UTC) - older_than
        cutoff_ms = int(cutoff.timestamp() * 1000)
        idle = [
            i["session_id"]
            for i in await self.all_sessions()
            if i["updated_at"] is None or i["updated_at"] < cutoff
        ]
        if dry_run:
            return len(idle)
        if progress is not None:
            progress.total = len(idle)
        deleted = 0
        adv = await existing(self.sql)
        for sid in idle:
            # An advanced session's branches first: one written since keeps the session.
            branches = await self._branch_histories(sid, adv)
            idle_branches = all([await self._drop_idle(b, cutoff_ms) for b in branches])
            if idle_branches and await self._drop_idle(sid, cutoff_ms):
                deleted += 1
                if adv is not None and branches:
                    await adv.forget(sid)
            if progress is not None:
                progress.advance()
        return deleted

    async def _drop_idle(self, sid: str, cutoff_ms: int) -> bool:
        """Drop a session (or a branch's history) unless written since ``cutoff_ms``."""
        top = await self.catalog.max_seq(sid)
        dropped, last = await self.hot.drop(self.hot.keys.session(sid), cutoff_ms)
        if dropped:
            await self.catalog.clear_upto(sid, last if last >= 0 else top)
        return bool(dropped)

    async def _branch_histories(self, sid: str, adv: AdvancedSql | None) -> list[str]:
        """The internal ids of an advanced session's branches (in SQL, or only in Redis yet)."""
        ids = set(await self.catalog.branch_ids(sid))
        if adv is not None:
            ids |= {f"{sid}{BRANCH_SEP}{b}" for b, _, _ in await adv.registry(sid) if b != "main"}
        return sorted(ids)
