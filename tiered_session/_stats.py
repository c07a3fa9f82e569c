"""Counters kept by a store, and the typed mapping ``store.stats()`` returns.

Example:
    >>> from tiered_session._stats import Counters
    >>> c = Counters()
    >>> c.cache_hits += 1
    >>> c.cache_hits
    1
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypedDict, TypeVar

__all__ = ["Counters", "MetricsHooks", "StoreStats"]

_T = TypeVar("_T")


class StoreStats(TypedDict):
    """What ``await store.stats()`` returns.

    Counters are per process (since the store started); ``backlog`` (outbox
    entries not yet committed to SQL), ``flush_lag_seconds`` (age of the oldest
    of them), ``dead_letters`` and ``live_flushers`` (flushers that sent a
    heartbeat within their lease time) are read from Redis and are global to
    the key prefix.
    """

    write_mode: str
    cache_hits: int
    cache_misses: int
    cold_reads: int
    degraded_reads: int
    corrupt_rows: int
    items_added: int
    flush_batches: int
    flushed_entries: int
    flush_errors: int
    ack_errors: int
    recovered_operations: int
    backlog: int
    flush_lag_seconds: float
    dead_letters: int
    live_flushers: int


class MetricsHooks(Protocol):
    """Where timed events go while metrics are enabled (:mod:`tiered_session.metrics`)."""

    async def timed(self, operation: str, call: Awaitable[_T]) -> _T:
        """Await ``call`` (one session call, e.g. ``"get_items"``), timing it."""

    def flushed(self, entry_ids: Sequence[bytes]) -> None:
        """Outbox entries (stream ids: acceptance time in ms) were committed to SQL."""


@dataclass
class Counters:
    """Monotonic per-process counters."""

    cache_hits: int = 0
    cache_misses: int = 0
    cold_reads: int = 0
    degraded_reads: int = 0
    corrupt_rows: int = 0
    items_added: int = 0
    flush_batches: int = 0
    flushed_entries: int = 0
    flush_errors: int = 0
    #: acknowledgements of committed flush batches that failed (each also a flush error)
    ack_errors: int = 0
    recovered_operations: int = 0
    #: items of the add entries committed to SQL by flushers
    flushed_items: int = 0
    #: outbox entries this process moved to the dead-letter streams
    dead_lettered: int = 0
    #: errors raised to callers, by (operation, error kind); counted while metrics are on
    call_errors: dict[tuple[str, str], int] = field(default_factory=dict)
    #: set while metrics are enabled; None (the default) times nothing
    hooks: MetricsHooks | None = field(default=None, repr=False, compare=False)
