"""tiered-session: conversation memory for the OpenAI Agents SDK in two tiers.

Recent items live in Redis lists (one round trip for the latest N); the full
history lives in SQL (SQLite or PostgreSQL through SQLAlchemy async).

Example:
    >>> import asyncio
    >>> from tiered_session import TieredSession
    >>> async def main():
    ...     async with TieredSession("user-1") as session:
    ...         await session.add_items([{"role": "user", "content": "hello"}])
    ...         return await session.get_items(limit=10)
    >>> asyncio.run(main())
    [{'role': 'user', 'content': 'hello'}]
"""

from __future__ import annotations

from ._config import StoreConfig, WriteMode
from ._errors import (
    BackpressureError,
    BranchError,
    ConfigurationError,
    CorruptDataError,
    InvalidInputError,
    MissingDependencyError,
    ReplicaAckError,
    SessionSettingsError,
    StorageUnavailableError,
    StoreClosedError,
    TieredSessionError,
)
from ._stats import StoreStats
from .advanced import AdvancedTieredSession
from .ops.admin import SessionInfo, SessionStats
from .ops.transfer import ImportReport
from .outbox.flusher import Flusher
from .session import TieredSession
from .store import TieredStore

__all__ = [
    "AdvancedTieredSession",
    "BackpressureError",
    "BranchError",
    "ConfigurationError",
    "CorruptDataError",
    "Flusher",
    "ImportReport",
    "InvalidInputError",
    "MissingDependencyError",
    "ReplicaAckError",
    "SessionSettingsError",
    "SessionInfo",
    "SessionStats",
    "StorageUnavailableError",
    "StoreClosedError",
    "StoreConfig",
    "StoreStats",
    "TieredSession",
    "TieredSessionError",
    "TieredStore",
    "WriteMode",
]

__version__ = "0.1.0"
