"""``tiered-session migrate`` and ``schema``: create, check and upgrade the SQL tables.

Example:
    $ tiered-session migrate --sql-url postgresql+asyncpg://postgres@localhost/agents
    $ tiered-session schema --sql-url postgresql+asyncpg://postgres@localhost/agents --print
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable

from .._config import StoreConfig, default, redact_url
from .._errors import ConfigurationError
from ..cold.engine import engine_from_url
from ..cold.schema import ddl_statements, inspect_schema, migrate
from ..cold.tier import SqlTier
from .common import SubParsers, emit

__all__ = ["register"]


def register(sub: SubParsers) -> None:
    """Add ``migrate`` and ``schema``."""
    for name, help_text, func in (
        ("migrate", "upgrade Agents SDK tables in place (idempotent)", _migrate),
        ("schema", "create the tables and indexes, or --print their DDL", _schema),
    ):
        q = sub.add_parser(name, help=help_text)
        env_sql = os.environ.get("TIERED_SESSION_SQL_URL") or None
        q.add_argument(
            "--sql-url",
            default=env_sql,
            required=env_sql is None,
            help="SQLAlchemy async URL (env TIERED_SESSION_SQL_URL)",
        )
        q.add_argument("--sessions-table", default=default("sessions_table"))
        q.add_argument("--messages-table", default=default("messages_table"))
        q.add_argument("--json", action="store_true", help="print JSON")
        if name == "migrate":
            q.add_argument(
                "--order-by",
                choices=["created_at", "id"],
                default="created_at",
                help="order of existing rows: created_at (SQLAlchemySession, default) or id",
            )
        else:
            q.add_argument("--print", action="store_true", help="print the DDL, change nothing")
        q.set_defaults(func=lambda args, f=func: asyncio.run(_with_sql(args, f)))


async def _with_sql(
    args: argparse.Namespace, func: Callable[[SqlTier, argparse.Namespace], Awaitable[int]]
) -> int:
    config = StoreConfig(sessions_table=args.sessions_table, messages_table=args.messages_table)
    engine = engine_from_url(args.sql_url)
    sql = SqlTier(engine, config.sessions_table, config.messages_table)
    try:
        return await func(sql, args)
    finally:
        await sql.close()
        await engine.dispose()


async def _migrate(sql: SqlTier, args: argparse.Namespace) -> int:
    before = await inspect_schema(sql)
    report = await migrate(sql, order_by=args.order_by)
    changed = (
        report["created_tables"]
        or report["added_seq_column"]
        or report["numbered_rows"]
        or report["created_indexes"]
    )
    text = (
        f"migrated {sql.sessions.name}/{sql.messages.name} at {redact_url(args.sql_url)}: "
        f"created tables {report['created_tables'] or 'none'}, "
        f"added seq column: {'yes' if report['added_seq_column'] else 'no'}, "
        f"numbered {report['numbered_rows']} row(s), "
        f"created indexes {report['created_indexes'] or 'none'}"
        if changed
        else f"schema of {sql.sessions.name}/{sql.messages.name} is up to date; nothing to do"
    )
    emit(args, {"before": before, **report}, text)
    return 0


async def _schema(sql: SqlTier, args: argparse.Namespace) -> int:
    statements = ddl_statements(sql)
    if args.print:
        print("\n\n".join(statements))
        return 0
    state = await inspect_schema(sql)
    if state["messages_table"] and not state["seq_column"]:
        raise ConfigurationError(
            f"table {sql.messages.name!r} exists with an older schema: run "
            "`tiered-session migrate --sql-url URL` to upgrade it in place"
        )
    report = await migrate(sql)
    emit(
        args,
        report,
        f"created tables {report['created_tables'] or 'none'}, "
        f"indexes {report['created_indexes'] or 'none'} at {redact_url(args.sql_url)}",
    )
    return 0
