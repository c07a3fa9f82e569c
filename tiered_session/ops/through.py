"""Write-through: commit in SQL, then settle the operation in Redis.

Every write-through operation has three steps: a script takes it in Redis
(appends an add's items *pending* and reserves their seqs, takes the item of a
pop, empties the list for a clear) and records it in the shard's in-flight
hash; the SQL transaction commits it; a settle script finishes it in Redis
(keeps the pending items, or undoes the first step when the commit failed). A
writer that vanishes between the steps leaves its operation to a flusher's
recovery (:mod:`tiered_session.outbox.recovery`), which settles it as SQL shows.

An add whose session had no earlier batch pending returns right after its
commit, its settle deferred (:mod:`.settles`). Until the settle arrives the
batch's entries are pending, and whoever meets them asks SQL: a reader keeps
the committed ones (:mod:`.pending`), pops and clears wait.

Example:
    >>> import asyncio
    >>> from tiered_session import TieredStore
    >>> async def main():
    ...     async with TieredStore.from_url(write_mode="through") as store:
    ...         await store.session("u").add_items([{"role": "user", "content": "hi"}])
    ...         return await store.session("u").get_items()
    >>> asyncio.run(main())
    [{'role': 'user', 'content': 'hi'}]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .._config import StoreConfig
from .._errors import StorageUnavailableError
from ..cold.errors import refused_by_constraint
from ..cold.tier import SqlTier
from ..hot.keys import SessionKeys
from ..hot.scripts import Mode, OpKind, Status
from ..hot.tier import Call, HotTier, redis_down
from .settles import Settles

__all__ = ["WriteThrough"]

log = logging.getLogger("tiered_session")

#: waits between attempts to settle while Redis is unreachable; then the settle is queued
SETTLE_RETRY_DELAYS = (0.05, 0.2, 0.5)
#: how long a committed add waits for earlier batches of its session to settle
ORDERED_WAIT_SECONDS = 1.0
#: the first and the longest pause of that wait
ORDERED_PAUSE = (0.0005, 0.01)

#: the settle script's ``ok`` argument
_ROLLED_BACK, _COMMITTED, _COMMITTED_IN_ORDER = 0, 1, 3


class WriteThrough:
    """The SQL commit and Redis settle of write-through operations.

    Args:
        hot: the hot tier.
        sql: the SQL tier.
        config: the store's options.
        wait_committed: waits until a flusher committed a shard's outbox up to
            an entry id (a compaction travels through the outbox in both modes).
    """

    code = Mode.THROUGH
    #: an add's reserved seqs must be settled whatever its caller does
    shields_adds = True

    def __init__(
        self,
        hot: HotTier,
        sql: SqlTier,
        config: StoreConfig,
        wait_committed: Callable[[SessionKeys, bytes], Awaitable[None]],
    ) -> None:
        self.hot = hot
        self.sql = sql
        self.window = config.hot_items
        self.settles = Settles(hot)
        self._wait_committed = wait_committed

    # ------------------------------------------------------------------ strategy
    @property
    def has_leftovers(self) -> bool:
        """Whether settles wait for Redis to come back."""
        return bool(self.settles.unsettled)

    def take_deferred(self, k: SessionKeys) -> list[Call] | None:
        """The session's deferred settles, for its next command to carry."""
        return self.settles.take(k)

    async def send_deferred(self, k: SessionKeys | None = None) -> None:
        """Send deferred settles now."""
        await self.settles.send(k)
        if k is None:
            await self.settles.wait_background()

    async def run_after(self, settles: Sequence[Call], last: Call | tuple[Any, ...]) -> Any:
        """Send ``settles`` ahead of ``last`` in one write."""
        return await self.settles.run_after(settles, last)

    async def ready(self) -> None:
        """Retry settles queued while Redis was down (they are retried again later)."""
        with contextlib.suppress(StorageUnavailableError):
            await self.settles.retry_unsettled()

    async def retry_unsettled(self) -> None:
        """Retry settles queued while Redis was down; raise while it still is."""
        await self.settles.retry_unsettled()

    async def close(self) -> None:
        """Send deferred settles; report those Redis still cannot take."""
        await self.send_deferred()
        if not self.settles.unsettled:
            return
        try:
            await self.settles.retry_unsettled()
        except StorageUnavailableError as e:
            log.warning(
                "%d write-through operation(s) could not be finished in Redis (%s); a "
                "flusher finishes them after inflight_timeout",
                len(self.settles.unsettled),
                e,
            )

    async def replaced(self, k: SessionKeys, entry_id: bytes) -> None:
        """A compaction returns once SQL has it."""
        await self._wait_committed(k, entry_id)

    # ------------------------------------------------------------------ commits
    async def added(self, k: SessionKeys, reply: Sequence[Any], datas: list[bytes]) -> None:
        """Commit a reserved batch in SQL, then settle it (deferred when it was alone).

        Alone: no earlier batch of the session was pending when this one was
        reserved, so nothing has to settle before this call may return.
        """
        first, alone = int(reply[0]), int(reply[1]) == 0
        op_id = f"{OpKind.ADD.decode()}|{first}|{len(datas)}|{k.session_id}"
        try:
            await self.sql.insert_new(k.session_id, first, [d.decode() for d in datas])
        except BaseException as e:
            # Nothing was added to the list: the reserved seqs are released (and, in
            # case the failed commit did land, a delete of them is queued). A flusher
            # that took the operation over decided the same from SQL.
            refused = None
            if isinstance(e, StorageUnavailableError) and refused_by_constraint(e):
                refused = e  # those seqs hold other rows in SQL: keep them
            kind = OpKind.ADD if refused is None else OpKind.ADD_REFUSED
            await self._settle(k, op_id, False, [kind, first, len(datas), k.session_id])
            if refused is not None:
                await self._resync(k, first, refused)
            raise
        tail = [OpKind.ADD, first, len(datas), k.session_id]
        if alone:
            self.settles.defer(k, self.hot.settle_call(k, [op_id, _COMMITTED, self.window, *tail]))
            return
        await self._settle(k, op_id, True, tail, ordered=True)

    async def popped(self, k: SessionKeys, seq: int, env: bytes) -> None:
        """Commit a pop in SQL, then settle it (the item goes back when SQL refused)."""
        op_id = f"{OpKind.POP.decode()}|{seq}|{k.session_id}"
        try:
            await self.sql.delete_one(k.session_id, seq)
        except BaseException:
            await self._settle(k, op_id, False, [OpKind.POP, env])
            raise
        await self._settle(k, op_id, True, [OpKind.POP])

    async def cleared(self, k: SessionKeys, upto: int, keep: list[int]) -> None:
        """Commit a clear in SQL, then settle it."""
        op_id = f"{OpKind.CLEAR.decode()}|{upto}|{k.session_id}"
        try:
            async with self.sql.begin() as conn:
                await self.sql.clear(conn, k.session_id, upto, keep)
        except BaseException:
            await self._settle(k, op_id, False, [OpKind.CLEAR])
            raise
        await self._settle(k, op_id, True, [OpKind.CLEAR])

    # ------------------------------------------------------------------ settling
    async def _settle(
        self, k: SessionKeys, op_id: str, ok: bool, tail: list[Any], *, ordered: bool = False
    ) -> None:
        """Finish a write-through operation in Redis after its SQL transaction.

        When Redis is unreachable the settle is retried briefly, then queued and
        retried in the background (the SQL outcome stands). ``ordered`` (a
        committed add): first wait, up to ORDERED_WAIT_SECONDS, until earlier
        adds of the session are settled, so batches become visible in seq order.
        """
        args = [op_id, _COMMITTED if ok else _ROLLED_BACK, self.window, *tail]
        if ordered and await self._settled_in_order(k, args):
            return
        call = self.hot.settle_call(k, args)
        for delay in (*SETTLE_RETRY_DELAYS, None):
            try:
                await self.hot.run(*call)
                return
            except StorageUnavailableError as e:
                if not redis_down(e):
                    raise
                if delay is None:
                    self.settles.queue(call)
                    log.warning(
                        "Redis unreachable while finishing a write-through operation on "
                        "session %r (SQL %s); retrying in the background",
                        k.session_id,
                        "committed" if ok else "rolled back",
                    )
                    return
                await asyncio.sleep(delay)

    async def _settled_in_order(self, k: SessionKeys, args: list[Any]) -> bool:
        """Settle once earlier batches are settled; False when that wait gave up."""
        call = self.hot.settle_call(k, [args[0], _COMMITTED_IN_ORDER, *args[2:]])
        pause, longest = ORDERED_PAUSE
        deadline = time.monotonic() + ORDERED_WAIT_SECONDS
        try:
            while await self.hot.run(*call) == Status.SETTLE_LATER:
                if time.monotonic() > deadline:  # that writer is gone: recovery's job
                    return False
                await asyncio.sleep(pause)
                pause = min(pause * 2, longest)
        except StorageUnavailableError as e:
            if not redis_down(e):
                raise
            return False
        return True

    async def _resync(self, k: SessionKeys, first: int, e: StorageUnavailableError) -> None:
        """SQL already holds a seq Redis just assigned: Redis lost writes SQL has."""
        dropped = await self.hot.evict(k)
        if not dropped:
            # Writes are pending (restored with the snapshot): refuse adds until they are
            # settled and the session can reload, or they would land above the lost ones.
            await self.hot.mark_behind(k)
        log.error(
            "session %r: SQL already has seq %d that Redis just assigned (Redis lost writes: "
            "restored from an older snapshot, or restarted without its last writes); %s",
            k.session_id,
            first,
            "its hot copy was dropped and reloads from SQL" if dropped else "writes are pending",
        )
        raise StorageUnavailableError(
            f"session {k.session_id!r}: Redis was behind SQL (it lost writes SQL has); nothing "
            "was written and the session reloads from SQL: retry the call"
        ) from e
