"""Options shared by CLI commands: server URLs and store construction.

Example:
    >>> import argparse
    >>> p = argparse.ArgumentParser(); add_server_args(p)
    >>> p.parse_args(["--redis-url", "redis://localhost:6379/0"]).redis_url
    'redis://localhost:6379/0'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

from .._config import default
from ..store import TieredStore

__all__ = [
    "StoreOp",
    "SubParsers",
    "add_server_args",
    "emit",
    "run_store_op",
    "store_from_args",
    "when",
]

#: a command that runs on a started store and returns the exit code
StoreOp = Callable[[TieredStore, argparse.Namespace], Awaitable[int]]


class SubParsers(Protocol):
    """What ``ArgumentParser.add_subparsers()`` returns, as far as commands use it."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """Add a subcommand's parser."""
        ...


def add_server_args(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """Add --redis-url/--sql-url and the storage naming options."""
    env_redis = os.environ.get("TIERED_SESSION_REDIS_URL")
    env_sql = os.environ.get("TIERED_SESSION_SQL_URL")
    parser.add_argument(
        "--redis-url",
        default=env_redis,
        required=required and env_redis is None,
        help="Redis URL (env TIERED_SESSION_REDIS_URL); default: embedded fakeredis",
    )
    parser.add_argument(
        "--sql-url",
        default=env_sql,
        required=required and env_sql is None,
        help="SQLAlchemy async URL (env TIERED_SESSION_SQL_URL); default: in-memory SQLite",
    )
    parser.add_argument("--key-prefix", default=default("key_prefix"), help="Redis key prefix")
    parser.add_argument("--sessions-table", default=default("sessions_table"))
    parser.add_argument("--messages-table", default=default("messages_table"))
    parser.add_argument(
        "--shards", type=int, default=default("outbox_shards"), help="outbox shards (must match)"
    )


def store_from_args(args: argparse.Namespace, **options: Any) -> TieredStore:
    """Build a store that owns its clients from parsed CLI arguments."""
    return TieredStore.from_url(
        args.redis_url,
        args.sql_url,
        key_prefix=args.key_prefix,
        sessions_table=args.sessions_table,
        messages_table=args.messages_table,
        outbox_shards=args.shards,
        **options,
    )


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """Print ``data`` as JSON with ``--json``, else ``text``."""
    print(json.dumps(data, indent=2, default=_json_default) if args.json else text)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def when(value: datetime | None) -> str:
    """A timestamp as the tables print it (``-`` when unknown)."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def run_store_op(args: argparse.Namespace, func: StoreOp) -> int:
    """Run ``func`` on a store built from the arguments; return its exit code."""
    store = store_from_args(args, create_tables=False)

    async def run() -> int:
        async with store:
            return await func(store, args)

    return asyncio.run(run())
