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
    ...         return [(sid, datas) async for sid, datas, _ in source.read()]
    ...     finally:
    ...         await engine.dispose()
    >>> asyncio.run(main())
    [('u', ['{}'])]
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from sqlalchemy import Column, Integer, MetaData, String, Table, Text, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine

from .._errors import ConfigurationError

__all__ = ["OrderBy", "SdkSource"]

OrderBy = Literal["id", "created_at"]


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
        #: sessions found, once :meth:`read` has started
        self.count = 0

    async def read(self) -> AsyncIterator[tuple[str, list[Any], tuple[Any, Any] | None]]:
        """Yield (session_id, raw message_data values in order, (created, updated) or None)."""
        m, s = self.messages, self.sessions_table
        async with self.engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            if m.name not in names:
                raise ConfigurationError(
                    f"{self.where!r} has no table {m.name!r}: not an Agents SDK session "
                    "database (or pass the table names it uses)"
                )
            has_sessions = s.name in names
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
                yield sid, datas, times
