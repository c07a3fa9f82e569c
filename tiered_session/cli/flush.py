r"""``tiered-session flush``: a standalone flusher worker.

It shares the outbox shards fairly with every other live flusher (processes
or in-process), runs until SIGTERM or SIGINT, then drains what it holds within
``--drain-timeout`` seconds, releases its leases and exits 0. ``--once``
drains the shards it can take and exits.

Example:
    $ tiered-session flush --redis-url redis://localhost:6379/0 \\
          --sql-url postgresql+asyncpg://postgres@localhost/agents
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from .._config import default, redact_url
from .._errors import StorageUnavailableError
from ..cold.schema import ensure_schema
from ..outbox.flusher import Flusher
from ..store import TieredStore
from .common import SubParsers, add_server_args, store_from_args

__all__ = ["register"]

log = logging.getLogger("tiered_session.cli")

#: the default of --max-delay-ms: the store's flush_interval
_DELAY_MS = round(default("flush_interval") * 1000)


def register(sub: SubParsers) -> None:
    """Add the ``flush`` subcommand."""
    p = sub.add_parser(
        "flush",
        help="run a flusher worker: move write-behind entries from Redis into SQL",
        description="Run until SIGTERM/SIGINT, then drain within --drain-timeout and exit 0.",
    )
    add_server_args(p, required=True)
    p.add_argument(
        "--batch-size",
        type=int,
        default=default("flush_batch_size"),
        help="entries per SQL transaction",
    )
    p.add_argument(
        "--max-delay-ms",
        type=int,
        default=_DELAY_MS,
        help=f"longest wait for new entries before polling again (default {_DELAY_MS})",
    )
    p.add_argument("--once", action="store_true", help="drain what is there now, then exit")
    p.add_argument(
        "--own-shards",
        default=None,
        metavar="LIST",
        help="comma-separated shard numbers to take whole (default: share all shards fairly)",
    )
    p.add_argument(
        "--lease-ttl", type=float, default=default("lease_ttl"), help="seconds a shard lease lasts"
    )
    p.add_argument(
        "--max-attempts",
        type=int,
        default=default("max_attempts"),
        help="attempts before dead-lettering",
    )
    p.add_argument(
        "--inflight-timeout",
        type=float,
        default=default("inflight_timeout"),
        help="seconds before finishing a write-through operation whose writer vanished",
    )
    p.add_argument(
        "--drain-timeout", type=float, default=10.0, help="seconds to drain after a stop signal"
    )
    p.add_argument("--create-tables", action="store_true", help="create missing SQL tables")
    p.set_defaults(func=_flush_main)


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
        f"(redis={redact_url(args.redis_url)}, sql={redact_url(args.sql_url)})",
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
