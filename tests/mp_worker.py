"""A worker process for the multi-process tests: adds, reads and pops one session.

Run as ``python -m tests.mp_worker '<json config>'``; prints a JSON report on stdout.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from typing import Any

from tests.support import worker_store


def _check_read(items: list[dict[str, Any]]) -> str | None:
    keys = [(it["w"], it["b"], it["i"]) for it in items]
    if len(set(keys)) != len(keys):
        return "duplicate item in a read"
    last: dict[int, tuple[int, int]] = {}
    for w, b, i in keys:
        if w in last and last[w] >= (b, i):
            return f"worker {w} items out of order in a read"
        last[w] = (b, i)
    return None


async def main(cfg: dict[str, Any]) -> dict[str, Any]:
    store = worker_store(cfg)
    me = cfg["worker"]
    rng = random.Random(me)
    popped: list[dict[str, Any]] = []
    batches = 0
    errors: list[str] = []
    async with store:
        s = store.session(cfg["session_id"])
        for b in range(cfg["ops"]):
            r = rng.random()
            if r < 0.6:
                await s.add_items([{"w": me, "b": b, "i": i, "pad": "x" * 200} for i in range(3)])
                batches += 1
            elif r < 0.85:
                err = _check_read(await s.get_items(limit=rng.choice([None, 1, 5, 20, 50])))
                if err:
                    errors.append(err)
            else:
                item = await s.pop_item()
                if item is not None:
                    popped.append(item)
        await store.flush()
    return {"worker": me, "batches": batches, "popped": popped, "errors": errors}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
