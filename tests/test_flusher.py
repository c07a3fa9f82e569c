"""The flusher commits busy shards side by side on PostgreSQL, each in its own transaction."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest

from tiered_session import Flusher
from tiered_session.cold.tier import Op

from .conftest import Backend

pytestmark = pytest.mark.servers


async def test_busy_shards_commit_in_parallel_and_one_failing_shard_holds_back_no_other(
    real_backend: Backend,
) -> None:
    store = real_backend.store(write_mode="behind", outbox_shards=8, run_flusher=False)
    sids = [f"user-{i}" for i in range(40)]
    shards = {store.keys.shard_of(sid) for sid in sids}
    assert len(shards) >= 4
    bad = sids[0]
    for i, sid in enumerate(sids):
        await store.session(sid).add_items([{"n": i}, {"n": i + 1}])

    apply, running, peak, failing = store.sql.apply, [0], [0], [True]

    async def observed(conn: Any, ops: Sequence[Op]) -> None:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        try:
            await asyncio.sleep(0.02)  # a slow transaction: others run meanwhile
            if failing[0] and any(op.session_id == bad for op in ops):
                raise OSError("simulated SQL outage for one shard")
            await apply(conn, ops)
        finally:
            running[0] -= 1

    store.sql.apply = observed  # type: ignore[method-assign]
    flusher = Flusher(store)
    try:
        await flusher.step()
        assert peak[0] > 1  # shards were committed side by side
        for i, sid in enumerate(sids):
            rows = [json.loads(d) for _, d in await store.sql.latest(sid, None, None)]
            same_shard = store.keys.shard_of(sid) == store.keys.shard_of(bad)
            assert rows == ([] if same_shard else [{"n": i}, {"n": i + 1}]), sid
        failing[0] = False
        await flusher.drain(timeout=10)
    finally:
        del store.sql.apply
        await flusher.release()
    for i, sid in enumerate(sids):
        rows = [json.loads(d) for _, d in await store.sql.latest(sid, None, None)]
        assert rows == [{"n": i}, {"n": i + 1}], sid
