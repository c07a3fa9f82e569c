"""Reading sessions out of a database the Agents SDK wrote (for imports).

The SDK's ``SQLiteSession`` orders a session's items by row id; its
``SQLAlchemySession`` by ``created_at, id``.

Example:
    >>> import asyncio, sqlite3, tempfile, pathlib
    >>> from tiered_session.cold.engine import engine_from_url
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "sdk.db"
    >>> db = sqlite3.connect(path)
    >>> _ = db.execute("CREATE TABLE agent_messages (id INTEGER PRIMARY KEY, session_id TEXT, "
    ...                "message_data TEXT, created_at TEXT)")
    >>> _ = db.execute("INSERT INTO agent_messages (session_id, message_data) VALUES ('u', '{}')")
    >>> db.commit(); db.close()
    >>> async def main():
    ...     engine = engine_from_url(f"sqlite+aiosqlite:///{path}")
    ...     source = SdkSource(engine, str(path), "agent_sessions", "agent_messages", "id")
    ...     try:
    ...         return [(sid, datas) async for sid, datas, _, _ in source.read()]
    ...     finally:
    ...         await engine.dispose()
    >>> asyncio.run(main())
    [('u', ['{}'])]
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Column, Integer, MetaData, String, Table, Text, inspect, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._errors import ConfigurationError

__all__ = ["OrderBy", "SdkSource", "SdkStructure"]

OrderBy = Literal["id", "created_at"]


@dataclass
class SdkStructure:
    """What ``AdvancedSQLiteSession`` kept of one session beside its messages."""

    #: branch -> its items' raw message_data, in order (``main`` included when it has rows)
    branches: dict[str, list[Any]] = field(default_factory=dict)
    #: (branch, turn, requests, input, output, total, input details, output details)
    usage: list[tuple[Any, ...]] = field(default_factory=list)
    #: branch ids used in the past that hold no rows now
    reserved: list[str] = field(default_factory=list)


class SdkSource:
    """The sessions of an SDK database, one at a time."""

    def __init__(
        self,
        engine: AsyncEngine,
        where: str,
        sessions_table: str,
        messages_table: str,
        order_by: OrderBy,
    ) -> None:
        self.engine = engine
        self.where = where
        md = MetaData()
        self.sessions_table = Table(
            sessions_table,
            md,
            Column("session_id", String, primary_key=True),
            Column("created_at", String),
            Column("updated_at", String),
        )
        self.messages = Table(
            messages_table,
            md,
            Column("id", Integer, primary_key=True),
            Column("session_id", String),
            Column("message_data", Text),
            Column("created_at", String),
        )
        m = self.messages
        self._order = (m.c.id,) if order_by == "id" else (m.c.created_at, m.c.id)
        # AdvancedSQLiteSession's tables (fixed names)
        self.structure = Table(
            "message_structure",
            md,
            Column("id", Integer, primary_key=True),
            Column("session_id", String),
            Column("message_id", Integer),
            Column("branch_id", String),
            Column("sequence_number", Integer),
        )
        self.turn_usage = Table(
            "turn_usage",
            md,
            *(Column(c, String) for c in ("session_id", "branch_id", "input_tokens_details")),
            Column("output_tokens_details", String),
            *(Column(c, Integer) for c in _USAGE_COUNTS),
        )
        self.reservations = Table(
            "branch_reservations", md, Column("session_id", String), Column("branch_id", String)
        )
        #: sessions found, once :meth:`read` has started
        self.count = 0

    async def read(
        self,
    ) -> AsyncIterator[tuple[str, list[Any], tuple[Any, Any] | None, SdkStructure | None]]:
        """Yield each session: id, raw message_data in order, times, structure.

        Times: ``(created, updated)`` or None; structure: what
        ``AdvancedSQLiteSession`` kept beside the messages, or None.
        """
        m, s = self.messages, self.sessions_table
        async with self.engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            if m.name not in names:
                raise ConfigurationError(
                    f"{self.where!r} has no table {m.name!r}: not an Agents SDK session "
                    "database (or pass the table names it uses)"
                )
            has_sessions = s.name in names
            advanced = {self.structure.name, self.turn_usage.name} <= names
            has_reservations = self.reservations.name in names
            ids_stmt = select(m.c.session_id).distinct().order_by(m.c.session_id)
            ids = [r[0] for r in (await conn.execute(ids_stmt)).all()]
            self.count = len(ids)
            for sid in ids:
                stmt = select(m.c.message_data).where(m.c.session_id == sid).order_by(*self._order)
                datas = [r[0] for r in (await conn.execute(stmt)).all()]
                times = None
                if has_sessions:
                    row = (
                        await conn.execute(
                            select(s.c.created_at, s.c.updated_at).where(s.c.session_id == sid)
                        )
                    ).first()
                    times = None if row is None else (row[0], row[1])
                structure = await self._structure(conn, sid, has_reservations) if advanced else None
                yield sid, datas, times, structure

    async def _structure(
        self, conn: AsyncConnection, sid: str, has_reservations: bool
    ) -> SdkStructure | None:
        """One session's branches, usage and used branch ids; None if it has no structure."""
        st, m, u = self.structure, self.messages, self.turn_usage
        found = SdkStructure()
        rows = await conn.execute(
            select(st.c.branch_id, m.c.message_data)
            .join(m, m.c.id == st.c.message_id)
            .where(st.c.session_id == sid)
            .order_by(st.c.branch_id, st.c.sequence_number)
        )
        for branch, data in rows.all():
            found.branches.setdefault(str(branch), []).append(data)
        if not found.branches:
            return None  # written by a plain session: its messages are its history
        cols = [u.c.branch_id, u.c.user_turn_number, *(u.c[c] for c in _USAGE_COUNTS[1:])]
        cols += [u.c.input_tokens_details, u.c.output_tokens_details]
        usage = await conn.execute(select(*cols).where(u.c.session_id == sid))
        found.usage = [tuple(r) for r in usage.all()]
        if has_reservations:
            r = self.reservations
            used = await conn.execute(select(r.c.branch_id).where(r.c.session_id == sid))
            found.reserved = [b for (b,) in used.all() if b not in found.branches]
        return found


#: turn_usage's number columns
_USAGE_COUNTS = ("user_turn_number", "requests", "input_tokens", "output_tokens", "total_tokens")
