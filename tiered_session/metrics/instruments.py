"""The OpenTelemetry instruments of instrumented stores (needs ``tiered-session[otel]``).

Counters are *observable*: the store already counts (:class:`Counters`), and
the callbacks read those counts when a reader collects, so counting costs the
hot path nothing more. The two histograms are recorded as things happen,
through the hooks :func:`tiered_session.metrics.instrument` sets on the
store. Instruments are created once per meter; every store instrumented on
that meter reports through them, told apart by its attributes.

Example:
    >>> from opentelemetry.sdk.metrics import MeterProvider
    >>> from tiered_session import TieredStore
    >>> meter = MeterProvider().get_meter("doc")
    >>> handle = StoreInstruments(TieredStore(), meter_instruments(meter), {"store": "doc"})
    >>> handle.attributes
    {'store': 'doc'}
    >>> handle.close()
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from opentelemetry.metrics import CallbackOptions, Histogram, Meter, Observation

from .names import (
    BACKLOG,
    BACKLOG_AGE,
    CALL_DURATION,
    COUNTERS,
    DEAD_LETTERS,
    ERRORS,
    FLUSH_LAG,
    LIVE_FLUSHERS,
    SECONDS_BUCKETS,
    error_counts,
    error_kind,
    otel_name,
)
from .probe import BacklogProbe, Snapshot

if TYPE_CHECKING:
    from .._stats import Counters
    from ..store import TieredStore

__all__ = ["MeterInstruments", "StoreInstruments", "meter_instruments"]

_T = TypeVar("_T")
Attributes = dict[str, str | int]
Callback = Callable[[CallbackOptions], Iterable[Observation]]

_lock = threading.Lock()
_by_meter: weakref.WeakKeyDictionary[Meter, MeterInstruments] = weakref.WeakKeyDictionary()


def meter_instruments(meter: Meter) -> MeterInstruments:
    """The instruments of ``meter`` (created on the first call for it)."""
    with _lock:
        found = _by_meter.get(meter)
        if found is None:
            found = _by_meter[meter] = MeterInstruments(meter)
        return found


class MeterInstruments:
    """Every instrument on one meter, and the stores that report through them."""

    def __init__(self, meter: Meter) -> None:
        self._sources: list[StoreInstruments] = []
        self._lock = threading.Lock()
        for name, doc in COUNTERS:
            meter.create_observable_counter(otel_name(name), [self._counter(name)], description=doc)
        meter.create_observable_counter(otel_name(ERRORS[0]), [self._errors], description=ERRORS[1])
        gauges: list[tuple[tuple[str, str], Callback, str]] = [
            (BACKLOG, self._backlog, "{entry}"),
            (BACKLOG_AGE, self._backlog_age, "s"),
            (DEAD_LETTERS, self._dead_letters, "{entry}"),
            (LIVE_FLUSHERS, self._live_flushers, "{flusher}"),
        ]
        for (name, doc), callback, unit in gauges:
            meter.create_observable_gauge(otel_name(name), [callback], unit=unit, description=doc)
        self.call_duration = _histogram(meter, *CALL_DURATION)
        self.flush_lag = _histogram(meter, *FLUSH_LAG)

    def add(self, source: StoreInstruments) -> None:
        """Report ``source``'s store from now on."""
        with self._lock:
            self._sources.append(source)

    def remove(self, source: StoreInstruments) -> None:
        """Stop reporting ``source``'s store."""
        with self._lock:
            if source in self._sources:
                self._sources.remove(source)

    def _live(self) -> list[tuple[StoreInstruments, Counters]]:
        with self._lock:
            sources = list(self._sources)
        out = []
        for src in sources:
            store = src.store()
            if store is None:  # collected without close(): forget it
                self.remove(src)
            else:
                out.append((src, store.counters))
        return out

    # ------------------------------------------------------------------ callbacks
    def _counter(self, name: str) -> Callback:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(getattr(c, name), src.attributes) for src, c in self._live()]

        return observe

    def _errors(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(n, {**src.attributes, "operation": op, "kind": kind})
            for src, c in self._live()
            for op, kind, n in error_counts(c)
        ]

    def _snapshots(self) -> list[tuple[StoreInstruments, Snapshot]]:
        out = []
        for src, _ in self._live():
            snap = src.probe.read()
            if snap is not None:
                out.append((src, snap))
        return out

    def _backlog(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(n, {**src.attributes, "shard": shard})
            for src, snap in self._snapshots()
            for shard, n in enumerate(snap.per_shard)
        ]

    def _backlog_age(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s.backlog.lag_seconds, src.attributes) for src, s in self._snapshots()]

    def _dead_letters(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s.backlog.dead_letters, src.attributes) for src, s in self._snapshots()]

    def _live_flushers(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(s.backlog.live_flushers, src.attributes) for src, s in self._snapshots()
        ]


def _histogram(meter: Meter, name: str, doc: str) -> Histogram:
    try:
        return meter.create_histogram(
            otel_name(name),
            unit="s",
            description=doc,
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
    except TypeError:  # an older opentelemetry-api takes no bucket advice
        return meter.create_histogram(otel_name(name), unit="s", description=doc)


class StoreInstruments:
    """One store's link to the instruments; :meth:`close` stops measuring it.

    It is the store's :class:`~tiered_session._stats.MetricsHooks` while open.
    The store is referenced weakly: a store collected without ``close()`` just
    stops being reported.
    """

    def __init__(
        self,
        store: TieredStore,
        instruments: MeterInstruments,
        attributes: Mapping[str, str | int],
        *,
        timeout: float = 2.0,
    ) -> None:
        self.store = weakref.ref(store)
        self.instruments = instruments
        self.attributes: Attributes = dict(attributes)
        self.probe = BacklogProbe(self.store, timeout=timeout)
        self._counters = weakref.ref(store.counters)
        self._call_attrs: dict[tuple[str, str], Attributes] = {}
        self.closed = False
        instruments.add(self)

    def close(self) -> None:
        """Stop measuring the store (idempotent); its series stop being reported."""
        if self.closed:
            return
        self.closed = True
        self.instruments.remove(self)
        counters = self._counters()
        if counters is not None and counters.hooks is self:
            counters.hooks = None

    def __enter__(self) -> StoreInstruments:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ hooks
    async def timed(self, operation: str, call: Awaitable[_T]) -> _T:
        """Await one session call, recording its duration (and counting its error)."""
        start = time.perf_counter()
        try:
            result = await call
        except Exception as e:
            self._record(operation, start, "error")
            counters = self._counters()
            if counters is not None:
                key = (operation, error_kind(e))
                counters.call_errors[key] = counters.call_errors.get(key, 0) + 1
            raise
        self._record(operation, start, "ok")
        return result

    def _record(self, operation: str, start: float, outcome: str) -> None:
        seconds = time.perf_counter() - start
        attrs = self._call_attrs.get((operation, outcome))
        if attrs is None:
            attrs = {**self.attributes, "operation": operation, "outcome": outcome}
            self._call_attrs[(operation, outcome)] = attrs
        self.instruments.call_duration.record(seconds, attrs)

    def flushed(self, entry_ids: Sequence[bytes]) -> None:
        """Record the flush lag of a committed batch: how long its oldest entry waited.

        Outbox entry ids carry the time Redis accepted them (ms). One record
        per batch, so a busy flusher does not pay one per entry.
        """
        if not entry_ids:
            return
        oldest = min(int(eid.split(b"-", 1)[0]) for eid in entry_ids)
        lag = max(0.0, time.time() - oldest / 1000)
        self.instruments.flush_lag.record(lag, self.attributes)
