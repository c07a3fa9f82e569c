r"""The ``tiered-session`` command line (click for the options, rich for tables and progress).

One module per command group; :mod:`.app` holds the root command and
:func:`main`, which returns the exit code (0 done, 1 not found or a check
failed, 2 usage or configuration error, 130 interrupted).

Example:
    $ tiered-session demo                       # embedded default, no servers
    $ export TIERED_SESSION_REDIS_URL=redis://localhost:6379/0
    $ export TIERED_SESSION_SQL_URL=postgresql+asyncpg://postgres@localhost/agents
    $ tiered-session sessions list --limit 20 --json
"""

from __future__ import annotations

from .app import cli, main

__all__ = ["cli", "main"]
