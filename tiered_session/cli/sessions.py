r"""``tiered-session sessions ...``: list, show, stats, delete, cleanup, export, import.

Example:
    $ export TIERED_SESSION_REDIS_URL=redis://localhost:6379/0
    $ export TIERED_SESSION_SQL_URL=postgresql+asyncpg://postgres@localhost/agents
    $ tiered-session sessions list --limit 20
    $ tiered-session sessions cleanup --older-than 30d --dry-run
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import click

from ..store import TieredStore
from .branches import add_commands, branch_exists
from .common import ExitCode, Target, echo_json, format_duration, run_on_store, when
from .imports import run_import
from .options import duration, json_option, storage_options, verbose_option
from .output import Bar, print_pairs, print_table

__all__ = ["register"]

#: ids a "not found" message lists at most
_LISTED = 10


def register(group: click.Group) -> None:
    """Add ``sessions`` and its operations."""
    add_commands(sessions)
    group.add_command(sessions)


@click.group()
@verbose_option
def sessions() -> None:
    """List, inspect, delete, clean up and back up sessions."""


def _not_found(ids: list[str]) -> None:
    shown = ", ".join(repr(s) for s in ids[:_LISTED])
    more = f" and {len(ids) - _LISTED} more" if len(ids) > _LISTED else ""
    noun = "session" if len(ids) == 1 else "sessions"
    click.echo(f"tiered-session: not found: {noun} {shown}{more} (no items)", err=True)


@sessions.command("list")
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Sessions per page."
)
@click.option(
    "--offset",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Sessions to skip (--offset 50 is the second page of 50).",
)
@json_option
@storage_options("data")
def list_command(target: Target, limit: int, offset: int, as_json: bool) -> int:
    """List sessions that hold items, newest activity first."""

    async def run(store: TieredStore) -> int:
        page = await store.list_sessions(limit=limit, offset=offset)
        if as_json:
            echo_json(page)
        elif page:
            print_table(
                ["session_id", "updated (UTC)", "created (UTC)"],
                [[i["session_id"], when(i["updated_at"]), when(i["created_at"])] for i in page],
            )
        else:
            click.echo("no sessions" + (f" after the first {offset}" if offset else ""))
        return ExitCode.OK

    return run_on_store(target, run)


@sessions.command("show")
@click.argument("session_id")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the newest N items.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON array (default: a line each)."
)
@click.option("--branch", default=None, help="A branch of an advanced session (default: main).")
@storage_options("data")
def show(
    target: Target, session_id: str, limit: int | None, as_json: bool, branch: str | None
) -> int:
    """Print a session's items, oldest first, one JSON object a line. Exit 1 if not found."""

    async def run(store: TieredStore) -> int:
        if branch is not None:
            if not await branch_exists(store, session_id, branch):
                click.echo(
                    f"tiered-session: not found: branch {branch!r} of session {session_id!r}",
                    err=True,
                )
                return ExitCode.NOT_FOUND
            adv = store.advanced_session(session_id)
            items = await adv.get_items(limit=limit, branch_id=branch)
        elif not await store.session_exists(session_id):
            _not_found([session_id])
            return ExitCode.NOT_FOUND
        else:
            items = await store.session(session_id).get_items(limit=limit)
        if as_json:
            echo_json(items)
        else:
            for item in items:
                click.echo(json.dumps(item, ensure_ascii=False))
        return ExitCode.OK

    return run_on_store(target, run)


@sessions.command("stats")
@click.argument("session_id")
@json_option
@storage_options("data")
def stats(target: Target, session_id: str, as_json: bool) -> int:
    """Item counts, unflushed items, bytes and times of a session. Exit 1 if not found."""

    async def run(store: TieredStore) -> int:
        st = await store.session_stats(session_id)
        if as_json:
            echo_json(st)
        else:
            print_pairs(
                [(k, when(v) if isinstance(v, datetime) or v is None else v) for k, v in st.items()]
            )
        if not st["exists"]:
            _not_found([session_id])
            return ExitCode.NOT_FOUND
        return ExitCode.OK

    return run_on_store(target, run)


@sessions.command("delete")
@click.argument("session_id")
@json_option
@storage_options("data")
def delete(target: Target, session_id: str, as_json: bool) -> int:
    """Delete a session from Redis and SQL. Exit 1 if it held no items."""

    async def run(store: TieredStore) -> int:
        existed = await store.delete_session(session_id)
        if as_json:
            echo_json({"session_id": session_id, "deleted": existed})
        else:
            click.echo(
                f"deleted {session_id}"
                if existed
                else f"not found (nothing to delete): {session_id}"
            )
        return ExitCode.OK if existed else ExitCode.NOT_FOUND

    return run_on_store(target, run)


@sessions.command("cleanup")
@click.option(
    "--older-than",
    callback=duration,
    required=True,
    metavar="DURATION",
    help="Idle time, e.g. 30d, 12h, 90m, 1d12h (units s, m, h, d, w).",
)
@click.option("--dry-run", is_flag=True, help="Only count them.")
@json_option
@storage_options("data")
def cleanup(target: Target, older_than: timedelta, dry_run: bool, as_json: bool) -> int:
    """Delete the sessions idle for longer than a given time."""

    async def run(store: TieredStore) -> int:
        with Bar("cleanup", unit="sessions") as bar:
            n = await store.cleanup(older_than, dry_run=dry_run, progress=bar)
        age = format_duration(older_than)
        if as_json:
            echo_json(
                {
                    "deleted": 0 if dry_run else n,
                    "idle": n,
                    "dry_run": dry_run,
                    "older_than_seconds": older_than.total_seconds(),
                }
            )
        else:
            verb = "would delete" if dry_run else "deleted"
            click.echo(f"{verb} {n} session(s) idle for more than {age}")
        return ExitCode.OK

    return run_on_store(target, run)


@sessions.command("export")
@click.argument("path", type=click.Path(dir_okay=False, writable=True, path_type=Path))
@click.option(
    "--session",
    "session_ids",
    multiple=True,
    metavar="ID",
    help="Only this session (repeat for more). Exit 1, writing nothing, if one is not found.",
)
@json_option
@storage_options("data")
def export(target: Target, path: Path, session_ids: tuple[str, ...], as_json: bool) -> int:
    """Write sessions to a JSON Lines backup (every session, or those of --session)."""

    async def run(store: TieredStore) -> int:
        ids = list(dict.fromkeys(session_ids)) or None
        if ids is not None:
            missing = [sid for sid in ids if not await store.session_exists(sid)]
            if missing:
                _not_found(missing)
                return ExitCode.NOT_FOUND
        with Bar("export", unit="sessions") as bar:
            n = await store.export_jsonl(path, ids, progress=bar)
        if as_json:
            echo_json({"sessions": n, "path": str(path)})
        else:
            click.echo(f"exported {n} session(s) to {path}")
        return ExitCode.OK

    return run_on_store(target, run)


@sessions.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@storage_options("data")
def import_command(target: Target, path: Path, as_json: bool) -> int:
    """Restore sessions from a JSON Lines backup (idempotent). Exit 1 on conflicts."""

    async def run(store: TieredStore) -> int:
        with Bar("import", unit="bytes", in_bytes=True) as bar:
            report = await store.import_jsonl(path, progress=bar)
        return run_import(report, as_json)

    return run_on_store(target, run)
