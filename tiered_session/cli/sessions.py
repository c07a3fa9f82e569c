r"""``tiered-session sessions ...``: list, show, stats, delete, cleanup, export, import.

Example:
    $ tiered-session sessions list --redis-url redis://localhost:6379/0 \\
          --sql-url postgresql+asyncpg://postgres@localhost/agents
    $ tiered-session sessions cleanup --older-than 30d --redis-url … --sql-url …
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime, timedelta
from pathlib import Path

from .._progress import Progress
from ..store import TieredStore
from .common import StoreOp, SubParsers, add_server_args, emit, run_store_op, when
from .imports import run_import

__all__ = ["parse_duration", "register"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """Parse ``90s``, ``15m``, ``12h``, ``30d`` or ``2w`` into a timedelta."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use a number and a unit s, m, h, d or w (e.g. 30d)"
        )
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def register(sub: SubParsers) -> None:
    """Add ``sessions`` and its operations."""
    p = sub.add_parser("sessions", help="list, inspect, delete, clean up, back up sessions")
    ops = p.add_subparsers(dest="op", required=True, metavar="OP")

    def op(name: str, help_text: str, func: StoreOp) -> argparse.ArgumentParser:
        q = ops.add_parser(name, help=help_text)
        add_server_args(q, required=True)
        q.add_argument("--json", action="store_true", help="print JSON")
        q.set_defaults(func=lambda args: run_store_op(args, func))
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


async def _list(store: TieredStore, args: argparse.Namespace) -> int:
    page = await store.list_sessions(limit=args.limit, offset=args.offset)
    lines = [f"{'session_id':<40} {'updated (UTC)':<19}  {'created (UTC)':<19}"]
    lines += [
        f"{i['session_id']:<40} {when(i['updated_at']):<19}  {when(i['created_at']):<19}"
        for i in page
    ]
    emit(args, page, "\n".join(lines))
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
        f"  {k:<20} {when(v) if isinstance(v, datetime) or v is None else v}" for k, v in st.items()
    )
    emit(args, st, text)
    return 0 if st["exists"] else 1


async def _delete(store: TieredStore, args: argparse.Namespace) -> int:
    existed = await store.delete_session(args.session_id)
    verb = "deleted" if existed else "not found (nothing to delete):"
    emit(args, {"session_id": args.session_id, "deleted": existed}, f"{verb} {args.session_id}")
    return 0 if existed else 1


async def _cleanup(store: TieredStore, args: argparse.Namespace) -> int:
    bar = Progress(0, "cleanup")
    n = await store.cleanup(args.older_than, dry_run=args.dry_run, progress=bar)
    bar.close()
    verb = "would delete" if args.dry_run else "deleted"
    emit(
        args,
        {"deleted": 0 if args.dry_run else n, "idle": n, "dry_run": args.dry_run},
        f"{verb} {n} session(s) idle for more than {args.older_than}",
    )
    return 0


async def _export(store: TieredStore, args: argparse.Namespace) -> int:
    bar = Progress(0, "export")
    n = await store.export_jsonl(args.path, args.sessions, progress=bar)
    bar.close()
    emit(args, {"sessions": n, "path": str(args.path)}, f"exported {n} session(s) to {args.path}")
    return 0


async def _import(store: TieredStore, args: argparse.Namespace) -> int:
    return await run_import(args, "import", lambda bar: store.import_jsonl(args.path, progress=bar))
