"""Time helpers: wall-clock milliseconds and UTC timestamps as the tiers store them.

SQL stores timestamps without a zone, in UTC; Redis stores milliseconds since
the epoch.

Example:
    >>> from datetime import datetime, UTC
    >>> utc("2026-01-02 03:04:05")
    datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    >>> from_ms(0)
    datetime.datetime(1970, 1, 1, 0, 0, tzinfo=datetime.timezone.utc)
    >>> naive_utc("2026-01-02T03:04:05+01:00")
    datetime.datetime(2026, 1, 2, 2, 4, 5)
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from ._errors import InvalidInputError

__all__ = ["EPOCH", "from_ms", "iso", "naive_utc", "now_ms", "utc"]

#: the earliest aware datetime (sorts before every real timestamp)
EPOCH = datetime.min.replace(tzinfo=UTC)


def now_ms() -> int:
    """Milliseconds since the epoch, now."""
    return int(time.time() * 1000)


def from_ms(ms: float | None) -> datetime | None:
    """An aware UTC datetime from milliseconds since the epoch."""
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def _parse(value: Any) -> datetime:
    dt = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(dt, datetime):
        raise InvalidInputError(f"not a timestamp: {value!r}")
    return dt


def utc(value: Any) -> datetime | None:
    """An aware UTC datetime from a stored timestamp (naive ones are UTC)."""
    if value is None:
        return None
    dt = _parse(value)
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def naive_utc(value: Any) -> datetime | None:
    """A naive UTC datetime, as SQL stores it."""
    if value is None:
        return None
    dt = _parse(value)
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo is not None else dt


def iso(value: Any) -> str | None:
    """ISO 8601 text of a stored timestamp, in UTC."""
    dt = utc(value)
    return None if dt is None else dt.isoformat()
