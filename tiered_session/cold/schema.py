"""Schema management: DDL, checking what a database holds, and upgrading SDK tables.

The tables are a superset of the Agents SDK's ``SQLAlchemySession`` schema:
``agent_messages`` gains a ``seq`` column and a unique index on
``(session_id, seq)``. :func:`migrate` upgrades tables the SDK created, in
place: it adds the column, numbers every existing row of a session in the order
the SDK reads them (``created_at, id``), and creates the indexes. It is
idempotent, and a re-run also numbers rows the SDK appended meanwhile.

Example:
    >>> from sqlalchemy.ext.asyncio import create_async_engine
    >>> from tiered_session.cold.tier import SqlTier
    >>> engine = create_async_engine("sqlite+aiosqlite://")
    >>> sql = SqlTier(engine, "agent_sessions", "agent_messages")
    >>> ddl_statements(sql)[0].splitlines()[0]
    'CREATE TABLE agent_sessions ('
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal, TypedDict

from sqlalchemy import Column, Index, Table, func, inspect, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateIndex, CreateTable, ExecutableDDLElement
from sqlalchemy.sql.compiler import DDLCompiler

from .._errors import ConfigurationError
from .tier import SqlTier

__all__ = [
    "MigrationReport",
    "SchemaState",
    "check_schema",
    "ddl_statements",
    "ensure_schema",
    "inspect_schema",
    "migrate",
]

OrderBy = Literal["created_at", "id"]


class SchemaState(TypedDict):
    """What :func:`inspect_schema` found in the database."""

    sessions_table: bool
    messages_table: bool
    seq_column: bool
    unique_seq_index: bool
    unnumbered_rows: int


class MigrationReport(TypedDict):
    """What :func:`migrate` changed (all zero/empty on a re-run)."""

    created_tables: list[str]
    added_seq_column: bool
    numbered_rows: int
    created_indexes: list[str]


class _AddColumn(ExecutableDDLElement):
    """``ALTER TABLE <table> ADD COLUMN <column spec>``, quoted by the dialect."""

    inherit_cache = False

    def __init__(self, table: Table, column: Column[Any]) -> None:
        self.table = table
        self.column = column


@compiles(_AddColumn)
def _compile_add_column(element: _AddColumn, compiler: DDLCompiler, **kw: Any) -> str:
    table = compiler.preparer.format_table(element.table)
    spec = compiler.get_column_specification(element.column)
    return "ALTER TABLE " + table + " ADD COLUMN " + spec


def ddl_statements(sql: SqlTier) -> list[str]:
    """Return the DDL of the tables and indexes, for ``sql``'s dialect."""
    dialect = sql.engine.dialect
    out = [
        str(CreateTable(t).compile(dialect=dialect)).strip() + ";"
        for t in (sql.sessions, sql.messages)
    ]
    for idx in sorted(sql.messages.indexes, key=lambda i: str(i.name)):
        out.append(str(CreateIndex(idx).compile(dialect=dialect)).strip() + ";")
    return out


def _state(conn: Connection, sql: SqlTier) -> SchemaState:
    state = _state_light(conn, sql)
    if state["seq_column"]:
        m = sql.messages
        count = conn.execute(select(func.count()).where(m.c.seq.is_(None))).scalar_one()
        state["unnumbered_rows"] = int(count)
    return state


async def inspect_schema(sql: SqlTier) -> SchemaState:
    """Report which tables, columns and indexes exist (no changes)."""
    async with sql.begin() as conn:
        return await conn.run_sync(_state, sql)


def _problems(state: SchemaState) -> list[str]:
    problems = []
    if not state["sessions_table"] or not state["messages_table"]:
        return ["tables are missing"]
    if not state["seq_column"]:
        problems.append("the messages table has no 'seq' column (an Agents SDK schema?)")
    if not state["unique_seq_index"]:
        problems.append("the unique index on (session_id, seq) is missing")
    return problems


async def check_schema(sql: SqlTier) -> None:
    """Raise ConfigurationError, saying what to run, unless the schema is current."""
    async with sql.begin() as conn:
        state = await conn.run_sync(_state_light, sql)
    problems = _problems(state)
    if not problems:
        return
    names = f"{sql.sessions.name!r}/{sql.messages.name!r}"
    if problems == ["tables are missing"]:
        raise ConfigurationError(
            f"SQL tables {names} not found: create them with `tiered-session schema "
            "--sql-url URL` (or print the DDL with --print), or pass create_tables=True"
        )
    raise ConfigurationError(
        f"SQL tables {names} are outdated: {'; '.join(problems)}. Upgrade them in place with "
        "`tiered-session migrate --sql-url URL` (or pass create_tables=True)"
    )


