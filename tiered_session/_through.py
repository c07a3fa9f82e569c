"""Write-through: commit in SQL, then settle the operation in Redis.

Every write-through operation has three steps: a script takes it in Redis
(reserves the seqs of an add, takes the item of a pop, empties the list for a
clear) and records it in the shard's in-flight hash; the SQL transaction
commits it; a settle script finishes it in Redis (adds the committed items to
the list, or undoes the first step when the commit failed). A writer that
vanishes between the steps leaves its operation to a flusher's recovery
(``_recovery.py``), which settles it as SQL shows.

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

from ._codec import envelope
from ._errors import StorageUnavailableError
from ._keys import SessionKeys
from ._sql import refused_by_constraint

if TYPE_CHECKING:
    from ._config import StoreConfig
    from ._sql import SqlTier

__all__ = ["WriteThroughMixin", "redis_down", "run_to_completion"]

log = logging.getLogger("tiered_session")
T = TypeVar("T")


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
        _unsettled: list[tuple[list[bytes], list[Any]]]

        async def _script(self, name: str, keys: Sequence[bytes], args: Sequence[Any]) -> Any: ...

    async def _commit_add(self, k: SessionKeys, first: int, datas: list[bytes]) -> None:
        op_id = f"a|{first}|{len(datas)}|{k.session_id}"
        envs = [envelope(first + i, d) for i, d in enumerate(datas)]
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
            await self._settle(k, op_id, False, [kind, first, len(datas), k.session_id, *envs])
            if refused is not None:
                await self._resync(k, first, refused)
            raise
        tail = [b"a", first, len(datas), k.session_id, *envs]
        await self._settle(k, op_id, True, tail, ordered=True)

    async def _resync(self, k: SessionKeys, first: int, e: StorageUnavailableError) -> None:
        """SQL already holds a seq Redis just assigned: Redis lost writes SQL has."""
        dropped = await self._script("evict", [k.meta, k.items, k.reserved, k.gen], [])
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
        keys = [k.meta, k.items, k.reserved, k.shard.inflight, k.shard.outbox]
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
