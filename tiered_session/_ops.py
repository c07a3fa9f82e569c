"""Session-management operations of a TieredStore (list, stats, delete, cleanup, export/import).

Sessions are found in both tiers: the sessions table in SQL, and a per-shard
index in Redis (a sorted set of session ids by last write time) that also
covers sessions whose items are still only in the write-behind outbox.

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
import heapq
import time
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast

from sqlalchemy import LargeBinary, exists, func, select
from sqlalchemy import cast as sql_cast

from ._config import validate_session_id
from ._errors import InvalidInputError

if TYPE_CHECKING:
    from ._progress import Progress
    from ._store import TieredStore
    from ._transfer import ImportReport

__all__ = ["SessionInfo", "SessionOpsMixin", "SessionStats"]


class SessionInfo(TypedDict):
    """One entry of :meth:`SessionOpsMixin.list_sessions`."""

    session_id: str
    #: first write as recorded in SQL (None while only in the write-behind outbox)
    created_at: datetime | None
    #: last write (add, pop or clear), UTC: from the Redis session index, or
    #: from SQL for sessions written before the index existed or imported
    updated_at: datetime | None


class SessionStats(TypedDict):
    """What :meth:`SessionOpsMixin.session_stats` returns."""

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


def _utc(value: Any) -> datetime | None:
    """SQL timestamps are stored without a zone, in UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    dt: datetime = value
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


class _Key:
    """Heap order of the merge: newest first, then session id descending."""

    __slots__ = ("at", "sid")

    def __init__(self, info: SessionInfo) -> None:
        self.at = info["updated_at"] or _EPOCH
        self.sid = info["session_id"]

    def __lt__(self, other: _Key) -> bool:
        return (self.at, self.sid) > (other.at, other.sid)


