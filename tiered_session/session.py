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

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._config import validate_session_id
from ._errors import ConfigurationError

if TYPE_CHECKING:
    from .store import TieredStore

__all__ = ["TieredSession"]


class TieredSession:
    """Conversation history of one session, in Redis (hot) and SQL (durable).

    ``TieredSession("id")`` alone gives a private embedded store (in-process
    fakeredis + in-memory SQLite); ``store.session("id")`` shares a store;
    ``TieredSession.from_url("id", redis_url=..., sql_url=...)`` owns a private
    store on real servers. Sessions that own their store release it with
    ``await session.aclose()`` (or ``async with``).

    Satisfies ``agents.memory.Session`` without importing the SDK.
    """

    session_id: str
    session_settings: Any

    def __init__(
        self,
        session_id: str,
        *,
        store: TieredStore | None = None,
        session_settings: Any = None,
        owns_store: bool | None = None,
        **options: Any,
    ) -> None:
        self.session_id = validate_session_id(session_id)
        self.session_settings = _coerce_settings(session_settings)
        made = store is None
        if store is None:
            from .store import TieredStore

            store = TieredStore(**options)
        elif options:
            raise ConfigurationError(
                "store options cannot be combined with store=; configure the store instead"
            )
        #: whether ``aclose()`` closes the store (by default: when the session made it)
        self.owns_store = made if owns_store is None else owns_store
        self.store = store
        self._keys = store.keys.session(self.session_id)
        self._reads, self._writes = store.reads, store.writes

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

    async def get_items(self, limit: int | None = None) -> list[Any]:
        """Return the newest ``limit`` items (all when None) in chronological order.

        When ``limit`` is None the session's ``session_settings.limit`` applies.
        """
        if limit is None and self.session_settings is not None:
            limit = getattr(self.session_settings, "limit", None)
        return await self._reads.get_items(self._keys, limit)

    async def add_items(self, items: list[Any]) -> None:
        """Append items; all of them or none are stored."""
        await self._writes.add_items(self._keys, items)

    async def pop_item(self) -> Any | None:
        """Remove and return the newest item, or None if the session is empty."""
        return await self._writes.pop_item(self._keys)

    async def clear_session(self) -> None:
        """Delete every item of this session."""
        await self._writes.clear_session(self._keys)

    async def _get_compaction_snapshot(
        self, limit: int, *, prune_prefix: Callable[[Any], bool] | None = None
    ) -> Any:
        """The SDK's optional hook for atomic compaction (see :mod:`.ops.compaction`).

        ``prune_prefix`` (expired encrypted items before the suffix) is accepted
        and ignored: those items stay, and the encrypting wrapper keeps hiding them.
        """
        del prune_prefix
        return await self.store.compaction.snapshot(self._keys, limit)

    async def _atomic_replace_items(self, items: list[Any]) -> bool:
        """The SDK's optional hook for replacing the whole history at once."""
        return await self.store.compaction.replace_all(self._keys, items)

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


def _coerce_settings(value: Any) -> Any:
    """Accept a SessionSettings, an object with ``.limit``, a dict, or None."""
    if value is None or hasattr(value, "limit"):
        return value
    if isinstance(value, dict):
        try:
            from agents.memory import SessionSettings
        except ImportError:
            from types import SimpleNamespace

            return SimpleNamespace(limit=value.get("limit"))
        return SessionSettings(**value)
    raise ConfigurationError(
        f"session_settings must be a SessionSettings, a dict or None, got {type(value).__name__}"
    )
