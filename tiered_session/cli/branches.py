r"""``tiered-session sessions branches|usage ID``: an advanced session's branches and usage.

Example:
    $ tiered-session sessions branches conv-1
    $ tiered-session sessions usage conv-1 --by-turn --branch retry --json
    $ tiered-session sessions show conv-1 --branch retry
"""

from __future__ import annotations

from typing import Any

import click

from ..store import TieredStore
from .common import ExitCode, Target, echo_json, run_on_store
from .options import json_option, storage_options
from .output import print_pairs, print_table

__all__ = ["add_commands", "branch_exists"]


_COUNTS = ["requests", "input_tokens", "output_tokens", "total_tokens"]


def _missing(session_id: str, what: str = "session") -> int:
    click.echo(f"tiered-session: not found: {what} {session_id!r}", err=True)
    return ExitCode.NOT_FOUND


async def branch_exists(store: TieredStore, session_id: str, branch: str) -> bool:
    """Whether an (advanced) session has the branch (``main``: when it holds items)."""
    listed = await store.advanced_session(session_id).list_branches()
    return any(b["branch_id"] == branch for b in listed)


@click.command("branches")
@click.argument("session_id")
@json_option
@storage_options("data")
def branches(target: Target, session_id: str, as_json: bool) -> int:
    """List a session's branches, oldest first (the current one marked). Exit 1 if none."""

    async def run(store: TieredStore) -> int:
        listed = await store.advanced_session(session_id).list_branches()
        if not listed:
            return _missing(session_id)
        if as_json:
            echo_json(listed)
            return ExitCode.OK
        rows = [
            [
                ("* " if b["is_current"] else "  ") + b["branch_id"],
                b["message_count"],
                b["user_turns"],
                b["created_at"],
            ]
            for b in listed
        ]
        print_table(["branch", "items", "user turns", "created (UTC)"], rows)
        return ExitCode.OK

    return run_on_store(target, run)


@click.command("usage")
@click.argument("session_id")
@click.option("--by-turn", is_flag=True, help="One row per user turn (of --branch).")
@click.option(
    "--branch",
    default=None,
    help="Only this branch (default: every branch; with --by-turn: the current one).",
)
@json_option
@storage_options("data")
def usage(target: Target, session_id: str, by_turn: bool, branch: str | None, as_json: bool) -> int:
    """Token usage of a session (summed, or per turn). Exit 1 if it has none."""

    async def run(store: TieredStore) -> int:
        s = store.advanced_session(session_id)
        found: Any
        if by_turn:
            found = await s.get_turn_usage(branch_id=branch)
        else:
            found = await s.get_session_usage(branch)
        if not found:
            return _missing(session_id, "usage of session")
        if as_json:
            echo_json(found)
        elif by_turn:
            head = ["turn", "requests", "input", "output", "total"]
            names = [
                "user_turn_number",
                "requests",
                "input_tokens",
                "output_tokens",
                "total_tokens",
            ]
            print_table(head, [[t[n] for n in names] for t in found], right=5)
        else:
            print_pairs(list(found.items()))
        return ExitCode.OK

    return run_on_store(target, run)


def add_commands(group: click.Group) -> None:
    """Add ``branches`` and ``usage`` to the ``sessions`` group."""
    group.add_command(branches)
    group.add_command(usage)
