"""Advanced sessions shared by real processes on real Redis + PostgreSQL.

Two processes add (and pop), one switches the current branch back and forth,
one creates branches from early turns, all on one session at once. Afterwards
nothing is lost, duplicated, split or reordered on any branch, Redis and SQL
agree on every branch, and the structured queries answer from the same items.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tiered_session._codec import decode_item
from tiered_session.ops import structure

from .advanced_support import user
from .conftest import Backend
from .mp_advanced_worker import tagged as tagged_batch
from .support import run_worker_processes, worker_config

pytestmark = [pytest.mark.processes, pytest.mark.servers]

SETUP = [
    item
    for i in range(1, 5)
    for item in (user(f"setup {i}"), {"role": "assistant", "content": f"setup answer {i}"})
]
ROLES = ["adder", "adder", "switcher", "brancher"]


async def run_workers(backend: Backend, mode: str) -> list[dict[str, Any]]:
    configs = [
        worker_config(
            backend,
            mode=mode,
            hot_items=6,
            run_flusher=worker < 2,
            session_id="shared",
            worker=worker,
            role=role,
            ops={"adder": 120, "switcher": 80, "brancher": 8}[role],
            branches=["main", "a", "b"],
            setup=SETUP,
        )
        for worker, role in enumerate(ROLES)
    ]
    return await run_worker_processes("tests.mp_advanced_worker", configs, 100)


def tag_of(item: dict[str, Any]) -> tuple[int, int, int] | None:
    """(worker, batch, position) of a tagged item; None for the setup's."""
    text = str(item.get("content", ""))
    if not text.startswith("w"):
        return None
    head, kind = text.split(" ", 1)
    worker, batch = head[1:].split("b")
    return int(worker), int(batch), 0 if kind == "question" else 1


@pytest.mark.parametrize("mode", ["through", "behind"])
async def test_four_processes_on_the_branches_of_one_session(
    real_backend: Backend, mode: str
) -> None:
    backend = real_backend
    store = backend.store(write_mode=mode, hot_items=6, run_flusher=True)
    await store.start()
    s = store.advanced_session("shared")
    await s.add_items(SETUP)
    await s.create_branch_from_turn(4, "a")
    await s.switch_to_branch("main")
    await s.create_branch_from_turn(4, "b")

    reports = await run_workers(backend, mode)
    for r in reports:
        assert r["errors"] == [], r["errors"]
    await store.flush()

    branches = [b["branch_id"] for b in await s.list_branches()]
    created = [b for r in reports for b in r["created"]]
    assert len(created) >= 2, "branches were created while others wrote"
    assert set(branches) == {"main", "a", "b", *created}
    popped = {json.dumps(x, sort_keys=True) for r in reports for x in r["popped"]}
    present: set[tuple[int, int, int]] = set()
    for branch in branches:
        items = await s.get_items(branch_id=branch)
        rows = await store.sql.latest(s._k(branch).session_id, None, None)
        assert [decode_item(d) for _, d in rows] == items, f"Redis and SQL differ on {branch}"
        tags = [t for t in map(tag_of, items) if t is not None]
        assert len(tags) == len(set(tags)), f"a duplicate on {branch}"
        last: dict[int, tuple[int, int]] = {}
        for w, b, pos in tags:  # each worker's items in order on every branch
            assert (b, pos) > last.get(w, (-1, 1)), f"worker {w} reordered on {branch}"
            last[w] = (b, pos)
        for i, t in enumerate(tags[:-1]):  # a batch is never split by another one
            if t[2] == 0 and tags[i + 1][:2] != t[:2]:  # unless its answer was popped
                answer = {"role": "assistant", "content": f"w{t[0]}b{t[1]} answer"}
                assert json.dumps(answer, sort_keys=True) in popped, f"batch {t} split on {branch}"
        present |= set(tags)
        turns = await s.get_conversation_turns(branch)
        assert [t["turn"] for t in turns] == list(range(1, len(turns) + 1))
        assert await s.get_conversation_by_turns(branch) == structure.conversation_by_turns(items)
    for worker, r in enumerate(reports):  # every item added is on a branch, or was popped
        for batch in r["added"]:
            for pos, item in enumerate(tagged_batch(worker, batch)):
                if (worker, batch, pos) not in present:
                    assert json.dumps(item, sort_keys=True) in popped, f"lost: {item}"
