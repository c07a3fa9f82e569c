"""Write-through settles not sent yet: deferred ones, and ones Redis was down for.

An add with no earlier batch of its session pending returns right after its
SQL commit: its settle is *deferred*, sent ahead of the next command this
store sends for the session (in the same write), or a moment later by a
background task. A settle that could not reach Redis is *unsettled*: queued
and retried in order (settles are idempotent) before the store's next call,
and by the flusher.

Example:
    >>> import asyncio
    >>> from tiered_session.hot.connection import embedded_redis
    >>> from tiered_session.hot.keys import KeySpace
    >>> from tiered_session.hot.tier import HotTier
    >>> async def main():
    ...     async with embedded_redis() as redis:
    ...         settles = Settles(HotTier(redis, KeySpace("doc", shards=1)))
    ...         await settles.retry_unsettled()
    ...         return settles.unsettled
    >>> asyncio.run(main())
    []
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError

from .._errors import StorageUnavailableError
from ..hot.keys import SessionKeys
from ..hot.tier import Call, HotTier, redis_down

__all__ = ["DEFER_SECONDS", "Settles"]

log = logging.getLogger("tiered_session")

#: how long a deferred settle waits for the session's next command to carry it.
#: Enough for a caller's next call (a chat turn reads right after it writes);
#: short enough that other readers rarely meet the batch still pending.
DEFER_SECONDS = 0.0005


class Settles:
    """The deferred and the unsettled settle calls of one store."""

    def __init__(self, hot: HotTier) -> None:
        self.hot = hot
        #: settles that could not reach Redis, retried oldest first
        self.unsettled: list[Call] = []
        self._deferred: dict[bytes, list[Call]] = {}
        self._due = False
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ deferred
    @property
    def deferred_count(self) -> int:
        """Deferred settles not sent yet."""
        return sum(len(calls) for calls in self._deferred.values())

    def defer(self, k: SessionKeys, call: Call) -> None:
        """Queue a committed add's settle for the session's next command, or a moment later."""
        self._deferred.setdefault(k.meta, []).append(call)
        if not self._due:
            self._due = True
            asyncio.get_running_loop().call_later(DEFER_SECONDS, self._start_background)

    def _start_background(self) -> None:
        # A command the caller sent for the session meanwhile took its settle along.
        self._due = False
        if self._deferred:
            task = asyncio.create_task(self.send())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def take(self, k: SessionKeys) -> list[Call] | None:
        """Remove and return the session's deferred settles (the caller sends them)."""
        return self._deferred.pop(k.meta, None) if self._deferred else None

    async def send(self, k: SessionKeys | None = None) -> None:
        """Send deferred settles now: the session's, or every one."""
        if k is not None:
            batch = self._deferred.pop(k.meta, [])
        else:
            batch = [c for calls in self._deferred.values() for c in calls]
            self._deferred.clear()
        if batch:
            try:
                await asyncio.gather(*(self._finish(c) for c in batch))
            except asyncio.CancelledError:
                # Whether Redis took them is unknown: retry them all, in order
                # (idempotent), rather than leave their operations in flight.
                self.unsettled.extend(c for c in batch if c not in self.unsettled)
                raise
        if k is not None and self._tasks:  # settles a background task already took
            await self.wait_background()

    async def wait_background(self) -> None:
        """Wait for the background sends under way."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _finish(self, call: Call) -> None:
        try:
            await self.hot.run(*call)
        except StorageUnavailableError as e:
            if not redis_down(e):
                log.error("settling a write-through add failed: %s", e)
                return
            self.unsettled.append(call)  # idempotent: retried in order

    async def run_after(self, settles: Sequence[Call], last: Call | tuple[Any, ...]) -> Any:
        """Send ``settles`` then ``last`` in one write; return ``last``'s reply.

        Settles whose fate is unknown (the write failed) are queued for a retry.
        """
        try:
            replies, reply = await self.hot.run_after(settles, last)
        except BaseException:
            self.unsettled.extend(settles)
            raise
        for call, r in zip(settles, replies, strict=True):
            if isinstance(r, NoScriptError):
                await self._finish(call)
            elif isinstance(r, Exception):
                log.error("settling a write-through add failed: %s", r)
        return reply

    # ------------------------------------------------------------------ unsettled
    def queue(self, call: Call) -> None:
        """Queue a settle Redis could not take, to retry in order."""
        self.unsettled.append(call)

    async def retry_unsettled(self) -> None:
        """Finish queued settles, oldest first; raise if Redis is still down."""
        while self.unsettled:
            first = self.unsettled[0]
            await self.hot.run(*first)  # idempotent: a repeat does nothing
            if self.unsettled and self.unsettled[0] is first:
                self.unsettled.pop(0)
