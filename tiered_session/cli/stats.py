"""``tiered-session stats``: the store's counters, backlog, flush lag and dead letters.

Counters count what this command's own store did (next to nothing); the
backlog, flush lag, dead letters and live flushers are read from Redis and
cover every process on the key prefix.

Example:
    $ tiered-session stats --json --redis-url redis://localhost:6379/0 --sql-url ...
"""

from __future__ import annotations

import click

from ..store import TieredStore
from .common import ExitCode, Target, echo_json, run_on_store
from .options import json_option, storage_options
from .output import print_pairs

__all__ = ["register"]


def register(group: click.Group) -> None:
    """Add the ``stats`` command."""
    group.add_command(stats)


@click.command(short_help="Backlog, flush lag, dead letters, live flushers.")
@json_option
@storage_options("data")
def stats(target: Target, as_json: bool) -> int:
    """Print the backlog, flush lag, dead letters and live flushers of a store."""

    async def run(store: TieredStore) -> int:
        data = await store.stats()
        if as_json:
            echo_json(data)
        else:
            print_pairs([(key, value) for key, value in data.items()])
        return ExitCode.OK

    return run_on_store(target, run, run_flusher=False)
