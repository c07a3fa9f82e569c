"""Applying a batch of outbox entries to SQL: fenced commit, then acknowledgement.

Fencing: a batch is committed only if the lease is still held inside the SQL
transaction, just before ``COMMIT`` (on PostgreSQL the transaction is also
bounded by ``idle_in_transaction_session_timeout``, so a flusher paused after
that check cannot commit after its lease expired). Entries are acknowledged
(and deleted) only after their SQL transaction commits. A batch SQL refuses
for its data is replayed one entry at a time, so the poison entry is found and,
after ``max_attempts``, dead-lettered while the others go through. An
acknowledgement that fails after the commit is a flush error too (counted in
``ack_errors`` as well): the batch stays pending and is replayed after the
backoff (its inserts are idempotent), then acknowledged.

Example:
    >>> import asyncio
    >>> from tiered_session import TieredStore
    >>> from tiered_session.outbox.leases import Leases
    >>> async def main():
    ...     async with TieredStore.from_url(write_mode="behind", run_flusher=False) as store:
    ...         leases = Leases(store.hot, store.config, "doc", None)
    ...         applier = Applier(store.hot, store.sql, store.config, store.counters, leases)
    ...         return applier.max_attempts
    >>> asyncio.run(main())
    5
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .._config import StoreConfig
from .._errors import StorageUnavailableError
from .._stats import Counters
from ..cold.errors import is_poison
from ..cold.tier import SqlTier
from ..hot.scripts import Status
from ..hot.tier import HotTier
from .dead_letters import dead_letter
from .entries import Entry, parse_entry
from .leases import GROUP, Leases, ShardState

__all__ = ["MAX_BACKOFF", "Applier"]

#: the longest wait before a shard whose batches keep failing is tried again (seconds)
MAX_BACKOFF = 2.0
#: the first such wait
_FIRST_BACKOFF = 0.05


class _LeaseLost(Exception):
    """Raised inside a flush transaction to roll it back: the lease is gone."""


class Applier:
    """Commits outbox entries of held shards to SQL, then acknowledges them in Redis."""

    def __init__(
        self, hot: HotTier, sql: SqlTier, config: StoreConfig, counters: Counters, leases: Leases
    ) -> None:
        self.hot = hot
        self.sql = sql
        self.window = config.hot_items
        self.ttl_ms = int(config.hot_ttl * 1000)
        self.max_attempts = config.max_attempts
        self.counters = counters
        self.leases = leases
        #: told (description, seconds until the retry) when a batch fails for SQL itself
        self.on_trouble: Callable[[str, float], None] | None = None

    async def apply(self, state: ShardState, entries: list[Entry]) -> int:
        """Apply entries read from a shard; return how many left the outbox."""
        good: list[Entry] = []
        for e in entries:
            e.op, e.error = parse_entry(e.fields)
            if e.op is None:
                await self._dead_letter(state, e, e.error)
            else:
                good.append(e)
        if not good:
            return len(entries)
        try:
            await self._commit(state, good)
        except _LeaseLost:
            self.leases.lose(state, "lease lost before commit; batch rolled back")
            return 0
        except StorageUnavailableError as err:
            return await self._failed(state, good, err)
        if not await self._ack(state, good):
            return 0
        state.failures = 0
        for e in good:
            state.attempts.pop(e.id, None)
        self._flushed(good)
        self.counters.flush_batches += 1
        return len(entries)

    def _flushed(self, entries: list[Entry]) -> None:
        """Count committed, acknowledged entries (and time them while metrics are on)."""
        c = self.counters
        c.flushed_entries += len(entries)
        c.flushed_items += sum(len(e.op.rows) for e in entries if e.op is not None)
        if c.hooks is not None:
            c.hooks.flushed([e.id for e in entries])

    async def _dead_letter(self, state: ShardState, entry: Entry, reason: str) -> None:
        if await dead_letter(self.hot, self.leases, state, entry, reason):
            self.counters.dead_lettered += 1

    async def _commit(self, state: ShardState, entries: list[Entry]) -> None:
        async with self.sql.begin() as conn:
            await self.sql.apply(conn, [e.op for e in entries if e.op is not None])
            # Just before COMMIT: make sure the lease is still ours. On PostgreSQL a
            # flusher paused after this check cannot commit once half the renewed
            # lease has passed: the server ends the idle transaction.
            await self.sql.limit_idle_transaction(conn, self.leases.ttl_ms // 2)
            if not await self.leases.still_held(state):
                raise _LeaseLost

    def _retry_later(self, state: ShardState, trouble: str | None) -> None:
        """Count a flush error; replay the shard's pending entries after the backoff."""
        self.counters.flush_errors += 1
        state.replay = True
        state.failures += 1
        state.retry_at = time.monotonic() + min(MAX_BACKOFF, _FIRST_BACKOFF * 2**state.failures)
        if trouble is not None and self.on_trouble is not None:
            self.on_trouble(trouble, state.retry_at - time.monotonic())

    async def _failed(self, state: ShardState, batch: list[Entry], err: Exception) -> int:
        if not is_poison(err):
            self._retry_later(state, f"flush failed ({err})")
            return 0
        self._retry_later(state, None)
        for e in batch:
            state.attempts[e.id] = state.attempts.get(e.id, 0) + 1
        if len(batch) == 1:
            if state.attempts[batch[0].id] >= self.max_attempts:
                await self._dead_letter(state, batch[0], str(err))
                return 1
            return 0
        return await self._one_by_one(state, batch)

    async def _one_by_one(self, state: ShardState, batch: list[Entry]) -> int:
        """Isolate the poison entry: replay one entry at a time, in order."""
        moved = 0
        for entry in batch:
            try:
                await self._commit(state, [entry])
            except _LeaseLost:
                self.leases.lose(state, "lease lost before commit; entry rolled back")
                return moved
            except StorageUnavailableError as one_err:
                if not is_poison(one_err):
                    return moved
                state.attempts[entry.id] = state.attempts.get(entry.id, 0) + 1
                if state.attempts[entry.id] >= self.max_attempts:
                    await self._dead_letter(state, entry, str(one_err))
                    moved += 1
                    continue
                return moved
            if not await self._ack(state, [entry]):
                return moved
            state.attempts.pop(entry.id, None)
            self._flushed([entry])
            moved += 1
            if not self.leases.holds(state):
                return moved
        return moved

    async def _ack(self, state: ShardState, entries: list[Entry]) -> bool:
        """Acknowledge committed entries; False when that failed (retried after a backoff)."""
        per_session: dict[str, list[int]] = {}  # ops, max added seq, barriers
        for e in entries:
            assert e.op is not None
            counts = per_session.setdefault(e.op.session_id, [0, 0, 0])
            counts[0] += 1
            if e.op.kind == "a" and e.op.rows:
                counts[1] = max(counts[1], e.op.rows[-1][0])
            elif e.op.kind != "a":
                counts[2] += 1
        keys: list[bytes] = [*state.keys.for_ack()]
        tail: list[Any] = []
        for sid, (ops, top, barriers) in per_session.items():
            keys += self.hot.keys.session(sid).for_ack()
            tail += [ops, top, barriers]
        args = [GROUP, self.window, self.ttl_ms, self.leases.token, len(entries)]
        try:
            done = await self.hot.ack(keys, [*args, *[e.id for e in entries], *tail])
        except StorageUnavailableError as err:
            # Committed, not acknowledged: the entries stay pending and are replayed,
            # in order, before anything newer of the shard. That is safe: inserts are
            # idempotent on (session_id, seq), deletes repeat harmlessly, and entries
            # whose acknowledgement did land (the reply was lost) are not read again.
            self.counters.ack_errors += 1
            self._retry_later(state, f"acknowledgement of a committed batch failed ({err})")
            return False
        if done == Status.LEASE_LOST:  # committed; the new holder replays (idempotently), acks
            self.leases.lose(state, "lease taken over after commit")
        return True
