"""What the tables hold about whole sessions: listing, counts, times, restores, recovery checks.

Example:
    >>> import asyncio
    >>> from tiered_session import TieredStore
    >>> async def main():
    ...     async with TieredStore.from_url(write_mode="through") as store:
    ...         await store.session("s").add_items([{"n": 1}])
    ...         catalog = Catalog(store.sql)
    ...         return await catalog.has_items("s"), await catalog.max_seq("s")
    >>> asyncio.run(main())
    (True, 1)
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import LargeBinary, Table, exists, func, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.asyncio import AsyncConnection

from .._time import naive_utc, utc

__all__ = ["Catalog", "Tier"]


class Tier(Protocol):
    """What the catalog uses of its SQL tier (typed here, so neither imports the other)."""

    dialect: str
    sessions: Table
    messages: Table

    def begin(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """Open a transaction."""
        ...

    def upsert(self, table: Any) -> Any:
        """The dialect's ``INSERT`` with ``ON CONFLICT`` support."""
        ...

    async def clear(
        self, conn: AsyncConnection, session_id: str, upto: int, keep: Sequence[int] = ()
    ) -> None:
        """Delete items up to ``upto`` (and the session row once empty)."""
        ...


class Catalog:
    """Queries over whole sessions, on the tables of one SQL tier."""

    def __init__(self, sql: Tier) -> None:
        self.sql = sql

    # ------------------------------------------------------------------ listing
    async def created_at(self, ids: Sequence[str]) -> dict[str, datetime | None]:
        """First-write times of those of ``ids`` that hold items in SQL."""
        sq, m = self.sql.sessions, self.sql.messages
        stmt = select(sq.c.session_id, sq.c.created_at).where(
            sq.c.session_id.in_(list(ids)), exists().where(m.c.session_id == sq.c.session_id)
        )
        async with self.sql.begin() as conn:
            return {r[0]: utc(r[1]) for r in (await conn.execute(stmt)).all()}

    async def page(
        self, offset: int, limit: int
    ) -> list[tuple[str, datetime | None, datetime | None]]:
        """Sessions holding items, newest update first (ties: id descending): one page."""
        sq, m = self.sql.sessions, self.sql.messages
        stmt = (
            select(sq.c.session_id, sq.c.created_at, sq.c.updated_at)
            .where(exists().where(m.c.session_id == sq.c.session_id))
            .order_by(sq.c.updated_at.desc(), sq.c.session_id.desc())
            .limit(limit)
            .offset(offset)
        )
        async with self.sql.begin() as conn:
            rows = (await conn.execute(stmt)).all()
        return [(r[0], utc(r[1]), utc(r[2])) for r in rows]

    async def has_items(self, session_id: str) -> bool:
        """Whether SQL holds at least one item of the session."""
        m = self.sql.messages
        stmt = select(m.c.id).where(m.c.session_id == session_id).limit(1)
        async with self.sql.begin() as conn:
            return (await conn.execute(stmt)).first() is not None

    async def branch_ids(self, session_id: str) -> list[str]:
        """The internal ids of a session's branch histories (``<id>`` U+001F ``<branch>``)."""
        sq = self.sql.sessions
        lo, hi = f"{session_id}\x1f", f"{session_id}\x20"  # the ids in between
        stmt = select(sq.c.session_id).where(sq.c.session_id > lo, sq.c.session_id < hi)
        async with self.sql.begin() as conn:
            return [str(r[0]) for r in (await conn.execute(stmt)).all()]

    # ------------------------------------------------------------------ one session
    def _count_stmt(self, session_id: str, below: int | None) -> Any:
        m = self.sql.messages
        if self.sql.dialect == "sqlite":
            size = func.length(sql_cast(m.c.message_data, LargeBinary))
        else:
            size = func.octet_length(m.c.message_data)
        stmt = select(func.count(), func.coalesce(func.sum(size), 0)).where(
            m.c.session_id == session_id
        )
        return stmt if below is None else stmt.where(m.c.seq < below)

    def _times_stmt(self, session_id: str) -> Any:
        sq = self.sql.sessions
        return select(sq.c.created_at, sq.c.updated_at).where(sq.c.session_id == session_id)

    async def count_and_bytes(self, session_id: str, below: int | None) -> tuple[int, int]:
        """Items of the session (with ``seq < below`` when given) and their JSON's size."""
        async with self.sql.begin() as conn:
            count, total = (await conn.execute(self._count_stmt(session_id, below))).one()
        return int(count), int(total)

    async def times(self, session_id: str) -> tuple[Any, Any] | None:
        """(created_at, updated_at) as stored, or None when the session has no row."""
        async with self.sql.begin() as conn:
            row = (await conn.execute(self._times_stmt(session_id))).first()
        return None if row is None else (row[0], row[1])

    async def summary(
        self, session_id: str, below: int | None, *, count: bool
    ) -> tuple[int, int, tuple[Any, Any] | None]:
        """:meth:`count_and_bytes` (when ``count``, else zeros) and :meth:`times`, in one go."""
        items = total = 0
        async with self.sql.begin() as conn:
            if count:
                items, total = (await conn.execute(self._count_stmt(session_id, below))).one()
            row = (await conn.execute(self._times_stmt(session_id))).first()
        return int(items), int(total), None if row is None else (row[0], row[1])

    async def max_seq(self, session_id: str) -> int:
        """The session's highest seq in SQL (0 when it has none)."""
        m = self.sql.messages
        stmt = select(func.max(m.c.seq)).where(m.c.session_id == session_id)
        async with self.sql.begin() as conn:
            return int((await conn.execute(stmt)).scalar() or 0)

    async def clear_upto(self, session_id: str, upto: int) -> None:
        """Delete the session's items up to ``upto`` (and its row once empty)."""
        async with self.sql.begin() as conn:
            await self.sql.clear(conn, session_id, upto)

    async def restore(
        self, session_id: str, datas: Sequence[str], created_at: Any, updated_at: Any
    ) -> None:
        """Write a whole session (seqs 1..n) into an empty slot, in one transaction."""
        sq, m = self.sql.sessions, self.sql.messages
        row: dict[str, Any] = {"session_id": session_id}
        for name, value in (("created_at", created_at), ("updated_at", updated_at)):
            if value is not None:
                row[name] = naive_utc(value)
        touch = self.sql.upsert(sq).values(row)
        touch = touch.on_conflict_do_nothing(index_elements=[sq.c.session_id])
        async with self.sql.begin() as conn:
            await conn.execute(touch)
            await conn.execute(
                self.sql.upsert(m),
                [
                    {"session_id": session_id, "seq": i, "message_data": d}
                    for i, d in enumerate(datas, 1)
                ],
            )

    # ------------------------------------------------------------------ recovery checks
    async def add_landed(self, session_id: str, first: int, count: int) -> bool:
        """Whether every row of a write-through add (seqs ``first``...) is in SQL."""
        m = self.sql.messages
        stmt = select(func.count()).where(
            m.c.session_id == session_id, m.c.seq >= first, m.c.seq < first + count
        )
        async with self.sql.begin() as conn:
            return await conn.scalar(stmt) == count

    async def row_data(self, session_id: str, seq: int) -> str | None:
        """The JSON of one row, or None when it is gone (a pop landed)."""
        m = self.sql.messages
        stmt = select(m.c.message_data).where(m.c.session_id == session_id, m.c.seq == seq)
        async with self.sql.begin() as conn:
            data: str | None = await conn.scalar(stmt)
        return data

    async def clear_landed(self, session_id: str, upto: int, reserved: Sequence[int]) -> bool:
        """Whether a clear up to ``upto`` left no rows (but the ``reserved`` seqs)."""
        m = self.sql.messages
        cond = [m.c.session_id == session_id, m.c.seq <= upto]
        if reserved:
            cond.append(m.c.seq.not_in(list(reserved)))
        async with self.sql.begin() as conn:
            return not await conn.scalar(select(func.count()).where(*cond))
