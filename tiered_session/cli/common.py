"""What the commands share: exit codes, the storage target, JSON output, durations.

Example:
    >>> t = Target(redis_url="redis://localhost:6379/0", sql_url=None)
    >>> t.missing()
    ['--sql-url (or TIERED_SESSION_SQL_URL)']
    >>> format_duration(parse_duration("36h"))
    '1d12h'
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any

import click

from .._config import default, redact_url
from .._errors import ConfigurationError
from ..store import TieredStore

__all__ = [
    "ENV_KEY_PREFIX",
    "ENV_MESSAGES_TABLE",
    "ENV_REDIS_URL",
    "ENV_SESSIONS_TABLE",
    "ENV_SHARDS",
    "ENV_SQL_URL",
    "ExitCode",
    "Target",
    "echo_json",
    "format_duration",
    "parse_duration",
    "run_on_store",
    "store_from_args",
    "when",
]

#: environment variables of the connection options
ENV_REDIS_URL = "TIERED_SESSION_REDIS_URL"
ENV_SQL_URL = "TIERED_SESSION_SQL_URL"
ENV_KEY_PREFIX = "TIERED_SESSION_KEY_PREFIX"
ENV_SESSIONS_TABLE = "TIERED_SESSION_SESSIONS_TABLE"
ENV_MESSAGES_TABLE = "TIERED_SESSION_MESSAGES_TABLE"
ENV_SHARDS = "TIERED_SESSION_SHARDS"


class ExitCode(IntEnum):
    """The process exit codes of every command."""

    #: the command did what was asked
    OK = 0
    #: what was asked for does not exist, or a check failed (conflicts, mismatches)
    NOT_FOUND = 1
    #: the command could not run: usage, configuration, unreachable server, bad input file
    USAGE = 2
    #: interrupted (Ctrl-C)
    INTERRUPTED = 130


@dataclass(frozen=True)
class Target:
    """Where a command's data lives: the two servers and the storage names."""

    redis_url: str | None
    sql_url: str | None
    key_prefix: str = default("key_prefix")
    sessions_table: str = default("sessions_table")
    messages_table: str = default("messages_table")
    #: None: the count Redis records for the key prefix (see StoreConfig.outbox_shards)
    shards: int | None = default("outbox_shards")

    def missing(self) -> list[str]:
        """The options (with their environment variables) still to give."""
        out = []
        if not self.redis_url:
            out.append(f"--redis-url (or {ENV_REDIS_URL})")
        if not self.sql_url:
            out.append(f"--sql-url (or {ENV_SQL_URL})")
        return out

    def require(self, command: str, *, redis: bool = True) -> None:
        """Raise ConfigurationError, naming what to set, unless the servers are given."""
        missing = [m for m in self.missing() if redis or not m.startswith("--redis-url")]
        if not missing:
            return
        if len(missing) == 2:
            what = "a Redis and a SQL database"
        else:
            what = "a Redis" if missing[0].startswith("--redis-url") else "a SQL database"
        verb = "works on existing data and needs" if redis else "needs"
        raise ConfigurationError(f"{command} {verb} {what}: set {' and '.join(missing)}")

    def require_both_or_none(self) -> None:
        """Raise ConfigurationError when one server is given without the other."""
        if len(self.missing()) == 1:
            raise ConfigurationError(
                f"give both servers ({' and '.join(self.missing())} is missing), or neither "
                "for the embedded backend (in-process Redis, in-memory SQLite)"
            )

    def describe(self) -> str:
        """The servers, fit for output (passwords hidden)."""
        if not self.redis_url and not self.sql_url:
            return "embedded (in-process Redis, in-memory SQLite)"
        return f"redis={redact_url(self.redis_url)}, sql={redact_url(self.sql_url)}"

    def store(self, **options: Any) -> TieredStore:
        """Build a store that owns its clients."""
        return TieredStore.from_url(
            self.redis_url or None,
            self.sql_url or None,
            key_prefix=self.key_prefix,
            sessions_table=self.sessions_table,
            messages_table=self.messages_table,
            outbox_shards=self.shards,
            **options,
        )


def store_from_args(args: Any, **options: Any) -> TieredStore:
    """Build a store from an object with the connection options as attributes.

    ``args`` has ``redis_url``, ``sql_url``, ``key_prefix``, ``sessions_table``,
    ``messages_table`` and ``shards`` (an ``argparse.Namespace`` of scripts that
    take the same options as the command line).
    """
    target = Target(
        redis_url=args.redis_url,
        sql_url=args.sql_url,
        key_prefix=args.key_prefix,
        sessions_table=args.sessions_table,
        messages_table=args.messages_table,
        shards=args.shards,
    )
    return target.store(**options)


def run_on_store(
    target: Target, func: Callable[[TieredStore], Awaitable[int]], **options: Any
) -> int:
    """Run ``func`` on a started store of ``target`` (tables must exist); return its code."""
    store = target.store(create_tables=False, **options)

    async def run() -> int:
        async with store:
            return await func(store)

    return asyncio.run(run())


def echo_json(data: Any, *, lines: bool = False) -> None:
    """Print ``data`` as indented JSON (or, with ``lines``, each element on one line)."""
    if lines:
        for row in data:
            click.echo(json.dumps(row, default=_json_default, ensure_ascii=False))
    else:
        click.echo(json.dumps(data, indent=2, default=_json_default, ensure_ascii=False))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def when(value: datetime | None) -> str:
    """A timestamp as the tables print it (``-`` when unknown)."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """Parse ``90s``, ``15m``, ``12h``, ``30d``, ``2w`` or ``1d12h`` into a timedelta."""
    match = re.fullmatch(r"\s*((?:\d+(?:\.\d+)?\s*[smhdw]\s*)+)", text)
    if match is None:
        raise ValueError(
            f"invalid duration {text!r}: use a number and a unit s, m, h, d or w (e.g. 30d)"
        )
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhdw])", match.group(1))
    return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))


def format_duration(value: timedelta) -> str:
    """A duration as the options take it: ``30d``, ``1d12h``, ``90s`` -> ``1m30s``."""
    seconds = value.total_seconds()
    if seconds < 1:
        return f"{seconds:g}s"
    out = []
    rest = round(seconds)
    for unit in ("d", "h", "m", "s"):
        n, rest = divmod(rest, _UNITS[unit])
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)
