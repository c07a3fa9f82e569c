"""SQL engines: from a URL (with pool settings), the embedded default, and SQLite's set-up.

Backends are told apart by the engine's dialect and driver, at this one place.

Example:
    >>> engine = embedded_engine()
    >>> engine.dialect.name, writer_lock(engine) is writer_lock(engine)
    ('sqlite', True)
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
import weakref
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine.base import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from .._config import redact_url
from .._errors import ConfigurationError

__all__ = [
    "DIALECTS",
    "LoopFreeLock",
    "embedded_engine",
    "engine_for_another_loop",
    "engine_from_url",
    "memory_engine",
    "serves_any_loop",
    "uses_asyncpg",
    "writer_lock",
]

#: the SQL backends the store runs on, by SQLAlchemy dialect name
DIALECTS = ("sqlite", "postgresql")
_SCHEMES = ("sqlite+aiosqlite", "postgresql+asyncpg")

#: PostgreSQL pool of a store built from a URL. Fixed: SQLAlchemy closes an
#: overflow connection on every return, so with more concurrent calls than
#: pool_size each call beyond it would reconnect; callers beyond the pool wait
#: pool_timeout instead. LIFO: the backend used last is the likeliest to be running.
PG_POOL: dict[str, Any] = {"pool_size": 10, "max_overflow": 0, "pool_use_lifo": True}

#: asyncpg: seconds to connect (TCP, TLS and login) and to wait for any statement's
#: answer. A server that accepts connections and never answers fails a call in
#: that time instead of hanging it; override with engine_kwargs={"connect_args": {...}}.
PG_TIMEOUTS: dict[str, Any] = {"timeout": 5.0, "command_timeout": 30.0}

#: SQLite: wait for a lock instead of failing at once; enforce foreign keys;
#: fsync at checkpoints only (WAL keeps commits durable against process crashes)
_SQLITE_PRAGMAS = ("busy_timeout = 10000", "foreign_keys = ON", "synchronous = NORMAL")

#: seconds between tries for the writer lock while another thread's loop holds it
_OTHER_THREAD_POLL = 0.001


class LoopFreeLock:
    """One holder at a time, across coroutines of any event loop and thread.

    Coroutines of one loop queue on that loop's ``asyncio.Lock`` (fair, no
    polling); the loop holding it then takes a thread lock, which a caller on
    another thread's loop polls for while held. With a single loop the thread
    lock is always free at once. It serialises SQLite's writers, and a store's
    first start across loops.
    """

    def __init__(self) -> None:
        self._thread = threading.Lock()
        self._guard = threading.Lock()
        self._per_loop: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    def _loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._per_loop.get(loop)
        if lock is None:
            with self._guard:
                for old in [o for o in self._per_loop if o.is_closed()]:
                    del self._per_loop[old]
                lock = self._per_loop.setdefault(loop, asyncio.Lock())
        return lock

    async def __aenter__(self) -> None:
        lock = self._loop_lock()
        await lock.acquire()
        try:
            while not self._thread.acquire(blocking=False):  # noqa: ASYNC110
                await asyncio.sleep(_OTHER_THREAD_POLL)
        except BaseException:
            lock.release()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._thread.release()
        self._loop_lock().release()


_WRITER_LOCKS: weakref.WeakKeyDictionary[Any, LoopFreeLock] = weakref.WeakKeyDictionary()


def engine_from_url(url: str, engine_kwargs: dict[str, Any] | None = None) -> AsyncEngine:
    """An engine for ``sqlite+aiosqlite://...`` or ``postgresql+asyncpg://...``.

    No ``pool_pre_ping``: it costs a round trip on every checkout. After a
    server restart the first call on a dead connection fails, and SQLAlchemy
    then recycles every connection of the pool.
    """
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in _SCHEMES:
        what = repr(scheme) if scheme else "(none: the URL has no scheme://)"
        raise ConfigurationError(
            f"unsupported sql_url scheme {what}: use sqlite+aiosqlite:///path.db "
            "(or sqlite+aiosqlite:// for in-memory) or postgresql+asyncpg://user@host/db"
        )
    kwargs = dict(engine_kwargs or {})
    if scheme == "sqlite+aiosqlite" and (url.endswith("://") or url.endswith(":memory:")):
        return memory_engine(kwargs)
    if scheme == "postgresql+asyncpg":
        if "poolclass" not in kwargs:
            for name, value in PG_POOL.items():
                kwargs.setdefault(name, value)
        kwargs["connect_args"] = {**PG_TIMEOUTS, **kwargs.get("connect_args", {})}
    try:
        return create_async_engine(url, **kwargs)
    except Exception as e:
        # (the driver's message may quote the URL: say what kind of mistake, not the URL)
        raise ConfigurationError(f"invalid sql_url {redact_url(url)}: {type(e).__name__}") from None


def embedded_engine() -> AsyncEngine:
    """An in-memory SQLite database, one connection shared by every caller."""
    return memory_engine({})


def memory_engine(engine_kwargs: dict[str, Any]) -> AsyncEngine:
    """An in-memory SQLite database that outlives any one of its connections.

    SQLAlchemy replaces a connection that failed mid-statement (a cancelled
    call does that); a plain ``:memory:`` database would vanish with it. This
    one is a named in-memory database kept open by an idle anchor connection
    for as long as the engine exists, so the replacement sees the same data.
    """
    name = f"file:tiered-session-{uuid.uuid4().hex}?mode=memory&cache=shared"
    anchor = sqlite3.connect(name, uri=True, check_same_thread=False)
    kwargs = {"poolclass": StaticPool, **engine_kwargs}
    engine = create_async_engine(f"sqlite+aiosqlite:///{name}&uri=true", **kwargs)
    weakref.finalize(engine.sync_engine, anchor.close)
    # A cancelled statement must not replace the one connection: a second one would
    # meet the first one's table locks (shared cache) until it is closed.
    event.listen(engine.sync_engine, "handle_error", _keep_connection_on_cancel)
    return engine


def _keep_connection_on_cancel(ctx: Any) -> None:
    if not isinstance(ctx.original_exception, Exception):  # a cancellation, an exit
        ctx.is_disconnect = False
        ctx.invalidate_pool_on_disconnect = False


def uses_asyncpg(engine: AsyncEngine) -> bool:
    """Whether hot statements may go to the asyncpg driver directly."""
    return engine.dialect.name == "postgresql" and engine.dialect.driver == "asyncpg"


def serves_any_loop(engine: AsyncEngine) -> bool:
    """Whether one engine may serve several event loops: SQLite (aiosqlite) yes.

    aiosqlite runs each connection on a thread of its own and answers on the
    caller's loop; network drivers (asyncpg) tie a connection to the loop that
    opened it.
    """
    return engine.dialect.name == "sqlite"


def engine_for_another_loop(engine: AsyncEngine) -> AsyncEngine:
    """An engine like ``engine`` (same URL, dialect and pool settings) with a new pool.

    Pool event listeners are kept (they live on the pool); listeners set on
    the engine itself are not.
    """
    sync = engine.sync_engine
    clone = Engine(
        sync.pool.recreate(),
        sync.dialect,
        sync.url,
        logging_name=sync.logging_name,
        echo=sync.echo,
        execution_options=sync.get_execution_options(),
        hide_parameters=sync.hide_parameters,
    )
    return AsyncEngine(clone)


def writer_lock(engine: AsyncEngine) -> LoopFreeLock:
    """The lock that serialises this process's SQLite transactions on ``engine``.

    SQLite allows one writer: transactions wait for the lock instead of
    failing on a busy database. Set up once per engine (shared by every store
    using it), with the connection pragmas, and WAL for files so readers in
    other processes run beside the writer.
    """
    lock = _WRITER_LOCKS.get(engine.sync_engine)
    if lock is None:
        lock = _WRITER_LOCKS[engine.sync_engine] = LoopFreeLock()
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        if not isinstance(engine.pool, StaticPool):
            event.listen(engine.sync_engine, "connect", _sqlite_wal)
            # A statement cut by a cancellation (a loop that ends) must not make SQLAlchemy
            # drop its connection: closing it would need the gone loop, and its thread
            # would keep the database locked. Kept, it is rolled back on return.
            event.listen(engine.sync_engine, "handle_error", _keep_connection_on_cancel)
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
