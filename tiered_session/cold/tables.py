"""The tables, in SQLAlchemy Core: a superset of the Agents SDK's ``SQLAlchemySession`` schema.

``agent_messages`` gains a ``seq`` column with a unique index on
``(session_id, seq)``, so the SDK can read what we write and inserts are
idempotent.

Example:
    >>> _, sessions, messages = build_tables("agent_sessions", "agent_messages")
    >>> sorted(messages.c.keys())
    ['created_at', 'id', 'message_data', 'seq', 'session_id']
"""

from __future__ import annotations

from sqlalchemy import (
    TIMESTAMP,
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy import text as sql_text

__all__ = ["build_tables"]


def build_tables(sessions_table: str, messages_table: str) -> tuple[MetaData, Table, Table]:
    """Return (metadata, sessions, messages) tables for the given names."""
    md = MetaData()
    sessions = Table(
        sessions_table,
        md,
        Column("session_id", String, primary_key=True),
        Column(
            "created_at",
            TIMESTAMP(timezone=False),
            server_default=sql_text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        Column(
            "updated_at",
            TIMESTAMP(timezone=False),
            server_default=sql_text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
    )
    messages = Table(
        messages_table,
        md,
        Column(
            "id",
            BigInteger().with_variant(Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        Column(
            "session_id",
            String,
            ForeignKey(f"{sessions_table}.session_id", ondelete="CASCADE"),
            nullable=False,
        ),
        Column("message_data", Text, nullable=False),
        Column(
            "created_at",
            TIMESTAMP(timezone=False),
            server_default=sql_text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        Column("seq", BigInteger, nullable=True),
        Index(f"idx_{messages_table}_session_time", "session_id", "created_at"),
        Index(f"uq_{messages_table}_session_seq", "session_id", "seq", unique=True),
        sqlite_autoincrement=True,
    )
    return md, sessions, messages
