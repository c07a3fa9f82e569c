"""Graceful shutdown: aclose() drains the in-process flusher within its deadline."""

from __future__ import annotations

import asyncio

from .conftest import Backend
from .support import message as msg


async def test_aclose_drains_backlog_and_leaves_no_task(backend: Backend) -> None:
    store = backend.store(write_mode="behind", hot_items=5, flush_interval=5)
    await store.start()
    for i in range(40):
        await store.session(f"s{i % 4}").add_items([msg(i)])
    await store.aclose(drain_timeout=10)
    assert store.flusher_task is None
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "tiered-session-flusher"]
    check = backend.store(write_mode="behind", run_flusher=False)
    for n in range(4):
        rows = await check.sql.latest(f"s{n}", None, None)
        assert [q for q, _ in rows] == list(range(1, 11))
    stats = await check.stats()
    assert stats["backlog"] == 0 and stats["live_flushers"] == 0
