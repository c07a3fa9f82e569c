"""Options shared by CLI commands: server URLs and store construction.

Example:
    >>> import argparse
    >>> p = argparse.ArgumentParser(); add_server_args(p)
    >>> p.parse_args(["--redis-url", "redis://localhost:6379/0"]).redis_url
    'redis://localhost:6379/0'
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ._store import TieredStore

__all__ = ["add_server_args", "redact", "store_from_args"]


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
    parser.add_argument("--key-prefix", default="tiered_session", help="Redis key prefix")
    parser.add_argument("--sessions-table", default="agent_sessions")
    parser.add_argument("--messages-table", default="agent_messages")
    parser.add_argument("--shards", type=int, default=16, help="outbox shards (must match)")


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


def redact(url: str | None) -> str:
    """Hide the password of a URL for display."""
    if not url:
        return "embedded"
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"
