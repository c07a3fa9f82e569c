"""Statements built once per store: the hot ones, and PostgreSQL's array forms.

On PostgreSQL the hot statements run on asyncpg directly (:mod:`.driver`), so
they are compiled once to asyncpg's text with the order of their positional
parameters. ``SQLCompiler.positiontup`` gives that order; it is read only in
:func:`positional`, and ``tests/test_cold.py`` fails loudly if it changes.

Example:
    >>> from tiered_session.cold.engine import embedded_engine
    >>> from tiered_session.cold.tables import build_tables
    >>> _, s, m = build_tables("agent_sessions", "agent_messages")
    >>> st = Statements(embedded_engine(), s, m)
    >>> st.add_text is None, "LIMIT" in str(st.latest(False, True))
    (True, True)
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    BigInteger,
    String,
    Table,
    Text,
    any_,
    bindparam,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from .engine import uses_asyncpg

__all__ = ["Statements", "positional"]


class Statements:
    """The statements of one pair of tables on one engine."""

    def __init__(self, engine: AsyncEngine, sessions: Table, messages: Table) -> None:
        self.dialect = engine.dialect
        self.sessions = sessions
        self.messages = messages
        #: PostgreSQL through asyncpg: the one-statement write-through insert
        self.add_text = _compile_add(engine, sessions, messages) if uses_asyncpg(engine) else None
        #: PostgreSQL: (touch sessions, insert rows, insert rows skipping existing seqs)
        self.many = (
            _insert_many(sessions, messages) if engine.dialect.name == "postgresql" else None
        )

    @functools.cache  # noqa: B019 - one Statements per store, a handful of statements each
    def latest(self, before: bool, limit: bool) -> Any:
        """Rows of ``sid`` (below ``before``), all ascending or the newest ``lim`` descending."""
        m = self.messages
        stmt = select(m.c.seq, m.c.message_data).where(
            m.c.session_id == bindparam("sid", type_=m.c.session_id.type)
        )
        if before:
            stmt = stmt.where(m.c.seq < bindparam("before", type_=BigInteger))
        if not limit:
            return stmt.order_by(m.c.seq.asc())
        return stmt.order_by(m.c.seq.desc()).limit(bindparam("lim", type_=BigInteger))

    @functools.cache  # noqa: B019
    def present(self) -> Any:
        """Which of the array ``seqs`` of ``sid`` exist (PostgreSQL)."""
        m = self.messages
        return select(m.c.seq).where(
            m.c.session_id == bindparam("sid", type_=m.c.session_id.type),
            m.c.seq == any_(bindparam("seqs", type_=postgresql.ARRAY(BigInteger))),
        )

    @functools.cache  # noqa: B019
    def delete_one(self) -> Any:
        """Delete the row ``seq`` of ``sid``."""
        m = self.messages
        return delete(m).where(
            m.c.session_id == bindparam("sid", type_=m.c.session_id.type),
            m.c.seq == bindparam("seq", type_=BigInteger),
        )

    @functools.cache  # noqa: B019
    def compiled(self, stmt: Any) -> tuple[str, list[str]]:
        """The asyncpg text of a statement and the names of its positional parameters."""
        return positional(stmt, self.dialect)

    def driver_args(self, stmt: Any, params: dict[str, Any]) -> tuple[str, list[Any]]:
        """The asyncpg text of ``stmt`` and ``params`` in its positional order."""
        text, order = self.compiled(stmt)
        return text, [params[name] for name in order]


def positional(stmt: Any, dialect: Any) -> tuple[str, list[str]]:
    """``stmt`` compiled for ``dialect``: its text and its parameters' names in order."""
    compiled = stmt.compile(dialect=dialect)
    if compiled.positiontup is None:
        raise RuntimeError(f"{dialect.name}: SQLAlchemy gave no positional parameter order")
    return str(compiled), list(compiled.positiontup)


def _insert_many(sessions: Table, messages: Table) -> tuple[Any, Any, Any]:
    """PostgreSQL statements that take whole batches as arrays (flusher path).

    Returns (touch sessions ``sids``, insert rows, insert rows skipping
    existing ``(session_id, seq)``); rows come as arrays ``sid``, ``seqs``,
    ``datas``.
    """
    arr = postgresql.ARRAY
    touch = (
        postgresql.insert(sessions)
        .from_select(["session_id"], select(func.unnest(bindparam("sids", type_=arr(String)))))
        .on_conflict_do_update(
            index_elements=[sessions.c.session_id],
            set_={"updated_at": func.current_timestamp()},
        )
    )
    rows = select(
        func.unnest(bindparam("sid", type_=arr(String))),
        func.unnest(bindparam("seqs", type_=arr(BigInteger))),
        func.unnest(bindparam("datas", type_=arr(Text))),
    )
    plain = postgresql.insert(messages).from_select(["session_id", "seq", "message_data"], rows)
    idem = plain.on_conflict_do_nothing(index_elements=[messages.c.session_id, messages.c.seq])
    return touch, plain, idem


def _compile_add(engine: AsyncEngine, sessions: Table, messages: Table) -> str:
    """The one-statement write-through insert for asyncpg.

    A CTE upserts the session row, the INSERT adds the rows from two arrays:
    one round trip instead of four (BEGIN, upsert, insert, COMMIT), atomic.
    """
    sid = bindparam("sid", type_=sessions.c.session_id.type)
    touch = (
        postgresql.insert(sessions)
        .values(session_id=sid)
        .on_conflict_do_update(
            index_elements=[sessions.c.session_id],
            set_={"updated_at": func.current_timestamp()},
        )
        .cte("touch")
    )
    rows = select(
        sid,
        func.unnest(bindparam("seqs", type_=postgresql.ARRAY(BigInteger))),
        func.unnest(bindparam("datas", type_=postgresql.ARRAY(Text))),
    )
    stmt = insert(messages).from_select(["session_id", "seq", "message_data"], rows)
    text, order = positional(stmt.add_cte(touch), engine.dialect)
    if order != ["sid", "seqs", "datas"]:  # the call site passes them in this order
        raise RuntimeError(f"write-through insert: unexpected parameter order {order}")
    return text
