"""Waiting for the flushers: until a condition holds, waking them while it does not.

``store.flush()``, ``store.evict()`` and a write-through compaction all wait
for whichever flusher owns a shard to commit it (this process's, or a
worker's); they share one polling loop.

Example:
    >>> import asyncio
    >>> from tiered_session import TieredStore
    >>> async def main():
    ...     async with TieredStore.from_url(write_mode="behind") as store:
    ...         await store.session("s").add_items([{"n": 1}])
    ...         await wait_flushed(store.hot, lambda: None, timeout=10)
    ...         return (await store.stats())["backlog"]
    >>> asyncio.run(main())
    0
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from ..hot.keys import ShardKeys
from ..hot.tier import HotTier

__all__ = ["POLL_SECONDS", "poll_until", "wait_committed", "wait_flushed"]

#: the pause between two looks
POLL_SECONDS = 0.002


async def poll_until(
    done: Callable[[], Awaitable[bool]],
    *,
    wake: Callable[[], None],
    timeout: float | None,  # noqa: ASYNC109
    describe: Callable[[], str],
) -> None:
    """Return once ``done()`` is true; raise ``TimeoutError(describe())`` after ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not await done():
        wake()
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(describe())
        await asyncio.sleep(POLL_SECONDS)


async def wait_flushed(
    hot: HotTier,
    wake: Callable[[], None],
    timeout: float | None,  # noqa: ASYNC109
) -> None:
    """Return once every outbox entry there now is committed in SQL."""
    shards = hot.keys.all_shards()
    tips = await hot.pipeline([("xrevrange", (sh.outbox, "+", "-", 1)) for sh in shards])
    targets: list[tuple[ShardKeys, bytes]] = [
        (sh, tip[0][0]) for sh, tip in zip(shards, tips, strict=True) if tip
    ]

    async def done() -> bool:
        nonlocal targets
        if targets:
            left = await hot.pipeline([("xrange", (sh.outbox, "-", tip, 1)) for sh, tip in targets])
            targets = [t for t, rest in zip(targets, left, strict=True) if rest]
        return not targets

    await poll_until(
        done,
        wake=wake,
        timeout=timeout,
        describe=lambda: (
            f"flush did not finish within {timeout}s: {len(targets)} shard(s) still have "
            "unflushed entries; is a flusher running and SQL reachable?"
        ),
    )


async def wait_committed(
    hot: HotTier, shard: ShardKeys, entry_id: bytes, wake: Callable[[], None]
) -> None:
    """Return once a shard's outbox is committed up to ``entry_id``."""

    async def done() -> bool:
        return not await hot.call(hot.redis.xrange(shard.outbox, min="-", max=entry_id, count=1))

    await poll_until(done, wake=wake, timeout=None, describe=str)
