"""The tables of advanced sessions, and how usage details add up.

Example:
    >>> AdvancedTables("agent_messages").pointer.name
    'agent_messages_pointer'
    >>> add_details('{"cached_tokens": 1}', {"cached_tokens": 2})
    '{"cached_tokens": 3}'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import TIMESTAMP, BigInteger, Column, Index, MetaData, String, Table, Text
from sqlalchemy import text as sql_text

from .._errors import ConfigurationError

__all__ = ["AdvancedTables", "UsageRow", "add_details", "parse_details"]

#: PostgreSQL truncates longer identifiers
_MAX_NAME = 63


def _now_default() -> Any:
    return sql_text("CURRENT_TIMESTAMP")


class AdvancedTables:
    """The three tables of advanced sessions for one messages table."""

    def __init__(self, messages_table: str) -> None:
        names = [f"{messages_table}_{t}" for t in ("branches", "pointer", "usage")]
        too_long = [n for n in names if len(n) > _MAX_NAME]
        if too_long:
            raise ConfigurationError(
                f"advanced sessions need tables named {names}; {too_long[0]!r} is longer than "
                f"{_MAX_NAME} characters: choose a shorter messages_table"
            )
        self.metadata = md = MetaData()
        self.branches = Table(
            names[0],
            md,
            Column("session_id", String, primary_key=True),
            Column("branch_id", String, primary_key=True),
            Column("created_at", TIMESTAMP(timezone=False), server_default=_now_default()),
            Column("deleted_at", TIMESTAMP(timezone=False), nullable=True),
        )
        self.pointer = Table(
            names[1],
            md,
            Column("session_id", String, primary_key=True),
            Column("branch_id", String, nullable=False),
            Column("version", BigInteger, nullable=False),
        )
        self.usage = Table(
            names[2],
            md,
            Column("session_id", String, primary_key=True),
            Column("branch_id", String, primary_key=True),
            Column("turn", BigInteger, primary_key=True),
            Column("requests", BigInteger, nullable=False),
            Column("input_tokens", BigInteger, nullable=False),
            Column("output_tokens", BigInteger, nullable=False),
            Column("total_tokens", BigInteger, nullable=False),
            Column("input_tokens_details", Text, nullable=True),
            Column("output_tokens_details", Text, nullable=True),
            Column("created_at", TIMESTAMP(timezone=False), server_default=_now_default()),
            Index(f"idx_{names[2]}_branch_turn", "session_id", "branch_id", "turn"),
        )


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One turn's usage as stored (details: JSON text or None)."""

    requests: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: str | None
    output_tokens_details: str | None


def add_details(old: str | None, new: dict[str, Any] | None) -> str | None:
    """Usage details summed field by field (numbers added, nested dicts merged)."""
    if new is None:
        return old
    if old is None:
        return json.dumps(new)
    return json.dumps(_merge(json.loads(old), new))


def _merge(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for key, value in b.items():
            out[key] = _merge(a[key], value) if key in a else value
        return out
    numeric = (int, float)
    if all(isinstance(x, numeric) and not isinstance(x, bool) for x in (a, b)):
        return a + b
    return b if b is not None else a


def parse_details(text: Any) -> Any:
    """Stored usage details (JSON text) as data; None when absent or not JSON."""
    if not text:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None
