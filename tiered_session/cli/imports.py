"""``tiered-session import-sqlite`` and ``import-sdk``: bring Agents SDK sessions in.

Example:
    $ tiered-session import-sqlite conversations.db --redis-url … --sql-url …
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .._progress import Progress
from ..ops.transfer import ImportReport
from ..store import TieredStore
from .common import SubParsers, add_server_args, emit, run_store_op

__all__ = ["register", "report_text", "run_import"]


def register(sub: SubParsers) -> None:
    """Add ``import-sqlite`` and ``import-sdk``."""
    q = sub.add_parser("import-sqlite", help="import an Agents SDK SQLiteSession database file")
    add_server_args(q, required=True)
    q.add_argument("path", type=Path, help="the SDK's SQLite file")
    q.add_argument("--source-sessions-table", default="agent_sessions")
    q.add_argument("--source-messages-table", default="agent_messages")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=lambda args: run_store_op(args, _import_sqlite))

    q = sub.add_parser(
        "import-sdk", help="import the sessions of another database written by SQLAlchemySession"
    )
    add_server_args(q, required=True)
    q.add_argument("--source-url", required=True, help="SQLAlchemy async URL of the SDK database")
    q.add_argument("--source-sessions-table", default="agent_sessions")
    q.add_argument("--source-messages-table", default="agent_messages")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=lambda args: run_store_op(args, _import_sdk))


def report_text(report: Any) -> str:
    """What an import did, in words."""
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


async def run_import(
    args: argparse.Namespace, label: str, run: Callable[[Progress], Awaitable[ImportReport]]
) -> int:
    """Run an import with a progress bar; exit 1 when sessions conflicted."""
    bar = Progress(0, label)
    report = await run(bar)
    bar.close()
    emit(args, report, report_text(report))
    return 0 if report["sessions_conflicting"] == 0 else 1


async def _import_sqlite(store: TieredStore, args: argparse.Namespace) -> int:
    return await run_import(
        args,
        "import-sqlite",
        lambda bar: store.import_sdk_sqlite(
            args.path,
            sessions_table=args.source_sessions_table,
            messages_table=args.source_messages_table,
            progress=bar,
        ),
    )


async def _import_sdk(store: TieredStore, args: argparse.Namespace) -> int:
    return await run_import(
        args,
        "import-sdk",
        lambda bar: store.transfer.import_sdk_sql(
            args.source_url,
            sessions_table=args.source_sessions_table,
            messages_table=args.source_messages_table,
            progress=bar,
        ),
    )
