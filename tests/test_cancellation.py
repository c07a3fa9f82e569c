"""A caller cancelled mid-call leaves its whole batch or none of it, never a part or a duplicate."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from tiered_session import TieredStore
from tiered_session._codec import decode_item


def batch(tag: int) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"b{tag}-{i}"} for i in range(4)]


async def _cancel_after(coro: Any, ticks: int) -> bool:
    """Run coro, cancel it after `ticks` loop iterations; return True if it was cancelled."""
    task = asyncio.ensure_future(coro)
    for _ in range(ticks):
        await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return True
    return False


async def test_cancelled_add_is_all_or_nothing(store: TieredStore) -> None:
    s = store.session("cancel")
    expected: list[dict[str, Any]] = []
    cancelled_count = 0
    for tag in range(40):
        items = batch(tag)
        was_cancelled = await _cancel_after(s.add_items(items), ticks=tag % 20)
        cancelled_count += was_cancelled
        got = await s.get_items()
        tail = got[len(expected) :]
        assert tail in ([], items), f"tag={tag}: partial or duplicated batch {tail}"
        expected.extend(tail)
        assert got == expected
    assert cancelled_count > 0  # the test really cancelled calls
    await store.flush()
    rows = await store.sql.latest("cancel", None, None)
    assert [decode_item(d) for _, d in rows] == expected
    await store.evict("cancel")
    assert await s.get_items() == expected


async def test_cancelled_pop_and_clear_settle(store: TieredStore) -> None:
    s = store.session("cancel-pop")
    await s.add_items(batch(0) + batch(1))
    for ticks in range(6):
        before = await s.get_items()
        with contextlib.suppress(asyncio.CancelledError):
            await _cancel_after(s.pop_item(), ticks)
        after = await s.get_items()
        assert after in (before, before[:-1])
    with contextlib.suppress(asyncio.CancelledError):
        await _cancel_after(s.clear_session(), 1)
    remaining = await s.get_items()
    await store.flush()
    rows = await store.sql.latest("cancel-pop", None, None)
    assert [decode_item(d) for _, d in rows] == remaining
