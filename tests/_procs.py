"""Worker processes for the durability tests: ``python -m tests._procs writer ...``.

The writer adds (and optionally pops and clears) items in write-behind mode on
many sessions at once, with no flusher of its own, and writes what it was told
is stored (the accepted history of every session, in order) to a JSON file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from pathlib import Path
from typing import Any

from tiered_session import TieredStore


async def writer(args: argparse.Namespace) -> dict[str, Any]:
    store = TieredStore.from_url(
        args.redis_url,
        args.sql_url,
        key_prefix=args.key_prefix,
        sessions_table=args.sessions_table,
        messages_table=args.messages_table,
        outbox_shards=args.shards,
        write_mode="behind",
        run_flusher=False,
        hot_items=args.hot_items,
    )
    expected: dict[str, list[Any]] = {f"s{i}": [] for i in range(args.sessions)}
    counts = {"items": 0, "pops": 0, "clears": 0}
    async with store:

        async def one(sid: str, seed: int) -> None:
            rng = random.Random(seed)
            session = store.session(sid)
            model = expected[sid]
            for r in range(args.rounds):
                dice = rng.random()
                if args.mixed and dice < 0.12 and model:
                    got = await session.pop_item()
                    assert got == model.pop(), (sid, got)
                    counts["pops"] += 1
                elif args.mixed and dice < 0.15:
                    await session.clear_session()
                    model.clear()
                    counts["clears"] += 1
                else:
                    batch = [{"s": sid, "r": r, "i": i} for i in range(rng.randint(1, 3))]
                    await session.add_items(batch)
                    model.extend(batch)
                    counts["items"] += len(batch)
                if args.pause:
                    await asyncio.sleep(args.pause * rng.random() * 2)

        await asyncio.gather(*(one(sid, n) for n, sid in enumerate(expected)))
    return {"expected": expected, **counts}


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["writer"])
    p.add_argument("--redis-url", required=True)
    p.add_argument("--sql-url", required=True)
    p.add_argument("--key-prefix", required=True)
    p.add_argument("--sessions-table", required=True)
    p.add_argument("--messages-table", required=True)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--sessions", type=int, default=40)
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--hot-items", type=int, default=20)
    p.add_argument("--pause", type=float, default=0.0, help="mean seconds between operations")
    p.add_argument("--mixed", action="store_true", help="mix pops and clears into the adds")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    Path(args.out).write_text(json.dumps(asyncio.run(writer(args))))


if __name__ == "__main__":
    main(sys.argv[1:])
