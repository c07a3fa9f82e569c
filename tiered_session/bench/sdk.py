"""The Agents SDK's own sessions, each on its own keys, tables or database file.

They are used exactly as an application would construct them; the benchmark
only names their keys and tables after the run's namespace.

Example:
    >>> [cls.name for cls in (SdkRedis, SdkSqlite, SdkAsyncSqlite)]
    ['sdk-redis', 'sdk-sqlite', 'sdk-async-sqlite']
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import create_async_engine

from tiered_session import MissingDependencyError

from .env import Backend, BenchSession, delete_prefix, drop_tables

__all__ = [
    "SdkAsyncSqlite",
    "SdkRedis",
    "SdkSqlAlchemyPg",
    "SdkSqlAlchemySqlite",
    "SdkSqlite",
    "require_agents",
]


def require_agents() -> Any:
    """Return the ``agents`` package, or raise ``MissingDependencyError`` naming the extra."""
    try:
        import agents
    except ImportError as e:
        raise MissingDependencyError("openai-agents", "bench") from e
    return agents


class SdkRedis(Backend):
    """The SDK's ``RedisSession`` on the real Redis."""

    name = "sdk-redis"

    async def open(self) -> None:
        """Open the client the SDK's sessions share."""
        from agents.extensions.memory.redis_session import RedisSession

        self._cls = RedisSession
        self.redis = Redis.from_url(self.env.redis_url)
        self._prefix = self.env.prefix("sr")

    def make_session(self, sid: str) -> BenchSession:
        """Return a ``RedisSession`` under this run's key prefix."""
        s: BenchSession = self._cls(sid, redis_client=self.redis, key_prefix=self._prefix)
        return s

    async def close(self) -> None:
        """Delete this run's keys (when owner) and close the client."""
        if self.owner:
            await delete_prefix(self.redis, self._prefix)
        await self.redis.aclose()


class _SdkSqlAlchemy(Backend):
    short = ""

    def _url(self) -> str:
        raise NotImplementedError

    async def open(self) -> None:
        """Open the engine and, when owner, have the SDK create its tables."""
        from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession

        self._cls = SQLAlchemySession
        self.engine = create_async_engine(self._url())
        self._tables = (self.env.prefix(self.short) + "_s", self.env.prefix(self.short) + "_m")
        if self.owner:
            # The SDK creates its tables on a session's first call: keep that out of timing.
            s = self.make_session("__init__")
            await s.get_items(limit=1)

    def make_session(self, sid: str) -> BenchSession:
        """Return a ``SQLAlchemySession`` on this run's tables."""
        s: BenchSession = self._cls(
            sid,
            engine=self.engine,
            create_tables=self.owner,
            sessions_table=self._tables[0],
            messages_table=self._tables[1],
        )
        return s

    async def close(self) -> None:
        """Drop this run's tables (when owner) and dispose of the engine."""
        if self.owner:
            await drop_tables(self.engine, self._tables[1], self._tables[0])
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
        """Pick the database file in the run's temporary directory."""
        self._cls = require_agents().SQLiteSession
        self._path = str(Path(self.env.tmpdir) / "sdk_sqlite.db")

    def make_session(self, sid: str) -> BenchSession:
        """Return a ``SQLiteSession`` on the run's database file."""
        s: BenchSession = self._cls(sid, db_path=self._path)
        return s

    async def close(self) -> None:
        """Close every session's connection and remove the file (when owner)."""
        for s in self._sessions.values():
            with contextlib.suppress(Exception):
                s.close()  # type: ignore[attr-defined]
        if self.owner:
            _remove_db(self._path)


class SdkAsyncSqlite(Backend):
    """The SDK's ``AsyncSQLiteSession`` on a SQLite file."""

    name = "sdk-async-sqlite"

    async def open(self) -> None:
        """Pick the database file in the run's temporary directory."""
        from agents.extensions.memory.async_sqlite_session import AsyncSQLiteSession

        self._cls = AsyncSQLiteSession
        self._path = str(Path(self.env.tmpdir) / "sdk_async_sqlite.db")

    def make_session(self, sid: str) -> BenchSession:
        """Return an ``AsyncSQLiteSession`` on the run's database file."""
        s: BenchSession = self._cls(sid, db_path=self._path)
        return s

    async def close(self) -> None:
        """Close every session's connection and remove the file (when owner)."""
        for s in self._sessions.values():
            with contextlib.suppress(Exception):
                await s.close()  # type: ignore[attr-defined]
        if self.owner:
            _remove_db(self._path)


def _remove_db(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)
