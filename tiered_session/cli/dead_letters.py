"""``tiered-session dead-letters list|replay``: outbox entries SQL kept refusing.

Example:
    $ tiered-session dead-letters list --redis-url redis://localhost:6379/0
    $ tiered-session dead-letters replay --all --redis-url redis://localhost:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from ..outbox.dead_letters import DeadLetter, list_dead_letters
from ..outbox.dead_letters import replay_dead_letter as replay_entry
from ..store import TieredStore
from .common import SubParsers, add_server_args, store_from_args

__all__ = ["dead_letters", "register", "replay_dead_letter"]


def register(sub: SubParsers) -> None:
    """Add the ``dead-letters`` subcommand."""
    d = sub.add_parser("dead-letters", help="list or replay outbox entries SQL rejected")
    dsub = d.add_subparsers(dest="action", required=True, metavar="ACTION")
    dl = dsub.add_parser("list", help="list dead-lettered entries (item contents are not shown)")
    add_server_args(dl)
    dl.add_argument("--limit", type=int, default=100, help="entries per shard (default 100)")
    dl.add_argument("--json", action="store_true", help="print JSON lines")
    dl.set_defaults(func=_dead_list_main)
    dr = dsub.add_parser(
        "replay",
        help="put dead-lettered entries back at the end of their outbox",
        description="Each entry is appended to its outbox again, so it is applied after "
        "everything accepted since; fix the cause first (see 'dead-letters list').",
    )
    add_server_args(dr)
    dr.add_argument("refs", nargs="*", metavar="SHARD:ID", help="entries as shown by list")
    dr.add_argument("--all", action="store_true", help="replay every dead-lettered entry")
    dr.set_defaults(func=_dead_replay_main)


def _dead_list_main(args: argparse.Namespace) -> int:
    return asyncio.run(_dead_list(store_from_args(args, run_flusher=False), args))


async def _dead_list(store: TieredStore, args: argparse.Namespace) -> int:
    async with store:
        rows = await dead_letters(store, limit=args.limit)
    for row in rows:
        if args.json:
            print(json.dumps(row))
        else:
            print(
                f"{row['ref']}  session={row['session_id']!r} op={row['op']} seq={row['seq']} "
                f"bytes={row['bytes']}  reason: {row['reason']}"
            )
    if not args.json:
        print(f"{len(rows)} dead-lettered entr{'y' if len(rows) == 1 else 'ies'}")
    return 0


async def dead_letters(store: TieredStore, *, limit: int = 100) -> list[DeadLetter]:
    """Return the dead-lettered entries of every shard (without item contents)."""
    return await list_dead_letters(store.hot, limit=limit)


def _dead_replay_main(args: argparse.Namespace) -> int:
    if not args.all and not args.refs:
        print("tiered-session: error: give SHARD:ID references or --all", file=sys.stderr)
        return 2
    return asyncio.run(_dead_replay(store_from_args(args, run_flusher=False), args))


async def _dead_replay(store: TieredStore, args: argparse.Namespace) -> int:
    async with store:
        refs = args.refs
        if args.all:
            refs = [r["ref"] for r in await dead_letters(store, limit=1_000_000)]
        done = 0
        for ref in refs:
            done += await replay_dead_letter(store, ref)
    print(f"replayed {done} of {len(refs)} dead-lettered entries")
    return 0 if done == len(refs) else 1


async def replay_dead_letter(store: TieredStore, ref: str) -> int:
    """Append one dead-lettered entry (``"shard:id"``) to its outbox again; 1 if done."""
    shard_s, _, eid = ref.partition(":")
    if not shard_s.isdigit() or not eid or int(shard_s) >= store.keys.shards:
        print(f"tiered-session: bad reference {ref!r} (expected SHARD:ID)", file=sys.stderr)
        return 0
    if not await replay_entry(store.hot, int(shard_s), eid):
        print(f"tiered-session: no dead letter {ref}", file=sys.stderr)
        return 0
    return 1
