"""The flusher: moves accepted writes from the Redis outbox into SQL.

Each outbox shard is a Redis stream read through the consumer group
``flushers``, by whichever flusher holds its lease (:mod:`.leases`). Entries
are read by a script that checks the lease, so a flusher that lost its lease
reads nothing more; batches are committed fenced and acknowledged after the
commit (:mod:`.apply`). A flusher that dies leaves its entries pending, and
whoever takes the lease next claims and replays them first, in order (inserts
are idempotent on ``(session_id, seq)``).

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
from typing import Any, Protocol, cast

from redis.exceptions import RedisError

from .._config import StoreConfig
from .._errors import ConfigurationError, ReplicaAckError, StorageUnavailableError
from .._stats import Counters
from ..cold.tier import SqlTier
from ..hot.checks import check_redis
from ..hot.scripts import Status
from ..hot.tier import HotTier
from .apply import MAX_BACKOFF, Applier
from .entries import Entry, pairs
from .leases import GROUP, Leases, ShardState
from .recovery import Recovery

__all__ = ["Flusher", "FlusherHost"]

log = logging.getLogger("tiered_session.flusher")

_LINGER = 0.01  # seconds to wait after a partial batch
_PARALLEL = 4  # shards committed at once, each in its own transaction (PostgreSQL)
_TROUBLE_LOG_EVERY = 30.0
_IDLE_CHECK = 1.0  # the longest sleep while nothing is owned or every shard waits
_BLOCK_AT_MOST = 0.25  # a blocking read returns this often, so stop() is seen
_POLICY_EVERY = 60.0  # seconds between checks of Redis's eviction policy


class FlusherHost(Protocol):
    """What a flusher needs from its store: the tiers, options, counters."""

    @property
    def hot(self) -> HotTier:
        """The Redis tier."""

    @property
    def sql(self) -> SqlTier:
        """The SQL tier."""

    @property
    def config(self) -> StoreConfig:
        """The store's options."""

    @property
    def counters(self) -> Counters:
        """The store's counters."""

    async def retry_unsettled(self) -> None:
        """Finish write-through settles Redis could not take earlier."""


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
        store: FlusherHost,
        *,
        shards: Sequence[int] | None = None,
        batch_size: int | None = None,
        interval: float | None = None,
    ) -> None:
        cfg = store.config
        self.hot = store.hot
        self.sql = store.sql
        self._retry_unsettled = store.retry_unsettled
        self.batch_size = batch_size or cfg.flush_batch_size
        self.interval = cfg.flush_interval if interval is None else interval
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leases = Leases(self.hot, cfg, self.token, shards)
        self.applier = Applier(self.hot, self.sql, cfg, store.counters, self.leases)
        self.applier.on_trouble = self._report_trouble
        self.recovery = Recovery(self.hot, self.sql, cfg, store.counters)
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        # Block on XREAD across the owned streams where that works; elsewhere poll.
        self._block = self.hot.can_block
        self._trouble = ""
        self._trouble_logged = 0.0
        self._allow_eviction = cfg.allow_eviction
        self._policy_checked = time.monotonic()
        #: seconds ``run`` spends draining after ``stop`` is set
        self.drain_timeout = 10.0

    def wake(self) -> None:
        """Ask the flusher to look for work now."""
        self._wake.set()

    @property
    def owned_shards(self) -> list[int]:
        """Shards whose lease this flusher holds."""
        return self.leases.owned_shards

    @property
    def live_flushers(self) -> int:
        """Live flushers seen at the last heartbeat."""
        return self.leases.live_flushers

    async def release(self) -> None:
        """Give up every lease so another flusher can take over at once."""
        await self.leases.release()

    # ------------------------------------------------------------------ main loop
    async def run(
        self, stop: asyncio.Event, *, drain_on_stop: bool = True, drain_on_cancel: bool = False
    ) -> None:
        """Flush until ``stop`` is set, then drain what is left within ``drain_timeout``.

        ``drain_on_cancel``: a cancellation before ``stop`` is set (the end of the
        event loop the flusher runs on) drains once more before it ends the task.

        Failures (Redis or SQL unreachable) are retried with capped exponential
        backoff, logged when they start, every 30 s while they last, and when
        they end.
        """
        self._stop = stop
        backoff = 0.0
        me = asyncio.current_task()
        try:
            await self._connect()  # (a mistake, e.g. a cluster node's client: ConfigurationError)
            # A Redis that may evict unflushed writes: refuse to start (ConfigurationError).
            await check_redis(self.hot.redis, allow_eviction=self._allow_eviction)
            while not stop.is_set():
                try:
                    moved = await self._step(block=True)
                    if me is not None and me.cancelling():
                        # Python 3.11's wait_for (used by the Redis clients) can swallow a
                        # cancellation that lands as its inner call finishes: honour it here.
                        raise asyncio.CancelledError
                except (StorageUnavailableError, RedisError, OSError) as e:
                    backoff = min(MAX_BACKOFF, max(0.05, backoff * 2))
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
                await self._last_drain()
        except asyncio.CancelledError:
            if drain_on_cancel and not stop.is_set():
                # The cancellation may have cut a batch short: read our pending entries again.
                for state in self.leases.owned.values():
                    state.replay = True
                self.leases.renew_soon()  # and take the leases a cut-short renewal missed
                await self._last_drain()
            raise
        finally:
            await self.release()

    async def _last_drain(self) -> None:
        try:
            await self.drain(timeout=self.drain_timeout)
        except (StorageUnavailableError, RedisError, OSError, TimeoutError) as e:
            log.warning(
                "flusher %s stopped with entries left (another flusher will take them over): %s",
                self.token,
                e,
            )

    async def _check_policy(self) -> None:
        """Re-check Redis's eviction policy (someone may have changed it): say so loudly."""
        self._policy_checked = time.monotonic()
        try:
            await check_redis(self.hot.redis, allow_eviction=self._allow_eviction)
        except ConfigurationError as e:
            log.error("flusher %s: %s", self.token, e)

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
            waiting = [s.retry_at for s in self.leases.owned.values() if s.replay]
            if not waiting:
                return total
            wait = max(0.01, min(waiting) - time.monotonic())
            if deadline is not None and time.monotonic() + wait > deadline:
                raise TimeoutError(
                    f"flusher could not drain within {timeout}s: SQL keeps failing; "
                    "the entries stay in the outbox"
                )
            await asyncio.sleep(wait)

    async def step(self) -> int:
        """One round without waiting: leases, recovery, one read and apply per shard."""
        return await self._step(block=False)

    async def _connect(self) -> None:
        """Settle the Redis client and key layout (once), then see whether XREAD may block."""
        await self.hot.connect()
        self._block = self.hot.can_block

    async def _step(self, *, block: bool) -> int:
        if not self.hot.connected:
            await self._connect()
        if time.monotonic() - self._policy_checked > _POLICY_EVERY:
            await self._check_policy()
        await self.leases.maintain()
        await self._retry_unsettled()
        owned = self.leases.owned
        if self.recovery.due():
            await self.recovery.sweep([s.keys for s in owned.values()])
        if not owned:
            if block:
                await _sleep_or(self._stop, min(_IDLE_CHECK, self.leases.ttl / 3), self._wake)
            return 0
        moved = 0
        now = time.monotonic()
        for state in list(owned.values()):
            if state.replay and now >= state.retry_at:
                moved += await self._read_apply(state, b"0")
        ready = [s for s in owned.values() if not s.replay]
        if not ready:
            if block and moved == 0:
                retry = min((s.retry_at for s in owned.values()), default=now)
                await _sleep_or(self._stop, min(_IDLE_CHECK, max(0.01, retry - now)), self._wake)
            return moved
        self._wake.clear()
        moved += await self._apply_shards(await self._with_entries(ready))
        if moved == 0 and block and self._block:
            # Wait for new entries (XREAD does not touch the group; reads stay fenced).
            await self.hot.call(
                self.hot.redis.xread(
                    {s.keys.outbox: b"$" for s in ready},
                    count=1,
                    block=max(1, int(min(self.interval, _BLOCK_AT_MOST) * 1000)),
                )
            )
        return moved

    async def _apply_shards(self, states: list[ShardState]) -> int:
        """Read and apply new entries of these shards, up to _PARALLEL at once.

        Each shard commits in its own transaction, so the flush lag of a busy store
        is not the sum of every shard's round trips. (SQLite allows one writer:
        there the shards go one by one.) A failure is raised once every shard has
        finished, so no transaction is cut short.
        """
        if len(states) < 2 or not self.sql.parallel_writers:
            moved = 0
            for state in states:
                moved += await self._read_apply(state, b">")
            return moved
        gate = asyncio.Semaphore(_PARALLEL)

        async def one(state: ShardState) -> int:
            async with gate:
                return await self._read_apply(state, b">")

        results = await asyncio.gather(*(one(s) for s in states), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return sum(cast(list[int], results))

    async def _with_entries(self, states: list[ShardState]) -> list[ShardState]:
        """The shards whose outbox holds entries: one pipelined XLEN instead of a read each.

        Acknowledged entries are deleted, so an empty stream has nothing new to read.
        On a cluster this is also the idle wait: one round trip per master each
        ``interval`` (XREAD cannot block on streams of different slots).
        """
        if len(states) < 2 or self.hot.embedded:  # (fakeredis: read them all)
            return states
        lengths = await self.hot.lengths([s.keys for s in states])
        return [st for st, n in zip(states, lengths, strict=True) if n]

    async def _read_apply(self, state: ShardState, start: bytes) -> int:
        args = [self.token, GROUP, self.token, self.batch_size, start, int(state.claim)]
        try:
            res = await self.hot.read_entries(state.keys, args)
        except ReplicaAckError:
            state.replay = True  # read, not replicated yet: read them again, then commit
            raise
        except StorageUnavailableError as e:
            if "NOGROUP" in str(e):  # Redis lost the stream (restarted empty)
                self.leases.lose(state, "its outbox stream vanished")
                self.leases.renew_soon()
                return 0
            raise
        if res == Status.LEASE_LOST:
            self.leases.lose(state, "lease taken by another flusher")
            return 0
        state.claim = False
        raw = cast(list[list[Any]], res or [])
        entries = [Entry(r[0], pairs(r[1])) for r in raw if r[1]]
        gone = [r[0] for r in raw if not r[1]]
        if gone:  # deleted while pending: nothing to apply
            await self.hot.call(self.hot.redis.xack(state.keys.outbox, GROUP, *gone))
        if not entries:
            if start == b"0" and not gone:
                state.replay = False
            return len(gone)
        moved = await self.applier.apply(state, entries)
        if state.failures == 0 and moved:
            self._report_recovered()
        return moved


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
