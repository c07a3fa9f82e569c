"""The Prometheus collector of a store (needs ``tiered-session[prometheus]``).

Each scrape reads the store's counters (this process's, since the store
started) and its backlog figures in Redis (global to the key prefix): one
read through the store's event loop. While no loop runs the store, or Redis
does not answer, the backlog gauges are left out.

Example:
    >>> from prometheus_client import CollectorRegistry, generate_latest
    >>> from tiered_session import TieredStore
    >>> registry = CollectorRegistry()
    >>> registry.register(StoreCollector(TieredStore()))
    >>> b"tiered_session_cache_hits_total 0.0" in generate_latest(registry)
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .names import (
    BACKLOG,
    BACKLOG_AGE,
    COUNTERS,
    DEAD_LETTERS,
    ERRORS,
    LIVE_FLUSHERS,
    error_counts,
    prometheus_name,
)
from .probe import BacklogProbe

if TYPE_CHECKING:
    from ..store import TieredStore

__all__ = ["StoreCollector"]


class StoreCollector(Collector):
    """Yields the store's metrics on every scrape.

    Args:
        store: the store to read.
        timeout: seconds to wait for the backlog read.
    """

    def __init__(self, store: TieredStore, *, timeout: float = 2.0) -> None:
        self.store = store
        self.probe = BacklogProbe(lambda: store, timeout=timeout, max_age=0.0)

    def collect(self) -> Iterator[Metric]:
        """The counters, the errors by kind and (when Redis answers) the backlog gauges."""
        c = self.store.counters
        for name, doc in COUNTERS:
            yield CounterMetricFamily(prometheus_name(name), doc, value=getattr(c, name))
        errors = CounterMetricFamily(
            prometheus_name(ERRORS[0]), ERRORS[1], labels=["operation", "kind"]
        )
        for op, kind, n in error_counts(c):
            errors.add_metric([op, kind], n)
        yield errors
        snap = self.probe.read()
        if snap is None:
            return
        per_shard = GaugeMetricFamily(prometheus_name(BACKLOG[0]), BACKLOG[1], labels=["shard"])
        for shard, n in enumerate(snap.per_shard):
            per_shard.add_metric([str(shard)], n)
        yield per_shard
        b = snap.backlog
        age, doc = BACKLOG_AGE
        yield GaugeMetricFamily(prometheus_name(age), doc, value=b.lag_seconds, unit="seconds")
        yield GaugeMetricFamily(prometheus_name(DEAD_LETTERS[0]), DEAD_LETTERS[1], b.dead_letters)
        yield GaugeMetricFamily(
            prometheus_name(LIVE_FLUSHERS[0]), LIVE_FLUSHERS[1], b.live_flushers
        )
