"""The SQL tier: table definitions and every statement, in SQLAlchemy Core.

The schema is a superset of the Agents SDK's ``SQLAlchemySession`` schema:
``agent_messages`` gains a ``seq`` column with a unique index on
``(session_id, seq)``, so the SDK can read what we write and inserts are
idempotent.

Example:
    >>> from tiered_session._sql import build_tables
    >>> _, sessions, messages = build_tables("agent_sessions", "agent_messages")
    >>> sorted(messages.c.keys())
    ['created_at', 'id', 'message_data', 'seq', 'session_id']
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import weakref
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    TIMESTAMP,
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    delete,
    event,
    exists,
    func,
    insert,
    not_,
    select,
    tuple_,
)
from sqlalchemy import text as sql_text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import StaticPool

from ._errors import ConfigurationError, StorageUnavailableError

__all__ = ["Op", "SeqCollisionError", "SqlTier", "build_tables", "refused_by_constraint"]


def build_tables(sessions_table: str, messages_table: str) -> tuple[MetaData, Table, Table]:
    """Return (metadata, sessions, messages) tables for the given names."""
    md = MetaData()
    sessions = Table(
        sessions_table,
        md,
        Column("session_id", String, primary_key=True),
        Column(
            "created_at",
            TIMESTAMP(timezone=False),
            server_default=sql_text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        Column(
            "updated_at",
            TIMESTAMP(timezone=False),
            server_default=sql_text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
    )
    messages = Table(
        messages_table,
        md,
        Column(
            "id",
            BigInteger().with_variant(Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        Column(
            "session_id",
            String,
            ForeignKey(f"{sessions_table}.session_id", ondelete="CASCADE"),
            nullable=False,
        ),
        Column("message_data", Text, nullable=False),
        Column(
            "created_at",
            TIMESTAMP(timezone=False),
            server_default=sql_text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        Column("seq", BigInteger, nullable=True),
        Index(f"idx_{messages_table}_session_time", "session_id", "created_at"),
        Index(f"uq_{messages_table}_session_seq", "session_id", "seq", unique=True),
        sqlite_autoincrement=True,
    )
    return md, sessions, messages


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


_SQLITE_LOCKS: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout = 10000")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


class SqlTier:
    """All SQL the store runs, on one AsyncEngine."""

    def __init__(self, engine: AsyncEngine, sessions_table: str, messages_table: str) -> None:
        dialect = engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise ConfigurationError(
                f"unsupported SQL dialect {dialect!r}: use sqlite+aiosqlite or postgresql+asyncpg"
            )
        self.engine = engine
        self.dialect = dialect
        self.metadata, self.sessions, self.messages = build_tables(sessions_table, messages_table)
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        # PostgreSQL: the write-through insert, compiled once for the asyncpg driver.
        self._add_sql = _compile_add(engine, self.sessions, self.messages)
        #: PostgreSQL through asyncpg: hot statements go to the driver directly
        self.direct = self._add_sql is not None
        # Connections the hot statements keep out of the engine's pool between
        # calls (see driver()), shared by every store on the engine.
        self._kept = _kept_of(engine) if self.direct else _Kept(0)
        self._many = _insert_many(self.sessions, self.messages) if dialect == "postgresql" else None
        # SQLite allows one writer: serialise this process's transactions on the
        # engine (shared by every store using it) instead of failing on locks.
        self._lock: asyncio.Lock | None = None
        if dialect == "sqlite":
            self._lock = _SQLITE_LOCKS.get(engine.sync_engine)
            if self._lock is None:
                self._lock = _SQLITE_LOCKS[engine.sync_engine] = asyncio.Lock()
                event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
                if not isinstance(engine.pool, StaticPool):
                    # WAL lets readers in other processes run beside the writer.
                    event.listen(engine.sync_engine, "connect", _sqlite_wal)

    # ------------------------------------------------------------------ plumbing
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
            raise StorageUnavailableError(f"SQL operation failed: {_describe(e)}") from e
        except OSError as e:
            raise StorageUnavailableError(f"SQL database unreachable: {e}") from e

    @contextlib.asynccontextmanager
    async def driver(self) -> AsyncIterator[Any]:
        """PostgreSQL: an asyncpg connection from the engine, in autocommit.

        For single statements on the hot path. asyncpg directly costs about a
        third of SQLAlchemy's execution path around it, and a checkout from
        the engine's pool costs a third of the statement itself (70-180 us
        against 400-500 us for an insert, on a 2-core VM). So a few
        connections stay checked out between calls (see :func:`_kept_of`),
        newest first (the PostgreSQL backend used last is the likeliest to be
        running), until :meth:`close`; one the server closed meanwhile is
        dropped, not used. Errors become ``StorageUnavailableError`` (caused
        by the asyncpg error); a connection that failed for any reason other
        than a refused statement is invalidated, so it is never used again.
        """
        try:
            conn, pg = await self._checkout()
            try:
                yield pg
            except BaseException as e:
                if _statement_refused(e):
                    await self._checkin(conn, pg)
                else:
                    await conn.invalidate()
                    await conn.close()
                raise
            await self._checkin(conn, pg)
        except SQLAlchemyError as e:
            raise StorageUnavailableError(f"SQL operation failed: {_describe(e)}") from e
        except OSError as e:
            raise StorageUnavailableError(f"SQL database unreachable: {e}") from e
        except Exception as e:
            if _is_asyncpg_error(e):
                raise StorageUnavailableError(f"SQL operation failed: {_describe(e)}") from e
            raise

    async def _checkout(self) -> tuple[AsyncConnection, Any]:
        kept = self._kept.conns
        while kept:
            conn, pg = kept.pop()
            if not pg.is_closed():
                return conn, pg
            await conn.invalidate()  # the server closed it while it was kept
            await conn.close()
        conn = await self.engine.connect()
        try:
            raw = await conn.get_raw_connection()
        except BaseException:
            await conn.close()
            raise
        return conn, raw.driver_connection

    async def _checkin(self, conn: AsyncConnection, pg: Any) -> None:
        kept = self._kept
        if len(kept.conns) < kept.limit and not pg.is_closed():
            kept.conns.append((conn, pg))
        else:
            await conn.close()

    async def close(self) -> None:
        """Return the connections kept for hot statements to the engine's pool.

        Other stores on the same engine check out new ones when they need them.
        """
        kept = self._kept.conns
        while kept:
            conn, _ = kept.pop()
            with contextlib.suppress(Exception):
                await conn.close()

    async def create_tables(self) -> None:
        """Create missing tables and indexes (idempotent)."""
        async with self.begin() as conn:
            await conn.run_sync(self.metadata.create_all)

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
        stmt = self._latest_stmt(before is not None, limit is not None)
        if self.direct:
            text, order = self._compiled(stmt)
            async with self.driver() as pg:
                found = await pg.fetch(text, *(params[name] for name in order))
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
            text, order = self._compiled(self._present_stmt())
            params = {"sid": session_id, "seqs": list(seqs)}
            async with self.driver() as pg:
                found = await pg.fetch(text, *(params[name] for name in order))
        else:
            stmt = select(m.c.seq).where(m.c.session_id == session_id, m.c.seq.in_(list(seqs)))
            async with self.begin() as conn:
                found = (await conn.execute(stmt)).all()
        return {int(r[0]) for r in found}

    @functools.cache  # noqa: B019
    def _present_stmt(self) -> Any:
        m = self.messages
        return select(m.c.seq).where(
            m.c.session_id == bindparam("sid", type_=m.c.session_id.type),
            m.c.seq == any_(bindparam("seqs", type_=postgresql.ARRAY(BigInteger))),
        )

    @functools.cache  # noqa: B019 - one SqlTier per store, four statements each
    def _latest_stmt(self, before: bool, limit: bool) -> Any:
        m = self.messages
        stmt = select(m.c.seq, m.c.message_data).where(
            m.c.session_id == bindparam("sid", type_=m.c.session_id.type)
        )
        if before:
            stmt = stmt.where(m.c.seq < bindparam("before", type_=BigInteger))
        if not limit:
            return stmt.order_by(m.c.seq.asc())
        return stmt.order_by(m.c.seq.desc()).limit(bindparam("lim", type_=BigInteger))

    @functools.cache  # noqa: B019
    def _compiled(self, stmt: Any) -> tuple[str, list[str]]:
        """The asyncpg text of a statement and the names of its positional parameters."""
        compiled = stmt.compile(dialect=self.engine.dialect)
        return str(compiled), list(compiled.positiontup)

    async def session_ids(self) -> list[str]:
        """Return every session id in the sessions table."""
        async with self.begin() as conn:
            return [r[0] for r in (await conn.execute(select(self.sessions.c.session_id))).all()]

    # ------------------------------------------------------------------ writes
    async def insert(
        self, conn: AsyncConnection, rows: Iterable[tuple[str, int, str]], *, idempotent: bool
    ) -> None:
        """Insert (session_id, seq, json) rows and touch their sessions."""
        rows = list(rows)
        if not rows:
            return
        sids = sorted({r[0] for r in rows})
        m = self.messages
        if self._many is not None:
            # PostgreSQL: two statements whatever the batch size, the rows as arrays.
            touch, plain, idem = self._many
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
            await self._check_replayed(conn, [r for r in rows if (r[0], r[1]) not in inserted])

    async def _check_replayed(
        self, conn: AsyncConnection, rows: list[tuple[str, int, str]]
    ) -> None:
        """Rows an idempotent insert skipped must be replays: the same item at the same seq.

        A different item at that seq means Redis handed out a seq SQL had already
        used (Redis lost writes SQL has, e.g. restored from an older snapshot).
        Skipping it would lose the item silently: raise, so the entry is retried
        and then kept in the dead-letter stream.
        """
        m = self.messages
        keys = [(sid, seq) for sid, seq, _ in rows]
        stored = await conn.execute(
            select(m.c.session_id, m.c.seq, m.c.message_data).where(
                tuple_(m.c.session_id, m.c.seq).in_(keys)
            )
        )
        have = {(r[0], int(r[1])): r[2] for r in stored.all()}
        for sid, seq, data in rows:
            old = have.get((sid, seq))
            if old is not None and old != data:
                raise StorageUnavailableError(
                    f"session {sid!r}: seq {seq} already holds a different item in SQL (Redis "
                    "lost writes SQL has: restored from an older snapshot?). The entry is kept "
                    "in the dead-letter stream; see README, 'When Redis is down or partitioned'"
                ) from SeqCollisionError(sid, seq)

    async def insert_new(self, session_id: str, first: int, datas: Sequence[str]) -> None:
        """Commit one write-through batch (seqs ``first``...) and touch its session.

        On PostgreSQL this is one statement (a CTE upserts the session row, the
        INSERT adds the rows from two arrays) run in autocommit: one round trip
        instead of four (BEGIN, upsert, insert, COMMIT), atomic, compiled once.
        Elsewhere it is one transaction. A duplicate ``(session_id, seq)`` raises
        ``StorageUnavailableError`` for which :func:`refused_by_constraint` is true.
        """
        if not self.direct:
            rows = [(session_id, first + i, d) for i, d in enumerate(datas)]
            async with self.begin() as conn:
                await self.insert(conn, rows, idempotent=False)
            return
        seqs = list(range(first, first + len(datas)))
        async with self.driver() as pg:
            await pg.execute(self._add_sql, session_id, seqs, list(datas))

    async def delete_one(self, session_id: str, seq: int) -> None:
        """Commit a write-through pop: one autocommit statement (asyncpg) or one transaction."""
        if not self.direct:
            async with self.begin() as conn:
                await self.delete_seq(conn, session_id, seq)
            return
        text, order = self._compiled(self._delete_stmt())
        params = {"sid": session_id, "seq": seq}
        async with self.driver() as pg:
            await pg.execute(text, *(params[name] for name in order))

    @functools.cache  # noqa: B019
    def _delete_stmt(self) -> Any:
        m = self.messages
        return delete(m).where(
            m.c.session_id == bindparam("sid", type_=m.c.session_id.type),
            m.c.seq == bindparam("seq", type_=BigInteger),
        )

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
        pending: list[tuple[str, int, str]] = []
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


def _insert_many(sessions: Table, messages: Table) -> tuple[Any, Any, Any]:
    """PostgreSQL statements that take whole batches as arrays (flusher path).

    Returns (touch sessions ``sids``, insert rows, insert rows skipping
    existing ``(session_id, seq)``); rows come as arrays ``sid``, ``seqs``,
    ``datas``.
    """
    arr = postgresql.ARRAY
    touch = (
        postgresql.insert(sessions)
        .from_select(["session_id"], select(func.unnest(bindparam("sids", type_=arr(String)))))
        .on_conflict_do_update(
            index_elements=[sessions.c.session_id],
            set_={"updated_at": func.current_timestamp()},
        )
    )
    rows = select(
        func.unnest(bindparam("sid", type_=arr(String))),
        func.unnest(bindparam("seqs", type_=arr(BigInteger))),
        func.unnest(bindparam("datas", type_=arr(Text))),
    )
    plain = postgresql.insert(messages).from_select(["session_id", "seq", "message_data"], rows)
    idem = plain.on_conflict_do_nothing(index_elements=[messages.c.session_id, messages.c.seq])
    return touch, plain, idem


def _compile_add(engine: AsyncEngine, sessions: Table, messages: Table) -> str | None:
    """Return the one-statement write-through insert for asyncpg, or None elsewhere."""
    if engine.dialect.name != "postgresql" or engine.dialect.driver != "asyncpg":
        return None
    sid = bindparam("sid", type_=sessions.c.session_id.type)
    touch = (
        postgresql.insert(sessions)
        .values(session_id=sid)
        .on_conflict_do_update(
            index_elements=[sessions.c.session_id],
            set_={"updated_at": func.current_timestamp()},
        )
        .cte("touch")
    )
    rows = select(
        sid,
        func.unnest(bindparam("seqs", type_=postgresql.ARRAY(BigInteger))),
        func.unnest(bindparam("datas", type_=postgresql.ARRAY(Text))),
    )
    stmt = insert(messages).from_select(["session_id", "seq", "message_data"], rows)
    compiled = stmt.add_cte(touch).compile(dialect=engine.dialect)
    assert compiled.positiontup == ["sid", "seqs", "datas"], compiled.positiontup
    return str(compiled)


class _Kept:
    """Connections kept checked out of one engine's pool for hot statements (LIFO)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.conns: list[tuple[AsyncConnection, Any]] = []


