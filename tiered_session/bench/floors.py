"""The physical floors: raw redis-py and raw asyncpg, doing the least work a store can.

Every other backend's time per operation is reported relative to these two,
measured in the same repeat. The asyncpg floor's statements are built with
SQLAlchemy Core and compiled once, so no ORM or engine work is timed.

Example:
    >>> PgStatements("tsbench_abc123_pf").drop.strip()
    'DROP TABLE IF EXISTS tsbench_abc123_pf'
"""

from __future__ import annotations

from typing import Any, cast

import orjson
from redis.asyncio import Redis
from sqlalchemy import BigInteger, Column, Identity, Index, MetaData, Table, Text, bindparam
from sqlalchemy import delete as sa_delete
from sqlalchemy import func as sa_func
from sqlalchemy import insert as sa_insert
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.schema import CreateIndex, CreateTable, DropTable

from .env import Backend, BenchSession, delete_prefix

__all__ = ["AsyncpgFloor", "PgStatements", "RedisFloor"]


class _RedisFloorSession:
    """RPUSH of JSON / LRANGE -N -1 + decode: the least work a Redis list store can do."""

    def __init__(self, redis: Redis, key: bytes) -> None:
        self._r = redis
        self._key = key

    async def get_items(self, limit: int | None = None) -> list[Any]:
        if limit == 0:
            return []
        raw = await self._r.lrange(self._key, 0 if limit is None else -limit, -1)
        return [orjson.loads(x) for x in raw]

    async def add_items(self, items: list[Any]) -> None:
        await self._r.rpush(self._key, *[orjson.dumps(i) for i in items])

    async def pop_item(self) -> Any | None:
        raw = cast(bytes | None, await self._r.rpop(self._key))
        return None if raw is None else orjson.loads(raw)

    async def clear_session(self) -> None:
        await self._r.delete(self._key)


class RedisFloor(Backend):
    """Raw redis-py on one list per session."""

    name = "redis-floor"
    floor = True

    async def open(self) -> None:
        """Open one redis-py client (no pool tuning: the floor is the library as shipped)."""
        self.redis = Redis.from_url(self.env.redis_url, decode_responses=False)
        self._prefix = self.env.prefix("rf")

    def make_session(self, sid: str) -> BenchSession:
        """Return a session on the list ``<prefix>:<sid>``."""
        return _RedisFloorSession(self.redis, f"{self._prefix}:{sid}".encode())

    async def close(self) -> None:
        """Delete this run's lists (when owner) and close the client."""
        if self.owner:
            await delete_prefix(self.redis, self._prefix)
        await self.redis.aclose()


#: the columns a COPY into the floor's table writes
_COPY_COLUMNS = ("session_id", "message_data")


class PgStatements:
    """The floor's statements, built with SQLAlchemy Core and compiled once for asyncpg."""

    def __init__(self, table_name: str) -> None:
        md = MetaData()
        t = Table(
            table_name,
            md,
            Column("id", BigInteger, Identity(), primary_key=True),
            Column("session_id", Text, nullable=False),
            Column("message_data", Text, nullable=False),
        )
        idx = Index(f"{table_name}_sid", t.c.session_id, t.c.id)
        d = asyncpg_dialect()  # type: ignore[no-untyped-call]
        sid = bindparam("sid", type_=Text)
        lim = bindparam("lim", type_=BigInteger)

        def sql(stmt: Any) -> str:
            return str(stmt.compile(dialect=d))

        #: the table's name, for COPY
        self.table = table_name
        self.create = [sql(CreateTable(t, if_not_exists=True)), sql(CreateIndex(idx))]
        self.drop = sql(DropTable(t, if_exists=True))
        self.insert = sql(
            sa_insert(t).from_select(
                ["session_id", "message_data"],
                sa_select(sid, sa_func.unnest(bindparam("datas", type_=ARRAY(Text)))),
            )
        )
        self.insert_many = sql(
            sa_insert(t).from_select(
                ["session_id", "message_data"],
                sa_select(
                    sa_func.unnest(bindparam("sids", type_=ARRAY(Text))),
                    sa_func.unnest(bindparam("datas", type_=ARRAY(Text))),
                ),
            )
        )
        by_sid = sa_select(t.c.message_data).where(t.c.session_id == sid)
        self.latest = sql(by_sid.order_by(t.c.id.desc()).limit(lim))
        self.all = sql(by_sid.order_by(t.c.id))
        newest = sa_select(t.c.id).where(t.c.session_id == sid).order_by(t.c.id.desc()).limit(1)
        self.pop = sql(
            sa_delete(t).where(t.c.id == newest.scalar_subquery()).returning(t.c.message_data)
        )
        self.clear = sql(sa_delete(t).where(t.c.session_id == sid))


class _AsyncpgFloorSession:
    """One INSERT per batch / one SELECT ... ORDER BY ... LIMIT per read, autocommit."""

    def __init__(self, pool: Any, st: PgStatements, sid: str) -> None:
        self._pool = pool
        self._st = st
        self._sid = sid

    async def get_items(self, limit: int | None = None) -> list[Any]:
        if limit == 0:
            return []
        async with self._pool.acquire() as conn:
            if limit is None:
                rows = await conn.fetch(self._st.all, self._sid)
                return [orjson.loads(r[0]) for r in rows]
            rows = await conn.fetch(self._st.latest, self._sid, limit)
        return [orjson.loads(r[0]) for r in reversed(rows)]

    async def add_items(self, items: list[Any]) -> None:
        datas = [orjson.dumps(i).decode() for i in items]
        async with self._pool.acquire() as conn:
            await conn.execute(self._st.insert, self._sid, datas)

    async def pop_item(self) -> Any | None:
        async with self._pool.acquire() as conn:
            raw = await conn.fetchval(self._st.pop, self._sid, 1)
        return None if raw is None else orjson.loads(raw)

    async def clear_session(self) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(self._st.clear, self._sid)


class AsyncpgFloor(Backend):
    """Raw asyncpg: a pool of 10, one statement per call."""

    name = "asyncpg-floor"
    floor = True

    async def open(self) -> None:
        """Open the pool and, when owner, create the floor's table."""
        import asyncpg

        self._st = PgStatements(self.env.prefix("pf"))
        self.pool = await asyncpg.create_pool(self.env.pg_dsn, min_size=2, max_size=10)
        if self.owner:
            async with self.pool.acquire() as conn:
                for stmt in self._st.create:
                    await conn.execute(stmt)

    def make_session(self, sid: str) -> BenchSession:
        """Return a session on the rows of ``sid``."""
        return _AsyncpgFloorSession(self.pool, self._st, sid)

    async def bulk_insert(self, sids: list[str], datas: list[str]) -> None:
        """Insert rows in one transaction with one statement (the flusher's floor)."""
        async with self.pool.acquire() as conn:
            await conn.execute(self._st.insert_many, sids, datas)

    async def copy_rows(self, sids: list[str], datas: list[str]) -> None:
        """Write rows with ``COPY`` (``copy_records_to_table``): the physical floor."""
        async with self.pool.acquire() as conn:
            await conn.copy_records_to_table(
                self._st.table, records=zip(sids, datas, strict=True), columns=_COPY_COLUMNS
            )

    async def close(self) -> None:
        """Drop the floor's table (when owner) and close the pool."""
        if self.owner:
            async with self.pool.acquire() as conn:
                await conn.execute(self._st.drop)
        await self.pool.close()
