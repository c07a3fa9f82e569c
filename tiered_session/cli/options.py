"""Options shared by the commands: servers, storage names, ``--json``, ``-v``.

Every connection option can also come from the environment
(``TIERED_SESSION_REDIS_URL``, ``TIERED_SESSION_SQL_URL``,
``TIERED_SESSION_KEY_PREFIX``, ``TIERED_SESSION_SESSIONS_TABLE``,
``TIERED_SESSION_MESSAGES_TABLE``, ``TIERED_SESSION_SHARDS``); an option on
the command line wins over its variable, an empty variable counts as unset.

Example:
    >>> import click
    >>> @click.command()
    ... @storage_options("data")
    ... def cmd(target: Target) -> None: ...
    >>> [p.name for p in cmd.params][:2]
    ['redis_url', 'sql_url']
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal, TypeVar

import click

from .._config import default
from .common import (
    ENV_KEY_PREFIX,
    ENV_MESSAGES_TABLE,
    ENV_REDIS_URL,
    ENV_SESSIONS_TABLE,
    ENV_SHARDS,
    ENV_SQL_URL,
    Target,
    parse_duration,
)
from .logs import setup_logging

__all__ = [
    "command_name",
    "duration",
    "json_option",
    "storage_options",
    "verbose_option",
    "verbosity",
]

F = TypeVar("F", bound=Callable[..., Any])

#: where the root context keeps the ``-v`` count and the log format
_VERBOSITY = "tiered_session.verbosity"
_LOG_FORMAT = "tiered_session.log_format"

Kind = Literal["data", "demo", "sql"]


def verbosity(ctx: click.Context) -> int:
    """How many ``-v`` the whole command line holds."""
    count: int = ctx.find_root().meta.get(_VERBOSITY, 0)
    return count


def set_log_format(ctx: click.Context, fmt: str) -> None:
    """Log in ``fmt`` (``text`` or ``json``) from now on."""
    root = ctx.find_root()
    root.meta[_LOG_FORMAT] = fmt
    setup_logging(verbosity(ctx), fmt)


def _count_verbose(ctx: click.Context, param: click.Parameter, value: int) -> None:
    root = ctx.find_root()
    root.meta[_VERBOSITY] = root.meta.get(_VERBOSITY, 0) + value
    setup_logging(root.meta[_VERBOSITY], root.meta.get(_LOG_FORMAT, "text"))


#: ``-v``: accepted before and after every command name, counted over the whole line
verbose_option = click.option(
    "-v",
    "--verbose",
    count=True,
    expose_value=False,
    callback=_count_verbose,
    help="Log more: -v for INFO, -vv for DEBUG (tracebacks of errors too).",
)

#: ``--json``: machine-readable output on stdout
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON instead of text (stdout)."
)


def duration(ctx: click.Context, param: click.Parameter, value: str | None) -> timedelta | None:
    """Parse a ``--older-than``-style option: ``30d``, ``12h``, ``90s``, ``1d12h``."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def command_name(ctx: click.Context | None = None) -> str:
    """The command as typed, without the program name (``sessions list``)."""
    ctx = ctx or click.get_current_context()
    return ctx.command_path.partition(" ")[2] or ctx.command_path


def _shards_help() -> str:
    same = "Outbox streams, the same number in every process on this Redis and key prefix"
    if default("outbox_shards") is None:
        return same + " (default: the number recorded in Redis for the prefix)."
    return same + "."


def storage_options(kind: Kind) -> Callable[[F], F]:
    """Add the server and naming options; the command receives them as ``target``.

    ``data``: both servers are required (the command acts on existing data).
    ``demo``: both optional (neither: the embedded backend). ``sql``: the SQL
    URL and table names only.
    """
    if kind == "data":
        redis_help = "Redis URL (required)."
        sql_help = "SQLAlchemy async URL of the SQL database (required)."
    else:
        redis_help = "Redis URL (default: an in-process Redis when --sql-url is unset too)."
        sql_help = "SQLAlchemy async URL (default: in-memory SQLite when --redis-url is unset too)."
    if kind == "sql":
        sql_help = "SQLAlchemy async URL, e.g. postgresql+asyncpg://user@host/db (required)."
    opts: list[Callable[[F], F]] = []
    if kind != "sql":
        opts.append(
            click.option(
                "--redis-url",
                metavar="URL",
                envvar=ENV_REDIS_URL,
                show_envvar=True,
                help=redis_help,
            )
        )
    opts.append(
        click.option(
            "--sql-url", metavar="URL", envvar=ENV_SQL_URL, show_envvar=True, help=sql_help
        )
    )
    if kind != "sql":
        opts.append(
            click.option(
                "--key-prefix",
                metavar="PREFIX",
                default=default("key_prefix"),
                envvar=ENV_KEY_PREFIX,
                show_envvar=True,
                show_default=True,
                help="Prefix of every Redis key.",
            )
        )
    opts += [
        click.option(
            "--sessions-table",
            metavar="NAME",
            default=default("sessions_table"),
            envvar=ENV_SESSIONS_TABLE,
            show_envvar=True,
            show_default=True,
            help="SQL table of sessions.",
        ),
        click.option(
            "--messages-table",
            metavar="NAME",
            default=default("messages_table"),
            envvar=ENV_MESSAGES_TABLE,
            show_envvar=True,
            show_default=True,
            help="SQL table of messages (items).",
        ),
    ]
    if kind != "sql":
        opts.append(
            click.option(
                "--shards",
                metavar="N",
                type=click.IntRange(1, 4096),
                default=default("outbox_shards"),
                envvar=ENV_SHARDS,
                show_envvar=True,
                show_default=True,
                help=_shards_help(),
            )
        )
    opts.append(verbose_option)

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            target = Target(
                redis_url=kwargs.pop("redis_url", None) or None,
                sql_url=kwargs.pop("sql_url", None) or None,
                key_prefix=kwargs.pop("key_prefix", default("key_prefix")),
                sessions_table=kwargs.pop("sessions_table"),
                messages_table=kwargs.pop("messages_table"),
                shards=kwargs.pop("shards", default("outbox_shards")),
            )
            if kind == "data":
                target.require(command_name())
            elif kind == "sql":
                target.require(command_name(), redis=False)
            else:
                target.require_both_or_none()
            return func(*args, target=target, **kwargs)

        out: Any = wrapper
        for opt in reversed(opts):
            out = opt(out)
        decorated: F = out
        return decorated

    return decorate
