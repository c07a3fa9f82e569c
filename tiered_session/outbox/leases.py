"""Shard leases: one flusher drains a shard at a time, and live flushers split the shards.

A flusher takes a *lease* on a shard before reading it, so per-session order
is kept however many flusher processes run. Live flushers register in a
heartbeat set, and each holds at most ``ceil(shards / live)`` leases, handing
the rest over; a flusher given an explicit shard list takes it whole.

Example:
    >>> import asyncio
    >>> from tiered_session import StoreConfig
    >>> from tiered_session.hot.connection import embedded_redis
    >>> from tiered_session.hot.keys import KeySpace
    >>> from tiered_session.hot.tier import HotTier
    >>> async def main():
    ...     async with embedded_redis() as redis:
    ...         hot = HotTier(redis, KeySpace("doc", shards=4))
    ...         leases = Leases(hot, StoreConfig(outbox_shards=4), "flusher-1", None)
    ...         await leases.maintain()
    ...         return leases.owned_shards
    >>> asyncio.run(main())
    [0, 1, 2, 3]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from redis.exceptions import ResponseError

from .._config import StoreConfig
from .._errors import StorageUnavailableError
from ..hot.keys import ShardKeys
from ..hot.tier import HotTier

__all__ = ["GROUP", "Leases", "ShardState"]

log = logging.getLogger("tiered_session.flusher")

#: the consumer group every flusher reads the outbox streams through
GROUP = "flushers"
#: leases are renewed this many times per lease_ttl
_RENEWALS_PER_TTL = 3


@dataclass
class ShardState:
    """What a flusher knows about a shard it holds."""

    keys: ShardKeys
    #: read our own pending entries before new ones (after a failure, or on taking it)
    replay: bool = True
    #: take over entries left pending by previous owners first
    claim: bool = True
    failures: int = 0
    attempts: dict[bytes, int] = field(default_factory=dict)
    retry_at: float = 0.0


class Leases:
    """The shard leases one flusher holds."""

    def __init__(
        self, hot: HotTier, config: StoreConfig, token: str, shards: Sequence[int] | None
    ) -> None:
        self.hot = hot
        self.token = token
        self.ttl = config.lease_ttl
        self.ttl_ms = int(config.lease_ttl * 1000)
        wanted = range(config.outbox_shards) if shards is None else shards
        self._wanted = [hot.keys.shard(i) for i in wanted]
        self._fair = shards is None
        #: held shards by number
        self.owned: dict[int, ShardState] = {}
        #: live flushers seen at the last heartbeat
        self.live_flushers = 1
        self._next = 0.0

    @property
    def owned_shards(self) -> list[int]:
        """Shards whose lease this flusher holds."""
        return sorted(self.owned)

    def renew_soon(self) -> None:
        """Look at the leases again on the next :meth:`maintain`."""
        self._next = 0.0

    async def maintain(self) -> None:
        """Renew held leases, hand surplus ones over, take free ones up to the fair share."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.ttl / _RENEWALS_PER_TTL
        target = len(self._wanted)
        if self._fair:  # flushers with a fixed shard list do not count in the split
            self.live_flushers = max(1, await self.hot.heartbeat(self.token, self.ttl_ms))
            target = -(-target // self.live_flushers)
        for state in list(self.owned.values()):
            if not await self.hot.lease(state.keys, self.token, self.ttl_ms):
                self.lose(state, "lease expired")
        for shard in sorted(self.owned)[target:]:
            state = self.owned.pop(shard)
            await self.hot.release(state.keys, self.token)
            log.info(
                "flusher %s handed shard %d over (%d flushers live)",
                self.token,
                shard,
                self.live_flushers,
            )
        if len(self.owned) < target:
            await self._take(target)

    async def _take(self, target: int) -> None:
        # Start at a different shard in each flusher so they do not all race for the same one.
        start = hash(self.token) % max(1, len(self._wanted))
        for sh in self._wanted[start:] + self._wanted[:start]:
            if len(self.owned) >= target:
                break
            if sh.shard in self.owned or not await self.hot.lease(sh, self.token, self.ttl_ms):
                continue
            try:
                await self.hot.redis.xgroup_create(sh.outbox, GROUP, id="0", mkstream=True)
            except ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise
            self.owned[sh.shard] = ShardState(sh)
            log.info("flusher %s took shard %d", self.token, sh.shard)

    def lose(self, state: ShardState, why: str) -> None:
        """Forget a shard whose lease is no longer ours."""
        if self.owned.pop(state.keys.shard, None) is not None:
            log.warning("flusher %s lost shard %d: %s", self.token, state.keys.shard, why)

    def holds(self, state: ShardState) -> bool:
        """Whether the shard is still held (as far as this flusher knows)."""
        return state.keys.shard in self.owned

    async def still_held(self, state: ShardState) -> bool:
        """Renew the lease and say whether it is still ours (the fence before a commit)."""
        return await self.hot.lease(state.keys, self.token, self.ttl_ms)

    async def release(self) -> None:
        """Give up every lease so another flusher can take over at once."""
        try:
            for state in list(self.owned.values()):
                await self.hot.release(state.keys, self.token)
            if self._fair:
                await self.hot.heartbeat(self.token, self.ttl_ms, leave=True)
        except StorageUnavailableError as e:
            log.warning("flusher %s could not release its leases (they expire): %s", self.token, e)
        self.owned.clear()
        self._next = 0.0
