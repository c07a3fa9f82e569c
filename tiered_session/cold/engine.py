"""SQL engines: from a URL (with pool settings), the embedded default, and SQLite's set-up.

Backends are told apart by the engine's dialect and driver, at this one place.

Example:
    >>> engine = embedded_engine()
    >>> engine.dialect.name, writer_lock(engine) is writer_lock(engine)
    ('sqlite', True)
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from .._errors import ConfigurationError

__all__ = ["DIALECTS", "embedded_engine", "engine_from_url", "uses_asyncpg", "writer_lock"]

#: the SQL backends the store runs on, by SQLAlchemy dialect name
DIALECTS = ("sqlite", "postgresql")
_SCHEMES = ("sqlite+aiosqlite", "postgresql+asyncpg")

#: PostgreSQL pool of a store built from a URL. Fixed: SQLAlchemy closes an
#: overflow connection on every return, so with more concurrent calls than
#: pool_size each call beyond it would reconnect; callers beyond the pool wait
#: pool_timeout instead. LIFO: the backend used last is the likeliest to be running.
PG_POOL: dict[str, Any] = {"pool_size": 10, "max_overflow": 0, "pool_use_lifo": True}

#: SQLite: wait for a lock instead of failing at once; enforce foreign keys;
#: fsync at checkpoints only (WAL keeps commits durable against process crashes)
_SQLITE_PRAGMAS = ("busy_timeout = 10000", "foreign_keys = ON", "synchronous = NORMAL")

_WRITER_LOCKS: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()


def engine_from_url(url: str, engine_kwargs: dict[str, Any] | None = None) -> AsyncEngine:
    """An engine for ``sqlite+aiosqlite://...`` or ``postgresql+asyncpg://...``.

    No ``pool_pre_ping``: it costs a round trip on every checkout. After a
    server restart the first call on a dead connection fails, and SQLAlchemy
    then recycles every connection of the pool.
    """
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"unsupported sql_url scheme {scheme or url[:20]!r}: use sqlite+aiosqlite:///path.db "
            "(or sqlite+aiosqlite:// for in-memory) or postgresql+asyncpg://user@host/db"
        )
    kwargs = dict(engine_kwargs or {})
    if scheme == "sqlite+aiosqlite" and (url.endswith("://") or ":memory:" in url):
        kwargs.setdefault("poolclass", StaticPool)
    elif scheme == "postgresql+asyncpg" and "poolclass" not in kwargs:
        for name, value in PG_POOL.items():
            kwargs.setdefault(name, value)
    try:
        return create_async_engine(url, **kwargs)
    except Exception as e:
        raise ConfigurationError(f"invalid sql_url: {type(e).__name__}: {e}") from e


def embedded_engine() -> AsyncEngine:
    """An in-memory SQLite database, one connection shared by every caller."""
    return create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)


def uses_asyncpg(engine: AsyncEngine) -> bool:
    """Whether hot statements may go to the asyncpg driver directly."""
    return engine.dialect.name == "postgresql" and engine.dialect.driver == "asyncpg"


def writer_lock(engine: AsyncEngine) -> asyncio.Lock:
    """The lock that serialises this process's SQLite transactions on ``engine``.

    SQLite allows one writer: transactions wait for the lock instead of
    failing on a busy database. Set up once per engine (shared by every store
    using it), with the connection pragmas, and WAL for files so readers in
    other processes run beside the writer.
    """
    lock = _WRITER_LOCKS.get(engine.sync_engine)
    if lock is None:
        lock = _WRITER_LOCKS[engine.sync_engine] = asyncio.Lock()
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        if not isinstance(engine.pool, StaticPool):
            event.listen(engine.sync_engine, "connect", _sqlite_wal)
    return lock


def _pragmas(dbapi_connection: Any, pragmas: tuple[str, ...]) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in pragmas:
            cursor.execute("PRAGMA " + pragma)
    finally:
        cursor.close()


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    _pragmas(dbapi_connection, _SQLITE_PRAGMAS)


def _sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    _pragmas(dbapi_connection, ("journal_mode = WAL",))
