"""When a call refreshes its session's expiry in Redis: at most every ``hot_ttl / 4``.

Example:
    >>> from tiered_session.hot.keys import KeySpace
    >>> clock = ExpiryClock(hot_ttl=60.0)
    >>> k = KeySpace("doc", shards=1).session("s")
    >>> clock.due(k), clock.due(k)
    (True, False)
"""

from __future__ import annotations

import time

from ..hot.keys import SessionKeys

__all__ = ["ExpiryClock"]

#: sessions remembered at most; past it the memory starts over (a few extra refreshes)
_REMEMBERED = 100_000


class ExpiryClock:
    """Remembers when this process last refreshed each session's expiry."""

    def __init__(self, hot_ttl: float) -> None:
        #: the expiry given to idle, fully flushed sessions (0: none)
        self.ttl_ms = int(hot_ttl * 1000)
        self._every = hot_ttl / 4
        self._touched: dict[bytes, float] = {}

    def due(self, k: SessionKeys) -> bool:
        """Whether this call should refresh the expiry; True counts as the refresh.

        The caller sends the refresh with its call.
        """
        if self.ttl_ms <= 0:
            return False
        now = time.monotonic()
        last = self._touched.get(k.meta)
        if last is not None and now - last < self._every:
            return False
        self.refreshed(k, now)
        return True

    def refreshed(self, k: SessionKeys, now: float | None = None) -> None:
        """Record a refresh made by other means (a warm-up installs a fresh expiry)."""
        if len(self._touched) >= _REMEMBERED:
            self._touched.clear()
        self._touched[k.meta] = time.monotonic() if now is None else now
