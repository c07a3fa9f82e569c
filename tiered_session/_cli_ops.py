r"""Operator CLI: ``sessions …``, ``migrate``, ``import-sqlite``, ``import-sdk``, ``schema``.

Example:
    $ tiered-session sessions list --redis-url redis://localhost:6379/0 \\
          --sql-url postgresql+asyncpg://postgres@localhost/agents
    $ tiered-session sessions cleanup --older-than 30d --redis-url … --sql-url …
    $ tiered-session migrate --sql-url postgresql+asyncpg://postgres@localhost/agents
    $ tiered-session schema --sql-url postgresql+asyncpg://postgres@localhost/agents --print
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ._cli_common import add_server_args, redact, store_from_args
from ._config import StoreConfig
from ._errors import ConfigurationError
from ._progress import Progress
from ._schema import ddl_statements, inspect_schema, migrate
from ._sql import SqlTier
from ._store import TieredStore, _engine_from_url
from ._transfer import ImportReport, import_sdk_sql, import_sdk_sqlite

__all__ = ["parse_duration", "register"]

_StoreOp = Callable[[TieredStore, argparse.Namespace], Awaitable[int]]
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """Parse ``90s``, ``15m``, ``12h``, ``30d`` or ``2w`` into a timedelta."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use a number and a unit s, m, h, d or w (e.g. 30d)"
        )
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sessions``, ``migrate``, ``import-sqlite``, ``import-sdk`` and ``schema``."""
    p = sub.add_parser("sessions", help="list, inspect, delete, clean up, back up sessions")
    ops = p.add_subparsers(dest="op", required=True, metavar="OP")

    def op(name: str, help_text: str, func: _StoreOp) -> argparse.ArgumentParser:
        q = ops.add_parser(name, help=help_text)
        add_server_args(q, required=True)
        q.add_argument("--json", action="store_true", help="print JSON")
        q.set_defaults(func=lambda args: _run_store_op(args, func))
        return q

    q = op("list", "sessions with items, newest activity first", _list)
    q.add_argument("--limit", type=int, default=50, help="page size (default 50)")
    q.add_argument("--offset", type=int, default=0, help="sessions to skip")
    q = op("show", "print a session's items, one JSON object a line", _show)
    q.add_argument("session_id")
    q.add_argument("--limit", type=int, default=None, help="only the newest N items")
    q = op("stats", "item counts, unflushed items, bytes and times of a session", _stats)
    q.add_argument("session_id")
    q = op("delete", "delete a session from Redis and SQL", _delete)
    q.add_argument("session_id")
    q = op("cleanup", "delete sessions idle for longer than a given age", _cleanup)
    q.add_argument("--older-than", type=parse_duration, required=True, help="e.g. 30d, 12h")
    q.add_argument("--dry-run", action="store_true", help="only count them")
    q = op("export", "write sessions to a JSON Lines backup", _export)
    q.add_argument("path", type=Path)
    q.add_argument("--session", action="append", dest="sessions", help="only this id (repeat)")
    q = op("import", "restore sessions from a JSON Lines backup (idempotent)", _import)
    q.add_argument("path", type=Path)

    q = sub.add_parser("import-sqlite", help="import an Agents SDK SQLiteSession database file")
    add_server_args(q, required=True)
    q.add_argument("path", type=Path, help="the SDK's SQLite file")
    q.add_argument("--source-sessions-table", default="agent_sessions")
    q.add_argument("--source-messages-table", default="agent_messages")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=lambda args: _run_store_op(args, _import_sqlite))

    q = sub.add_parser(
        "import-sdk", help="import the sessions of another database written by SQLAlchemySession"
    )
    add_server_args(q, required=True)
    q.add_argument("--source-url", required=True, help="SQLAlchemy async URL of the SDK database")
    q.add_argument("--source-sessions-table", default="agent_sessions")
    q.add_argument("--source-messages-table", default="agent_messages")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=lambda args: _run_store_op(args, _import_sdk))

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
        q.add_argument("--sessions-table", default="agent_sessions")
        q.add_argument("--messages-table", default="agent_messages")
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


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, default=_json_default) if args.json else text)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def _run_store_op(args: argparse.Namespace, func: _StoreOp) -> int:
    store = store_from_args(args, create_tables=False)

    async def run() -> int:
        async with store:
            return await func(store, args)

    return asyncio.run(run())


async def _list(store: TieredStore, args: argparse.Namespace) -> int:
    page = await store.list_sessions(limit=args.limit, offset=args.offset)
    lines = [f"{'session_id':<40} {'updated (UTC)':<19}  {'created (UTC)':<19}"]
    lines += [
        f"{i['session_id']:<40} {_when(i['updated_at']):<19}  {_when(i['created_at']):<19}"
        for i in page
    ]
    _emit(args, page, "\n".join(lines))
    return 0


async def _show(store: TieredStore, args: argparse.Namespace) -> int:
    items = await store.session(args.session_id).get_items(limit=args.limit)
    if args.json:
        print(json.dumps(items, indent=2, ensure_ascii=False))
    else:
        for item in items:
            print(json.dumps(item, ensure_ascii=False))
    return 0


async def _stats(store: TieredStore, args: argparse.Namespace) -> int:
    st = await store.session_stats(args.session_id)
    text = "\n".join(
        f"  {k:<20} {_when(v) if isinstance(v, datetime) or v is None else v}"
        for k, v in st.items()
    )
    _emit(args, st, text)
    return 0 if st["exists"] else 1


async def _delete(store: TieredStore, args: argparse.Namespace) -> int:
    existed = await store.delete_session(args.session_id)
    verb = "deleted" if existed else "not found (nothing to delete):"
    _emit(args, {"session_id": args.session_id, "deleted": existed}, f"{verb} {args.session_id}")
    return 0 if existed else 1


async def _cleanup(store: TieredStore, args: argparse.Namespace) -> int:
    bar = Progress(0, "cleanup")
    n = await store.cleanup(args.older_than, dry_run=args.dry_run, progress=bar)
    bar.close()
    verb = "would delete" if args.dry_run else "deleted"
    _emit(
        args,
        {"deleted": 0 if args.dry_run else n, "idle": n, "dry_run": args.dry_run},
        f"{verb} {n} session(s) idle for more than {args.older_than}",
    )
    return 0


async def _export(store: TieredStore, args: argparse.Namespace) -> int:
    bar = Progress(0, "export")
    n = await store.export_jsonl(args.path, args.sessions, progress=bar)
    bar.close()
    _emit(args, {"sessions": n, "path": str(args.path)}, f"exported {n} session(s) to {args.path}")
    return 0


def _report_text(report: Any) -> str:
    text = (
        f"imported {report['sessions_imported']} session(s) "
        f"({report['items_imported']} items); unchanged {report['sessions_unchanged']}; "
        f"conflicting {report['sessions_conflicting']}"
    )
    if report["conflicts"]:
        text += "\nconflicting sessions (already present with other items, skipped): "
        text += ", ".join(report["conflicts"][:20])
    if report["corrupt_rows_skipped"]:
        text += f"\nskipped {report['corrupt_rows_skipped']} row(s) that were not valid JSON"
    return text


async def _run_import(
    args: argparse.Namespace, label: str, run: Callable[[Progress], Awaitable[ImportReport]]
) -> int:
    bar = Progress(0, label)
    report = await run(bar)
    bar.close()
    _emit(args, report, _report_text(report))
    return 0 if report["sessions_conflicting"] == 0 else 1


async def _import(store: TieredStore, args: argparse.Namespace) -> int:
    return await _run_import(
        args, "import", lambda bar: store.import_jsonl(args.path, progress=bar)
    )


async def _import_sqlite(store: TieredStore, args: argparse.Namespace) -> int:
    return await _run_import(
        args,
        "import-sqlite",
        lambda bar: import_sdk_sqlite(
            store,
            args.path,
            sessions_table=args.source_sessions_table,
            messages_table=args.source_messages_table,
            progress=bar,
        ),
    )


async def _import_sdk(store: TieredStore, args: argparse.Namespace) -> int:
    return await _run_import(
        args,
        "import-sdk",
        lambda bar: import_sdk_sql(
            store,
            args.source_url,
            sessions_table=args.source_sessions_table,
            messages_table=args.source_messages_table,
            progress=bar,
        ),
    )


async def _with_sql(
    args: argparse.Namespace, func: Callable[[SqlTier, argparse.Namespace], Awaitable[int]]
) -> int:
    config = StoreConfig(sessions_table=args.sessions_table, messages_table=args.messages_table)
    engine = _engine_from_url(args.sql_url, {})
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
        f"migrated {sql.sessions.name}/{sql.messages.name} at {redact(args.sql_url)}: "
        f"created tables {report['created_tables'] or 'none'}, "
        f"added seq column: {'yes' if report['added_seq_column'] else 'no'}, "
        f"numbered {report['numbered_rows']} row(s), "
        f"created indexes {report['created_indexes'] or 'none'}"
        if changed
        else f"schema of {sql.sessions.name}/{sql.messages.name} is up to date; nothing to do"
    )
    _emit(args, {"before": before, **report}, text)
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
    _emit(
        args,
        report,
        f"created tables {report['created_tables'] or 'none'}, "
        f"indexes {report['created_indexes'] or 'none'} at {redact(args.sql_url)}",
    )
    return 0
