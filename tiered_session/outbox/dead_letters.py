"""Dead letters: outbox entries SQL kept refusing, set aside so the queue moves on.

A poison entry goes to its shard's dead-letter stream after ``max_attempts``
deliveries. Operators list them (without item contents) and replay them once
the cause is fixed: a replayed entry is appended to its outbox again, so it is
applied after everything accepted since.

Example:
    >>> import asyncio
    >>> from tiered_session import TieredStore
    >>> async def main():
    ...     async with TieredStore.from_url(write_mode="behind") as store:
    ...         return await list_dead_letters(store.hot, limit=10)
    >>> asyncio.run(main())
    []
"""

from __future__ import annotations

import logging
from typing import TypedDict, cast

from ..hot.scripts import DeadField, EntryField
from ..hot.tier import HotTier
from .entries import Entry
from .leases import GROUP, Leases, ShardState

__all__ = ["DeadLetter", "dead_letter", "list_dead_letters", "replay_dead_letter"]

log = logging.getLogger("tiered_session.flusher")

#: characters of a failure's description kept with a dead letter
_REASON_CHARS = 500


class DeadLetter(TypedDict):
    """One dead-lettered entry, as ``tiered-session dead-letters list`` shows it."""

    #: ``"<shard>:<dead-letter entry id>"``, what replay takes
    ref: str
    shard: int
    outbox_id: str
    session_id: str
    op: str
    seq: str
    #: size of the items' JSON (the contents are not shown)
    bytes: int
    reason: str


async def dead_letter(
    hot: HotTier, leases: Leases, state: ShardState, e: Entry, reason: str
) -> bool:
    """Move one entry of a held shard to its dead-letter stream; False when the lease is gone."""
    sh = state.keys
    if await hot.call(hot.redis.get(sh.lease)) != leases.token.encode():
        leases.lose(state, "lease lost before dead-lettering")
        return False
    sid = e.session_id
    meta = hot.keys.session(sid).meta if sid else sh.outbox + b":none"
    flat: list[bytes] = []
    for k, v in e.fields.items():
        flat += [k, v]
    await hot.dead(sh, meta, [GROUP, e.id, reason[:_REASON_CHARS], int(e.is_barrier), *flat])
    state.attempts.pop(e.id, None)
    log.error(
        "outbox entry %s of session %r moved to dead letters: %s",
        e.id.decode(),
        sid,
        reason[:200],
    )
    return True


def _text(f: dict[bytes, bytes], name: bytes, default: bytes = b"") -> str:
    return f.get(name, default).decode("utf-8", "replace")


async def list_dead_letters(hot: HotTier, *, limit: int = 100) -> list[DeadLetter]:
    """Return the dead-lettered entries of every shard (at most ``limit`` each)."""
    out: list[DeadLetter] = []
    for sh in hot.keys.all_shards():
        entries = await hot.call(hot.redis.xrange(sh.dead, count=limit))
        for eid, f in cast(list[tuple[bytes, dict[bytes, bytes]]], entries):
            out.append(
                DeadLetter(
                    ref=f"{sh.shard}:{eid.decode()}",
                    shard=sh.shard,
                    outbox_id=_text(f, DeadField.OUTBOX_ID),
                    session_id=_text(f, EntryField.SESSION),
                    op=_text(f, EntryField.OP, b"?"),
                    seq=_text(f, EntryField.SEQ),
                    bytes=len(f.get(EntryField.DATA, b"")),
                    reason=_text(f, DeadField.REASON),
                )
            )
    return out


async def replay_dead_letter(hot: HotTier, shard: int, entry_id: str) -> bool:
    """Append one dead-lettered entry to its outbox again; False when it is not there."""
    sh = hot.keys.shard(shard)
    found = cast(
        list[tuple[bytes, dict[bytes, bytes]]],
        await hot.call(hot.redis.xrange(sh.dead, min=entry_id, max=entry_id)),
    )
    if not found:
        return False
    sid = found[0][1].get(EntryField.SESSION, b"").decode("utf-8", "surrogatepass")
    return await hot.replay(sh, hot.keys.session(sid) if sid else None, entry_id)
