"""Benchmark backends: TieredSession rows, the SDK's sessions and two raw floors.

Every backend hands out session-like objects with the SDK ``Session`` calls
(``get_items``, ``add_items``, ``pop_item``, ``clear_session``). Each one uses
its own Redis key prefix and its own SQL table names, derived from the run's
namespace, and deletes exactly those on ``close()``.

Example:
    >>> env = BenchEnv(namespace="abc123", tmpdir="/tmp")
    >>> env.prefix("tb")
    'tsbench_abc123_tb'
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import orjson
from redis.asyncio import Redis
from sqlalchemy import BigInteger, Column, Identity, Index, MetaData, Table, Text, bindparam
from sqlalchemy import delete as sa_delete
from sqlalchemy import func as sa_func
from sqlalchemy import insert as sa_insert
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.schema import CreateIndex, CreateTable, DropTable

from .._errors import MissingDependencyError
from .._store import TieredStore

__all__ = ["ALL_BACKENDS", "LABELS", "Backend", "BenchEnv", "BenchSession", "make_backend"]


class BenchSession(Protocol):
    """The four calls of the SDK ``Session`` protocol the workloads use."""

    async def get_items(self, limit: int | None = None) -> list[Any]:
        """Return the newest ``limit`` items."""
        ...

    async def add_items(self, items: list[Any]) -> None:
        """Append items."""
        ...

    async def pop_item(self) -> Any | None:
        """Remove and return the newest item."""
        ...

    async def clear_session(self) -> None:
        """Delete every item."""
        ...


@dataclass(frozen=True)
class BenchEnv:
    """Where the benchmark runs; plain values, so it travels to worker processes as JSON."""

    namespace: str
    tmpdir: str
    redis_url: str = "redis://127.0.0.1:6379/12"
    sql_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"

    def prefix(self, short: str) -> str:
        """Return the Redis key prefix (and SQL table stem) of one backend."""
        return f"tsbench_{self.namespace}_{short}"

    @property
    def pg_dsn(self) -> str:
        """The asyncpg DSN of ``sql_url``."""
        return self.sql_url.replace("postgresql+asyncpg://", "postgresql://", 1)

    def to_json(self) -> dict[str, str]:
        """Return the fields as a dict (for worker processes)."""
        return asdict(self)


class Backend:
    """One row of the benchmark: makes sessions, populates, settles, cleans up."""

    name = ""
    #: False when sessions live in this process only (no multi-process workload)
    shareable = True
    #: True for the raw floors (never ranked against themselves)
    floor = False

    def __init__(self, env: BenchEnv, *, owner: bool = True) -> None:
        self.env = env
        self.owner = owner
        self._sessions: dict[str, BenchSession] = {}

    async def open(self) -> None:
        """Connect and create what the backend needs."""

    def make_session(self, sid: str) -> BenchSession:
        """Return a new session object for ``sid``."""
        raise NotImplementedError

    def session(self, sid: str) -> BenchSession:
        """Return the (cached) session object of ``sid``."""
        s = self._sessions.get(sid)
        if s is None:
            s = self._sessions[sid] = self.make_session(sid)
        return s

    async def populate(self, sid: str, items: list[Any], chunk: int = 500) -> None:
        """Add many items quickly (untimed set-up)."""
        s = self.session(sid)
        for i in range(0, len(items), chunk):
            await s.add_items(items[i : i + chunk])

    async def settle(self) -> None:
        """Let background work finish (untimed), so it does not leak into the next cell."""

    async def close(self) -> None:
        """Close clients and delete everything this backend created (when owner)."""


async def _delete_prefix(redis: Redis, prefix: str) -> None:
    """SCAN + DEL the keys of one prefix (never FLUSHDB)."""
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            await redis.delete(*batch)
            batch = []
    if batch:
        await redis.delete(*batch)


async def _drop_tables(engine: AsyncEngine, *names: str) -> None:
    """Drop the named tables (children first)."""
    md = MetaData()
    async with engine.begin() as conn:
        for name in names:
            await conn.execute(DropTable(Table(name, md), if_exists=True))


# ---------------------------------------------------------------------------- floors
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
        self.redis = Redis.from_url(self.env.redis_url, decode_responses=False)
        self._prefix = self.env.prefix("rf")

    def make_session(self, sid: str) -> BenchSession:
        return _RedisFloorSession(self.redis, f"{self._prefix}:{sid}".encode())

    async def close(self) -> None:
        if self.owner:
            await _delete_prefix(self.redis, self._prefix)
        await self.redis.aclose()


class _PgStatements:
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

    def __init__(self, pool: Any, st: _PgStatements, sid: str) -> None:
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
        import asyncpg  # type: ignore[import-untyped]

        self._st = _PgStatements(self.env.prefix("pf"))
        self.pool = await asyncpg.create_pool(self.env.pg_dsn, min_size=2, max_size=10)
        if self.owner:
            async with self.pool.acquire() as conn:
                for stmt in self._st.create:
                    await conn.execute(stmt)

    def make_session(self, sid: str) -> BenchSession:
        return _AsyncpgFloorSession(self.pool, self._st, sid)

    async def bulk_insert(self, sids: list[str], datas: list[str]) -> None:
        """Insert rows in one transaction with one statement (the flusher's floor)."""
        async with self.pool.acquire() as conn:
            await conn.execute(self._st.insert_many, sids, datas)

    async def close(self) -> None:
        if self.owner:
            async with self.pool.acquire() as conn:
                await conn.execute(self._st.drop)
        await self.pool.close()


# ---------------------------------------------------------------------------- tiered
class _Tiered(Backend):
    short = ""
    write_mode = "through"

    def _store(self) -> TieredStore:
        return TieredStore.from_url(
            self.env.redis_url,
            self.env.sql_url,
            write_mode=self.write_mode,
            key_prefix=self.env.prefix(self.short),
            sessions_table=self.env.prefix(self.short) + "_s",
            messages_table=self.env.prefix(self.short) + "_m",
            create_tables=self.owner,
            run_flusher=self.owner,
        )

    async def open(self) -> None:
        self.store = self._store()
        await self.store.start()

    def make_session(self, sid: str) -> BenchSession:
        return self.store.session(sid)

    async def settle(self) -> None:
        await self.store.flush(timeout=120)

    async def close(self) -> None:
        store = self.store
        if self.owner:
            await store.flush(timeout=120)
        redis, engine = store.redis, store.engine
        store._owns_redis = store._owns_engine = False
        await store.aclose()
        if self.owner:
            await _delete_prefix(redis, self.env.prefix(self.short))
            await _drop_tables(
                engine, self.env.prefix(self.short) + "_m", self.env.prefix(self.short) + "_s"
            )
        await redis.aclose()
        await engine.dispose()


class TieredBehind(_Tiered):
    """TieredSession, write-behind, on real Redis + PostgreSQL."""

    name = "tiered-behind"
    short = "tb"
    write_mode = "behind"

    async def open(self) -> None:
        await super().open()
        if self.owner:
            # A second store without a flusher, for the flusher-throughput workload.
            self.flusher_store = TieredStore.from_url(
                self.env.redis_url,
                self.env.sql_url,
                write_mode="behind",
                key_prefix=self.env.prefix("tf"),
                sessions_table=self.env.prefix("tf") + "_s",
                messages_table=self.env.prefix("tf") + "_m",
                create_tables=True,
                run_flusher=False,
            )
            await self.flusher_store.start()

    async def close(self) -> None:
        if self.owner:
            fs = self.flusher_store
            await fs.aclose()
            redis = Redis.from_url(self.env.redis_url)
            await _delete_prefix(redis, self.env.prefix("tf"))
            await redis.aclose()
            engine = create_async_engine(self.env.sql_url)
            await _drop_tables(engine, self.env.prefix("tf") + "_m", self.env.prefix("tf") + "_s")
            await engine.dispose()
        await super().close()


class TieredThrough(_Tiered):
    """TieredSession, write-through, on real Redis + PostgreSQL."""

    name = "tiered-through"
    short = "tt"
    write_mode = "through"


class TieredEmbedded(Backend):
    """TieredSession's embedded default: in-process fakeredis + in-memory SQLite."""

    name = "tiered-embedded"
    shareable = False

    async def open(self) -> None:
        self.store = TieredStore()
        await self.store.start()

    def make_session(self, sid: str) -> BenchSession:
        return self.store.session(sid)

    async def close(self) -> None:
        await self.store.aclose()


# ---------------------------------------------------------------------------- SDK
def _agents() -> Any:
    try:
        import agents
    except ImportError as e:
        raise MissingDependencyError("openai-agents", "bench") from e
    return agents


class SdkRedis(Backend):
    """The SDK's ``RedisSession`` on the real Redis."""

    name = "sdk-redis"

    async def open(self) -> None:
        from agents.extensions.memory.redis_session import RedisSession

        self._cls = RedisSession
        self.redis = Redis.from_url(self.env.redis_url)
        self._prefix = self.env.prefix("sr")

    def make_session(self, sid: str) -> BenchSession:
        s: BenchSession = self._cls(sid, redis_client=self.redis, key_prefix=self._prefix)
        return s

    async def close(self) -> None:
        if self.owner:
            await _delete_prefix(self.redis, self._prefix)
        await self.redis.aclose()


class _SdkSqlAlchemy(Backend):
    short = ""

    def _url(self) -> str:
        raise NotImplementedError

    async def open(self) -> None:
        from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession

        self._cls = SQLAlchemySession
        self.engine = create_async_engine(self._url())
        self._tables = (self.env.prefix(self.short) + "_s", self.env.prefix(self.short) + "_m")
        if self.owner:
            # create the tables once, before timing
            s = self.make_session("__init__")
            await s.get_items(limit=1)

    def make_session(self, sid: str) -> BenchSession:
        s: BenchSession = self._cls(
            sid,
            engine=self.engine,
            create_tables=self.owner,
            sessions_table=self._tables[0],
            messages_table=self._tables[1],
        )
        return s

    async def close(self) -> None:
        if self.owner:
            await _drop_tables(self.engine, self._tables[1], self._tables[0])
        await self.engine.dispose()


class SdkSqlAlchemyPg(_SdkSqlAlchemy):
    """The SDK's ``SQLAlchemySession`` on PostgreSQL (asyncpg)."""

    name = "sdk-sqlalchemy-pg"
    short = "sp"

    def _url(self) -> str:
        return self.env.sql_url


class SdkSqlAlchemySqlite(_SdkSqlAlchemy):
    """The SDK's ``SQLAlchemySession`` on a SQLite file (aiosqlite)."""

    name = "sdk-sqlalchemy-sqlite"
    short = "ss"

    def _url(self) -> str:
        return "sqlite+aiosqlite:///" + str(Path(self.env.tmpdir) / "sdk_sqlalchemy.db")


class SdkSqlite(Backend):
    """The SDK's ``SQLiteSession`` on a SQLite file."""

    name = "sdk-sqlite"

    async def open(self) -> None:
        self._cls = _agents().SQLiteSession
        self._path = str(Path(self.env.tmpdir) / "sdk_sqlite.db")

    def make_session(self, sid: str) -> BenchSession:
        s: BenchSession = self._cls(sid, db_path=self._path)
        return s

    async def close(self) -> None:
        for s in self._sessions.values():
            with contextlib.suppress(Exception):
                s.close()  # type: ignore[attr-defined]
        if self.owner:
            _remove_db(self._path)


class SdkAsyncSqlite(Backend):
    """The SDK's ``AsyncSQLiteSession`` on a SQLite file."""

    name = "sdk-async-sqlite"

    async def open(self) -> None:
        from agents.extensions.memory.async_sqlite_session import AsyncSQLiteSession

        self._cls = AsyncSQLiteSession
        self._path = str(Path(self.env.tmpdir) / "sdk_async_sqlite.db")

    def make_session(self, sid: str) -> BenchSession:
        s: BenchSession = self._cls(sid, db_path=self._path)
        return s

    async def close(self) -> None:
        for s in self._sessions.values():
            with contextlib.suppress(Exception):
                await s.close()  # type: ignore[attr-defined]
        if self.owner:
            _remove_db(self._path)


def _remove_db(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)


_CLASSES: dict[str, Callable[..., Backend]] = {
    cls.name: cls
    for cls in (
        RedisFloor,
        AsyncpgFloor,
        TieredBehind,
        TieredThrough,
        TieredEmbedded,
        SdkRedis,
        SdkSqlAlchemyPg,
        SdkSqlAlchemySqlite,
        SdkSqlite,
        SdkAsyncSqlite,
    )
}

#: every backend, in report order
ALL_BACKENDS = list(_CLASSES)

LABELS = {
    "redis-floor": "raw redis-py (RPUSH / LRANGE)",
    "asyncpg-floor": "raw asyncpg (INSERT / SELECT)",
    "tiered-behind": "TieredSession write-behind",
    "tiered-through": "TieredSession write-through",
    "tiered-embedded": "TieredSession embedded (fakeredis + SQLite)",
    "sdk-redis": "SDK RedisSession",
    "sdk-sqlalchemy-pg": "SDK SQLAlchemySession (PostgreSQL)",
    "sdk-sqlalchemy-sqlite": "SDK SQLAlchemySession (SQLite)",
    "sdk-sqlite": "SDK SQLiteSession",
    "sdk-async-sqlite": "SDK AsyncSQLiteSession",
}

_NAME = re.compile(r"^[a-z0-9-]+$")


def make_backend(name: str, env: BenchEnv, *, owner: bool = True) -> Backend:
    """Return the backend called ``name`` (see ``ALL_BACKENDS``)."""
    if not _NAME.match(name) or name not in _CLASSES:
        raise KeyError(f"unknown backend {name!r}; choose from {', '.join(ALL_BACKENDS)}")
    if name.startswith("sdk-"):
        _agents()
    return _CLASSES[name](env, owner=owner)
