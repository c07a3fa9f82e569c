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
from typing import Any, TextIO

from tiered_session.cli.common import store_from_args


async def writer(args: argparse.Namespace, log: TextIO | None = None) -> dict[str, Any]:
    store = store_from_args(args, write_mode=args.mode, run_flusher=False, hot_items=args.hot_items)
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
                    n = rng.randint(1, 3)
                    batch = [{"w": args.tag, "s": sid, "r": r, "i": i, "n": n} for i in range(n)]
                    await session.add_items(batch)
                    model.extend(batch)
                    counts["items"] += len(batch)
                    if log is not None:  # one line per batch the store said is stored
                        log.write(json.dumps({"s": sid, "b": batch}) + "\n")
                        log.flush()
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
    p.add_argument("--mode", choices=["behind", "through"], default="behind")
    p.add_argument("--tag", default="", help="marks this writer's items")
    p.add_argument("--log", default=None, help="append accepted batches here as they return")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.log:
        with open(args.log, "a") as log:
            result = asyncio.run(writer(args, log))
    else:
        result = asyncio.run(writer(args))
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
