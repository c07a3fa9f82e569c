"""Write-through: commit in SQL, then settle the operation in Redis.

Every write-through operation has three steps: a script takes it in Redis
(appends an add's items *pending* and reserves their seqs, takes the item of a
pop, empties the list for a clear) and records it in the shard's in-flight
hash; the SQL transaction commits it; a settle script finishes it in Redis
(keeps the pending items, or undoes the first step when the commit failed). A
writer that vanishes between the steps leaves its operation to a flusher's
recovery (``_recovery.py``), which settles it as SQL shows.

An add with no earlier batch of its session pending returns right after its
commit: its settle is *deferred*, sent ahead of the next command this store
sends for the session (in the same write), or a moment later by a background
task. The round trip it saves is a third of a write-through add. Until the
settle arrives the batch's entries are pending, and whoever meets them asks
SQL: a reader keeps the committed ones (``_read_past_pending``), pops and
clears wait (``_wait_settled``).

Example:
    >>> import asyncio
    >>> from tiered_session import TieredStore
    >>> async def main():
    ...     async with TieredStore.from_url(write_mode="through") as store:
    ...         await store.session("u").add_items([{"role": "user", "content": "hi"}])
    ...         return len(store._unsettled)
    >>> asyncio.run(main())
    0
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._errors import StorageUnavailableError
from ._keys import SessionKeys
from ._scripts import COLD
from ._sql import refused_by_constraint

if TYPE_CHECKING:
    from ._config import StoreConfig
    from ._sql import SqlTier

__all__ = ["Settle", "WriteThroughMixin", "has_pending", "redis_down", "run_to_completion"]

log = logging.getLogger("tiered_session")
T = TypeVar("T")

#: a settle script call: (keys, args)
Settle = tuple[list[bytes], list[Any]]

#: how long a deferred settle waits for the session's next command to carry it.
#: Enough for a caller's next call (a chat turn reads right after it writes);
#: short enough that other readers rarely meet the batch still pending.
_DEFER_S = 0.0005


def has_pending(envs: Sequence[bytes]) -> bool:
    """Whether hot-list entries include a pending one (``~<seq>|...``)."""
    return any(e[:1] == b"~" for e in envs)


async def run_to_completion(aw: Awaitable[T]) -> T:
    """Run a mutation to its end even if the caller is cancelled meanwhile.

    The cancellation is re-raised once the mutation has settled, so a batch is
    applied whole or not at all, never half.
    """
    task = asyncio.ensure_future(aw)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError as e:
            cancelled = cancelled or e
    if cancelled is not None:
        if not task.cancelled():
            task.exception()  # mark retrieved; the cancellation wins
        raise cancelled
    return task.result()


def redis_down(e: StorageUnavailableError) -> bool:
    """True when the error says Redis could not be reached (not that it refused)."""
    return isinstance(e.__cause__, RedisConnectionError | RedisTimeoutError | OSError)


class WriteThroughMixin:
    """The SQL commit and Redis settle of write-through operations; mixed into TieredStore."""

    if TYPE_CHECKING:
        config: StoreConfig
        sql: SqlTier
        _hot: int
        _unsettled: list[Settle]
        _deferred: dict[bytes, list[Settle]]
        _deferred_due: bool
        _tasks: set[asyncio.Task[None]]

        async def _script(self, name: str, keys: Sequence[bytes], args: Sequence[Any]) -> Any: ...

    async def _commit_add(
        self, k: SessionKeys, first: int, datas: list[bytes], *, alone: bool
    ) -> None:
        """Commit a reserved batch in SQL, then settle it (deferred when ``alone``).

        ``alone``: no earlier batch of the session was pending when this one
        was reserved, so nothing has to settle before this call may return.
        """
        op_id = f"a|{first}|{len(datas)}|{k.session_id}"
        try:
            await self.sql.insert_new(k.session_id, first, [d.decode() for d in datas])
        except BaseException as e:
            # Nothing was added to the list: the reserved seqs are released (and, in
            # case the failed commit did land, a delete of them is queued). A flusher
            # that took the operation over decided the same from SQL.
            refused = None
            if isinstance(e, StorageUnavailableError) and refused_by_constraint(e):
                refused = e  # those seqs hold other rows in SQL: keep them (kind "A")
            kind = b"a" if refused is None else b"A"
            await self._settle(k, op_id, False, [kind, first, len(datas), k.session_id])
            if refused is not None:
                await self._resync(k, first, refused)
            raise
        tail = [b"a", first, len(datas), k.session_id]
        if alone:
            self._defer_settle(k, [*self._settle_keys(k)], [op_id, 1, self._hot, *tail])
            return
        await self._settle(k, op_id, True, tail, ordered=True)

    @staticmethod
    def _settle_keys(k: SessionKeys) -> list[bytes]:
        return [k.meta, k.items, k.reserved, k.shard.inflight, k.shard.outbox]

    # ------------------------------------------------------------------ deferred settles
    def _defer_settle(self, k: SessionKeys, keys: list[bytes], args: list[Any]) -> None:
        """Queue a committed add's settle for the session's next command, or a moment later."""
        self._deferred.setdefault(k.meta, []).append((keys, args))
        if not self._deferred_due:
            self._deferred_due = True
            asyncio.get_running_loop().call_later(_DEFER_S, self._start_deferred)

    def _start_deferred(self) -> None:
        # A command the caller sent for the session meanwhile took its settle along.
        self._deferred_due = False
        if self._deferred:
            task = asyncio.create_task(self._send_deferred())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take_deferred(self, k: SessionKeys) -> list[Settle] | None:
        """Remove and return the session's deferred settles (the caller sends them)."""
        return self._deferred.pop(k.meta, None) if self._deferred else None

    async def _send_deferred(self, k: SessionKeys | None = None) -> None:
        """Send deferred settles now: the session's, or every one."""
        if k is not None:
            batch = self._deferred.pop(k.meta, [])
        else:
            batch = [x for settles in self._deferred.values() for x in settles]
            self._deferred.clear()
        if batch:
            await asyncio.gather(*(self._finish_deferred(keys, args) for keys, args in batch))
        if k is not None and self._tasks:  # settles a background task already took
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _finish_deferred(self, keys: list[bytes], args: list[Any]) -> None:
        try:
            await self._script("settle", keys, args)
        except StorageUnavailableError as e:
            if not redis_down(e):
                log.error("settling a write-through add failed: %s", e)
                return
            self._unsettled.append((keys, args))  # idempotent: retried in order

    # ------------------------------------------------------------------ pending entries
    async def _committed_entries(self, k: SessionKeys, envs: Sequence[bytes]) -> list[bytes]:
        """Hot-list entries as of now: each pending one kept when SQL has it committed.

        A pending entry SQL lacks belongs to a batch not committed yet; it and
        every pending entry after it are left out, so a later read can only add
        items after what this one returned (a batch that committed after an
        earlier one still in flight has not returned either: it waits for it).
        """
        pending = {i: int(e[1 : e.index(b"|")]) for i, e in enumerate(envs) if e[:1] == b"~"}
        present = await self.sql.present(k.session_id, list(pending.values()))
        out: list[bytes] = []
        cut = False
        for i, e in enumerate(envs):
            if i not in pending:
                out.append(e)
            elif not cut and pending[i] in present:
                out.append(e[1:])
            else:
                cut = True
        return out

    async def _read_past_pending(
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
        for _ in range(20):
            # A window that starts pending may miss an older pending batch that decides
            # whether the ones in it may be read: read wider until it starts settled.
            if whole or envs[0][:1] != b"~":
                kept = await self._committed_entries(k, envs)
                if whole or len(kept) >= lim:
                    return full, floor, kept[-lim:] if lim > 0 else kept
            width = 2 * width + len(envs)
            res = await self._script("read", [k.meta, k.items], [width])
            if res[0] == COLD:
                return None
            full, floor, envs = bool(res[0]), int(res[1]), list(res[2])
            whole = len(envs) < width
        raise StorageUnavailableError(
            f"session {k.session_id!r}: too many write-through adds in flight to read past; retry"
        )

    async def _wait_settled(self, k: SessionKeys, since: float, pause: float) -> float:
        """Wait for earlier operations a pop or clear must not pass; return the next pause.

        A pending write-through add settles within a round trip of its commit,
        a write-behind write when a flusher commits it; one whose writer
        vanished, when a flusher recovers it (``inflight_timeout``).
        """
        await self._send_deferred(k)
        if time.monotonic() - since > self.config.inflight_timeout + 5:
            raise StorageUnavailableError(
                f"session {k.session_id!r}: operations accepted before this call have not "
                "settled; is a flusher running (to commit or recover them)? Retry later"
            )
        await asyncio.sleep(pause)
        return min(pause * 2, 0.005)

    async def _resync(self, k: SessionKeys, first: int, e: StorageUnavailableError) -> None:
        """SQL already holds a seq Redis just assigned: Redis lost writes SQL has."""
        dropped = await self._script("evict", [k.meta, k.items, k.reserved, k.gen], [])
        if not dropped:
            # Writes are pending (restored with the snapshot): refuse adds until they are
            # settled and the session can reload, or they would land above the lost ones.
            await self._script("mark_behind", [k.meta], [])
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

    async def _settle(
        self, k: SessionKeys, op_id: str, ok: bool, tail: list[Any], *, ordered: bool = False
    ) -> bool:
        """Finish a write-through operation in Redis after its SQL transaction.

        Returns False when a flusher already took the operation over. When
        Redis is unreachable the settle is retried briefly, then queued and
        retried in the background (True is returned: the SQL outcome stands).
        ``ordered`` (a committed add): wait, up to a second, until earlier adds
        of the session are settled, so batches become visible in seq order.
        """
        keys = self._settle_keys(k)
        args = [op_id, int(ok), self._hot, *tail]
        if ordered:
            args[1] = 3
            pause, deadline = 0.0005, time.monotonic() + 1.0
            try:
                while (res := await self._script("settle", keys, args)) == 2:
                    if time.monotonic() > deadline:  # that writer is gone: recovery's job
                        break
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 0.01)
                else:
                    return bool(res)
            except StorageUnavailableError as e:
                if not redis_down(e):
                    raise
            args[1] = 1  # settle now, in the usual way
        for delay in (0.05, 0.2, 0.5, None):
            try:
                return bool(await self._script("settle", keys, args))
            except StorageUnavailableError as e:
                if not redis_down(e):
                    raise
                if delay is None:
                    self._unsettled.append((keys, args))
                    log.warning(
                        "Redis unreachable while finishing a write-through operation on "
                        "session %r (SQL %s); retrying in the background",
                        k.session_id,
                        "committed" if ok else "rolled back",
                    )
                    return True
                await asyncio.sleep(delay)
        return True  # pragma: no cover - the loop always returns

    async def _retry_unsettled(self) -> None:
        """Finish queued write-through settles, oldest first; raise if Redis is still down."""
        while self._unsettled:
            first = self._unsettled[0]
            await self._script("settle", *first)  # idempotent: a repeat returns 0
            if self._unsettled and self._unsettled[0] is first:
                self._unsettled.pop(0)

    async def _commit_pop(self, k: SessionKeys, seq: int, env: bytes) -> None:
        op_id = f"p|{seq}|{k.session_id}"
        try:
            await self.sql.delete_one(k.session_id, seq)
        except BaseException:
            await self._settle(k, op_id, False, [b"p", env])
            raise
        await self._settle(k, op_id, True, [b"p"])

    async def _commit_clear(self, k: SessionKeys, upto: int, keep: list[int]) -> None:
        op_id = f"c|{upto}|{k.session_id}"
        try:
            async with self.sql.begin() as conn:
                await self.sql.clear(conn, k.session_id, upto, keep)
        except BaseException:
            await self._settle(k, op_id, False, [b"c"])
            raise
        await self._settle(k, op_id, True, [b"c"])
