"""Session-management operations of a TieredStore (list, stats, delete, cleanup, export/import).

Example:
    >>> from tiered_session import TieredStore
    >>> issubclass(TieredStore, SessionOpsMixin)
    True
"""

from __future__ import annotations

__all__ = ["SessionOpsMixin"]


class SessionOpsMixin:
    """Operations over many sessions; mixed into :class:`TieredStore`."""
