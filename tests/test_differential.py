"""Randomised differential test: TieredSession must answer exactly like agents.SQLiteSession.

Long random sequences of add / get(limit) / pop / clear / flush / evict with a tiny hot window
(so trims, cold reads, refills and re-warming all happen), through two store objects for the
same session id, on every backend pair and in both write modes.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from agents import SQLiteSession

from tiered_session import TieredStore
from tiered_session._codec import decode_item

from .conftest import StoreFactory


def _item(rng: random.Random, n: int) -> dict[str, Any]:
    kind = rng.randrange(3)
    if kind == 0:
        return {"role": "user", "content": f"u{n} " + "x" * rng.randrange(40)}
    if kind == 1:
        return {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": f'a{n} é✓ "q" \\ {rng.random()}'}],
        }
    return {"type": "function_call", "call_id": f"c{n}", "arguments": '{"k": [1, 2.5, null]}'}


async def _run(stores: list[TieredStore], seed: int, steps: int) -> None:
    rng = random.Random(seed)
    sid = f"diff-{seed}"
    sessions = [s.session(sid) for s in stores]
    oracle = SQLiteSession(sid)
    n = 0
    try:
        for step in range(steps):
            session = rng.choice(sessions)
            store = session.store
            op = rng.random()
            ctx = f"seed={seed} step={step}"
            if op < 0.35:
                batch = [_item(rng, n + i) for i in range(rng.randrange(1, 5))]
                n += len(batch)
                await session.add_items(batch)
                await oracle.add_items(batch)
            elif op < 0.70:
                limit = rng.choice([None, None, 0, 1, 2, 3, 4, 5, 7, 10, 30])
                assert await session.get_items(limit) == await oracle.get_items(limit), ctx
            elif op < 0.85:
                assert await session.pop_item() == await oracle.pop_item(), ctx
            elif op < 0.88:
                await session.clear_session()
                await oracle.clear_session()
            elif op < 0.94:
                await store.flush()
            else:
                await store.evict(sid)
        for store in stores:
            await store.flush()
        expected = await oracle.get_items()
        for session in sessions:
            assert await session.get_items() == expected
        rows = await stores[0].sql.latest(sid, None, None)
        assert [decode_item(d) for _, d in rows] == expected
        seqs = [q for q, _ in rows]
        assert seqs == sorted(set(seqs))
    finally:
        oracle.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_matches_sqlite_session(make_store: StoreFactory, seed: int) -> None:
    stores = [make_store(hot_items=3), make_store(hot_items=3)]
    await _run(stores, seed, steps=250)


async def test_matches_with_window_of_one(make_store: StoreFactory) -> None:
    stores = [make_store(hot_items=1), make_store(hot_items=1)]
    await _run(stores, seed=99, steps=250)
