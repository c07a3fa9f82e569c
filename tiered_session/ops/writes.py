"""Adds, pops and clears: one script each, then whatever the write mode does next.

Each write is one script that assigns seqs atomically in Redis. A script that
finds the session missing (``COLD``) has it warmed from SQL and runs again; a
pop or clear that meets an add reserved before it waits for that add.

Example:
    >>> import asyncio
    >>> from tiered_session import TieredSession
    >>> async def main():
    ...     async with TieredSession("s") as session:
    ...         await session.add_items([{"n": 1}, {"n": 2}])
    ...         return await session.pop_item(), await session.get_items()
    >>> asyncio.run(main())
    ({'n': 2}, [{'n': 1}])
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .._codec import decode_item, encode_item, split_envelope
from .._config import StoreConfig
from .._errors import (
    BackpressureError,
    CorruptDataError,
    InvalidInputError,
    StorageUnavailableError,
)
from .._stats import Counters
from .._time import now_ms
from ..hot.keys import SessionKeys
from ..hot.scripts import Status
from ..hot.tier import Call, HotTier
from .decoding import Decoder
from .expiry import ExpiryClock
from .modes import WriteStrategy, run_to_completion
from .pointer import check_branch_reply
from .warming import WARM_ATTEMPTS, Warmer

__all__ = ["Writes"]

#: refills a pop may need before it gives up (each moves a window of items from SQL)
_REFILL_ATTEMPTS = 200
#: the first and the longest pause while a pop or clear waits for earlier operations
_WAIT_PAUSE = (0.0005, 0.005)
#: how much longer than ``inflight_timeout`` such a wait lasts before it gives up
_WAIT_GRACE = 5.0


class Writes:
    """``add_items``, ``pop_item`` and ``clear_session`` of every session of a store."""

    def __init__(
        self,
        hot: HotTier,
        config: StoreConfig,
        counters: Counters,
        warmer: Warmer,
        mode: WriteStrategy,
        expiry: ExpiryClock,
        ready: Callable[[], Awaitable[None]],
        wake_flusher: Callable[[], None],
    ) -> None:
        self.hot = hot
        self.config = config
        self.counters = counters
        self.decoder = Decoder(counters)
        self.warmer = warmer
        self.mode = mode
        self.expiry = expiry
        self._ready = ready
        self._wake = wake_flusher

    # ------------------------------------------------------------------ add
    async def add_items(
        self, k: SessionKeys, items: Sequence[Any], branch: bytes | None = None
    ) -> None:
        """Append items atomically (all or none).

        ``branch``: the advanced session's branch believed current; the add is
        done only while it is (else :class:`~.pointer.BranchMoved`, nothing written).
        """
        hooks = self.counters.hooks
        if hooks is not None:  # metrics on: time the call
            return await hooks.timed("add_items", self._add_items(k, items, branch))
        return await self._add_items(k, items, branch)

    async def _add_items(
        self, k: SessionKeys, items: Sequence[Any], branch: bytes | None = None
    ) -> None:
        if not isinstance(items, list | tuple):
            raise InvalidInputError(f"items must be a list, got {type(items).__name__}")
        if not items:
            await self._ready()
            return
        datas = [encode_item(item) for item in items]  # validates before any write
        await self._ready()
        # The deferred settle is taken now, before the add starts: the previous
        # add's settle travels with this add's script.
        add = self._add(k, datas, self.mode.take_deferred(k), branch)
        await (run_to_completion(add) if self.mode.shields_adds else add)
        self.counters.items_added += len(datas)

    async def _add(
        self,
        k: SessionKeys,
        datas: list[bytes],
        settles: list[Call] | None,
        branch: bytes | None = None,
    ) -> None:
        cfg = self.config
        ttl = self.expiry.ttl_ms if self.expiry.due(k) else 0  # refresh the expiry every ttl/4
        args = [self.mode.code, cfg.hot_items, ttl, cfg.max_backlog, k.session_id, now_ms()]
        if branch is None:
            call = self.hot.add_call(k, [*args, *datas])
        else:
            call = self.hot.branch_add_call(k, [*args, *datas], branch)
        for _ in range(WARM_ATTEMPTS):
            if settles:
                res = await self.mode.run_after(settles, call)
                settles = None
            else:
                res = await self.hot.run(*call)
            status = res[0]
            if branch is not None:
                check_branch_reply(res)  # another branch is current: nothing was written
            if status == Status.COLD:
                await self.warmer.warm(k)
                continue
            if status == Status.BEHIND_SQL:  # reload the session first
                if await self.hot.evict(k):
                    await self.warmer.warm(k)
                    continue
                raise StorageUnavailableError(
                    f"session {k.session_id!r}: Redis was behind SQL (it lost writes SQL has) "
                    "and writes restored with it are still pending; adds are refused until a "
                    "flusher settles them (within inflight_timeout): retry later"
                )
            if status == Status.BACKLOG_FULL:
                raise BackpressureError(
                    f"write-behind backlog of shard {k.shard.shard} reached max_backlog="
                    f"{cfg.max_backlog}; the items were not accepted. Check that a "
                    "flusher is running and SQL is reachable, then retry."
                )
            await self.mode.added(k, res, datas)
            return
        raise StorageUnavailableError(f"session {k.session_id!r} could not be loaded into Redis")

    # ------------------------------------------------------------------ pop
    async def pop_item(self, k: SessionKeys) -> Any:
        """Remove and return the newest item, or None when the session is empty."""
        hooks = self.counters.hooks
        if hooks is not None:  # metrics on: time the call
            return await hooks.timed("pop_item", self._pop_item(k))
        return await self._pop_item(k)

    async def _pop_item(self, k: SessionKeys) -> Any:
        await self._ready()
        return await run_to_completion(self._pop(k))

    async def _pop(self, k: SessionKeys) -> Any:
        now = now_ms()
        await self.mode.send_deferred(k)
        n0, pause, since, refills = 0, _WAIT_PAUSE[0], time.monotonic(), 0
        while refills < _REFILL_ATTEMPTS:
            refills += 1
            res = await self.hot.pop(k, self.mode.code, now, n0)
            status = res[0]
            if status == Status.WAIT_EARLIER:  # an add reserved before this pop is pending
                n0, refills = int(res[1]), refills - 1
                pause = await self.wait_settled(k, since, pause)
                continue
            if status == Status.COLD:
                await self.warmer.warm(k)
                continue
            if status == Status.NO:  # empty
                return None
            if status == Status.NEEDS_REFILL:
                if int(res[1]) + int(res[2]):
                    # SQL is not yet up to date for this session: let it catch up.
                    self._wake()
                    refills -= 1
                    pause = await self.wait_settled(k, since, pause)
                    continue
                await self.warmer.refill(k, int(res[3]))
                continue
            env: bytes = res[1]
            seq, data = split_envelope(env)
            try:
                item = decode_item(data)
            except CorruptDataError as e:
                # The pop has been taken: report loudly rather than skip silently.
                self.decoder.report(k, "Redis hot list", e)
                await self.mode.popped(k, seq, env)
                raise
            await self.mode.popped(k, seq, env)
            return item
        raise StorageUnavailableError(f"pop on {k.session_id!r} could not refill the hot list")

    # ------------------------------------------------------------------ clear
    async def clear_session(self, k: SessionKeys) -> None:
        """Delete every item of the session."""
        hooks = self.counters.hooks
        if hooks is not None:  # metrics on: time the call
            return await hooks.timed("clear_session", self._clear_session(k))
        return await self._clear_session(k)

    async def _clear_session(self, k: SessionKeys) -> None:
        await self._ready()
        await run_to_completion(self._clear(k))

    async def _clear(self, k: SessionKeys) -> None:
        now = now_ms()
        await self.mode.send_deferred(k)
        n0, pause, since, warms = 0, _WAIT_PAUSE[0], time.monotonic(), 0
        while warms < WARM_ATTEMPTS:
            warms += 1
            res = await self.hot.clear(k, self.mode.code, now, n0)
            if res[0] == Status.WAIT_EARLIER:  # an add reserved before this clear is pending
                n0, warms = int(res[1]), warms - 1
                pause = await self.wait_settled(k, since, pause)
                continue
            if res[0] == Status.COLD:
                await self.warmer.warm(k)
                continue
            await self.mode.cleared(k, int(res[1]), [int(x) for x in res[2:]])
            return
        raise StorageUnavailableError(f"session {k.session_id!r} could not be loaded into Redis")

    async def wait_settled(self, k: SessionKeys, since: float, pause: float) -> float:
        """Wait for earlier operations a pop or clear must not pass; return the next pause.

        A pending write-through add settles within a round trip of its commit,
        a write-behind write when a flusher commits it; one whose writer
        vanished, when a flusher recovers it (``inflight_timeout``).
        """
        await self.mode.send_deferred(k)
        if time.monotonic() - since > self.config.inflight_timeout + _WAIT_GRACE:
            raise StorageUnavailableError(
                f"session {k.session_id!r}: operations accepted before this call have not "
                "settled; is a flusher running (to commit or recover them)? Retry later"
            )
        await asyncio.sleep(pause)
        return min(pause * 2, _WAIT_PAUSE[1])
