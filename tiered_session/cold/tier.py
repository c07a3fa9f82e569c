"""The SQL tier: every statement the session path and the flusher run, in SQLAlchemy Core.

Example:
    >>> import asyncio
    >>> from tiered_session.cold.engine import embedded_engine
    >>> async def main():
    ...     engine = embedded_engine()
    ...     sql = SqlTier(engine, "agent_sessions", "agent_messages")
    ...     async with sql.begin() as conn:
    ...         await conn.run_sync(sql.metadata.create_all)
    ...     await sql.insert_new("s", 1, ['{"n":1}', '{"n":2}'])
    ...     rows = await sql.latest("s", None, 1)
    ...     await engine.dispose()
    ...     return rows
    >>> asyncio.run(main())
    [(2, '{"n":2}')]
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, exists, func, not_, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._errors import ConfigurationError, StorageUnavailableError
from .driver import Driver
from .engine import DIALECTS, LoopFreeLock, uses_asyncpg, writer_lock
from .errors import SeqCollisionError, describe
from .statements import Statements
from .tables import build_tables

__all__ = ["Op", "SqlTier"]

Row = tuple[str, int, str]  # (session_id, seq, json)


#: (session_id, seq) pairs per lookup of rows an idempotent insert skipped
_LOOKUP_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class Op:
    """One operation to apply to SQL, in order.

    ``kind`` is ``"a"`` (add ``rows``), ``"p"`` (delete ``seq``), ``"c"``
    (delete everything up to ``seq`` except ``keep``) or ``"x"`` (delete the
    ``count`` seqs from ``seq``: undo of a write-through add that failed).
    """

    kind: str
    session_id: str
    seq: int = 0
    rows: Sequence[tuple[int, str]] = ()
    keep: Sequence[int] = ()
    count: int = 0


class SqlTier:
    """All SQL the store runs, on one AsyncEngine."""

    def __init__(self, engine: AsyncEngine, sessions_table: str, messages_table: str) -> None:
        dialect = engine.dialect.name
        if dialect not in DIALECTS:
            raise ConfigurationError(
                f"unsupported SQL dialect {dialect!r}: use sqlite+aiosqlite or postgresql+asyncpg"
            )
        self.engine = engine
        self.dialect = dialect
        self.metadata, self.sessions, self.messages = build_tables(sessions_table, messages_table)
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        self._st = Statements(engine, self.sessions, self.messages)
        #: PostgreSQL through asyncpg: hot statements go to the driver directly
        self.direct = uses_asyncpg(engine)
        #: the asyncpg connections hot statements use (kept out of the pool)
        self.driver = Driver(engine, keep=self.direct)
        #: whether several transactions may write at once (SQLite allows one writer)
        self.parallel_writers = dialect != "sqlite"
        self._lock: LoopFreeLock | None = writer_lock(engine) if dialect == "sqlite" else None

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """Open a transaction; translate driver errors to StorageUnavailableError."""
        try:
            if self._lock is None:
                async with self.engine.begin() as conn:
                    yield conn
            else:
                async with self._lock, self.engine.begin() as conn:
                    yield conn
        except SQLAlchemyError as e:
            raise StorageUnavailableError(f"SQL operation failed: {describe(e)}") from e
        except OSError as e:
            raise StorageUnavailableError(f"SQL database unreachable: {describe(e)}") from e

    def upsert(self, table: Any) -> Any:
        """The dialect's ``INSERT`` with ``ON CONFLICT`` support, on ``table``."""
        return self._insert(table)

    async def close(self) -> None:
        """Return the connections kept for hot statements to the engine's pool."""
        await self.driver.close()

    async def limit_idle_transaction(self, conn: AsyncConnection, ms: int) -> None:
        """PostgreSQL: end this transaction if it stays idle for ``ms`` (no-op elsewhere)."""
        if self.dialect == "postgresql":
            setting = func.set_config("idle_in_transaction_session_timeout", str(ms), True)
            await conn.execute(select(setting))

    # ------------------------------------------------------------------ reads
    async def latest(
        self, session_id: str, before: int | None, limit: int | None
    ) -> list[tuple[int, str]]:
        """Return (seq, json) rows of a session in ascending seq order.

        Only rows with ``seq < before`` (when given); the newest ``limit``
        of them (when given), with the limit pushed into the query.
        """
        params: dict[str, Any] = {"sid": session_id}
        if before is not None:
            params["before"] = before
        if limit is not None:
            params["lim"] = limit
        stmt = self._st.latest(before is not None, limit is not None)
        if self.direct:
            text, args = self._st.driver_args(stmt, params)
            async with self.driver.connection() as pg:
                found = await pg.fetch(text, *args)
        else:
            async with self.begin() as conn:
                found = (await conn.execute(stmt, params)).all()
        rows = [(int(r[0]), r[1]) for r in found]
        if limit is not None:
            rows.reverse()
        return rows

    async def present(self, session_id: str, seqs: Sequence[int]) -> set[int]:
        """Return which of ``seqs`` the session has rows for (one indexed lookup)."""
        if not seqs:
            return set()
        m = self.messages
        if self.direct:
            params = {"sid": session_id, "seqs": list(seqs)}
            text, args = self._st.driver_args(self._st.present(), params)
            async with self.driver.connection() as pg:
                found = await pg.fetch(text, *args)
        else:
            stmt = select(m.c.seq).where(m.c.session_id == session_id, m.c.seq.in_(list(seqs)))
            async with self.begin() as conn:
                found = (await conn.execute(stmt)).all()
        return {int(r[0]) for r in found}

    # ------------------------------------------------------------------ writes
    async def insert(self, conn: AsyncConnection, rows: Iterable[Row], *, idempotent: bool) -> None:
        """Insert (session_id, seq, json) rows and touch their sessions."""
        rows = list(rows)
        if not rows:
            return
        sids = sorted({r[0] for r in rows})
        m = self.messages
        if self._st.many is not None:
            # PostgreSQL: two statements whatever the batch size, the rows as arrays.
            touch, plain, idem = self._st.many
            await conn.execute(touch, {"sids": sids})
            cols = {"sid": [r[0] for r in rows], "seqs": [r[1] for r in rows]}
            cols["datas"] = [r[2] for r in rows]
            if not idempotent:
                await conn.execute(plain, cols)
                return
            done = await conn.execute(idem.returning(m.c.session_id, m.c.seq), cols)
        else:
            payload = [{"session_id": s, "seq": q, "message_data": d} for s, q, d in rows]
            up = self._insert(self.sessions).values([{"session_id": s} for s in sids])
            up = up.on_conflict_do_update(
                index_elements=[self.sessions.c.session_id],
                set_={"updated_at": func.current_timestamp()},
            )
            await conn.execute(up)
            ins = self._insert(m)
            if not idempotent:
                await conn.execute(ins, payload)
                return
            ins = ins.on_conflict_do_nothing(index_elements=[m.c.session_id, m.c.seq])
            done = await conn.execute(ins.returning(m.c.session_id, m.c.seq), payload)
        inserted = {(r[0], int(r[1])) for r in done.all()}
        if len(inserted) < len(rows):
            # Every row the insert skipped is compared with what SQL holds, a row
            # colliding with an earlier one of this same batch included.
            skipped, first = [], set()
            for r in rows:
                key = (r[0], r[1])
                if key in inserted and key not in first:
                    first.add(key)
                else:
                    skipped.append(r)
            await self._check_replayed(conn, skipped)

    async def _check_replayed(self, conn: AsyncConnection, rows: list[Row]) -> None:
        """Rows an idempotent insert skipped must be replays: the same item at the same seq.

        A different item at that seq means Redis handed out a seq SQL had already
        used (Redis lost writes SQL has, e.g. restored from an older snapshot).
        Skipping it would lose the item silently: raise, so the entry is retried
        and then kept in the dead-letter stream.
        """
        m = self.messages
        keys = sorted({(sid, seq) for sid, seq, _ in rows})
        have: dict[tuple[str, int], str] = {}
        for i in range(0, len(keys), _LOOKUP_CHUNK):  # (a long IN list exhausts PostgreSQL's stack)
            stored = await conn.execute(
                select(m.c.session_id, m.c.seq, m.c.message_data).where(
                    tuple_(m.c.session_id, m.c.seq).in_(keys[i : i + _LOOKUP_CHUNK])
                )
            )
            have.update({(r[0], int(r[1])): r[2] for r in stored.all()})
        for sid, seq, data in rows:
            old = have.get((sid, seq))
            if old is not None and old != data:
                raise StorageUnavailableError(
                    f"session {sid!r}: seq {seq} already holds a different item in SQL (Redis "
                    "lost writes SQL has: restored from an older snapshot?). The entry is kept "
                    "in the dead-letter stream; see the docs, 'Operations and outages'"
                ) from SeqCollisionError(sid, seq)

    async def insert_new(self, session_id: str, first: int, datas: Sequence[str]) -> None:
        """Commit one write-through batch (seqs ``first``...) and touch its session.

        On PostgreSQL this is one autocommit statement (see :mod:`.statements`);
        elsewhere one transaction. A duplicate ``(session_id, seq)`` raises
        ``StorageUnavailableError`` for which
        :func:`~tiered_session.cold.errors.refused_by_constraint` is true.
        """
        if self._st.add_text is None:
            rows = [(session_id, first + i, d) for i, d in enumerate(datas)]
            async with self.begin() as conn:
                await self.insert(conn, rows, idempotent=False)
            return
        seqs = list(range(first, first + len(datas)))
        async with self.driver.connection() as pg:
            await pg.execute(self._st.add_text, session_id, seqs, list(datas))

    async def delete_one(self, session_id: str, seq: int) -> None:
        """Commit a write-through pop: one autocommit statement (asyncpg) or one transaction."""
        if not self.direct:
            async with self.begin() as conn:
                await self.delete_seq(conn, session_id, seq)
            return
        params = {"sid": session_id, "seq": seq}
        text, args = self._st.driver_args(self._st.delete_one(), params)
        async with self.driver.connection() as pg:
            await pg.execute(text, *args)

    async def delete_seq(self, conn: AsyncConnection, session_id: str, seq: int) -> None:
        """Delete one item (a pop)."""
        m = self.messages
        await conn.execute(delete(m).where(m.c.session_id == session_id, m.c.seq == seq))

    async def clear(
        self, conn: AsyncConnection, session_id: str, upto: int, keep: Sequence[int] = ()
    ) -> None:
        """Delete items up to ``upto`` (except ``keep``), and the session row if empty."""
        m, s = self.messages, self.sessions
        cond = and_(m.c.session_id == session_id, m.c.seq <= upto)
        if keep:
            cond = and_(cond, m.c.seq.not_in(list(keep)))
        await conn.execute(delete(m).where(cond))
        await conn.execute(
            delete(s).where(
                s.c.session_id == session_id,
                not_(exists().where(m.c.session_id == session_id)),
            )
        )

    async def apply(self, conn: AsyncConnection, ops: Sequence[Op]) -> None:
        """Apply operations in order; consecutive adds become one multi-row insert."""
        pending: list[Row] = []
        for op in ops:
            if op.kind == "a":
                pending.extend((op.session_id, q, d) for q, d in op.rows)
                continue
            await self.insert(conn, pending, idempotent=True)
            pending = []
            if op.kind == "p":
                await self.delete_seq(conn, op.session_id, op.seq)
            elif op.kind == "x":
                m = self.messages
                await conn.execute(
                    delete(m).where(
                        m.c.session_id == op.session_id,
                        m.c.seq >= op.seq,
                        m.c.seq < op.seq + op.count,
                    )
                )
            else:
                await self.clear(conn, op.session_id, op.seq, op.keep)
        await self.insert(conn, pending, idempotent=True)