_KEPT: weakref.WeakKeyDictionary[Any, _Kept] = weakref.WeakKeyDictionary()


def _kept_of(engine: AsyncEngine) -> _Kept:
    """The engine's kept connections: at most 4, and at most half its pool.

    The rest of the pool stays free for transactions (the flusher's shards,
    clears, warm-ups), however many stores share the engine. A pool without a
    fixed size keeps none.
    """
    kept = _KEPT.get(engine.sync_engine)
    if kept is None:
        size = getattr(engine.pool, "size", None)
        n = size() if callable(size) else 0
        limit = max(1, min(4, n // 2)) if isinstance(n, int) and n > 0 else 0
        kept = _KEPT[engine.sync_engine] = _Kept(limit)
    return kept


def _sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode = WAL")
    finally:
        cursor.close()


class SeqCollisionError(Exception):
    """A seq SQL already holds with a different item (the cause of a refused flush)."""

    def __init__(self, session_id: str, seq: int) -> None:
        super().__init__(f"session {session_id!r}: seq {seq} holds another item")
        self.session_id = session_id
        self.seq = seq


def _describe(e: BaseException) -> str:
    """Describe a driver error without its SQL parameters (they may hold user data)."""
    orig = getattr(e, "orig", None)
    return f"{type(orig or e).__name__}: {str(orig or e).splitlines()[0][:300]}"


def _is_asyncpg_error(e: BaseException) -> bool:
    return type(e).__module__.startswith("asyncpg")


def _statement_refused(e: BaseException) -> bool:
    """PostgreSQL refused the statement (SQLSTATE class 22 or 23); the connection is fine."""
    code = getattr(e, "sqlstate", None)
    return isinstance(code, str) and code[:2] in ("22", "23")


def refused_by_constraint(e: BaseException) -> bool:
    """True when ``e`` (a StorageUnavailableError) says SQL refused rows by a constraint."""
    cause = e.__cause__
    if isinstance(cause, IntegrityError):
        return True
    code = getattr(cause, "sqlstate", None)
    return isinstance(code, str) and code.startswith("23")