def _state_light(conn: Connection, sql: SqlTier) -> SchemaState:
    """Like _state, without counting unnumbered rows (cheap enough for every start)."""
    insp = inspect(conn)
    names = set(insp.get_table_names())
    state = SchemaState(
        sessions_table=sql.sessions.name in names,
        messages_table=sql.messages.name in names,
        seq_column=False,
        unique_seq_index=False,
        unnumbered_rows=0,
    )
    if state["messages_table"]:
        m_name = sql.messages.name
        state["seq_column"] = "seq" in {c["name"] for c in insp.get_columns(m_name)}
        uniques = [list(i["column_names"]) for i in insp.get_indexes(m_name) if i.get("unique")]
        uniques += [list(u["column_names"]) for u in insp.get_unique_constraints(m_name)]
        state["unique_seq_index"] = ["session_id", "seq"] in uniques
    return state


async def ensure_schema(sql: SqlTier, *, create: bool) -> None:
    """Check the schema at start; with ``create``, create and upgrade what is missing."""
    if not create:
        await check_schema(sql)
        return
    async with sql.begin() as conn:
        state = await conn.run_sync(_state_light, sql)
    if _problems(state):
        await migrate(sql)


def _number_rows(conn: Connection, sql: SqlTier, order_by: OrderBy) -> int:
    """Give every row without a seq the next seqs of its session, in reading order."""
    m = sql.messages
    order = (m.c.created_at, m.c.id) if order_by == "created_at" else (m.c.id,)
    unnumbered = m.c.seq.is_(None)
    numbered = (
        select(
            m.c.id,
            m.c.seq.label("old"),
            (
                func.coalesce(func.max(m.c.seq).over(partition_by=m.c.session_id), 0)
                + func.row_number().over(partition_by=(m.c.session_id, unnumbered), order_by=order)
            ).label("new"),
        )
        .where(m.c.session_id.in_(select(m.c.session_id).where(unnumbered).distinct()))
        .subquery()
    )
    stmt = (
        update(m)
        .where(m.c.id == numbered.c.id, numbered.c.old.is_(None))
        .values(seq=numbered.c.new)
    )
    return int(conn.execute(stmt).rowcount or 0)


def _lock_key(sql: SqlTier) -> int:
    """The advisory lock of these tables' schema changes (a signed 64-bit number)."""
    name = f"tiered-session schema {sql.sessions.name} {sql.messages.name}".encode()
    return int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "big", signed=True)


def _migrate(conn: Connection, sql: SqlTier, order_by: OrderBy) -> MigrationReport:
    report = MigrationReport(
        created_tables=[], added_seq_column=False, numbered_rows=0, created_indexes=[]
    )
    if conn.dialect.name == "postgresql":
        # Concurrent starts on fresh tables: CREATE ... IF NOT EXISTS is not safe under
        # concurrency in PostgreSQL, so one transaction at a time creates, the others
        # then find everything in place.
        conn.execute(select(func.pg_advisory_xact_lock(_lock_key(sql))))
    insp = inspect(conn)
    existing = set(insp.get_table_names())
    for table in (sql.sessions, sql.messages):
        if table.name not in existing:
            table.create(conn)
            report["created_tables"].append(table.name)
    if sql.messages.name in existing:
        columns = {c["name"] for c in insp.get_columns(sql.messages.name)}
        if "seq" not in columns:
            conn.execute(_AddColumn(sql.messages, sql.messages.c.seq))
            report["added_seq_column"] = True
        report["numbered_rows"] = _number_rows(conn, sql, order_by)
        present = {i["name"] for i in inspect(conn).get_indexes(sql.messages.name)}
        idx: Index
        for idx in sorted(sql.messages.indexes, key=lambda i: str(i.name)):
            if idx.name not in present:
                idx.create(conn)
                report["created_indexes"].append(str(idx.name))
    return report


async def migrate(sql: SqlTier, *, order_by: OrderBy = "created_at") -> MigrationReport:
    """Create or upgrade the tables in place, in one transaction. Idempotent.

    Rows without a ``seq`` (written by the SDK) are numbered per session after
    the highest existing seq, in the SDK's reading order: ``created_at, id``
    (``SQLAlchemySession``) or ``id`` (``SQLiteSession``).
    """
    if order_by not in ("created_at", "id"):
        raise ConfigurationError(f"order_by must be 'created_at' or 'id', got {order_by!r}")
    async with sql.begin() as conn:
        return await conn.run_sync(_migrate, sql, order_by)
