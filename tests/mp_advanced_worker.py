"""A worker process for the advanced-session process tests: adds, pops, switches, branches.

Run as ``python -m tests.mp_advanced_worker '<json config>'``; prints a JSON report.
Roles: ``adder`` (tagged user + assistant batches, some pops, reads), ``switcher``
(switches the session between its branches), ``brancher`` (creates branches
from early turns while the others write).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from typing import Any

from tests.support import worker_store
from tiered_session import BranchError


def tagged(worker: int, batch: int) -> list[dict[str, Any]]:
    tag = f"w{worker}b{batch}"
    return [
        {"role": "user", "content": f"{tag} question"},
        {"role": "assistant", "content": f"{tag} answer"},
    ]


async def _from_a_branch(s: Any, branch: str, copy: list[Any], turn: int) -> bool:
    """Whether ``copy`` before its user turn ``turn`` starts another branch (its source).

    The source may have been one whose setup items the adders had popped;
    what the adders appended to the new branch since starts at that turn.
    """
    users = [i for i, item in enumerate(copy) if item.get("role") == "user"]
    copied = copy[: users[turn - 1]] if len(users) >= turn else copy
    for other in await s.list_branches():
        if other["branch_id"] != branch:
            items = await s.get_items(branch_id=other["branch_id"])
            if items[: len(copied)] == copied:
                return True
    return False


async def run(cfg: dict[str, Any]) -> dict[str, Any]:
    store = worker_store(cfg)
    me, role = cfg["worker"], cfg["role"]
    rng = random.Random(me)
    report: dict[str, Any] = {"added": [], "popped": [], "created": [], "errors": []}
    async with store:
        s = store.advanced_session(cfg["session_id"])
        for n in range(cfg["ops"]):
            if role == "adder":
                dice = rng.random()
                if dice < 0.8:
                    await s.add_items(tagged(me, n))
                    report["added"].append(n)
                elif dice < 0.9:
                    item = await s.pop_item()
                    if item is not None:
                        report["popped"].append(item)
                else:
                    got = await s.get_items(limit=6)
                    texts = [json.dumps(x, sort_keys=True) for x in got]
                    if len(set(texts)) != len(texts):
                        report["errors"].append("duplicate item in a read")
            elif role == "switcher":
                await s.switch_to_branch(rng.choice(cfg["branches"]))
                await asyncio.sleep(0.005)
            else:  # brancher
                turn = rng.choice([2, 3])
                try:  # from the branch current now (which the switcher keeps changing)
                    branch = await s.create_branch_from_turn(turn, f"x{me}_{n}")
                except BranchError:  # a branch made here from an earlier turn lacks it
                    await s.switch_to_branch("main")
                    continue
                copy = await s.get_items(branch_id=branch)
                expected = cfg["setup"][: 2 * (turn - 1)]
                if copy[: len(expected)] != expected and not await _from_a_branch(
                    s, branch, copy, turn
                ):
                    report["errors"].append(f"branch {branch} is no branch's turns < {turn}")
                report["created"].append(branch)
                await asyncio.sleep(0.02)
        await store.flush()
    return report


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))))
