"""PostgreSQL's hot path: asyncpg connections kept out of the engine's pool.

Single statements on the hot path (the write-through insert, a pop's delete,
limit-aware reads) go to the asyncpg driver directly, in autocommit:
SQLAlchemy's execution path around a short statement, and a checkout from the
engine's pool, each cost a large share of the statement itself. So a few
connections stay checked out between calls, newest first (the PostgreSQL
backend used last is the likeliest to be running), until :meth:`Driver.close`;
one the server closed meanwhile is dropped, not used.

Example:
    >>> from tiered_session.cold.engine import embedded_engine
    >>> Driver(embedded_engine()).kept
    0
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._errors import StorageUnavailableError
from .errors import describe, is_data_refusal, is_driver_error

__all__ = ["KEPT_AT_MOST", "Driver"]

#: connections kept per engine at most (and at most half its pool)
KEPT_AT_MOST = 4


class _Kept:
    """Connections kept checked out of one engine's pool (LIFO), shared by its stores."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.conns: list[tuple[AsyncConnection, Any]] = []


_KEPT: weakref.WeakKeyDictionary[Any, _Kept] = weakref.WeakKeyDictionary()


def _kept_of(engine: AsyncEngine) -> _Kept:
    """The engine's kept connections: the rest of the pool stays free for transactions.

    A pool without a fixed size keeps none.
    """
    kept = _KEPT.get(engine.sync_engine)
    if kept is None:
        size = getattr(engine.pool, "size", None)
        n = size() if callable(size) else 0
        limit = max(1, min(KEPT_AT_MOST, n // 2)) if isinstance(n, int) and n > 0 else 0
        kept = _KEPT[engine.sync_engine] = _Kept(limit)
    return kept


class Driver:
    """Hands out asyncpg connections of one engine for single autocommit statements."""

    def __init__(self, engine: AsyncEngine, *, keep: bool = False) -> None:
        self.engine = engine
        self._kept = _kept_of(engine) if keep else _Kept(0)

    @property
    def kept(self) -> int:
        """Connections kept out of the pool right now (for every store on the engine)."""
        return len(self._kept.conns)

    @property
    def kept_connections(self) -> list[Any]:
        """The asyncpg connections kept right now, oldest first."""
        return [pg for _, pg in self._kept.conns]

    @property
    def kept_set(self) -> object:
        """The set of kept connections this driver uses: one per engine, shared by its stores."""
        return self._kept

    @property
    def keep_limit(self) -> int:
        """How many connections the engine's stores keep at most."""
        return self._kept.limit

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """An asyncpg connection in autocommit; errors become StorageUnavailableError.

        A connection that failed for any reason other than a refused statement
        is invalidated, so it is never used again.
        """
        try:
            conn, pg = await self._checkout()
            try:
                yield pg
            except BaseException as e:
                if is_data_refusal(e):
                    await self._checkin(conn, pg)
                else:
                    await conn.invalidate()
                    await conn.close()
                raise
            await self._checkin(conn, pg)
        except SQLAlchemyError as e:
            raise StorageUnavailableError(f"SQL operation failed: {describe(e)}") from e
        except OSError as e:
            raise StorageUnavailableError(f"SQL database unreachable: {describe(e)}") from e
        except Exception as e:
            if is_driver_error(e):
                raise StorageUnavailableError(f"SQL operation failed: {describe(e)}") from e
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
        """Return the kept connections to the engine's pool.

        Other stores on the same engine check out new ones when they need them.
        """
        kept = self._kept.conns
        while kept:
            conn, _ = kept.pop()
            with contextlib.suppress(Exception):
                await conn.close()
