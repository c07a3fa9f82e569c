"""The flusher: moves accepted writes from the Redis outbox into SQL.

Each outbox shard is a Redis stream read through the consumer group
``flushers``. A flusher takes a *lease* on a shard before reading it, so one
shard is drained by one flusher at a time and per-session order is kept even
with many flusher processes. Live flushers register in a heartbeat set and
each takes at most ``ceil(shards / live)`` leases, so several flushers split
the shards evenly.

Fencing: entries are read by a script that checks the lease, so a flusher
that lost its lease reads nothing more; a batch is committed only if the
lease is still held inside the SQL transaction, just before ``COMMIT`` (on
PostgreSQL the transaction is also bounded by
``idle_in_transaction_session_timeout``, so a flusher paused after that check
cannot commit after its lease expired). Entries are acknowledged (and deleted)
only after their SQL transaction commits; a flusher that dies leaves its
entries pending, and whoever takes the lease next claims and replays them
first, in order (inserts are idempotent on ``(session_id, seq)``).

Example:
    >>> import asyncio
    >>> from tiered_session import TieredStore
    >>> async def main():
    ...     store = TieredStore.from_url(write_mode="behind", run_flusher=False)
    ...     await store.session("s").add_items([{"n": 1}])
    ...     flusher = Flusher(store)
    ...     moved = await flusher.drain()
    ...     await store.aclose()
    ...     return moved
    >>> asyncio.run(main())
    1
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError
from sqlalchemy import func, select

from ._errors import StorageUnavailableError
from ._keys import ShardKeys
from ._outbox import is_poison, pairs, parse_entry
from ._recovery import recover_operation
from ._sql import Op

if TYPE_CHECKING:
    from ._store import TieredStore

__all__ = ["GROUP", "Flusher"]

log = logging.getLogger("tiered_session.flusher")

GROUP = "flushers"
_LINGER = 0.01  # seconds to wait after a partial batch
_PARALLEL = 4  # shards committed at once, each in its own transaction (PostgreSQL)
_MAX_BACKOFF = 2.0
_TROUBLE_LOG_EVERY = 30.0


@dataclass
class _Entry:
    id: bytes
    fields: dict[bytes, bytes]
    op: Op | None = None
    error: str = ""


@dataclass
class _ShardState:
    keys: ShardKeys
    replay: bool = True  # read our own pending entries before new ones
    claim: bool = True  # take over entries left pending by previous owners first
    failures: int = 0
    attempts: dict[bytes, int] = field(default_factory=dict)
    retry_at: float = 0.0


class _LeaseLost(Exception):
    """Raised inside a flush transaction to roll it back: the lease is gone."""


class Flusher:
    """Drains outbox shards into SQL; run many at once, in- or out-of-process.

    Example:
        >>> from tiered_session import TieredStore
        >>> Flusher(TieredStore(write_mode="behind"), batch_size=100).batch_size
        100

    Args:
        store: the store whose outbox and SQL tier to use.
        shards: shard numbers this flusher may take (default: all, shared
            fairly with the other live flushers); an explicit list is taken
            whole, whatever other flushers do.
        batch_size: entries per SQL transaction (default ``flush_batch_size``).
        interval: seconds to wait for new entries (default ``flush_interval``).
    """

    def __init__(
        self,
        store: TieredStore,
        *,
        shards: Sequence[int] | None = None,
        batch_size: int | None = None,
        interval: float | None = None,
    ) -> None:
        self.store = store
        cfg = store.config
        self.batch_size = batch_size or cfg.flush_batch_size
        self.interval = cfg.flush_interval if interval is None else interval
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        wanted = range(cfg.outbox_shards) if shards is None else shards
        self._wanted = [store.keys.shard(i) for i in wanted]
        self._fair = shards is None
        self._owned: dict[int, _ShardState] = {}
        self._lease_ms = int(cfg.lease_ttl * 1000)
        self._next_lease = 0.0
        self._next_recovery = 0.0
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        # Block on XREAD across the owned streams, except where that cannot work:
        # fakeredis does not block, and on a Redis Cluster the streams live in
        # different slots. There the flusher polls every ``interval``.
        self._block = not store._fake_redis and not isinstance(store.redis, RedisCluster)
        self._trouble = ""
        self._trouble_logged = 0.0
        #: seconds ``run`` spends draining after ``stop`` is set
        self.drain_timeout = 10.0
        #: live flushers seen at the last heartbeat
        self.live_flushers = 1

    def wake(self) -> None:
        """Ask the flusher to look for work now."""
        self._wake.set()

    @property
    def owned_shards(self) -> list[int]:
        """Shards whose lease this flusher holds."""
        return sorted(self._owned)

    # ------------------------------------------------------------------ leases
    async def _maintain_leases(self) -> None:
        now = time.monotonic()
        if now < self._next_lease:
            return
        self._next_lease = now + self.store.config.lease_ttl / 3
        store = self.store
        target = len(self._wanted)
        if self._fair:  # flushers with a fixed shard list do not count in the split
            live = await store._script(
                "heartbeat", [store.keys.flushers], [self.token, self._lease_ms, 0]
            )
            self.live_flushers = max(1, int(live))
            target = -(-target // self.live_flushers)
        for shard in list(self._owned):
            state = self._owned[shard]
            if not await store._script("lease", [state.keys.lease], [self.token, self._lease_ms]):
                self._lose(state, "lease expired")
        for shard in sorted(self._owned)[target:]:
            state = self._owned.pop(shard)
            await store._script("release", [state.keys.lease], [self.token])
            log.info(
                "flusher %s handed shard %d over (%d flushers live)",
                self.token,
                shard,
                self.live_flushers,
            )
        if len(self._owned) >= target:
            return
        # Start at a different shard in each flusher so they do not all race for the same one.
        start = hash(self.token) % max(1, len(self._wanted))
        for sh in self._wanted[start:] + self._wanted[:start]:
            if len(self._owned) >= target:
                break
            if sh.shard in self._owned:
                continue
            if not await store._script("lease", [sh.lease], [self.token, self._lease_ms]):
                continue
            try:
                await store.redis.xgroup_create(sh.outbox, GROUP, id="0", mkstream=True)
            except ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise
            self._owned[sh.shard] = _ShardState(sh)
            log.info("flusher %s took shard %d", self.token, sh.shard)

    def _lose(self, state: _ShardState, why: str) -> None:
        if self._owned.pop(state.keys.shard, None) is not None:
            log.warning("flusher %s lost shard %d: %s", self.token, state.keys.shard, why)

    async def release(self) -> None:
        """Give up every lease so another flusher can take over at once."""
        store = self.store
        try:
            for state in list(self._owned.values()):
                await store._script("release", [state.keys.lease], [self.token])
            if self._fair:
                await store._script(
                    "heartbeat", [store.keys.flushers], [self.token, self._lease_ms, 1]
                )
        except StorageUnavailableError as e:
            log.warning("flusher %s could not release its leases (they expire): %s", self.token, e)
        self._owned.clear()
        self._next_lease = 0.0

    # ------------------------------------------------------------------ main loop
    async def run(self, stop: asyncio.Event, *, drain_on_stop: bool = True) -> None:
        """Flush until ``stop`` is set, then drain what is left within ``drain_timeout``.

        Failures (Redis or SQL unreachable) are retried with capped exponential
        backoff, logged when they start, every 30 s while they last, and when
        they end.
        """
        self._stop = stop
        backoff = 0.0
        try:
            while not stop.is_set():
                try:
                    moved = await self._step(block=True)
                except (StorageUnavailableError, RedisError, OSError) as e:
                    backoff = min(_MAX_BACKOFF, max(0.05, backoff * 2))
                    self._report_trouble(f"{e}", backoff)
                    await _sleep_or(stop, backoff)
                    continue
                backoff = 0.0
                if moved == 0 and not self._block:
                    await _sleep_or(stop, self.interval, self._wake)
                elif 0 < moved < self.batch_size:
                    # A partial batch: let entries gather a moment, so a busy store
                    # commits many per transaction instead of one per write (a few
                    # ms of lag; flush() and evict() wake the flusher at once).
                    await _sleep_or(stop, min(self.interval, _LINGER), self._wake)
            if drain_on_stop:
                try:
                    await self.drain(timeout=self.drain_timeout)
                except (StorageUnavailableError, RedisError, OSError, TimeoutError) as e:
                    log.warning(
                        "flusher %s stopped with entries left (another flusher will take "
                        "them over): %s",
                        self.token,
                        e,
                    )
        finally:
            await self.release()

    def _report_trouble(self, what: str, retry_in: float) -> None:
        now = time.monotonic()
        if what != self._trouble or now - self._trouble_logged > _TROUBLE_LOG_EVERY:
            log.warning(
                "flusher %s: %s; retrying (backoff up to %.1fs)", self.token, what, retry_in
            )
            self._trouble_logged = now
        self._trouble = what

    def _report_recovered(self) -> None:
        if self._trouble:
            log.warning("flusher %s: working again", self.token)
            self._trouble = ""

    async def drain(self, *, timeout: float | None = None) -> int:  # noqa: ASYNC109
        """Flush until the owned shards have nothing left; return entries moved.

        Raises ``TimeoutError`` if entries are still failing after ``timeout``
        seconds (they stay pending and are retried later, by this flusher or
        another one).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        total = 0
        while True:
            moved = await self._step(block=False)
            total += moved
            if moved:
                continue
            waiting = [s.retry_at for s in self._owned.values() if s.replay]
            if not waiting:
                return total
            wait = max(0.01, min(waiting) - time.monotonic())
            if deadline is not None and time.monotonic() + wait > deadline:
                raise TimeoutError(
                    f"flusher could not drain within {timeout}s: SQL keeps failing; "
                    "the entries stay in the outbox"
                )
            await asyncio.sleep(wait)

    async def _step(self, *, block: bool) -> int:
        await self._maintain_leases()
        await self.store._retry_unsettled()
        await self._recover_inflight()
        if not self._owned:
            if block:
                await _sleep_or(self._stop, min(1.0, self.store.config.lease_ttl / 3), self._wake)
            return 0
        moved = 0
        now = time.monotonic()
        for state in list(self._owned.values()):
            if state.replay and now >= state.retry_at:
                moved += await self._read_apply(state, b"0")
        ready = [s for s in self._owned.values() if not s.replay]
        if not ready:
            if block and moved == 0:
                retry = min((s.retry_at for s in self._owned.values()), default=now)
                await _sleep_or(self._stop, min(1.0, max(0.01, retry - now)), self._wake)
            return moved
        self._wake.clear()
        moved += await self._apply_shards(await self._with_entries(ready))
        if moved == 0 and block and self._block:
            # Wait for new entries (XREAD does not touch the group; reads stay fenced).
            await self.store.redis.xread(
                {s.keys.outbox: b"$" for s in ready},
                count=1,
                block=max(1, int(min(self.interval, 0.25) * 1000)),  # stop within 0.25 s
            )
        return moved

    async def _apply_shards(self, states: list[_ShardState]) -> int:
        """Read and apply new entries of these shards, up to _PARALLEL at once.

        Each shard commits in its own transaction, so the flush lag of a busy store
        is not the sum of every shard's round trips. (SQLite allows one writer:
        there the shards go one by one.) A failure is raised once every shard has
        finished, so no transaction is cut short.
        """
        if len(states) < 2 or self.store.sql.dialect == "sqlite":
            moved = 0
            for state in states:
                moved += await self._read_apply(state, b">")
            return moved
        gate = asyncio.Semaphore(_PARALLEL)

        async def one(state: _ShardState) -> int:
            async with gate:
                return await self._read_apply(state, b">")

        results = await asyncio.gather(*(one(s) for s in states), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return sum(cast(list[int], results))

    async def _with_entries(self, states: list[_ShardState]) -> list[_ShardState]:
        """The shards whose outbox holds entries: one pipelined XLEN instead of a read each.

        Acknowledged entries are deleted, so an empty stream has nothing new to read.
        """
        if len(states) < 2 or not self._block:  # (fakeredis, Redis Cluster: read them all)
            return states
        pipe = self.store.redis.pipeline(transaction=False)
        for state in states:
            pipe.xlen(state.keys.outbox)
        lengths = await pipe.execute()
        return [st for st, n in zip(states, lengths, strict=True) if n]

    async def _read_apply(self, state: _ShardState, start: bytes) -> int:
        try:
            res = await self.store._script(
                "fread",
                [state.keys.lease, state.keys.outbox],
                [self.token, GROUP, self.token, self.batch_size, start, int(state.claim)],
            )
        except StorageUnavailableError as e:
            if "NOGROUP" in str(e):  # Redis lost the stream (restarted empty)
                self._lose(state, "its outbox stream vanished")
                self._next_lease = 0.0
                return 0
            raise
        if res == -1:
            self._lose(state, "lease taken by another flusher")
            return 0
        state.claim = False
        raw = cast(list[list[Any]], res or [])
        entries = [_Entry(r[0], pairs(r[1])) for r in raw if r[1]]
        gone = [r[0] for r in raw if not r[1]]
        if gone:  # deleted while pending: nothing to apply
            await self.store.redis.xack(state.keys.outbox, GROUP, *gone)
        if not entries:
            if start == b"0" and not gone:
                state.replay = False
            return len(gone)
        return await self._apply(state, entries)

    # ------------------------------------------------------------------ applying
    async def _apply(self, state: _ShardState, entries: list[_Entry]) -> int:
        store = self.store
        good: list[_Entry] = []
        for e in entries:
            e.op, e.error = parse_entry(e.fields)
            if e.op is None:
                await self._dead_letter(state, e, e.error)
            else:
                good.append(e)
        if not good:
            return len(entries)
        try:
            async with store.sql.begin() as conn:
                await store.sql.apply(conn, [e.op for e in good if e.op is not None])
                await self._fence(conn, state)
        except _LeaseLost:
            self._lose(state, "lease lost before commit; batch rolled back")
            return 0
        except StorageUnavailableError as err:
            return await self._failed(state, good, err)
        await self._ack(state, good)
        self._report_recovered()
        state.failures = 0
        for e in good:
            state.attempts.pop(e.id, None)
        store.counters.flush_batches += 1
        store.counters.flushed_entries += len(good)
        return len(entries)

    async def _fence(self, conn: Any, state: _ShardState) -> None:
        """Inside the transaction, just before COMMIT: make sure the lease is still ours."""
        if self.store.sql.dialect == "postgresql":
            # A flusher paused after the check below cannot commit once half the
            # renewed lease has passed: PostgreSQL ends the idle transaction.
            await conn.execute(
                select(
                    func.set_config(
                        "idle_in_transaction_session_timeout", str(self._lease_ms // 2), True
                    )
                )
            )
        held = await self.store._script("lease", [state.keys.lease], [self.token, self._lease_ms])
        if not held:
            raise _LeaseLost

    async def _failed(self, state: _ShardState, batch: list[_Entry], err: Exception) -> int:
        store = self.store
        store.counters.flush_errors += 1
        state.replay = True
        state.failures += 1
        state.retry_at = time.monotonic() + min(_MAX_BACKOFF, 0.05 * 2**state.failures)
        if not is_poison(err):
            self._report_trouble(f"flush failed ({err})", state.retry_at - time.monotonic())
            return 0
        for e in batch:
            state.attempts[e.id] = state.attempts.get(e.id, 0) + 1
        if len(batch) == 1 and state.attempts[batch[0].id] >= store.config.max_attempts:
            await self._dead_letter(state, batch[0], str(err))
            return 1
        if len(batch) > 1:
            # Isolate the poison entry: replay one entry at a time, in order.
            moved = 0
            for entry in batch:
                try:
                    async with store.sql.begin() as conn:
                        await store.sql.apply(conn, [entry.op] if entry.op else [])
                        await self._fence(conn, state)
                except _LeaseLost:
                    self._lose(state, "lease lost before commit; entry rolled back")
                    return moved
                except StorageUnavailableError as one_err:
                    if not is_poison(one_err):
                        return moved
                    state.attempts[entry.id] = state.attempts.get(entry.id, 0) + 1
                    if state.attempts[entry.id] >= store.config.max_attempts:
                        await self._dead_letter(state, entry, str(one_err))
                        moved += 1
                        continue
                    return moved
                await self._ack(state, [entry])
                state.attempts.pop(entry.id, None)
                store.counters.flushed_entries += 1
                moved += 1
                if state.keys.shard not in self._owned:
                    return moved
            return moved
        return 0

    async def _ack(self, state: _ShardState, entries: list[_Entry]) -> None:
        per_session: dict[str, list[int]] = {}  # ops, max added seq, barriers
        for e in entries:
            assert e.op is not None
            ops_max = per_session.setdefault(e.op.session_id, [0, 0, 0])
            ops_max[0] += 1
            if e.op.kind == "a" and e.op.rows:
                ops_max[1] = max(ops_max[1], e.op.rows[-1][0])
            elif e.op.kind != "a":
                ops_max[2] += 1
        keys: list[bytes] = [state.keys.outbox, state.keys.lease]
        tail: list[Any] = []
        for sid, (ops, mx, barriers) in per_session.items():
            k = self.store.keys.session(sid)
            keys += [k.meta, k.items, k.reserved]
            tail += [ops, mx, barriers]
        store = self.store
        done = await store._script(
            "ack",
            keys,
            [
                GROUP,
                store.config.hot_items,
                store._ttl_ms,
                self.token,
                len(entries),
                *[e.id for e in entries],
                *tail,
            ],
        )
        if done == -1:  # committed, but the new holder replays (idempotently) and acks
            self._lose(state, "lease taken over after commit")

    async def _dead_letter(self, state: _ShardState, e: _Entry, reason: str) -> None:
        if await self.store._redis_call(self.store.redis.get(state.keys.lease)) != (
            self.token.encode()
        ):
            self._lose(state, "lease lost before dead-lettering")
            return
        sid = e.fields.get(b"s", b"").decode("utf-8", "replace")
        meta = self.store.keys.session(sid).meta if sid else state.keys.outbox + b":none"
        flat: list[bytes] = []
        for k, v in e.fields.items():
            flat += [k, v]
        await self.store._script(
            "dead",
            [state.keys.outbox, state.keys.dead, meta],
            [GROUP, e.id, reason[:500], int(e.fields.get(b"o", b"a") != b"a"), *flat],
        )
        state.attempts.pop(e.id, None)
        log.error(
            "outbox entry %s of session %r moved to dead letters: %s",
            e.id.decode(),
            sid,
            reason[:200],
        )

    # ------------------------------------------------------------------ recovery
    async def _recover_inflight(self) -> None:
        """Finish write-through operations whose writer vanished, as SQL says they ended."""
        now = time.monotonic()
        if now < self._next_recovery or not self._owned:
            return
        cfg = self.store.config
        self._next_recovery = now + min(5.0, max(0.2, cfg.inflight_timeout / 4))
        cutoff = int((time.time() - cfg.inflight_timeout) * 1000)
        for state in list(self._owned.values()):
            entries = cast(dict[bytes, bytes], await self.store.redis.hgetall(state.keys.inflight))
            for op_id, ts in entries.items():
                if int(ts) > cutoff:
                    continue
                await recover_operation(self.store, op_id)


async def _sleep_or(stop: asyncio.Event, seconds: float, wake: asyncio.Event | None = None) -> None:
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    if wake is not None:
        wake.clear()
