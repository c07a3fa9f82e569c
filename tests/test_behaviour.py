"""The behaviour suite: every backend pair, both write modes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tiered_session import TieredStore

from .conftest import Backend, StoreFactory
from .support import message as msg


async def test_empty_session(store: TieredStore) -> None:
    s = store.session("empty")
    assert await s.get_items() == []
    assert await s.get_items(limit=3) == []
    assert await s.pop_item() is None
    await s.clear_session()
    assert await s.get_items() == []


async def test_add_get_order_and_limits(store: TieredStore) -> None:
    s = store.session("order")
    items = [msg(i) for i in range(12)]  # hot window is 5: cold reads needed
    for i in range(0, 12, 3):
        await s.add_items(items[i : i + 3])
    await store.flush()
    assert await s.get_items() == items
    for n in (0, 1, 4, 5, 6, 11, 12, 13, 100):
        assert await s.get_items(limit=n) == (items[-n:] if n else [])


async def test_pop_returns_newest_then_none(store: TieredStore) -> None:
    s = store.session("pop")
    items = [msg(i) for i in range(8)]
    await s.add_items(items)
    await store.flush()
    for expected in reversed(items):
        assert await s.pop_item() == expected
    assert await s.pop_item() is None
    assert await s.get_items() == []


async def test_clear_then_reuse(store: TieredStore) -> None:
    s = store.session("clear")
    await s.add_items([msg(i) for i in range(7)])
    await s.clear_session()
    assert await s.get_items() == []
    await s.add_items([msg(100)])
    assert await s.get_items() == [msg(100)]
    await store.flush()
    await store.evict("clear")
    assert await s.get_items() == [msg(100)]


async def test_evict_rewarms_from_sql(store: TieredStore) -> None:
    s = store.session("evict")
    items = [msg(i) for i in range(9)]
    await s.add_items(items)
    await store.evict("evict")
    assert await s.get_items(limit=2) == items[-2:]
    assert await s.get_items() == items
    await s.add_items([msg(9)])
    assert await s.get_items(limit=3) == [*items[-2:], msg(9)]


async def test_two_stores_share_one_session(make_store: StoreFactory) -> None:
    a, b = make_store(hot_items=3), make_store(hot_items=3)
    sa, sb = a.session("shared"), b.session("shared")
    await sa.add_items([msg(1)])
    await sb.add_items([msg(2), msg(3)])
    assert await sa.get_items() == [msg(1), msg(2), msg(3)]
    assert await sb.pop_item() == msg(3)
    assert await sa.get_items() == [msg(1), msg(2)]


async def test_sessions_are_independent(store: TieredStore) -> None:
    a, b = store.session("a"), store.session("b")
    await a.add_items([msg(1)])
    await b.add_items([msg(2)])
    await a.clear_session()
    assert await a.get_items() == []
    assert await b.get_items() == [msg(2)]


async def test_sql_holds_history_in_seq_order(store: TieredStore, backend: Backend) -> None:
    s = store.session("sqlview")
    items = [msg(i) for i in range(10)]
    for it in items:
        await s.add_items([it])
    await s.pop_item()
    await store.flush()
    rows = await store.sql.latest("sqlview", None, None)
    assert [q for q, _ in rows] == list(range(1, 10))
    assert await s.get_items() == items[:-1]


async def test_concurrent_pops_are_distinct(store: TieredStore) -> None:
    s = store.session("pops")
    items = [msg(i) for i in range(30)]
    await s.add_items(items)
    await store.flush()
    popped = await asyncio.gather(*(s.pop_item() for _ in range(40)))
    got = [p for p in popped if p is not None]
    assert len(got) == 30
    assert sorted(got, key=lambda m: m["content"]) == sorted(items, key=lambda m: m["content"])


async def test_concurrent_adds_keep_every_item_once(store: TieredStore) -> None:
    s = store.session("adds")
    await asyncio.gather(*(s.add_items([msg(i), msg(i + 1000)]) for i in range(25)))
    await store.flush()
    got = await s.get_items()
    assert len(got) == 50
    for i in range(25):  # a batch stays contiguous
        assert got[got.index(msg(i)) + 1] == msg(i + 1000)
    await store.evict("adds")
    assert await s.get_items() == got


@pytest.mark.parametrize("limit", [1, 5, 20])
async def test_limit_reads_after_pops_and_trims(store: TieredStore, limit: int) -> None:
    s = store.session("mixed")
    ref: list[dict[str, Any]] = []
    for i in range(20):
        await s.add_items([msg(i)])
        ref.append(msg(i))
        if i % 4 == 3:
            assert await s.pop_item() == ref.pop()
    await store.flush()
    assert await s.get_items(limit=limit) == ref[-limit:]
    assert await s.get_items() == ref
