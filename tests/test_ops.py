"""Session operations on every backend pair and write mode."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tiered_session import InvalidInputError, TieredStore
from tiered_session._codec import encode_item

from . import test_cluster
from .conftest import Backend, StoreFactory

cluster_ports = test_cluster.cluster_ports  # the private three-node cluster fixture


def msg(sid: str, i: int) -> dict[str, Any]:
    return {"role": "user", "content": f"{sid}/{i} ünïcødé ✓", "n": i, "meta": {"k": [1, 2.5]}}


async def fill(store: TieredStore, sid: str, n: int) -> list[Any]:
    items = [msg(sid, i) for i in range(n)]
    for i in range(0, n, 3):
        await store.session(sid).add_items(items[i : i + 3])
    return items


async def sql_rows(store: TieredStore, sid: str) -> int:
    m = store.sql.messages
    async with store.sql.begin() as conn:
        stmt = select(func.count()).where(m.c.session_id == sid)
        return int((await conn.execute(stmt)).scalar_one())


async def test_list_sessions_newest_first_and_paged(store: TieredStore) -> None:
    for n in range(5):
        await fill(store, f"s{n}", 2)
        await asyncio.sleep(0.01)
    await store.session("s1").add_items([msg("s1", 99)])  # s1 is now the most recent
    await store.session("gone").add_items([msg("gone", 0)])
    await store.session("gone").clear_session()  # cleared: not listed
    order = ["s1", "s4", "s3", "s2", "s0"]
    assert [i["session_id"] for i in await store.list_sessions()] == order
    pages = [await store.list_sessions(limit=2, offset=o) for o in (0, 2, 4, 6)]
    assert [[i["session_id"] for i in p] for p in pages] == [order[:2], order[2:4], order[4:], []]
    await store.flush()
    for sid in order:
        await store.evict(sid)
    assert [i["session_id"] for i in await store.list_sessions()] == order
    with pytest.raises(InvalidInputError):
        await store.list_sessions(limit=0)


async def test_list_includes_sessions_only_in_the_outbox(make_store: StoreFactory) -> None:
    store = make_store(write_mode="behind", run_flusher=False, hot_items=2)
    await fill(store, "pending", 5)
    assert await sql_rows(store, "pending") == 0
    assert [i["session_id"] for i in await store.list_sessions()] == ["pending"]
    assert await store.session_exists("pending")
    stats = await store.session_stats("pending")
    assert stats["items"] == 5 and stats["unflushed_items"] == 5
    assert stats["pending_operations"] == 2 and stats["created_at"] is None


async def test_exists_and_stats(store: TieredStore) -> None:
    assert not await store.session_exists("nobody")
    empty = await store.session_stats("nobody")
    assert (empty["exists"], empty["items"], empty["bytes"]) == (False, 0, 0)
    items = await fill(store, "a", 12)  # hot window is 5
    assert await store.session("a").pop_item() == items.pop()
    await store.flush()
    stats = await store.session_stats("a")
    assert stats["exists"] and stats["items"] == 11
    assert 0 < stats["hot_items"] <= 11 and stats["unflushed_items"] == 0
    assert stats["bytes"] == sum(len(encode_item(i)) for i in items)
    assert stats["created_at"] is not None and stats["updated_at"] is not None
    await store.evict("a")
    cold = await store.session_stats("a")
    assert (cold["items"], cold["hot_items"], cold["bytes"]) == (11, 0, stats["bytes"])
    await store.session("a").clear_session()
    assert not await store.session_exists("a")
    assert (await store.session_stats("a"))["items"] == 0


async def test_delete_session_from_both_tiers(store: TieredStore) -> None:
    await fill(store, "del", 8)
    keep = await fill(store, "keep", 3)
    assert await store.delete_session("del") is True
    assert not await store.session_exists("del")
    assert await sql_rows(store, "del") == 0
    assert not await store.redis.exists(store.keys.session("del").meta)
    assert await store.session("del").get_items() == []
    assert await store.delete_session("del") is False
    assert await store.session("keep").get_items() == keep
    assert [i["session_id"] for i in await store.list_sessions()] == ["keep"]
    # the id can be reused afterwards
    await store.session("del").add_items([msg("del", 1)])
    assert await store.session("del").get_items() == [msg("del", 1)]


async def test_cleanup_removes_only_idle_sessions(store: TieredStore) -> None:
    for n in range(3):
        await fill(store, f"old{n}", 7)
    await store.flush()
    await store.evict("old1")  # one of them only in SQL
    await asyncio.sleep(0.5)
    fresh = await fill(store, "fresh", 4)
    assert await store.cleanup(timedelta(seconds=0.4), dry_run=True) == 3
    assert await store.cleanup(timedelta(seconds=0.4)) == 3
    assert [i["session_id"] for i in await store.list_sessions()] == ["fresh"]
    for n in range(3):
        assert not await store.session_exists(f"old{n}")
        assert await sql_rows(store, f"old{n}") == 0
        assert await store.session(f"old{n}").get_items() == []
    assert await store.session("fresh").get_items() == fresh
    assert await store.cleanup(timedelta(hours=1)) == 0
    with pytest.raises(InvalidInputError):
        await store.cleanup(3600)  # type: ignore[arg-type]


async def test_export_import_into_an_empty_database(
    backend: Backend, write_mode: str, tmp_path: Path
) -> None:
    source = backend.store(write_mode=write_mode, hot_items=4)
    expected: dict[str, list[Any]] = {}
    for n in range(6):
        sid = f"user:{n} ✓"
        expected[sid] = await fill(source, sid, 3 * n + 1)
    expected["user:2 ✓"].append({"type": "function_call_output", "output": json.dumps({"x": 1})})
    await source.session("user:2 ✓").add_items([expected["user:2 ✓"][-1]])
    assert await source.session("user:3 ✓").pop_item() == expected["user:3 ✓"].pop()
    await source.session("user:0 ✓").clear_session()
    del expected["user:0 ✓"]
    path = tmp_path / "backup.jsonl"
    assert await source.export_jsonl(path) == 5
    assert len(path.read_text().splitlines()) == 5 + sum(len(v) for v in expected.values())
    listed = [i["session_id"] for i in await source.list_sessions()]

    target_backend = Backend(backend.kind, tmp_path)
    try:
        target = target_backend.store(write_mode=write_mode, hot_items=4)
        report = await target.import_jsonl(path)
        assert report["sessions_imported"] == 5 and report["sessions_conflicting"] == 0
        assert report["items_imported"] == sum(len(v) for v in expected.values())
        for sid, items in expected.items():
            assert await target.session(sid).get_items() == items
            assert await target.session(sid).get_items(limit=2) == items[-2:]
            src, dst = await source.session_stats(sid), await target.session_stats(sid)
            assert (dst["items"], dst["bytes"]) == (src["items"], src["bytes"])
            assert dst["created_at"] == src["created_at"]
        assert sorted(i["session_id"] for i in await target.list_sessions()) == sorted(listed)
        again = await target.import_jsonl(path)
        assert again["sessions_imported"] == 0 and again["sessions_unchanged"] == 5
        # a selection of sessions, into the same target: already there, unchanged
        part = tmp_path / "part.jsonl"
        assert await source.export_jsonl(part, ["user:1 ✓", "nobody"]) == 1
        assert (await target.import_jsonl(part))["sessions_unchanged"] == 1
    finally:
        await target_backend.cleanup()


@pytest.mark.servers
async def test_operations_on_a_redis_cluster(cluster_ports: list[int], tmp_path: Path) -> None:
    from redis.asyncio.cluster import RedisCluster
    from sqlalchemy.ext.asyncio import create_async_engine

    from .conftest import unique_name

    rc = RedisCluster(host="127.0.0.1", port=cluster_ports[0], decode_responses=False)
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'ops.db'}")
    store = TieredStore(
        redis=rc, engine=engine, key_prefix=unique_name(), write_mode="behind", create_tables=True
    )
    try:
        sids = [f"c{n}" for n in range(8)]  # spread over the nodes
        for sid in sids:
            await fill(store, sid, 4)
            await asyncio.sleep(0.005)
        assert [i["session_id"] for i in await store.list_sessions()] == sids[::-1]
        assert (await store.session_stats("c3"))["items"] == 4
        assert await store.delete_session("c3")
        path = tmp_path / "cluster.jsonl"
        assert await store.export_jsonl(path) == 7
        assert await store.cleanup(timedelta(0)) == 7
        assert await store.list_sessions() == []
        assert (await store.import_jsonl(path))["sessions_imported"] == 7
        assert await store.session("c5").get_items() == [msg("c5", i) for i in range(4)]
    finally:
        await store.aclose()
        await rc.aclose()
        await engine.dispose()


async def test_listing_merges_the_index_and_sql_in_order(
    backend: Backend, write_mode: str, tmp_path: Path
) -> None:
    source = backend.store(write_mode=write_mode)
    for n in range(5):
        await fill(source, f"imported{n}", 2)
    path = tmp_path / "b.jsonl"
    await source.export_jsonl(path)
    other = Backend(backend.kind, tmp_path)
    try:
        store = other.store(write_mode=write_mode, outbox_shards=3)
        await store.import_jsonl(path)  # known to SQL only, not to the index
        for n in range(12):
            await fill(store, f"live{n}", 1)
        await store.session("live4").clear_session()
        everything = [i async for i in store.admin.lister.iterate(chunk=2)]
        ids = [i["session_id"] for i in everything]
        assert len(ids) == 16 and "live4" not in ids and len(set(ids)) == 16
        keys = [(i["updated_at"], i["session_id"]) for i in everything]
        assert keys == sorted(keys, reverse=True)
        assert all(i.startswith("imported") for i in ids[-5:])  # older than every live one
        pages = []
        for offset in range(0, 18, 3):
            pages += await store.list_sessions(limit=3, offset=offset)
        assert [i["session_id"] for i in pages] == ids
    finally:
        await other.cleanup()


async def test_cleanup_keeps_sessions_with_unflushed_writes(make_store: StoreFactory) -> None:
    store = make_store(write_mode="behind", run_flusher=False)
    items = await fill(store, "pending", 3)
    await asyncio.sleep(0.05)
    assert await store.cleanup(timedelta(0), dry_run=True) == 1  # idle by its age ...
    assert await store.cleanup(timedelta(0)) == 0  # ... but not yet in SQL: kept
    assert await store.session("pending").get_items() == items
