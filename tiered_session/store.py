"""TieredStore: the Redis hot tier and the SQL source of truth behind one object.

The store wires the parts together and runs their lifecycle; each public
method delegates to the component that does the work: reads and writes to
:mod:`tiered_session.ops`, the outbox to :mod:`tiered_session.outbox`, the
tiers to :mod:`tiered_session.hot` and :mod:`tiered_session.cold`.

Example:
    >>> import asyncio
    >>> from tiered_session import TieredStore
    >>> async def main():
    ...     async with TieredStore.from_url(write_mode="behind") as store:
    ...         s = store.session("user-1")
    ...         await s.add_items([{"role": "user", "content": "hi"}])
    ...         await store.flush()
    ...         return await s.get_items(limit=1)
    >>> asyncio.run(main())
    [{'role': 'user', 'content': 'hi'}]
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from ._config import StoreConfig, validate_session_id
from ._errors import ConfigurationError
from ._progress import Progress
from ._stats import Counters, StoreStats
from .cold.engine import embedded_engine, engine_from_url
from .cold.tier import SqlTier
from .hot.connection import embedded_redis, redis_for_store
from .hot.keys import KeySpace, SessionKeys
from .hot.tier import HotTier
from .ops.admin import Admin, SessionInfo, SessionStats
from .ops.compaction import Compaction
from .ops.loops import Runtimes
from .ops.modes import WriteStrategy
from .ops.reads import Reads
from .ops.runtime import Shared
from .ops.transfer import ImportReport, Transfer
from .ops.writes import Writes
from .outbox.backlog import store_stats
from .outbox.waiting import poll_until, wait_flushed

if TYPE_CHECKING:
    from .session import TieredSession

__all__ = ["TieredStore"]

log = logging.getLogger("tiered_session")


#: what to pass when only one of the two URLs is given
_HINTS = {
    "redis_url": 'redis_url="memory://" for an in-process Redis that no other process '
    "shares (two such processes would hand out the same seqs)",
    "sql_url": 'sql_url="sqlite+aiosqlite:///path.db" (or "sqlite+aiosqlite://" to keep '
    "the history in memory only, lost at exit)",
}


class TieredStore:
    """A Redis hot tier plus a SQL source of truth, shared by many sessions.

    Example:
        >>> store = TieredStore.from_url(hot_items=50)  # embedded default
        >>> store.session("user-1").session_id
        'user-1'

    Args:
        redis: a ``redis.asyncio.Redis`` client (``decode_responses=False``);
            the caller keeps ownership. ``None`` uses an in-process fakeredis.
        engine: a SQLAlchemy ``AsyncEngine``; the caller keeps ownership.
            ``None`` uses an in-memory SQLite database (tables created).
        config: a [`StoreConfig`][tiered_session.StoreConfig]; or pass its fields as
            keyword options.
        owns_clients: close ``redis`` and ``engine`` on ``aclose()`` even when
            they were passed in (``from_url`` stores own theirs).
    """

    def __init__(
        self,
        *,
        redis: Redis | None = None,
        engine: AsyncEngine | None = None,
        config: StoreConfig | None = None,
        owns_clients: bool = False,
        **options: Any,
    ) -> None:
        if config is not None and options:
            raise ConfigurationError("pass either config= or keyword options, not both")
        if config is None:
            try:
                config = StoreConfig(**options)
            except TypeError as e:
                raise ConfigurationError(f"unknown option: {e}") from e
        self.config = config
        self.keys = KeySpace(config.key_prefix, config.outbox_shards)
        self.counters = Counters()
        create = config.create_tables or engine is None
        self._shared = Shared(config, self.keys, self.counters, create)
        #: the store's clients and parts, one set per event loop that uses the store
        self.runtimes = Runtimes(
            self._shared,
            embedded_redis() if redis is None else redis,
            embedded_engine() if engine is None else engine,
            owns=(owns_clients or redis is None, owns_clients or engine is None),
        )

    @classmethod
    def from_url(
        cls,
        redis_url: str | None = None,
        sql_url: str | None = None,
        *,
        redis_kwargs: dict[str, Any] | None = None,
        engine_kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> TieredStore:
        """Build a store that owns its clients (closed by ``aclose()``).

        No URLs: the embedded default (in-process fakeredis, in-memory SQLite).
        Mixing an embedded tier with a real one is asked for by name:
        ``redis_url="memory://"`` (an in-process Redis no other process shares)
        or ``sql_url="sqlite+aiosqlite://"`` (history kept in memory only).
        """
        if (redis_url is None) != (sql_url is None):
            given, missing = (
                ("sql_url", "redis_url") if redis_url is None else ("redis_url", "sql_url")
            )
            hint = _HINTS[missing]
            raise ConfigurationError(f"{given} is set but {missing} is not: pass both, or {hint}")
        redis = redis_for_store(redis_url, redis_kwargs, options.get("redis_cluster"))
        engine = None if sql_url is None else engine_from_url(sql_url, engine_kwargs or {})
        return cls(redis=redis, engine=engine, owns_clients=True, **options)

    def session(self, session_id: str, *, session_settings: Any = None) -> TieredSession:
        """Return a session bound to this store (cheap; no I/O)."""
        from .session import TieredSession

        return TieredSession(session_id, store=self, session_settings=session_settings)

    def advanced_session(self, session_id: str, *, session_settings: Any = None) -> Any:
        """An :class:`~tiered_session.AdvancedTieredSession` bound to this store (no I/O)."""
        from .advanced import AdvancedTieredSession

        return AdvancedTieredSession(session_id, store=self, session_settings=session_settings)

    def session_keys(self, session_id: str) -> SessionKeys:
        """The Redis keys of a session (validates the id)."""
        return self.keys.session(validate_session_id(session_id))

    # ------------------------------------------------------------------ per event loop
    # Connections belong to the loop that opened them: each loop that uses the
    # store gets its own clients and parts (see :mod:`.ops.runtime`).
    @property
    def redis(self) -> Redis:
        """The Redis client of the running event loop."""
        return self.runtimes.current().redis

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy engine of the running event loop."""
        return self.runtimes.current().engine

    @property
    def hot(self) -> HotTier:
        """The Redis tier of the running event loop."""
        return self.runtimes.current().hot

    @property
    def sql(self) -> SqlTier:
        """The SQL tier of the running event loop."""
        return self.runtimes.current().sql

    @property
    def mode(self) -> WriteStrategy:
        """The write mode (``write_mode``) of the running event loop."""
        return self.runtimes.current().mode

    @property
    def reads(self) -> Reads:
        """Session reads, on the running event loop."""
        return self.runtimes.current().reads

    @property
    def writes(self) -> Writes:
        """Session writes, on the running event loop."""
        return self.runtimes.current().writes

    @property
    def compaction(self) -> Compaction:
        """The SDK compaction hooks, on the running event loop."""
        return self.runtimes.current().compaction

    @property
    def admin(self) -> Admin:
        """Operations on many sessions, on the running event loop."""
        return self.runtimes.current().admin

    @property
    def transfer(self) -> Transfer:
        """Export and import, on the running event loop."""
        return self.runtimes.current().transfer

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Create tables (if asked) and start the in-process flusher. Idempotent."""
        await self.runtimes.current().start()

    async def _ready(self) -> None:
        await self.runtimes.current().ready()

    @property
    def flusher_task(self) -> asyncio.Task[None] | None:
        """The in-process flusher's task while it runs (``run_flusher=True``)."""
        owner = self._shared.flusher_owner
        return None if owner is None else owner.flusher_task

    @property
    def closed(self) -> bool:
        """Whether `aclose` was called."""
        return self._shared.closed

    async def retry_unsettled(self) -> None:
        """Finish write-through settles Redis could not take earlier (the flusher calls this)."""
        await self.runtimes.current().retry_unsettled()

    def _wake(self) -> None:
        self.runtimes.current().wake()

    async def aclose(self, *, drain_timeout: float = 10.0) -> None:
        """Drain and stop the flusher, then close the clients this store owns.

        Idempotent, and callable from any event loop: each loop's connections
        are closed on that loop. Clients passed in by the caller are left open.
        """
        if self._shared.closed:
            return
        self._shared.closed = True
        self._shared.drain_timeout = drain_timeout
        await self.runtimes.close(drain_timeout)

    async def __aenter__(self) -> TieredStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ one session
    async def get_items(self, session_id: str, limit: int | None = None) -> list[Any]:
        """Return a session's newest ``limit`` items (all when None), oldest first."""
        return await self.reads.get_items(self.session_keys(session_id), limit)

    async def add_items(self, session_id: str, items: list[Any]) -> None:
        """Append items to a session; all of them or none are stored."""
        await self.writes.add_items(self.session_keys(session_id), items)

    async def pop_item(self, session_id: str) -> Any:
        """Remove and return a session's newest item, or None when it is empty."""
        return await self.writes.pop_item(self.session_keys(session_id))

    async def clear_session(self, session_id: str) -> None:
        """Delete every item of a session."""
        await self.writes.clear_session(self.session_keys(session_id))

    # ------------------------------------------------------------------ the outbox
    async def flush(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Return once every write accepted so far is committed in SQL.

        Waits for whichever flusher owns each shard (this process's, or a
        worker's). Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        rt = self.runtimes.current()
        await rt.ready()
        await rt.mode.send_deferred()
        await wait_flushed(rt.hot, rt.wake, timeout)

    async def evict(self, session_id: str, *, timeout: float | None = 30.0) -> None:  # noqa: ASYNC109
        """Flush a session, then drop its Redis copy; the next read re-warms from SQL.

        Waits until a flusher has committed the session's pending writes; raises
        ``TimeoutError`` after ``timeout`` seconds (``None``: wait forever).
        """
        k = self.session_keys(session_id)
        await self._ready()
        await self.mode.send_deferred(k)
        await poll_until(
            lambda: self.hot.evict(k),
            wake=self._wake,
            timeout=timeout,
            describe=lambda: (
                f"evict({session_id!r}) waited {timeout}s for its pending writes "
                "to reach SQL; is a flusher running (run_flusher=True or `tiered-session flush`)?"
            ),
        )

    async def stats(self) -> StoreStats:
        """Return counters of this process plus backlog figures from Redis."""
        await self._ready()
        return await store_stats(self.hot, self.counters, self.config.write_mode)

    # ------------------------------------------------------------------ many sessions
    async def list_sessions(self, limit: int = 100, offset: int = 0) -> list[SessionInfo]:
        """Return sessions that hold items, newest activity first, one page at a time."""
        return await self.admin.list_sessions(limit, offset)

    async def session_exists(self, session_id: str) -> bool:
        """Return whether the session holds at least one item (in either tier)."""
        return await self.admin.session_exists(session_id)

    async def session_stats(self, session_id: str) -> SessionStats:
        """Return item counts (total, hot, unflushed), size and times of one session."""
        return await self.admin.session_stats(session_id)

    async def delete_session(self, session_id: str) -> bool:
        """Delete a session from both tiers; return whether it held items."""
        return await self.admin.delete_session(session_id)

    async def cleanup(
        self, older_than: timedelta, *, dry_run: bool = False, progress: Progress | None = None
    ) -> int:
        """Delete every session idle for longer than ``older_than``; return how many."""
        return await self.admin.cleanup(older_than, dry_run=dry_run, progress=progress)

    async def export_jsonl(
        self,
        path: str | Path,
        session_ids: list[str] | None = None,
        *,
        progress: Progress | None = None,
    ) -> int:
        """Write sessions (all, or ``session_ids``) to a JSON Lines file; return how many."""
        return await self.transfer.export_jsonl(Path(path), session_ids, progress)

    async def import_jsonl(
        self, path: str | Path, *, progress: Progress | None = None
    ) -> ImportReport:
        """Restore sessions written by `export_jsonl` (idempotent)."""
        return await self.transfer.import_jsonl(Path(path), progress)

    async def import_sdk_sqlite(
        self,
        path: str | Path,
        *,
        sessions_table: str = "agent_sessions",
        messages_table: str = "agent_messages",
        progress: Progress | None = None,
    ) -> ImportReport:
        """Import every session of an SDK ``SQLiteSession``/``AsyncSQLiteSession`` file."""
        return await self.transfer.import_sdk_sqlite(
            Path(path),
            sessions_table=sessions_table,
            messages_table=messages_table,
            progress=progress,
        )
