"""``tiered-session migrate`` and ``schema``: create, check and upgrade the SQL tables.

Example:
    $ tiered-session schema --sql-url postgresql+asyncpg://postgres@localhost/agents --print
    $ tiered-session schema --sql-url postgresql+asyncpg://postgres@localhost/agents
    $ tiered-session migrate --sql-url postgresql+asyncpg://postgres@localhost/agents
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import click

from .._config import StoreConfig, redact_url
from .._errors import ConfigurationError
from ..cold.engine import engine_from_url
from ..cold.schema import MigrationReport, OrderBy, ddl_statements, inspect_schema, migrate
from ..cold.tier import SqlTier
from .common import ExitCode, Target, echo_json
from .options import json_option, storage_options

__all__ = ["register"]


def register(group: click.Group) -> None:
    """Add ``schema`` and ``migrate``."""
    group.add_command(schema)
    group.add_command(migrate_command)


def _with_sql(target: Target, func: Callable[[SqlTier], Awaitable[int]]) -> int:
    config = StoreConfig(sessions_table=target.sessions_table, messages_table=target.messages_table)
    assert target.sql_url is not None  # (storage_options("sql") requires it)
    url = target.sql_url

    async def run() -> int:
        engine = engine_from_url(url)
        sql = SqlTier(engine, config.sessions_table, config.messages_table)
        try:
            return await func(sql)
        finally:
            await sql.close()
            await engine.dispose()

    return asyncio.run(run())


def _created(sql: SqlTier, report: MigrationReport) -> dict[str, Any]:
    """The report, counting the indexes created with a new messages table too."""
    indexes = list(report["created_indexes"])
    if sql.messages.name in report["created_tables"]:
        indexes += sorted(str(i.name) for i in sql.messages.indexes if str(i.name) not in indexes)
    return {**report, "created_indexes": indexes}


def _names(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


@click.command(short_help="Create the tables and indexes, or print the DDL.")
@click.option(
    "--print",
    "print_only",
    is_flag=True,
    help="Print the DDL (CREATE TABLE / INDEX), change nothing.",
)
@json_option
@storage_options("sql")
def schema(target: Target, print_only: bool, as_json: bool) -> int:
    """Create the tables and indexes (idempotent), or print their DDL."""

    async def run(sql: SqlTier) -> int:
        if print_only:
            statements = ddl_statements(sql)
            if as_json:
                echo_json({"dialect": sql.engine.dialect.name, "statements": statements})
            else:
                click.echo("\n\n".join(statements))
            return ExitCode.OK
        state = await inspect_schema(sql)
        if state["messages_table"] and not state["seq_column"]:
            raise ConfigurationError(
                f"table {sql.messages.name!r} exists with an older schema: run "
                "`tiered-session migrate --sql-url URL` to upgrade it in place"
            )
        report = _created(sql, await migrate(sql))
        if as_json:
            echo_json(report)
        else:
            click.echo(
                f"created tables {_names(report['created_tables'])}, "
                f"indexes {_names(report['created_indexes'])} at {redact_url(target.sql_url)}"
            )
        return ExitCode.OK

    return _with_sql(target, run)


@click.command("migrate", short_help="Upgrade Agents SDK tables in place.")
@click.option(
    "--order-by",
    type=click.Choice(["created_at", "id"]),
    default="created_at",
    show_default=True,
    help="Order of the existing rows: created_at (SQLAlchemySession) or id (SQLiteSession).",
)
@json_option
@storage_options("sql")
def migrate_command(target: Target, order_by: str, as_json: bool) -> int:
    """Upgrade Agents SDK tables in place, or create them (idempotent, one transaction)."""

    async def run(sql: SqlTier) -> int:
        before = await inspect_schema(sql)
        order: OrderBy = "id" if order_by == "id" else "created_at"
        report = _created(sql, await migrate(sql, order_by=order))
        changed = (
            report["created_tables"]
            or report["added_seq_column"]
            or report["numbered_rows"]
            or report["created_indexes"]
        )
        names = f"{sql.sessions.name}/{sql.messages.name}"
        if as_json:
            echo_json({"before": before, **report})
        elif changed:
            click.echo(
                f"migrated {names} at {redact_url(target.sql_url)}: "
                f"created tables {_names(report['created_tables'])}, "
                f"added seq column: {'yes' if report['added_seq_column'] else 'no'}, "
                f"numbered {report['numbered_rows']} row(s), "
                f"created indexes {_names(report['created_indexes'])}"
            )
        else:
            click.echo(f"schema of {names} is up to date; nothing to do")
        return ExitCode.OK

    return _with_sql(target, run)
