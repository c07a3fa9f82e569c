"""What every benchmark backend shares: the run's environment, the session calls, clean-up.

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

import os
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from redis.asyncio import Redis
from sqlalchemy import MetaData, Table
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.schema import DropTable

__all__ = ["Backend", "BenchEnv", "BenchSession", "delete_prefix", "drop_tables"]


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


#: the Redis the benchmark runs on (env TIERED_SESSION_BENCH_REDIS); only its own keys
DEFAULT_REDIS = os.environ.get("TIERED_SESSION_BENCH_REDIS", "redis://127.0.0.1:6379/12")
#: the PostgreSQL it runs on (env TIERED_SESSION_BENCH_PG); only its own tables
DEFAULT_PG = os.environ.get(
    "TIERED_SESSION_BENCH_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


@dataclass(frozen=True)
class BenchEnv:
    """Where the benchmark runs; plain values, so it travels to worker processes as JSON."""

    namespace: str
    tmpdir: str
    redis_url: str = DEFAULT_REDIS
    sql_url: str = DEFAULT_PG

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


async def delete_prefix(redis: Redis, prefix: str) -> None:
    """SCAN + DEL the keys of one prefix (never FLUSHDB: the database may be shared)."""
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            await redis.delete(*batch)
            batch = []
    if batch:
        await redis.delete(*batch)


async def drop_tables(engine: AsyncEngine, *names: str) -> None:
    """Drop the named tables, in the order given (children first)."""
    md = MetaData()
    async with engine.begin() as conn:
        for name in names:
            await conn.execute(DropTable(Table(name, md), if_exists=True))
