"""Atomic suffix replacement for the SDK's ``OpenAIResponsesCompactionSession``.

The SDK asks a session for a *compaction snapshot*: its newest items plus a
``replace_suffix(start, output)`` callback that swaps the items from ``start``
on for the compacted output, atomically and only if nothing changed
meanwhile. Here the snapshot is read from the hot list (with each item's seq)
and the replacement is one Lua script that checks the tail, removes it and
appends the output; SQL follows through the outbox in order with every other
write. In write-through mode ``replace_suffix`` returns once SQL has it.

Example:
    >>> import asyncio
    >>> from tiered_session import TieredSession
    >>> async def main():
    ...     async with TieredSession("s") as session:
    ...         await session.add_items([{"role": "user", "content": str(i)} for i in range(3)])
    ...         snap = await session._get_compaction_snapshot(2)
    ...         await snap.replace_suffix(0, [{"role": "user", "content": "summary"}])
    ...         return [i["content"] for i in await session.get_items()]
    >>> asyncio.run(main())
    ['0', 'summary']
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .._codec import decode_item, encode_item, has_pending, split_envelope
from .._errors import CorruptDataError
from .._time import now_ms
from ..hot.keys import SessionKeys
from ..hot.scripts import Status
from ..hot.tier import HotTier
from .modes import WriteStrategy
from .warming import Warmer

__all__ = ["Compaction", "CompactionSnapshot"]

#: warm-ups tried before a compaction gives up (the SDK then takes its slower path)
_ATTEMPTS = 3
#: seconds a whole-history replacement waits for the session's writes in flight
_IN_FLIGHT_WAIT = 2.0


@dataclass(frozen=True, slots=True)
class CompactionSnapshot:
    """What the SDK's compaction reads: the newest items and a way to replace their tail.

    The same attributes as the SDK's own snapshot (the SDK reads them by name).
    """

    items: list[Any]
    #: whether ``items`` is the whole history
    complete: bool
    #: ``replace_suffix(start, output)``: swap ``items[start:]`` for ``output``
    #: atomically; False (nothing changed) when the session changed meanwhile
    replace_suffix: Callable[[int, list[Any]], Awaitable[bool]]


class Compaction:
    """The SDK's compaction hooks for every session of a store."""

    def __init__(
        self,
        hot: HotTier,
        warmer: Warmer,
        mode: WriteStrategy,
        hot_items: int,
        ready: Callable[[], Awaitable[None]],
    ) -> None:
        self.hot = hot
        self.warmer = warmer
        self.mode = mode
        self.window = hot_items
        self._ready = ready

    async def snapshot(self, k: SessionKeys, limit: int) -> Any:
        """Return a snapshot of the newest ``limit`` items, or None.

        None (the SDK then falls back to its whole-history path) when the
        newest ``limit + 1`` items are not all in the hot window, or when an
        item cannot be decoded.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            return None
        await self._ready()
        await self.mode.send_deferred(k)  # this store's own last add is settled, not pending
        for _ in range(_ATTEMPTS):
            res = await self.hot.read(k, limit + 1)
            if res[0] != Status.COLD:
                break
            await self.warmer.warm(k)
        else:
            return None
        full, _floor, envs = res
        if has_pending(envs):
            return None  # a write-through add is in flight: no stable tail to replace
        if len(envs) <= limit and not full:
            return None  # older items live below the hot window: no exact tail here
        complete = len(envs) <= limit
        envs = list(envs[-limit:])
        try:
            items = [decode_item(split_envelope(e)[1]) for e in envs]
        except CorruptDataError:
            return None

        async def replace_suffix(start: int, output: list[Any]) -> bool:
            expected = envs[start:]
            if not expected:
                return False
            return await self._replace(k, expected, output)

        return CompactionSnapshot(items, complete, replace_suffix)

    async def replace_all(self, k: SessionKeys, output: list[Any]) -> bool:
        """Replace the whole history with ``output`` atomically (the SDK's manual compaction).

        A write-through operation of the session in flight (a concurrent
        add) is waited for, so the replacement lands wholly before or after
        it; past ``_IN_FLIGHT_WAIT`` seconds this returns False, leaving the
        history as it is (the SDK then falls back to a clear and an add).
        """
        await self._ready()
        deadline = time.monotonic() + _IN_FLIGHT_WAIT
        pause = 0.001
        while True:
            if await self._replace(k, None, output):
                return True
            if time.monotonic() + pause > deadline:
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    async def _replace(
        self, k: SessionKeys, expected: list[bytes] | None, output: list[Any]
    ) -> bool:
        datas = [encode_item(item) for item in output]  # validates before any write
        n_expected = -1 if expected is None else len(expected)
        args: list[Any] = [k.session_id, now_ms(), self.window, n_expected]
        await self.mode.send_deferred(k)
        for _ in range(_ATTEMPTS):
            res = await self.hot.replace(k, [*args, *(expected or ()), *datas])
            if int(res[0]) != Status.COLD:
                break
            await self.warmer.warm(k)
        if int(res[0]) != Status.OK:
            return False
        await self.mode.replaced(k, res[1])
        return True
