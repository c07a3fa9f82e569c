"""What the metrics are called: one table for the OpenTelemetry and the Prometheus names.

Every counter is a field of :class:`tiered_session._stats.Counters`, the one
place the store counts; the exporters only read it. OpenTelemetry names are
dotted (``tiered_session.cache_hits``); Prometheus names use underscores, and
counters end in ``_total`` (``tiered_session_cache_hits_total``).

Example:
    >>> from tiered_session._stats import Counters
    >>> otel_name("backlog.age"), prometheus_name("backlog.age")
    ('tiered_session.backlog.age', 'tiered_session_backlog_age')
    >>> c = Counters(flush_errors=3, ack_errors=1)
    >>> error_counts(c)
    [('flush', 'flush_commit', 2), ('flush', 'flush_ack', 1)]
    >>> error_kind(TimeoutError())
    'timeout'
"""

from __future__ import annotations

import re

from .._stats import Counters

__all__ = [
    "BACKLOG",
    "BACKLOG_AGE",
    "CALL_DURATION",
    "COUNTERS",
    "DEAD_LETTERS",
    "ERRORS",
    "FLUSH_LAG",
    "LIVE_FLUSHERS",
    "SECONDS_BUCKETS",
    "error_counts",
    "error_kind",
    "otel_name",
    "prometheus_name",
]

PREFIX = "tiered_session"

#: (Counters field, description) of every counter, in report order
COUNTERS: tuple[tuple[str, str], ...] = (
    ("cache_hits", "reads answered from the Redis hot window alone"),
    ("cache_misses", "sessions loaded from SQL into Redis (warm-ups)"),
    ("cold_reads", "reads that needed rows from SQL"),
    ("degraded_reads", "reads answered from SQL alone while Redis was unreachable"),
    ("corrupt_rows", "stored items that could not be decoded (the read failed)"),
    ("items_added", "items accepted by add_items"),
    ("flush_batches", "batches flushers committed to SQL"),
    ("flushed_entries", "outbox entries (adds, pops, clears) committed to SQL"),
    ("flushed_items", "items of the add entries committed to SQL"),
    ("dead_lettered", "outbox entries moved to the dead-letter streams"),
    ("recovered_operations", "write-through operations finished after their writer vanished"),
)
#: errors, by ``operation`` and ``kind``
ERRORS = ("errors", "errors raised to callers (while metrics are on) and flush failures")
#: per-shard gauge (``shard`` attribute), read from Redis
BACKLOG = ("backlog", "outbox entries not yet committed to SQL, per shard")
BACKLOG_AGE = ("backlog.age", "age of the oldest outbox entry not yet in SQL (seconds)")
DEAD_LETTERS = ("dead_letters", "entries in the dead-letter streams (all processes)")
LIVE_FLUSHERS = ("live_flushers", "flushers that sent a heartbeat within their lease time")
#: histograms (OpenTelemetry only)
CALL_DURATION = ("call.duration", "duration of session calls, by operation and outcome")
FLUSH_LAG = ("flush.lag", "per committed batch: how long its oldest entry waited for SQL")
#: bucket bounds suggested for the histograms (seconds)
SECONDS_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

_WORD = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_kinds: dict[type, str] = {}


def otel_name(short: str) -> str:
    """The OpenTelemetry instrument name of ``short`` (a name of this module's table)."""
    return f"{PREFIX}.{short}"


def prometheus_name(short: str) -> str:
    """The Prometheus metric name of ``short`` (without the ``_total`` of counters)."""
    return f"{PREFIX}_{short.replace('.', '_')}"


def error_kind(e: BaseException) -> str:
    """A short name for an error's class: ``StorageUnavailableError`` is ``storage_unavailable``."""
    cls = type(e)
    kind = _kinds.get(cls)
    if kind is None:
        kind = _WORD.sub("_", cls.__name__).lower().removesuffix("_error").removesuffix("error")
        _kinds[cls] = kind or "error"
        kind = _kinds[cls]
    return kind


def error_counts(c: Counters) -> list[tuple[str, str, int]]:
    """(operation, kind, count) of every error counted, the flushers' failures included.

    A flush failure is ``flush_commit`` (the SQL transaction failed) or
    ``flush_ack`` (the acknowledgement in Redis after the commit failed).
    """
    out = [(op, kind, n) for (op, kind), n in list(c.call_errors.items())]
    out.append(("flush", "flush_commit", c.flush_errors - c.ack_errors))
    out.append(("flush", "flush_ack", c.ack_errors))
    return out
