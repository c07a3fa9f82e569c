"""Finishing write-through operations whose writer vanished, as SQL says they ended.

A write-through add, pop or clear is recorded in its shard's ``inflight`` hash
while its SQL transaction runs. If the writer dies (or its last Redis call never
arrives), a flusher finds the record after ``inflight_timeout`` and looks in SQL
whether the operation landed: an add whose rows are all there is completed (its
pending entries are kept), a pop whose row is gone is completed, a clear that
left no rows is completed; anything else is rolled back in Redis, exactly as
the writer's own failure path would have done.

Example:
    >>> import asyncio
    >>> from tiered_session import TieredStore
    >>> async def main():
    ...     async with TieredStore.from_url() as store:
    ...         return await recover_operation(store, b"p|1|gone")
    >>> asyncio.run(main())
    False
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from ._codec import envelope

if TYPE_CHECKING:
    from ._store import TieredStore

__all__ = ["recover_operation"]

log = logging.getLogger("tiered_session.flusher")


async def recover_operation(store: TieredStore, op_id: bytes) -> bool:
    """Finish one in-flight write-through operation; False if it had settled meanwhile."""
    kind = op_id[:1]
    parts = op_id.split(b"|", 3 if kind == b"a" else 2)
    sid = parts[-1].decode("utf-8", "surrogatepass")
    seq = int(parts[1])
    k = store.keys.session(sid)
    m = store.sql.messages
    envs: list[bytes] = []  # a pop that did not land: the item to put back
    async with store.sql.begin() as conn:
        if kind == b"a":
            count = int(parts[2])
            found = await conn.scalar(
                select(func.count()).where(
                    m.c.session_id == sid, m.c.seq >= seq, m.c.seq < seq + count
                )
            )
            landed = found == count
        elif kind == b"p":
            data = await conn.scalar(
                select(m.c.message_data).where(m.c.session_id == sid, m.c.seq == seq)
            )
            landed = data is None
            if data is not None:
                envs = [envelope(seq, data.encode())]
        else:
            reserved = [int(x) for x in await store.redis.smembers(k.reserved)]
            cond = [m.c.session_id == sid, m.c.seq <= seq]
            if reserved:
                cond.append(m.c.seq.not_in(reserved))
            landed = not await conn.scalar(select(func.count()).where(*cond))
    done = await store._script(
        "recover",
        [k.meta, k.items, k.reserved, k.shard.outbox, k.shard.inflight],
        [op_id, sid, int(landed), store.config.hot_items, *envs],
    )
    if not done:
        return False
    store.counters.recovered_operations += 1
    log.warning(
        "write-through %s on session %r outlived its writer; %s it as SQL shows",
        {b"a": "add", b"p": "pop"}.get(kind, "clear"),
        sid,
        "completed" if landed else "rolled back",
    )
    return True
