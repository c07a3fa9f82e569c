"""Real processes on real Redis + PostgreSQL sharing one session."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tiered_session._codec import decode_item

from .conftest import Backend
from .support import run_worker_processes, worker_config

pytestmark = [pytest.mark.processes, pytest.mark.servers]


async def _run_workers(backend: Backend, mode: str, workers: int, ops: int) -> list[Any]:
    configs = [
        worker_config(
            backend,
            mode=mode,
            hot_items=8,
            run_flusher=w < 2,  # two in-process flushers compete for the shards
            session_id="shared",
            worker=w,
            ops=ops,
        )
        for w in range(workers)
    ]
    return await run_worker_processes("tests.mp_worker", configs, 90)


@pytest.mark.parametrize("mode", ["through", "behind"])
async def test_four_processes_one_session(real_backend: Backend, mode: str) -> None:
    backend = real_backend
    store = backend.store(write_mode=mode, hot_items=8, run_flusher=True)
    await store.start()  # creates the tables
    reports = await _run_workers(backend, mode, workers=4, ops=250)
    await store.flush()
    final = await store.session("shared").get_items()
    rows = await store.sql.latest("shared", None, None)
    sql_items = [decode_item(d) for _, d in rows]

    # Hot and SQL views agree, seqs strictly increase.
    assert final == sql_items
    seqs = [q for q, _ in rows]
    assert seqs == sorted(set(seqs))

    for r in reports:
        assert r["errors"] == [], r["errors"]
    key = lambda it: (it["w"], it["b"], it["i"])  # noqa: E731
    popped = [key(it) for r in reports for it in r["popped"]]
    present = [key(it) for it in final]
    # Concurrent pops never return the same item; nothing is both popped and present.
    assert popped, "the workers popped nothing: the test proves nothing about pops"
    assert len(popped) == len(set(popped))
    assert not set(popped) & set(present)
    assert len(present) == len(set(present))
    # Nothing lost: every added item is present or was popped by someone.
    added = sum(r["batches"] for r in reports) * 3
    assert len(present) + len(popped) == added
    # No reordering: each worker's items keep their order; no batch is split by others.
    by_worker: dict[int, list[tuple[int, int, int]]] = {}
    for k in present:
        by_worker.setdefault(k[0], []).append(k)
    for items in by_worker.values():
        assert items == sorted(items)
    position = {k: n for n, k in enumerate(present)}
    batches = Counter((w, b) for w, b, _ in present)
    for (w, b), count in batches.items():
        idx = sorted(position[(w, b, i)] for i in range(3) if (w, b, i) in position)
        assert idx == list(range(idx[0], idx[0] + count)), f"batch {(w, b)} split"
        assert [present[i][2] for i in idx] == list(range(count))  # prefix of the batch
    # Re-warming from SQL gives the same history.
    await store.evict("shared")
    assert await store.session("shared").get_items() == final
