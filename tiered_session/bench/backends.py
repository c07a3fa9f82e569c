"""Every benchmark backend by name: TieredSession rows, the SDK's sessions, two raw floors.

Example:
    >>> ALL_BACKENDS[:2], LABELS["tiered-behind"]
    (['redis-floor', 'asyncpg-floor'], 'TieredSession write-behind')
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .env import Backend, BenchEnv
from .floors import AsyncpgFloor, RedisFloor
from .sdk import (
    SdkAsyncSqlite,
    SdkRedis,
    SdkSqlAlchemyPg,
    SdkSqlAlchemySqlite,
    SdkSqlite,
    require_agents,
)
from .tiered import TieredBehind, TieredEmbedded, TieredThrough

__all__ = ["ALL_BACKENDS", "LABELS", "make_backend"]

_CLASSES: dict[str, Callable[..., Backend]] = {
    cls.name: cls
    for cls in (
        RedisFloor,
        AsyncpgFloor,
        TieredBehind,
        TieredThrough,
        TieredEmbedded,
        SdkRedis,
        SdkSqlAlchemyPg,
        SdkSqlAlchemySqlite,
        SdkSqlite,
        SdkAsyncSqlite,
    )
}

#: every backend, in report order
ALL_BACKENDS = list(_CLASSES)

LABELS = {
    "redis-floor": "raw redis-py (RPUSH / LRANGE)",
    "asyncpg-floor": "raw asyncpg (INSERT / SELECT)",
    "tiered-behind": "TieredSession write-behind",
    "tiered-through": "TieredSession write-through",
    "tiered-embedded": "TieredSession embedded (fakeredis + SQLite)",
    "sdk-redis": "SDK RedisSession",
    "sdk-sqlalchemy-pg": "SDK SQLAlchemySession (PostgreSQL)",
    "sdk-sqlalchemy-sqlite": "SDK SQLAlchemySession (SQLite)",
    "sdk-sqlite": "SDK SQLiteSession",
    "sdk-async-sqlite": "SDK AsyncSQLiteSession",
}

# Names arrive from the command line and from worker processes' task lines.
_NAME = re.compile(r"[a-z0-9-]+")


def make_backend(name: str, env: BenchEnv, *, owner: bool = True) -> Backend:
    """Return the backend called ``name`` (see ``ALL_BACKENDS``)."""
    if not _NAME.fullmatch(name) or name not in _CLASSES:
        raise KeyError(f"unknown backend {name!r}; choose from {', '.join(ALL_BACKENDS)}")
    if name.startswith("sdk-"):
        # Fail with the extra to install before any connection is opened.
        require_agents()
    return _CLASSES[name](env, owner=owner)