def _from_ms(ms: float | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


_EPOCH = datetime.min.replace(tzinfo=UTC)


class SessionOpsMixin:
    """Operations over many sessions; mixed into :class:`TieredStore`."""

    def _as_store(self) -> TieredStore:
        return cast("TieredStore", self)

    # ------------------------------------------------------------------ listing
    async def _all_sessions(self) -> list[SessionInfo]:
        return [info async for info in self._iter_sessions()]

    async def _iter_sessions(self, chunk: int = 500) -> AsyncGenerator[SessionInfo, None]:
        """Yield sessions that hold items, newest activity first (ties: by id, descending).

        A k-way merge of the shards' session indexes and the sessions table, each
        read ``chunk`` entries at a time: the first pages cost little however
        many sessions there are.
        """
        s = self._as_store()
        await s._ready()
        sources = [self._indexed(sh.index, chunk) for sh in s.keys.all_shards()]
        sources.append(self._unindexed(chunk))
        heap: list[tuple[_Key, int, SessionInfo]] = []
        seen: set[str] = set()  # a flush between two pages can show a session twice
        try:
            for n, src in enumerate(sources):
                first = await anext(src, None)
                if first is not None:
                    heapq.heappush(heap, (_Key(first), n, first))
            while heap:
                _, n, info = heapq.heappop(heap)
                if info["session_id"] not in seen:
                    seen.add(info["session_id"])
                    yield info
                nxt = await anext(sources[n], None)
                if nxt is not None:
                    heapq.heappush(heap, (_Key(nxt), n, nxt))
        finally:
            for src in sources:
                await src.aclose()

    async def _indexed(self, index: bytes, chunk: int) -> AsyncGenerator[SessionInfo, None]:
        """Live sessions of one shard's index, by last write time descending."""
        s = self._as_store()
        sq, m = s.sql.sessions, s.sql.messages
        start = 0
        while True:
            entries = cast(
                "list[tuple[bytes, float]]",
                await s._redis_call(
                    s.redis.zrevrange(index, start, start + chunk - 1, withscores=True)
                ),
            )
            if not entries:
                return
            start += len(entries)
            ids = [e[0].decode("utf-8", "surrogatepass") for e in entries]
            stmt = select(sq.c.session_id, sq.c.created_at).where(
                sq.c.session_id.in_(ids), exists().where(m.c.session_id == sq.c.session_id)
            )
            async with s.sql.begin() as conn:
                in_sql = {r[0]: _utc(r[1]) for r in (await conn.execute(stmt)).all()}
            live = await self._hot_has_items(ids)
            for sid, (_, score), hot in zip(ids, entries, live, strict=True):
                if hot is False or (hot is None and sid not in in_sql):
                    continue  # cleared (or deleted) since its last write
                yield SessionInfo(
                    session_id=sid, created_at=in_sql.get(sid), updated_at=_from_ms(score)
                )

    async def _unindexed(self, chunk: int) -> AsyncGenerator[SessionInfo, None]:
        """Sessions known only to SQL (imported, or written before the index), newest first."""
        s = self._as_store()
        sq, m = s.sql.sessions, s.sql.messages
        stmt = (
            select(sq.c.session_id, sq.c.created_at, sq.c.updated_at)
            .where(exists().where(m.c.session_id == sq.c.session_id))
            .order_by(sq.c.updated_at.desc(), sq.c.session_id.desc())
            .limit(chunk)
        )
        offset = 0
        while True:
            async with s.sql.begin() as conn:
                rows = (await conn.execute(stmt.offset(offset))).all()
            if not rows:
                return
            offset += len(rows)
            pipe = s.redis.pipeline(transaction=False)
            for r in rows:
                pipe.zscore(s.keys.session(r[0]).shard.index, r[0])
            scores = await s._redis_call(pipe.execute())
            for r, score in zip(rows, scores, strict=True):
                if score is None:
                    yield SessionInfo(session_id=r[0], created_at=_utc(r[1]), updated_at=_utc(r[2]))

    async def _hot_has_items(self, ids: list[str]) -> list[bool | None]:
        """Per session: whether Redis says it has items (None: not in Redis)."""
        s = self._as_store()
        pipe = s.redis.pipeline(transaction=False)
        for sid in ids:
            k = s.keys.session(sid)
            pipe.hmget(k.meta, ["full"])
            pipe.llen(k.items)
        res = await s._redis_call(pipe.execute())
        out: list[bool | None] = []
        for (full,), length in zip(res[0::2], res[1::2], strict=True):
            if full is None or not length:
                out.append(None)
            else:
                out.append(full == b"0" or int(length) > 1)  # beyond the list's header
        return out

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
        page: list[SessionInfo] = []
        async with contextlib.aclosing(self._iter_sessions(min(500, offset + limit))) as it:
            async for info in it:
                if offset:
                    offset -= 1
                    continue
                page.append(info)
                if len(page) == limit:
                    break
        return page

    async def session_exists(self, session_id: str) -> bool:
        """Return whether the session holds at least one item (in either tier)."""
        s = self._as_store()
        sid = validate_session_id(session_id)
        await s._ready()
        (live,) = await self._hot_has_items([sid])
        if live is not None:
            return live
        m = s.sql.messages
        async with s.sql.begin() as conn:
            row = (await conn.execute(select(m.c.id).where(m.c.session_id == sid).limit(1))).first()
        return row is not None

    async def session_stats(self, session_id: str) -> SessionStats:
        """Return item counts (total, hot, unflushed), size and times of one session."""
        s = self._as_store()
        sid = validate_session_id(session_id)
        await s._ready()
        k = s.keys.session(sid)
        pipe = s.redis.pipeline(transaction=False)
        pipe.hmget(k.meta, ["full", "f", "w", "p", "h", "io"])
        pipe.lrange(k.items, 1, -1)  # after the header
        pipe.zscore(k.shard.index, sid)
        meta, envs, score = await s._redis_call(pipe.execute())
        full, floor, watermark, pending, n_reserved, io = meta
        hot = unflushed = hot_bytes = 0
        if full is not None:
            for env in envs:
                seq_text, _, data = env.lstrip(b"~").partition(b"|")  # "~": pending
                hot += 1
                hot_bytes += len(data)
                if int(pending or 0) > 0 and int(seq_text) > int(watermark or 0):
                    unflushed += 1
        m, sq = s.sql.messages, s.sql.sessions
        if s.sql.dialect == "sqlite":
            size = func.length(sql_cast(m.c.message_data, LargeBinary))
        else:
            size = func.octet_length(m.c.message_data)
        count = select(func.count(), func.coalesce(func.sum(size), 0))
        count = count.where(m.c.session_id == sid)
        if full is not None:
            # Redis holds every item from the floor up; SQL holds the older ones.
            count = count.where(m.c.seq < int(floor))
        times = select(sq.c.created_at, sq.c.updated_at).where(sq.c.session_id == sid)
        cold = cold_bytes = 0
        async with s.sql.begin() as conn:
            if full != b"1":
                cold, cold_bytes = (await conn.execute(count)).one()
            row = (await conn.execute(times)).first()
        created, updated = (_utc(row[0]), _utc(row[1])) if row is not None else (None, None)
        items = hot + int(cold)
        return SessionStats(
            session_id=sid,
            exists=items > 0,
            items=items,
            hot_items=hot,
            unflushed_items=unflushed,
            pending_operations=int(pending or 0) + int(n_reserved or 0) + int(io or 0),
            bytes=hot_bytes + int(cold_bytes),
            created_at=created,
            updated_at=_from_ms(float(score)) if score is not None else updated,
        )

    # ------------------------------------------------------------------ deletion
    async def delete_session(self, session_id: str) -> bool:
        """Delete a session from both tiers; return whether it held items.

        Ordered after every write accepted before the call (its pending
        write-behind operations are flushed first), so nothing reappears.
        """
        s = self._as_store()
        sid = validate_session_id(session_id)
        existed = await self.session_exists(sid)
        k = s.keys.session(sid)
        await s.clear_session(k)
        await s.flush()
        await s._script(
            "drop",
            [k.meta, k.items, k.reserved, k.shard.index, k.gen],
            [sid, int(time.time() * 1000)],
        )
        return existed

    async def cleanup(
        self,
        older_than: timedelta,
        *,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> int:
        """Delete every session idle for longer than ``older_than`` from both tiers.

        A session written meanwhile, or with writes not yet in SQL, is kept.

        Returns:
            How many sessions were deleted (with ``dry_run``: would be).
        """
        if not isinstance(older_than, timedelta) or older_than < timedelta(0):
            raise InvalidInputError(f"older_than must be a timedelta >= 0, got {older_than!r}")
        s = self._as_store()
        cutoff = datetime.now(UTC) - older_than
        cutoff_ms = int(cutoff.timestamp() * 1000)
        idle = [
            i["session_id"]
            for i in await self._all_sessions()
            if i["updated_at"] is None or i["updated_at"] < cutoff
        ]
        if dry_run:
            return len(idle)
        if progress is not None:
            progress.total = len(idle)
        m = s.sql.messages
        deleted = 0
        for sid in idle:
            k = s.keys.session(sid)
            async with s.sql.begin() as conn:
                top = (
                    await conn.execute(select(func.max(m.c.seq)).where(m.c.session_id == sid))
                ).scalar()
            res = await s._script(
                "drop", [k.meta, k.items, k.reserved, k.shard.index, k.gen], [sid, cutoff_ms]
            )
            if int(res[0]) == 1:
                upto = int(res[1]) if int(res[1]) >= 0 else int(top or 0)
                async with s.sql.begin() as conn:
                    await s.sql.clear(conn, sid, upto)
                deleted += 1
            if progress is not None:
                progress.advance()
        return deleted

    # ------------------------------------------------------------------ backup
    async def export_jsonl(
        self,
        path: str | Path,
        session_ids: list[str] | None = None,
        *,
        progress: Progress | None = None,
    ) -> int:
        """Write sessions (all, or ``session_ids``) to a JSON Lines file; return how many.

        Everything accepted before the call is flushed to SQL first. Each
        session is a header line followed by one line per item, in order.
        """
        from ._transfer import export_jsonl

        return await export_jsonl(self._as_store(), Path(path), session_ids, progress)

    async def import_jsonl(
        self, path: str | Path, *, progress: Progress | None = None
    ) -> ImportReport:
        """Restore sessions written by :meth:`export_jsonl` (idempotent).

        A session that already exists with the same items is left as it is; one
        that exists with different items is reported as a conflict and skipped.
        """
        from ._transfer import import_jsonl

        return await import_jsonl(self._as_store(), Path(path), progress)

    async def import_sdk_sqlite(
        self,
        path: str | Path,
        *,
        sessions_table: str = "agent_sessions",
        messages_table: str = "agent_messages",
        progress: Progress | None = None,
    ) -> ImportReport:
        """Import every session of an SDK ``SQLiteSession``/``AsyncSQLiteSession`` file.

        Items keep the SDK's order; rows that are not valid JSON are skipped
        (the SDK skips them too) and counted. Idempotent, like :meth:`import_jsonl`.
        """
        from ._transfer import import_sdk_sqlite

        return await import_sdk_sqlite(
            self._as_store(),
            Path(path),
            sessions_table=sessions_table,
            messages_table=messages_table,
            progress=progress,
        )
