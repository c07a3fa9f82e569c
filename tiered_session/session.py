"""TieredSession: the Agents SDK ``Session`` protocol on a TieredStore.

Example:
    >>> import asyncio
    >>> from tiered_session import TieredSession
    >>> async def main():
    ...     async with TieredSession("user-1") as session:   # embedded default
    ...         await session.add_items([{"role": "user", "content": "hi"}])
    ...         return await session.get_items()
    >>> asyncio.run(main())
    [{'role': 'user', 'content': 'hi'}]
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from ._config import validate_session_id
from ._errors import ConfigurationError, SessionSettingsError
from .hot.connection import MEMORY_URL

if TYPE_CHECKING:
    from .store import TieredStore

__all__ = ["TieredSession"]


class TieredSession:
    """Conversation history of one session, in Redis (hot) and SQL (durable).

    ``TieredSession("id")`` alone gives a private embedded store (in-process
    fakeredis + in-memory SQLite); ``store.session("id")`` shares a store;
    ``TieredSession.from_url("id", redis_url=..., sql_url=...)`` owns a private
    store on real servers; ``TieredSession("id", db_path="data/conv.db")`` keeps
    the history in a SQLite file behind an in-process Redis (write-through, for
    one process at a time, as ``SQLiteSession(id, db_path)``). Sessions that own
    their store release it with ``await session.aclose()`` (or ``async with``).

    Satisfies ``agents.memory.Session`` without importing the SDK.
    """

    session_id: str

    def __init__(
        self,
        session_id: str,
        *,
        store: TieredStore | None = None,
        session_settings: Any = None,
        owns_store: bool | None = None,
        db_path: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        self.session_id = validate_session_id(session_id)
        if session_settings is None and store is not None:
            session_settings = store.config.session_settings  # the store's default
        self._settings = coerce_settings(session_settings)
        made = store is None
        if store is not None and (options or db_path is not None):
            raise ConfigurationError(
                "store options cannot be combined with store=; configure the store instead"
            )
        if store is None:
            from .store import TieredStore

            store = TieredStore(**options) if db_path is None else _file_store(db_path, options)
        #: whether ``aclose()`` closes the store (by default: when the session made it)
        self.owns_store = made if owns_store is None else owns_store
        self.store = store
        self._keys = store.keys.session(self.session_id)

    @classmethod
    def from_url(
        cls,
        session_id: str,
        *,
        redis_url: str | None = None,
        sql_url: str | None = None,
        session_settings: Any = None,
        **options: Any,
    ) -> TieredSession:
        """Build a session that owns a private store on the given servers."""
        from .store import TieredStore

        store = TieredStore.from_url(redis_url, sql_url, **options)
        return cls(session_id, store=store, session_settings=session_settings, owns_store=True)

    @property
    def session_settings(self) -> Any:
        """The session's ``SessionSettings`` (``SessionSettings()`` when none was given).

        Assign a ``SessionSettings``, a dict of its fields, or None.
        """
        if self._settings is None:
            self._settings = default_settings()
        return self._settings

    @session_settings.setter
    def session_settings(self, value: Any) -> None:
        self._settings = coerce_settings(value)

    async def get_items(self, limit: int | None = None) -> list[Any]:
        """Return the newest ``limit`` items (all when None) in chronological order.

        When ``limit`` is None the session's ``session_settings.limit`` applies.
        """
        if limit is None and self._settings is not None:
            limit = self._settings.limit
        return await self.store.reads.get_items(self._keys, limit)

    async def add_items(self, items: list[Any]) -> None:
        """Append items; all of them or none are stored."""
        await self.store.writes.add_items(self._keys, items)

    async def pop_item(self) -> Any | None:
        """Remove and return the newest item, or None if the session is empty."""
        return await self.store.writes.pop_item(self._keys)

    async def clear_session(self) -> None:
        """Delete every item of this session."""
        await self.store.writes.clear_session(self._keys)

    async def _get_compaction_snapshot(
        self, limit: int, *, prune_prefix: Callable[[Any], bool] | None = None
    ) -> Any:
        """The SDK's optional hook for atomic compaction (see :mod:`.ops.compaction`).

        ``prune_prefix`` (expired encrypted items before the suffix) is accepted
        and ignored: those items stay, and the encrypting wrapper keeps hiding them.
        """
        del prune_prefix
        if self._storage_overridden():
            return None
        return await self.store.compaction.snapshot(self._keys, limit)

    async def _atomic_replace_items(self, items: list[Any]) -> bool:
        """The SDK's optional hook for replacing the whole history at once.

        False (the SDK then clears and adds through the overridden methods)
        for a subclass that overrides a storage method.
        """
        if self._storage_overridden():
            return False
        return await self.store.compaction.replace_all(self._keys, items)

    def _storage_overridden(self) -> bool:
        """Whether a subclass changed how items are read or written.

        The compaction hooks write the store directly; for such a subclass they
        decline, so its own ``add_items``/``clear_session`` see every change.
        """
        cls = type(self)
        return any(getattr(cls, n) is not getattr(TieredSession, n) for n in _STORAGE_METHODS)

    async def aclose(self) -> None:
        """Close the private store if this session owns one; otherwise nothing."""
        if self.owns_store:
            await self.store.aclose()

    async def __aenter__(self) -> TieredSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"TieredSession({self.session_id!r}, write_mode={self.store.config.write_mode!r})"


def _file_store(db_path: str | os.PathLike[str], options: dict[str, Any]) -> TieredStore:
    """The embedded store of ``TieredSession(id, db_path=...)``: history in a SQLite file.

    Write-through, so nothing lives only in the in-process Redis: the file
    holds every acknowledged item when the call returns.
    """
    from .store import TieredStore

    if options.get("write_mode", "through") != "through":
        raise ConfigurationError(
            "db_path keeps the history in a SQLite file behind an in-process Redis: it is "
            "write-through only (write-behind would hold writes in memory that a crash loses)"
        )
    path = Path(db_path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"create_tables": True, **options, "write_mode": "through"}
    return TieredStore.from_url(MEMORY_URL, f"sqlite+aiosqlite:///{path}", **options)


#: the methods a subclass overrides to own how items are stored
_STORAGE_METHODS = ("get_items", "add_items", "pop_item", "clear_session")


def default_settings() -> Any:
    """``SessionSettings()`` from the SDK; without the SDK, an object with ``limit = None``."""
    try:
        from agents.memory import SessionSettings
    except ImportError:
        return SimpleNamespace(limit=None)
    return SessionSettings()


def coerce_settings(value: Any) -> Any:
    """A SessionSettings (or any object with ``limit``) as is; a dict made one; None kept.

    An unknown key or another type raises :class:`SessionSettingsError` (a
    ``TypeError``), with the SDK's wording.
    """
    if value is None or hasattr(value, "limit"):
        return value
    if not isinstance(value, dict):
        raise SessionSettingsError(
            f"session must be a SessionSettings instance or a dict, got {type(value).__name__}"
        )
    try:
        from agents.memory.session_settings import coerce_session_settings
    except ImportError:
        unknown = sorted(str(k) for k in value if k != "limit")
        if unknown:
            raise SessionSettingsError(f"Unknown session settings: {', '.join(unknown)}") from None
        return SimpleNamespace(limit=value.get("limit"))
    try:
        return coerce_session_settings(value)
    except TypeError as e:  # the SDK's own message, under our exception root
        raise SessionSettingsError(str(e)) from e
