"""Limit-aware reads: the newest items from Redis in one round trip, older ones from SQL.

A read is one plain ``LRANGE`` of the hot list's tail (carrying this store's
deferred settle of the session in the same write). The list's first entry is
a header (see :mod:`tiered_session._codec`): a reply that holds it is the
whole list; one that does not holds as many items as were asked for. Only a
session missing from Redis goes through the ``read`` script, after a warm-up.

Example:
    >>> import asyncio
    >>> from tiered_session import TieredSession
    >>> async def main():
    ...     async with TieredSession("s") as session:
    ...         await session.add_items([{"n": i} for i in range(5)])
    ...         return await session.get_items(limit=2)
    >>> asyncio.run(main())
    [{'n': 3}, {'n': 4}]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .._codec import has_pending, is_header, parse_header
from .._errors import InvalidInputError, StorageUnavailableError
from .._stats import Counters
from ..cold.tier import SqlTier
from ..hot.keys import SessionKeys
from ..hot.scripts import Status
from ..hot.tier import HotTier, redis_down
from .decoding import Decoder
from .expiry import ExpiryClock
from .modes import WriteStrategy
from .pending import PendingResolver
from .pointer import BranchMoved, check_branch_reply
from .warming import Warmer

__all__ = ["Reads", "check_limit"]

log = logging.getLogger("tiered_session")

#: seconds between two log lines about degraded (SQL-only) reads
_DEGRADED_LOG_EVERY = 10.0


def check_limit(limit: Any) -> int:
    """The limit as the scripts take it (-1: all), or InvalidInputError."""
    if limit is None:
        return -1
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InvalidInputError(f"limit must be an int or None, got {limit!r}")
    if limit < 0:
        raise InvalidInputError(f"limit must be >= 0 or None, got {limit}")
    return limit


class Reads:
    """``get_items`` of every session of a store."""

    def __init__(
        self,
        hot: HotTier,
        sql: SqlTier,
        counters: Counters,
        warmer: Warmer,
        mode: WriteStrategy,
        expiry: ExpiryClock,
        ready: Callable[[], Awaitable[None]],
    ) -> None:
        self.hot = hot
        self.sql = sql
        self.counters = counters
        self.decoder = Decoder(counters)
        self.warmer = warmer
        self.mode = mode
        self.expiry = expiry
        self.pending = PendingResolver(hot, sql)
        self._ready = ready
        self._degraded_logged = 0.0

    async def get_items(
        self, k: SessionKeys, limit: int | None, branch: bytes | None = None
    ) -> list[Any]:
        """Return the newest ``limit`` items (all when None) in chronological order.

        When Redis is unreachable the items come from SQL alone: a *degraded*
        read, counted in ``stats()["degraded_reads"]`` and logged. In
        write-behind mode it lacks the writes not flushed yet (they are safe in
        the Redis outbox and reappear when Redis is back).

        ``branch``: the advanced session's branch believed current; read only
        while it is (else :class:`~.pointer.BranchMoved`).
        """
        hooks = self.counters.hooks
        if hooks is not None:  # metrics on: time the call
            return await hooks.timed("get_items", self._get_items(k, limit, branch))
        return await self._get_items(k, limit, branch)

    async def _get_items(
        self, k: SessionKeys, limit: int | None, branch: bytes | None = None
    ) -> list[Any]:
        lim = check_limit(limit)
        if lim == 0:
            return []
        try:
            return await self._read(k, lim, branch)
        except StorageUnavailableError as e:
            if not redis_down(e):
                raise
            rows = await self.sql.latest(k.session_id, None, None if lim < 0 else lim)
            self.counters.degraded_reads += 1
            now = time.monotonic()
            if now - self._degraded_logged > _DEGRADED_LOG_EVERY:
                self._degraded_logged = now
                log.warning("Redis unreachable; reading from SQL only (degraded): %s", e.__cause__)
            return self.decoder.rows(k, rows)

    async def _read(self, k: SessionKeys, lim: int, branch: bytes | None) -> list[Any]:
        await self._ready()
        settles = self.mode.take_deferred(k)
        if branch is None:
            cmd = self.hot.tail_command(k, lim)
            envs = await (self.mode.run_after(settles, cmd) if settles else self.hot.command(*cmd))
        elif settles or not self.hot.batches_commands:  # the pointer checked in the script
            call = self.hot.branch_tail_call(k, lim, branch)
            envs = await (self.mode.run_after(settles, call) if settles else self.hot.run(*call))
            check_branch_reply(envs)
        else:  # the pointer read just before, in the same write: cheaper than a script
            pointer, envs = await self.hot.pointer_and_tail(k, lim)
            if pointer is None or pointer.partition(b"|")[2] != branch:
                raise BranchMoved(pointer)
        if envs and is_header(envs[0]):
            full, floor = parse_header(envs[0])
            return await self._answer(k, lim, full, floor, envs[1:], True)
        if lim > 0 and len(envs) == lim:
            return await self._answer(k, lim, False, 0, envs, False)
        for attempt in range(2):  # not in Redis: warm it up, then read through the script
            res = await self.hot.read(k, lim)
            if res[0] != Status.COLD:
                full, floor, envs = bool(res[0]), int(res[1]), res[2]
                return await self._answer(k, lim, full, floor, envs, lim < 0 or len(envs) < lim)
            if attempt == 0:
                await self.warmer.warm(k)
        # Evicted again meanwhile. A session leaves Redis only with nothing
        # pending, so SQL holds its whole history: answer from there.
        return await self._from_sql(k, lim)

    async def _from_sql(self, k: SessionKeys, lim: int) -> list[Any]:
        self.counters.cold_reads += 1
        rows = await self.sql.latest(k.session_id, None, None if lim < 0 else lim)
        return self.decoder.rows(k, rows)

    async def _answer(
        self, k: SessionKeys, lim: int, full: bool, floor: int, envs: list[bytes], whole: bool
    ) -> list[Any]:
        """Items from the hot list, completed from SQL below ``floor`` when they are not all.

        ``whole``: ``envs`` is the whole list (else its newest ``lim`` entries).
        """
        if has_pending(envs):
            resolved = await self.pending.resolve(k, lim, full, floor, envs, whole)
            if resolved is None:  # the session left Redis meanwhile: SQL holds it all
                return await self._from_sql(k, lim)
            full, floor, envs = resolved
        items = self.decoder.entries(k, envs)
        if full or (lim > 0 and len(items) >= lim):
            self.counters.cache_hits += 1
            if self.expiry.due(k):
                await self.hot.touch(k, self.expiry.ttl_ms)
            return items
        self.counters.cold_reads += 1
        rows = await self.sql.latest(k.session_id, floor, None if lim < 0 else lim - len(items))
        return self.decoder.rows(k, rows) + items
