"""The root command, and :func:`main`: run a command line, turn every failure into one line.

Exit codes: 0 done; 1 what was asked for does not exist or a check failed;
2 the command could not run (usage, configuration, unreachable server, bad
input file); 130 interrupted. Errors are one line on stderr,
``tiered-session: error: ...``; ``-v`` adds the traceback of unexpected ones.

Example:
    >>> main(["--version"])  # doctest: +ELLIPSIS
    tiered-session ...
    0
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

import click

from .. import __version__
from .._errors import TieredSessionError
from . import bench, dead_letters, demo, flush, imports, schema, sessions, stats
from .common import ExitCode
from .logs import restore_logging
from .options import verbose_option

__all__ = ["cli", "main"]

log = logging.getLogger("tiered_session.cli")

PROG = "tiered-session"

#: a group run without its subcommand (click >= 8.2 raises this; 8.1 prints the help, exit 0)
_NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(
    context_settings=CONTEXT,
    help="Two-tier (Redis + SQL) conversation memory for the OpenAI Agents SDK.\n\n"
    "Connection options go after the command and can also be set in the environment "
    "(TIERED_SESSION_REDIS_URL, TIERED_SESSION_SQL_URL, ...). Exit codes: 0 done, 1 not "
    "found or a check failed, 2 usage or configuration error.",
    epilog="Run 'tiered-session COMMAND --help' for a command's options.",
)
@click.version_option(
    __version__,
    "-V",
    "--version",
    prog_name=PROG,
    message=f"%(prog)s %(version)s (Python {sys.version.split()[0]})",
)
@verbose_option
def cli() -> None:
    """The command group."""


for module in (demo, bench, flush, dead_letters, stats, sessions, imports, schema):
    module.register(cli)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _error(text: str) -> None:
    click.echo(f"{PROG}: error: {_one_line(text)}", err=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    level = logging.getLogger().level
    try:
        rv: Any = cli.main(args=args, prog_name=PROG, standalone_mode=False)
    except _NO_ARGS_IS_HELP as e:
        click.echo(e.format_message(), err=True)
        return ExitCode.USAGE
    except click.UsageError as e:
        where = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        _error(e.format_message() + where)
        return ExitCode.USAGE
    except click.ClickException as e:
        _error(e.format_message())
        return ExitCode.USAGE
    except (click.Abort, KeyboardInterrupt):
        click.echo(f"{PROG}: interrupted", err=True)
        return ExitCode.INTERRUPTED
    except (TieredSessionError, OSError) as e:
        log.debug("traceback of the error below", exc_info=True)
        _error(str(e))
        return ExitCode.USAGE
    except Exception as e:
        first = (str(e).splitlines() or [""])[0]
        shown = log.isEnabledFor(logging.INFO)
        log.info("traceback of the error below", exc_info=True)
        hint = "" if shown else " (run with -v for the traceback)"
        _error(f"{type(e).__name__}: {first}{hint}")
        return ExitCode.USAGE
    finally:
        restore_logging(level)
    return int(rv) if isinstance(rv, int) else ExitCode.OK
