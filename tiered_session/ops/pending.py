"""Reading past pending write-through entries: SQL says which batches committed.

A write-through batch enters the hot list pending and is settled after its
SQL commit (:mod:`.through`). A reader that meets pending entries asks SQL
which of them are committed, and answers as a read after the settles would.

Example:
    >>> import asyncio
    >>> from tiered_session import TieredStore
    >>> async def main():
    ...     async with TieredStore.from_url() as store:
    ...         resolver = PendingResolver(store.hot, store.sql)
    ...         k = store.keys.session("s")
    ...         return await resolver.committed(k, [b"1|{}", b"~2|{}"])
    >>> asyncio.run(main())
    [b'1|{}']
"""

from __future__ import annotations

from collections.abc import Sequence

from .._codec import is_pending, pending_seq, settled
from .._errors import StorageUnavailableError
from ..cold.tier import SqlTier
from ..hot.keys import SessionKeys
from ..hot.scripts import Status
from ..hot.tier import HotTier

__all__ = ["PendingResolver"]

#: wider reads tried before a reader gives up on a session with many adds in flight
_WIDER_READS = 20


class PendingResolver:
    """Resolves pending hot-list entries against SQL."""

    def __init__(self, hot: HotTier, sql: SqlTier) -> None:
        self.hot = hot
        self.sql = sql

    async def committed(self, k: SessionKeys, envs: Sequence[bytes]) -> list[bytes]:
        """Hot-list entries as of now: each pending one kept when SQL has it committed.

        A pending entry SQL lacks belongs to a batch not committed yet; it and
        every pending entry after it are left out, so a later read can only add
        items after what this one returned (a batch that committed after an
        earlier one still in flight has not returned either: it waits for it).
        """
        pending = {i: pending_seq(e) for i, e in enumerate(envs) if is_pending(e)}
        present = await self.sql.present(k.session_id, list(pending.values()))
        out: list[bytes] = []
        cut = False
        for i, e in enumerate(envs):
            if i not in pending:
                out.append(e)
            elif not cut and pending[i] in present:
                out.append(settled(e))
            else:
                cut = True
        return out

    async def resolve(
        self, k: SessionKeys, lim: int, full: bool, floor: int, envs: list[bytes], whole: bool
    ) -> tuple[bool, int, list[bytes]] | None:
        """Resolve a read that met pending entries.

        Returns (full, floor, entries) as a read without pending entries would
        see them: the newest ``lim`` (all when ``lim < 0``, then ``whole``), or
        the whole list when it holds fewer. When entries were left out of a
        partial window, or it starts with a pending one, a wider one is read.
        None when the session left Redis meanwhile.
        """
        width = lim
        for _ in range(_WIDER_READS):
            # A window that starts pending may miss an older pending batch that decides
            # whether the ones in it may be read: read wider until it starts settled.
            if whole or not is_pending(envs[0]):
                kept = await self.committed(k, envs)
                if whole or len(kept) >= lim:
                    return full, floor, kept[-lim:] if lim > 0 else kept
            width = 2 * width + len(envs)
            res = await self.hot.read(k, width)
            if res[0] == Status.COLD:
                return None
            full, floor, envs = bool(res[0]), int(res[1]), list(res[2])
            whole = len(envs) < width
        raise StorageUnavailableError(
            f"session {k.session_id!r}: too many write-through adds in flight to read past; retry"
        )
