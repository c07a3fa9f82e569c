"""``tiered-session import-sqlite`` and ``import-sdk``: bring Agents SDK sessions in.

Imports are idempotent: a session already holding the same items is left
alone; one holding other items is a conflict, skipped, and makes the exit
code 1.

Example:
    $ tiered-session import-sqlite conversations.db --redis-url … --sql-url …
    $ tiered-session import-sdk --source-url sqlite+aiosqlite:///old.db --redis-url … --sql-url …
"""

from __future__ import annotations

from pathlib import Path

import click

from .._config import redact_url
from .._errors import ConfigurationError
from ..ops.transfer import ImportReport
from ..store import TieredStore
from .common import ExitCode, Target, echo_json, run_on_store
from .options import json_option, storage_options
from .output import Bar

__all__ = ["check_sqlite_file", "register", "report_text", "run_import"]

#: the first bytes of every SQLite 3 database file
_SQLITE_MAGIC = b"SQLite format 3\x00"


def register(group: click.Group) -> None:
    """Add ``import-sqlite`` and ``import-sdk``."""
    group.add_command(import_sqlite)
    group.add_command(import_sdk)


def report_text(report: ImportReport) -> str:
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


def run_import(report: ImportReport, as_json: bool) -> int:
    """Print an import's report; exit code 1 when sessions conflicted."""
    if as_json:
        echo_json(report)
    else:
        click.echo(report_text(report))
    return ExitCode.OK if report["sessions_conflicting"] == 0 else ExitCode.NOT_FOUND


def check_sqlite_file(path: Path) -> None:
    """Raise ConfigurationError unless ``path`` is a SQLite database file."""
    with path.open("rb") as fh:
        head = fh.read(len(_SQLITE_MAGIC))
    if head != _SQLITE_MAGIC:
        what = "an empty file" if not head else "not a SQLite database"
        raise ConfigurationError(
            f"{str(path)!r} is {what}: import-sqlite reads the file of an Agents SDK "
            "SQLiteSession (for other SDK databases use import-sdk --source-url)"
        )


_SOURCE_TABLES = [
    click.option(
        "--source-sessions-table",
        default="agent_sessions",
        show_default=True,
        help="The source's table of sessions.",
    ),
    click.option(
        "--source-messages-table",
        default="agent_messages",
        show_default=True,
        help="The source's table of messages.",
    ),
]


@click.command("import-sqlite", short_help="Import an Agents SDK SQLiteSession file.")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_SOURCE_TABLES[0]
@_SOURCE_TABLES[1]
@json_option
@storage_options("data")
def import_sqlite(
    target: Target,
    path: Path,
    source_sessions_table: str,
    source_messages_table: str,
    as_json: bool,
) -> int:
    """Import every session of an Agents SDK SQLiteSession database file."""
    check_sqlite_file(path)

    async def run(store: TieredStore) -> int:
        with Bar("import-sqlite", unit="sessions") as bar:
            report = await store.import_sdk_sqlite(
                path,
                sessions_table=source_sessions_table,
                messages_table=source_messages_table,
                progress=bar,
            )
        return run_import(report, as_json)

    return run_on_store(target, run)


@click.command("import-sdk", short_help="Import another SQLAlchemySession database.")
@click.option(
    "--source-url",
    required=True,
    metavar="URL",
    help="SQLAlchemy async URL of the database SQLAlchemySession wrote.",
)
@_SOURCE_TABLES[0]
@_SOURCE_TABLES[1]
@json_option
@storage_options("data")
def import_sdk(
    target: Target,
    source_url: str,
    source_sessions_table: str,
    source_messages_table: str,
    as_json: bool,
) -> int:
    """Import the sessions of another database written by the SDK's SQLAlchemySession."""
    if "://" not in source_url:
        raise ConfigurationError(
            f"--source-url {redact_url(source_url)} is not a URL: use e.g. "
            "sqlite+aiosqlite:///old.db or postgresql+asyncpg://user@host/db"
        )

    async def run(store: TieredStore) -> int:
        with Bar("import-sdk", unit="sessions") as bar:
            report = await store.transfer.import_sdk_sql(
                source_url,
                sessions_table=source_sessions_table,
                messages_table=source_messages_table,
                progress=bar,
            )
        return run_import(report, as_json)

    return run_on_store(target, run)
