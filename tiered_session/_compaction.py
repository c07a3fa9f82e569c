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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._codec import decode_item, encode_item, split_envelope
from ._errors import CorruptDataError
from ._scripts import COLD
from ._through import has_pending

if TYPE_CHECKING:
    from ._session import TieredSession

__all__ = ["compaction_snapshot", "replace_all"]


async def compaction_snapshot(
    session: TieredSession, limit: int, prune_prefix: Callable[[Any], bool] | None = None
) -> Any:
    """Return the SDK's ``_CompactionSnapshot`` of the newest ``limit`` items, or None.

    None (the SDK then falls back to its whole-history path) when the SDK is
    too old to know snapshots, when the newest ``limit + 1`` items are not all
    in the hot window, or when an item cannot be decoded. ``prune_prefix``
    (expired encrypted items before the suffix) is accepted and ignored:
    those items stay, and the encrypting wrapper keeps hiding them.
    """
    try:
        from agents.memory.session import _CompactionSnapshot
    except ImportError:
        return None
    del prune_prefix
    store, k = session.store, session._keys
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        return None
    await store._ready()
    await store._send_deferred(k)  # this store's own last add is settled, not pending
    for _ in range(3):
        res = await store._script("read", [k.meta, k.items], [limit + 1])
        if res[0] != COLD:
            break
        await store._warm(k)
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
        return await _replace(session, expected, output)

    return _CompactionSnapshot(items, complete, replace_suffix)


async def replace_all(session: TieredSession, output: list[Any]) -> bool:
    """Replace the whole history with ``output`` atomically (the SDK's manual compaction).

    Returns False, leaving the history as it is, while a write-through
    operation of the session is in flight; the SDK then falls back to a
    clear followed by an add.
    """
    await session.store._ready()
    return await _replace(session, None, output)


async def _replace(session: TieredSession, expected: list[bytes] | None, output: list[Any]) -> bool:
    store, k = session.store, session._keys
    datas = [encode_item(item) for item in output]  # validates before any write
    n_expected = -1 if expected is None else len(expected)
    args: list[Any] = [k.session_id, int(time.time() * 1000), store._hot, n_expected]
    keys = [k.meta, k.items, k.reserved, k.shard.outbox, k.shard.inflight, k.shard.index]
    await store._send_deferred(k)
    for _ in range(3):
        res = await store._script("replace", keys, [*args, *(expected or ()), *datas])
        if int(res[0]) != COLD:
            break
        await store._warm(k)
    if int(res[0]) != 1:
        return False
    if store.config.write_mode == "through":
        await _committed(session, res[1])
    return True


async def _committed(session: TieredSession, entry_id: bytes) -> None:
    """Wait until a flusher has committed the session's shard up to ``entry_id``."""
    store, outbox = session.store, session._keys.shard.outbox
    while await store._redis_call(store.redis.xrange(outbox, min="-", max=entry_id, count=1)):
        if store._flusher is not None:
            store._flusher.wake()
        await asyncio.sleep(0.002)
