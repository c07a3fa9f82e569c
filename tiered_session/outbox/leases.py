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

from .._config import StoreConfig
from .._errors import ConfigurationError, StorageUnavailableError
from ..hot.keys import ShardKeys
from ..hot.tier import HotTier

__all__ = ["GROUP", "Leases", "ShardState", "shard_ranges"]

log = logging.getLogger("tiered_session.flusher")

#: the consumer group every flusher reads the outbox streams through
GROUP = "flushers"
#: leases are renewed this many times per lease_ttl
_RENEWALS_PER_TTL = 3


def shard_ranges(shards: Sequence[int]) -> str:
    """Shard numbers for a log line: ``shard_ranges([0, 1, 2, 5]) == "shards 0-2,5"``."""
    nums = sorted(set(shards))
    parts: list[str] = []
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        parts.append(str(nums[i]) if i == j else f"{nums[i]}-{nums[j]}")
        i = j + 1
    return ("shard " if len(nums) == 1 else "shards ") + ",".join(parts)


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
        self._numbers = None if shards is None else list(shards)
        #: the shards this flusher may take (known once the store's layout is settled)
        self._wanted: list[ShardKeys] = []
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
        self._wanted = self._shard_keys()
        target = len(self._wanted)
        if self._fair:  # flushers with a fixed shard list do not count in the split
            self.live_flushers = max(1, await self.hot.heartbeat(self.token, self.ttl_ms))
            target = -(-target // self.live_flushers)
        await self.hot.assert_layout()  # (a Redis restarted empty gets the record back)
        expired = []
        for state in list(self.owned.values()):
            if not await self.hot.lease(state.keys, self.token, self.ttl_ms):
                self.owned.pop(state.keys.shard, None)
                expired.append(state.keys.shard)
        self._report("lost", expired, logging.WARNING, ": lease expired")
        handed = []
        for shard in sorted(self.owned)[target:]:
            state = self.owned.pop(shard)
            await self.hot.release(state.keys, self.token)
            handed.append(shard)
        self._report("handed over", handed, logging.INFO)
        if len(self.owned) < target:
            taken: list[int] = []
            try:
                await self._take(target, taken)
            finally:  # (also when a lease or group call failed midway)
                self._report("took", taken, logging.INFO)

    def _report(self, what: str, shards: list[int], level: int, why: str = "") -> None:
        """Log one line for the shards that changed hands together (none: nothing)."""
        if not shards:
            return
        log.log(
            level,
            "flusher %s %s %s%s; holds %d of %d, %d flusher(s) live",
            self.token,
            what,
            shard_ranges(shards),
            why,
            len(self.owned),
            len(self._wanted),
            self.live_flushers,
            extra={
                "event": "shards_" + what.replace(" ", "_"),
                "shards": sorted(shards),
                "token": self.token,
            },
        )

    def _shard_keys(self) -> list[ShardKeys]:
        count = self.hot.keys.shards
        numbers = range(count) if self._numbers is None else self._numbers
        bad = [n for n in numbers if not 0 <= n < count]
        if bad:
            raise ConfigurationError(
                f"shards {bad} do not exist: this store has {count} outbox shards (0-{count - 1})"
            )
        return [self.hot.keys.shard(i) for i in numbers]

    async def _take(self, target: int, taken: list[int]) -> None:
        # Start at a different shard in each flusher so they do not all race for the same one.
        start = hash(self.token) % max(1, len(self._wanted))
        for sh in self._wanted[start:] + self._wanted[:start]:
            if len(self.owned) >= target:
                break
            if sh.shard in self.owned or not await self.hot.lease(sh, self.token, self.ttl_ms):
                continue
            try:
                await self.hot.call(
                    self.hot.redis.xgroup_create(sh.outbox, GROUP, id="0", mkstream=True)
                )
            except StorageUnavailableError as e:
                if "BUSYGROUP" not in str(e):
                    raise
            self.owned[sh.shard] = ShardState(sh)
            taken.append(sh.shard)

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
