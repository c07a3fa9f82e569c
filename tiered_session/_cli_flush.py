r"""``tiered-session flush``, ``dead-letters`` and ``stats``: operating the write-behind path.

``flush`` runs a standalone flusher worker: it shares the outbox shards fairly
with every other live flusher (processes or in-process), runs until SIGTERM or
SIGINT, then drains what it holds within ``--drain-timeout`` seconds, releases
its leases and exits 0. ``--once`` drains the shards it can take and exits.

Example:
    $ tiered-session flush --redis-url redis://localhost:6379/0 \\
          --sql-url postgresql+asyncpg://postgres@localhost/agents
    $ tiered-session dead-letters list --redis-url redis://localhost:6379/0
    $ tiered-session dead-letters replay --all --redis-url redis://localhost:6379/0
    $ tiered-session stats --json --redis-url redis://localhost:6379/0 --sql-url ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from typing import Any, cast

from ._cli_common import add_server_args, redact, store_from_args
from ._errors import StorageUnavailableError
from ._flusher import Flusher
from ._schema import ensure_schema
from ._store import TieredStore

__all__ = ["register"]

log = logging.getLogger("tiered_session.cli")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``flush``, ``dead-letters`` and ``stats`` subcommands."""
    p = sub.add_parser(
        "flush",
        help="run a flusher worker: move write-behind entries from Redis into SQL",
        description="Run until SIGTERM/SIGINT, then drain within --drain-timeout and exit 0.",
    )
    add_server_args(p, required=True)
    p.add_argument("--batch-size", type=int, default=500, help="entries per SQL transaction")
    p.add_argument(
        "--max-delay-ms",
        type=int,
        default=50,
        help="longest wait for new entries before polling again (default 50)",
    )
    p.add_argument("--once", action="store_true", help="drain what is there now, then exit")
    p.add_argument(
        "--own-shards",
        default=None,
        metavar="LIST",
        help="comma-separated shard numbers to take whole (default: share all shards fairly)",
    )
    p.add_argument("--lease-ttl", type=float, default=10.0, help="seconds a shard lease lasts")
    p.add_argument("--max-attempts", type=int, default=5, help="attempts before dead-lettering")
    p.add_argument(
        "--inflight-timeout",
        type=float,
        default=60.0,
        help="seconds before finishing a write-through operation whose writer vanished",
    )
    p.add_argument(
        "--drain-timeout", type=float, default=10.0, help="seconds to drain after a stop signal"
    )
    p.add_argument("--create-tables", action="store_true", help="create missing SQL tables")
    p.set_defaults(func=_flush_main)

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

    s = sub.add_parser("stats", help="print store statistics (backlog, flush lag, dead letters)")
    add_server_args(s)
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=_stats_main)


# ---------------------------------------------------------------------- flush
def _flush_main(args: argparse.Namespace) -> int:
    shards = None
    if args.own_shards:
        shards = [int(x) for x in args.own_shards.split(",") if x.strip()]
    store = store_from_args(
        args,
        write_mode="behind",
        run_flusher=False,
        flush_batch_size=args.batch_size,
        lease_ttl=args.lease_ttl,
        max_attempts=args.max_attempts,
        inflight_timeout=args.inflight_timeout,
        create_tables=args.create_tables,
    )
    flusher = Flusher(
        store, shards=shards, batch_size=args.batch_size, interval=args.max_delay_ms / 1000
    )
    flusher.drain_timeout = args.drain_timeout
    return asyncio.run(_run_flusher(store, flusher, args))


async def _run_flusher(store: TieredStore, flusher: Flusher, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    print(
        f"tiered-session flush: worker {flusher.token} started "
        f"(redis={redact(args.redis_url)}, sql={redact(args.sql_url)})",
        flush=True,
    )
    code = 0
    try:
        try:
            await ensure_schema(store.sql, create=args.create_tables)
        except StorageUnavailableError as e:  # SQL down: start anyway, retry with backoff
            log.warning("SQL unreachable at start, schema not checked: %s", e)
        if args.once:
            try:
                await flusher.drain(timeout=args.drain_timeout)
            except TimeoutError as e:
                print(f"tiered-session flush: {e}", file=sys.stderr)
                code = 1
            finally:
                await flusher.release()
        else:
            await flusher.run(stop)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await store.aclose()
    c = store.counters
    print(
        f"tiered-session flush: worker {flusher.token} stopped; {c.flushed_entries} entries "
        f"in {c.flush_batches} batches, {c.flush_errors} failed attempts",
        flush=True,
    )
    return code


# ---------------------------------------------------------------------- dead letters
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


async def dead_letters(store: TieredStore, *, limit: int = 100) -> list[dict[str, Any]]:
    """Return the dead-lettered entries of every shard (without item contents)."""
    out: list[dict[str, Any]] = []
    for sh in store.keys.all_shards():
        entries = await store._redis_call(store.redis.xrange(sh.dead, count=limit))
        for eid, f in cast(list[tuple[bytes, dict[bytes, bytes]]], entries):
            out.append(
                {
                    "ref": f"{sh.shard}:{eid.decode()}",
                    "shard": sh.shard,
                    "outbox_id": f.get(b"id", b"").decode(),
                    "session_id": f.get(b"s", b"").decode("utf-8", "replace"),
                    "op": f.get(b"o", b"?").decode("utf-8", "replace"),
                    "seq": f.get(b"q", b"").decode("utf-8", "replace"),
                    "bytes": len(f.get(b"d", b"")),
                    "reason": f.get(b"reason", b"").decode("utf-8", "replace"),
                }
            )
    return out


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
    sh = store.keys.shard(int(shard_s))
    found = cast(
        list[tuple[bytes, dict[bytes, bytes]]],
        await store._redis_call(store.redis.xrange(sh.dead, min=eid, max=eid)),
    )
    if not found:
        print(f"tiered-session: no dead letter {ref}", file=sys.stderr)
        return 0
    sid = found[0][1].get(b"s", b"").decode("utf-8", "surrogatepass")
    if sid:
        k = store.keys.session(sid)
        meta, items = k.meta, k.items
    else:
        meta, items = sh.outbox + b":none", sh.outbox + b":none"
    return int(await store._script("replay", [sh.dead, sh.outbox, meta, items], [eid]))


# ---------------------------------------------------------------------- stats
def _stats_main(args: argparse.Namespace) -> int:
    return asyncio.run(_stats(store_from_args(args, run_flusher=False), args))


async def _stats(store: TieredStore, args: argparse.Namespace) -> int:
    async with store:
        stats = await store.stats()
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        for key, value in stats.items():
            print(f"{key:<22} {value}")
    return 0
