"""``instrument(store)``: report a store's metrics through OpenTelemetry.

Needs ``pip install "tiered-session[otel]"`` (the API; an SDK or a vendor
distribution of your choice collects and exports). Until ``instrument`` is
called nothing is measured beyond the store's own counters, and the session
calls pay one ``is None`` check each.

Example:
    >>> import asyncio
    >>> from opentelemetry.sdk.metrics import MeterProvider
    >>> from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    >>> from tiered_session import TieredStore
    >>> reader = InMemoryMetricReader()
    >>> store = TieredStore()
    >>> metrics = instrument(store, MeterProvider(metric_readers=[reader]))
    >>> async def main():
    ...     async with store:
    ...         await store.session("s").add_items([{"n": 1}])
    ...         return await store.session("s").get_items()
    >>> asyncio.run(main())
    [{'n': 1}]
    >>> data = reader.get_metrics_data()
    >>> sorted(m.name for m in data.resource_metrics[0].scope_metrics[0].metrics)[:3]
    ['tiered_session.cache_hits', 'tiered_session.cache_misses', 'tiered_session.call.duration']
    >>> metrics.close()
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata
from typing import TYPE_CHECKING

from .._errors import ConfigurationError, MissingDependencyError

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

    from ..store import TieredStore
    from .instruments import StoreInstruments

__all__ = ["instrument"]

#: the instrumentation scope's name
METER_NAME = "tiered_session"


def instrument(
    store: TieredStore,
    meter_provider: MeterProvider | None = None,
    *,
    attributes: Mapping[str, str | int] | None = None,
    timeout: float = 2.0,
) -> StoreInstruments:
    """Register the store's instruments on an OpenTelemetry meter; return the handle.

    Counters (hits, misses, cold and degraded reads, flushed entries and items,
    dead letters, errors by kind, ...) are read from the store's counters when
    a reader collects; the backlog gauges are read from Redis then (through the
    store's event loop, waiting up to ``timeout`` seconds); the call-duration
    and flush-lag histograms are recorded as calls and flushes happen.

    Args:
        store: the store to measure (at most one handle per store at a time).
        meter_provider: where the meter comes from (default: the global one,
            ``opentelemetry.metrics.set_meter_provider``).
        attributes: added to every measurement, to tell stores apart; default
            ``{"key_prefix": ..., "write_mode": ...}`` of the store.
        timeout: seconds a collection waits for the backlog read.

    Returns:
        The handle: ``close()`` stops measuring (the hooks are removed).

    Raises:
        MissingDependencyError: ``opentelemetry-api`` is not installed.
        ConfigurationError: the store is measured already.
    """
    try:
        from opentelemetry import metrics as otel_metrics
    except ImportError as e:
        raise MissingDependencyError("opentelemetry-api", "otel") from e
    from .instruments import StoreInstruments, meter_instruments

    if store.counters.hooks is not None:
        raise ConfigurationError(
            "this store is instrumented already: close() the first handle before a second one"
        )
    if attributes is None:
        attributes = {"key_prefix": store.config.key_prefix, "write_mode": store.config.write_mode}
    meter = otel_metrics.get_meter(METER_NAME, _version(), meter_provider)
    handle = StoreInstruments(store, meter_instruments(meter), attributes, timeout=timeout)
    store.counters.hooks = handle
    return handle


def _version() -> str:
    try:
        return metadata.version("tiered-session")
    except metadata.PackageNotFoundError:
        return ""
