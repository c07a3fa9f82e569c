"""``tiered-session dead-letters list|replay``: outbox entries SQL kept refusing.

Example:
    $ tiered-session dead-letters list --redis-url redis://localhost:6379/0 --sql-url ...
    $ tiered-session dead-letters replay 3:1700000000000-0 --redis-url ... --sql-url ...
    $ tiered-session dead-letters replay --all --redis-url ... --sql-url ...
"""

from __future__ import annotations

import re

import click

from .._config import redact_url
from ..outbox.dead_letters import list_dead_letters, replay_dead_letter
from ..store import TieredStore
from .common import ExitCode, Target, echo_json, run_on_store
from .options import json_option, storage_options, verbose_option
from .output import print_table

__all__ = ["parse_ref", "register"]

_REF = re.compile(r"(\d{1,4}):(\d+-\d+)")


def register(group: click.Group) -> None:
    """Add ``dead-letters`` and its actions."""
    group.add_command(dead_letters)


@click.group("dead-letters", short_help="List or replay outbox entries SQL rejected.")
@verbose_option
def dead_letters() -> None:
    """List or replay outbox entries SQL rejected (item contents are never shown)."""


def parse_ref(text: str) -> tuple[int, str]:
    """Split ``"3:1700000000000-0"`` into shard and entry id; ValueError if malformed."""
    match = _REF.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a reference SHARD:ID as 'dead-letters list' shows them "
            "(e.g. 3:1700000000000-0)"
        )
    return int(match.group(1)), match.group(2)


def _where(store: TieredStore, target: Target) -> str:
    return (
        f"key prefix {target.key_prefix!r} at {redact_url(target.redis_url)} "
        f"({store.keys.shards} shards)"
    )


@dead_letters.command("list")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Entries per shard at most.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object a line.")
@storage_options("data")
def list_command(target: Target, limit: int, as_json: bool) -> int:
    """List dead-lettered entries: reference, session, operation, seq, size, reason."""

    async def run(store: TieredStore) -> int:
        rows = await list_dead_letters(store.hot, limit=limit)
        if as_json:
            echo_json(rows, lines=True)
            return ExitCode.OK
        if rows:
            print_table(
                ["ref", "session", "op", "seq", "bytes", "reason"],
                [
                    [r["ref"], r["session_id"], r["op"], r["seq"], r["bytes"], r["reason"]]
                    for r in rows
                ],
            )
        noun = "entry" if len(rows) == 1 else "entries"
        click.echo(f"{len(rows)} dead-lettered {noun} under {_where(store, target)}")
        return ExitCode.OK

    return run_on_store(target, run, run_flusher=False)


@dead_letters.command(
    "replay",
    epilog="Each entry is appended to its outbox again, so it is applied after everything "
    "accepted since; fix the cause first (see 'dead-letters list'). Exit code 1 when a "
    "reference was not found.",
)
@click.argument("refs", nargs=-1, metavar="[SHARD:ID]...")
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead-lettered entry.")
@json_option
@storage_options("data")
def replay_command(target: Target, refs: tuple[str, ...], replay_all: bool, as_json: bool) -> int:
    """Put dead-lettered entries back at the end of their outbox."""
    if replay_all and refs:
        raise click.UsageError("give SHARD:ID references or --all, not both")
    if not replay_all and not refs:
        raise click.UsageError("give SHARD:ID references (see 'dead-letters list') or --all")
    parsed: list[tuple[str, int, str]] = []
    for ref in refs:
        try:
            parsed.append((ref, *parse_ref(ref)))
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="'SHARD:ID'") from None

    async def run(store: TieredStore) -> int:
        todo = parsed
        if replay_all:
            rows = await list_dead_letters(store.hot, limit=1_000_000)
            todo = [(r["ref"], *parse_ref(r["ref"])) for r in rows]
        shards = store.keys.shards
        missing: list[dict[str, str]] = []
        done = 0
        for ref, shard, entry_id in todo:
            if shard >= shards:
                reason = f"no shard {shard} (0-{shards - 1}) under {_where(store, target)}"
            elif await replay_dead_letter(store.hot, shard, entry_id):
                done += 1
                continue
            else:
                reason = f"no dead letter {ref} under {_where(store, target)}"
            missing.append({"ref": ref, "reason": reason})
        if as_json:
            echo_json({"replayed": done, "requested": len(todo), "not_found": missing})
        else:
            for m in missing:
                click.echo(f"tiered-session: not found: {m['reason']}", err=True)
            click.echo(f"replayed {done} of {len(todo)} dead-lettered entries")
        return ExitCode.NOT_FOUND if missing else ExitCode.OK

    return run_on_store(target, run, run_flusher=False)
