"""The exception hierarchy: one root, a few meaningful subclasses.

Example:
    >>> from tiered_session import TieredSessionError, InvalidInputError
    >>> issubclass(InvalidInputError, TieredSessionError)
    True
"""

from __future__ import annotations

__all__ = [
    "BackpressureError",
    "BranchError",
    "ConfigurationError",
    "CorruptDataError",
    "InvalidInputError",
    "MissingDependencyError",
    "ReplicaAckError",
    "SessionSettingsError",
    "StoreClosedError",
    "StorageUnavailableError",
    "TieredSessionError",
]


class TieredSessionError(Exception):
    """Root of every exception raised by tiered-session."""


class ConfigurationError(TieredSessionError, ValueError):
    """An option, URL, table name or key prefix is invalid or contradicts another."""


class SessionSettingsError(ConfigurationError, TypeError):
    """``session_settings`` is neither a ``SessionSettings`` nor a dict of its fields.

    A ``TypeError`` too, as the SDK's sessions raise for the same mistake.
    """


class InvalidInputError(TieredSessionError, ValueError):
    """A call received bad input (bad limit, non-JSON item, bad session id).

    Raised before anything is written.
    """


class BranchError(InvalidInputError):
    """A branch that does not exist, an id already used, or a branch that may not be deleted.

    A ``ValueError``, as the SDK's ``AdvancedSQLiteSession`` raises for the same cases.
    """


class CorruptDataError(TieredSessionError):
    """A stored row or hot-tier entry could not be decoded.

    The history is never silently shortened: the read fails, the problem is
    logged and counted in ``store.stats()["corrupt_rows"]``.
    """


class StorageUnavailableError(TieredSessionError):
    """Redis or the SQL database could not be reached or refused the operation."""


class BackpressureError(StorageUnavailableError):
    """The write-behind backlog reached its bound; retry later or add flushers."""


class ReplicaAckError(StorageUnavailableError):
    """Fewer replicas than ``replica_acks`` confirmed a write-behind write in time.

    The master took the write: it may reach SQL, or be lost if the master fails
    before a replica has it. Read the session before writing it again.
    """


class StoreClosedError(TieredSessionError):
    """The store (or the session's private store) was closed."""


class MissingDependencyError(TieredSessionError, ImportError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package!r} is not installed; run: pip install 'tiered-session[{extra}]'"
        )
