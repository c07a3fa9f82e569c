"""One classifier for SQL failures: what a driver error means for the caller.

PostgreSQL reports why a statement failed in its SQLSTATE; SQLite through
SQLAlchemy raises ``IntegrityError``/``DataError``. Every decision the store
makes on a SQL failure (retry, dead-letter, keep the connection) asks here.

Example:
    >>> from sqlalchemy.exc import IntegrityError
    >>> refused = IntegrityError("INSERT ...", {}, Exception("UNIQUE constraint failed"))
    >>> sqlstate_class(refused), is_data_refusal(refused)
    (None, True)
"""

from __future__ import annotations

import asyncpg
from asyncpg.pgproto.pgproto import BufferError as PgprotoBufferError
from sqlalchemy.exc import DataError, IntegrityError

__all__ = [
    "DATA_EXCEPTION",
    "INTEGRITY_VIOLATION",
    "SeqCollisionError",
    "configuration_problem",
    "describe",
    "is_driver_error",
    "is_data_refusal",
    "is_poison",
    "refused_by_constraint",
    "sqlstate_class",
]

#: SQLSTATE class 22: the data itself is invalid for the statement
DATA_EXCEPTION = "22"
#: SQLSTATE class 23: a constraint refused the rows
INTEGRITY_VIOLATION = "23"


class SeqCollisionError(Exception):
    """A seq SQL already holds with a different item (the cause of a refused flush)."""

    def __init__(self, session_id: str, seq: int) -> None:
        super().__init__(f"session {session_id!r}: seq {seq} holds another item")
        self.session_id = session_id
        self.seq = seq


def sqlstate_class(e: BaseException | None) -> str | None:
    """The two-letter SQLSTATE class of a driver error (or of what SQLAlchemy wraps)."""
    for err in (e, getattr(e, "orig", None)):
        code = getattr(err, "sqlstate", None)
        if isinstance(code, str) and len(code) >= 2:
            return code[:2]
    return None


def is_data_refusal(e: BaseException | None) -> bool:
    """True when SQL refused the statement for its data (class 22 or 23); the link is fine."""
    if isinstance(e, IntegrityError | DataError | SeqCollisionError):
        return True
    return sqlstate_class(e) in (DATA_EXCEPTION, INTEGRITY_VIOLATION)


def is_poison(err: BaseException) -> bool:
    """True when a wrapped failure says retrying the same entry cannot help."""
    return is_data_refusal(err.__cause__)


def refused_by_constraint(err: BaseException) -> bool:
    """True when a wrapped failure says a constraint refused the rows (class 23)."""
    cause = err.__cause__
    return isinstance(cause, IntegrityError) or sqlstate_class(cause) == INTEGRITY_VIOLATION


#: every error asyncpg raises: the server's, the client's, and its internal ones
_ASYNCPG_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    PgprotoBufferError,
)


def is_driver_error(e: BaseException) -> bool:
    """Whether ``e`` comes from asyncpg (used directly on the hot path)."""
    return isinstance(e, _ASYNCPG_ERRORS)


def describe(e: BaseException) -> str:
    """Describe a driver error without its SQL parameters (they may hold user data).

    Never an empty reason: an error without a message (a timeout) says what it is.
    """
    orig = getattr(e, "orig", None) or e
    lines = str(orig).strip().splitlines()
    text = lines[0][:300] if lines else ""
    if not text:
        text = (
            "no answer in time (is the server up and answering on that port?)"
            if isinstance(orig, TimeoutError)
            else "no message from the driver"
        )
    return f"{type(orig).__name__}: {text}"


#: SQLSTATE classes that name a mistake in the URL, not an outage
_MISTAKES = {
    "3D": "the database does not exist: create it, or fix the database name in sql_url",
    "28": "the server refused the login (unknown role or wrong password): fix sql_url",
}
#: insufficient_privilege: the role may not create or read the tables
_NO_PRIVILEGE = "42501"


def orig_of(e: BaseException) -> object:
    """The driver's exception a SQLAlchemy error wraps (or None)."""
    return getattr(e, "orig", None)


def configuration_problem(e: BaseException | None) -> str | None:
    """What is wrong with the set-up, when a failure is a mistake rather than an outage.

    A database that does not exist, a login refused, a SQLite file whose
    directory is missing: retrying will not help, so the caller raises a
    ConfigurationError saying so.
    """
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        klass = sqlstate_class(e)
        if klass in _MISTAKES:
            return f"{_MISTAKES[klass]} ({describe(e)})"
        if _NO_PRIVILEGE in (getattr(e, "sqlstate", None), getattr(orig_of(e), "sqlstate", None)):
            return f"the role lacks a privilege on the tables: grant it ({describe(e)})"
        orig = getattr(e, "orig", None)
        text = str(orig or e)
        if "unable to open database file" in text:
            return (
                "SQLite cannot open the database file: does its directory exist, "
                "and may this process write there?"
            )
        e = e.__cause__ or (orig if isinstance(orig, BaseException) else None)
    return None
