"""The TieredSession rows: write-behind and write-through on real servers, and the embedded default.

The stores are built with :meth:`TieredStore.from_url`, exactly as an
application builds them, so they own (and on ``aclose()`` close) their
clients; clean-up afterwards uses clients of its own.

Example:
    >>> TieredBehind.name, TieredThrough.write_mode, TieredEmbedded.shareable
    ('tiered-behind', 'through', False)
"""

from __future__ import annotations

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import create_async_engine

from tiered_session import TieredStore

from .env import Backend, BenchEnv, BenchSession, delete_prefix, drop_tables

__all__ = ["TieredBehind", "TieredEmbedded", "TieredThrough"]

#: the short name of the write-behind row's second store (see ``TieredBehind.flusher_store``)
FLUSHER_STORE = "tf"


def _tables(env: BenchEnv, short: str) -> tuple[str, str]:
    """The (sessions, messages) table names of one store."""
    stem = env.prefix(short)
    return stem + "_s", stem + "_m"


def _store(
    env: BenchEnv, short: str, write_mode: str, *, owner: bool, flusher: bool
) -> TieredStore:
    sessions, messages = _tables(env, short)
    return TieredStore.from_url(
        env.redis_url,
        env.sql_url,
        write_mode=write_mode,
        key_prefix=env.prefix(short),
        sessions_table=sessions,
        messages_table=messages,
        create_tables=owner,
        run_flusher=flusher,
    )


async def _remove(env: BenchEnv, short: str) -> None:
    """Delete one store's keys and tables; the store has closed its own clients by now."""
    redis = Redis.from_url(env.redis_url)
    engine = create_async_engine(env.sql_url)
    try:
        await delete_prefix(redis, env.prefix(short))
        sessions, messages = _tables(env, short)
        await drop_tables(engine, messages, sessions)
    finally:
        await redis.aclose()
        await engine.dispose()


class _Tiered(Backend):
    short = ""
    write_mode = "through"

    async def open(self) -> None:
        """Build and start the store on this row's key prefix and tables."""
        # Worker processes (not owners) leave flushing to the parent's store.
        self.store = _store(
            self.env, self.short, self.write_mode, owner=self.owner, flusher=self.owner
        )
        await self.store.start()

    def make_session(self, sid: str) -> BenchSession:
        """Return a ``TieredSession`` of the store."""
        return self.store.session(sid)

    async def settle(self) -> None:
        """Wait until every accepted write is committed in SQL."""
        await self.store.flush(timeout=120)

    async def close(self) -> None:
        """Flush and close the store; when owner, delete its keys and tables."""
        if self.owner:
            await self.store.flush(timeout=120)
        await self.store.aclose()
        if self.owner:
            await _remove(self.env, self.short)


class TieredBehind(_Tiered):
    """TieredSession, write-behind, on real Redis + PostgreSQL."""

    name = "tiered-behind"
    short = "tb"
    write_mode = "behind"

    async def open(self) -> None:
        """Start the store and, when owner, the flusher workload's second store."""
        await super().open()
        if self.owner:
            # Without a flusher of its own, so the flusher workload drains it alone.
            self.flusher_store = _store(
                self.env, FLUSHER_STORE, "behind", owner=True, flusher=False
            )
            await self.flusher_store.start()

    async def close(self) -> None:
        """Close and remove the second store, then the row's own."""
        if self.owner:
            await self.flusher_store.aclose()
            await _remove(self.env, FLUSHER_STORE)
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
        """Start an embedded store (nothing to clean up: it lives in memory)."""
        self.store = TieredStore()
        await self.store.start()

    def make_session(self, sid: str) -> BenchSession:
        """Return a ``TieredSession`` of the store."""
        return self.store.session(sid)

    async def close(self) -> None:
        """Close the store, and with it its in-memory tiers."""
        await self.store.aclose()
