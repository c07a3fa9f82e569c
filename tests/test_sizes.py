"""Sizes past Lua's ``unpack()`` limit (about 8,000 values) work end to end.

Every command a script sends with many values (RPUSH, LPUSH, SADD, SREM, XACK,
XDEL, ...) gets them in slices, so an ``add_items`` batch, a hot window and a
flush batch of any allowed size go through: here 20,000 of each, on fakeredis +
SQLite and on the real Redis + PostgreSQL, through the store and script by
script. A failed acknowledgement of a committed flush batch is counted
(``ack_errors``, ``flush_errors``), logged and retried with backoff: the batch
reaches SQL exactly once and leaves the outbox.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest
from redis.asyncio import Redis

from tiered_session import Flusher, StorageUnavailableError, TieredStore
from tiered_session.hot import scripts
from tiered_session.hot.scripts import EntryField, Field, OpKind, Script, Status

from .conftest import REDIS_URL, Backend, StoreFactory, require_servers, unique_name

#: well past unpack()'s limit of about 8,000 values
BIG = 20_000


def items(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"n": i} for i in range(start, start + n)]


async def sql_rows(store: TieredStore, sid: str) -> tuple[list[int], list[Any]]:
    """The seqs and items SQL holds for a session, in seq order."""
    rows = await store.sql.latest(sid, None, None)
    return [int(q) for q, _ in rows], [json.loads(d) for _, d in rows]


async def assert_in_sql_once(store: TieredStore, sid: str, expected: list[Any]) -> None:
    seqs, got = await sql_rows(store, sid)
    assert got == expected
    assert seqs == sorted(set(seqs))  # each seq once, ascending


async def behind_ops(store: TieredStore, sid: str) -> int:
    return int(await store.hot.redis.hget(store.session_keys(sid).meta, Field.BEHIND_OPS) or 0)


# ---------------------------------------------------------------------- through the store
async def test_an_add_batch_of_20000_items(make_store: StoreFactory) -> None:
    store = make_store(hot_items=100)
    async with store:
        s = store.session("big-batch")
        await s.add_items(items(BIG))
        await s.add_items(items(1, BIG))  # and a plain one after it
        assert await s.get_items(limit=100) == items(100, BIG + 1 - 100)
        await store.flush()
        assert await s.get_items() == items(BIG + 1)
        await assert_in_sql_once(store, "big-batch", items(BIG + 1))
        assert await s.pop_item() == {"n": BIG}
        await s.add_items(items(BIG, 100_000))  # a second big batch on a trimmed list
        await store.flush()
        expected = items(BIG) + items(BIG, 100_000)
        assert await s.get_items() == expected
        await assert_in_sql_once(store, "big-batch", expected)
        assert await behind_ops(store, "big-batch") == 0
        assert store.counters.flush_errors == 0
        assert store.counters.ack_errors == 0


async def test_a_hot_window_of_20000_items(make_store: StoreFactory) -> None:
    store = make_store(hot_items=BIG)
    async with store:
        s = store.session("big-window")
        for batch in (items(500), items(BIG, 500), items(500, BIG + 500)):
            await s.add_items(batch)
        everything = items(BIG + 1000)
        await store.flush()
        hits = store.counters.cache_hits
        assert await s.get_items(limit=BIG) == everything[-BIG:]
        assert store.counters.cache_hits == hits + 1  # served by Redis
        assert await s.get_items() == everything
        await assert_in_sql_once(store, "big-window", everything)
        # Redis keeps exactly the window once SQL has everything.
        k = store.session_keys("big-window")
        assert await store.hot.redis.llen(k.items) == BIG + 1  # the header and the window

        await store.evict("big-window")  # the next read installs 20,000 items from SQL
        misses = store.counters.cache_misses
        assert await s.get_items(limit=BIG) == everything[-BIG:]
        assert store.counters.cache_misses == misses + 1
        assert await s.get_items() == everything

        # Compaction replaces a tail of 19,999 items with 19,999 others.
        snap = await s._get_compaction_snapshot(BIG - 1)
        assert snap is not None
        assert snap.items == everything[-(BIG - 1) :]
        new = items(BIG - 1, 100_000)
        assert await snap.replace_suffix(0, new)
        expected = everything[: -(BIG - 1)] + new
        assert await s.get_items() == expected
        assert await s.get_items(limit=BIG) == expected[-BIG:]
        await store.flush()
        await assert_in_sql_once(store, "big-window", expected)
        assert await behind_ops(store, "big-window") == 0
        assert store.counters.flush_errors == 0
        assert store.counters.ack_errors == 0


async def _fill_outbox(store: TieredStore, sessions: int, per_session: int) -> None:
    """``sessions * per_session`` write-behind entries, one add_items call each."""
    for i in range(per_session):
        for j in range(sessions):
            await store.session(f"s{j}").add_items([{"s": j, "n": i}])


# (fakeredis + SQLite in memory, and the real servers: the SQLite file adds nothing here)
@pytest.mark.parametrize("backend_kind", ["fake-mem", "real"], indirect=True)
async def test_a_flush_batch_of_20000_entries(backend: Backend) -> None:
    store = backend.store(
        write_mode="behind", flush_batch_size=BIG, outbox_shards=1, run_flusher=False
    )
    sessions, per_session = 500, BIG // 500
    async with store:
        await _fill_outbox(store, sessions, per_session)
        await store.session("s0").add_items([{"s": 0, "n": per_session}])  # one over the batch
        assert (await store.stats())["backlog"] == BIG + 1
        flusher = Flusher(store)
        try:
            assert await flusher.drain(timeout=120) == BIG + 1
        finally:
            await flusher.release()
        c = store.counters
        assert (c.flush_batches, c.flushed_entries) == (2, BIG + 1)  # 20,000, then 1
        assert (c.flush_errors, c.ack_errors) == (0, 0)
        assert (await store.stats())["backlog"] == 0
        for j in range(sessions):
            n = per_session + 1 if j == 0 else per_session
            await assert_in_sql_once(store, f"s{j}", [{"s": j, "n": i} for i in range(n)])
            assert await behind_ops(store, f"s{j}") == 0
        for sh in store.keys.all_shards():
            assert (await store.hot.redis.xpending(sh.outbox, "flushers"))["pending"] == 0


async def drain_with_one_failed_ack(store: TieredStore, *, reply_lost: bool = False) -> int:
    """Drain the outbox while the first ack fails (before it runs, or after: its reply lost).

    Returns how many acks were sent to Redis.
    """
    ack, calls = store.hot.ack, [0]

    async def failing_once(keys: Any, args: Any) -> int:
        calls[0] += 1
        if calls[0] == 1:
            if reply_lost:
                await ack(keys, args)
            raise StorageUnavailableError("simulated: the acknowledgement failed")
        return await ack(keys, args)

    store.hot.ack = failing_once  # type: ignore[method-assign]
    flusher = Flusher(store)
    try:
        await flusher.drain(timeout=10)
    finally:
        del store.hot.ack
        await flusher.release()
    return calls[0]


@pytest.mark.parametrize("reply_lost", [False, True], ids=["refused", "reply-lost"])
async def test_a_failed_acknowledgement_is_counted_logged_and_retried(
    backend: Backend, reply_lost: bool, caplog: pytest.LogCaptureFixture
) -> None:
    store = backend.store(write_mode="behind", outbox_shards=1, run_flusher=False)
    async with store:
        await _fill_outbox(store, 3, 4)  # one batch of 12 entries
        with caplog.at_level(logging.WARNING, logger="tiered_session.flusher"):
            sent = await drain_with_one_failed_ack(store, reply_lost=reply_lost)
        assert sent == (1 if reply_lost else 2)  # acknowledged once in Redis either way
        assert (store.counters.ack_errors, store.counters.flush_errors) == (1, 1)
        assert (await store.stats())["ack_errors"] == 1
        assert any("acknowledg" in r.getMessage() for r in caplog.records)
        assert (await store.stats())["backlog"] == 0
        for j in range(3):
            expected = [{"s": j, "n": i} for i in range(4)]
            await assert_in_sql_once(store, f"s{j}", expected)
            assert await behind_ops(store, f"s{j}") == 0
            assert await store.session(f"s{j}").get_items() == expected


@pytest.mark.parametrize(
    "backend_kind",
    ["fake-mem", "real"],
    indirect=True,
)
async def test_a_committed_batch_of_20000_rows_is_replayed_after_a_failed_ack(
    backend: Backend,
) -> None:
    store = backend.store(write_mode="behind", outbox_shards=1, run_flusher=False)
    async with store:
        await store.session("r").add_items(items(BIG))
        assert await drain_with_one_failed_ack(store) == 2
        assert (store.counters.ack_errors, store.counters.flush_errors) == (1, 1)
        assert (await store.stats())["backlog"] == 0
        await assert_in_sql_once(store, "r", items(BIG))
        assert await behind_ops(store, "r") == 0


# ---------------------------------------------------------------------- script by script
class Hot:
    """One session's (and its shard's) keys under a unique prefix, and script calls."""

    def __init__(self, r: Redis, prefix: str) -> None:
        self.r = r
        tag = f"{prefix}:{{s0}}"
        self.meta, self.items = f"{tag}:m:x", f"{tag}:l:x"
        self.reserved, self.gen = f"{tag}:h:x", f"{tag}:g:x"
        self.outbox, self.inflight, self.index = f"{tag}:outbox", f"{tag}:inflight", f"{tag}:idx"
        self.lease = f"{tag}:lease"
        self.write = [self.meta, self.items, self.reserved, self.outbox, self.inflight, self.index]
        self.evict_keys = [self.meta, self.items, self.reserved, self.gen]
        self.settle_keys = [self.meta, self.items, self.reserved, self.inflight, self.outbox]

    async def run(self, script: Script, keys: list[str], *args: Any) -> Any:
        return await self.r.evalsha(script.sha, len(keys), *keys, *args)

    async def warm(self, n: int, floor: int, full: int, *entries: str) -> Any:
        return await self.run(scripts.WARM, self.evict_keys, n, floor, full, 0, "0", *entries)

    async def add(self, mode: str, *datas: str, window: int = 100) -> Any:
        return await self.run(scripts.ADD, self.write, mode, window, 0, 0, "x", 7, *datas)

    async def listed(self) -> list[bytes]:
        return list(await self.r.lrange(self.items, 1, -1))


def envs(first: int, n: int, mark: str = "") -> list[str]:
    return [f"{mark}{q}|j{q}" for q in range(first, first + n)]


def datas(first: int, n: int) -> list[str]:
    return [f"j{q}" for q in range(first, first + n)]


def encoded(values: list[str]) -> list[bytes]:
    return [v.encode() for v in values]


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.servers)])
async def hot(request: pytest.FixtureRequest) -> AsyncIterator[Hot]:
    if request.param == "real":
        require_servers()
        r: Redis = Redis.from_url(REDIS_URL, decode_responses=False)
    else:
        r = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=False)
    prefix = unique_name("size")
    for s in scripts.ALL:
        await r.script_load(s.source)
    try:
        yield Hot(r, prefix)
    finally:
        keys = [k async for k in r.scan_iter(match=f"{prefix}:*")]
        for i in range(0, len(keys), 1000):
            await r.delete(*keys[i : i + 1000])
        await r.aclose()


async def test_warm_and_read_a_window_of_20000(hot: Hot) -> None:
    assert await hot.warm(BIG, 1, 1, *envs(1, BIG)) == Status.OK
    assert await hot.listed() == encoded(envs(1, BIG))
    assert await hot.run(scripts.READ, [hot.meta, hot.items], -1) == [1, 1, encoded(envs(1, BIG))]
    assert await hot.run(scripts.READ, [hot.meta, hot.items], BIG) == [1, 1, encoded(envs(1, BIG))]


async def test_refill_20000_older_items(hot: Hot) -> None:
    assert await hot.warm(BIG, BIG + 1, 0) == Status.OK  # seqs 1..BIG live in SQL only
    older = list(reversed(envs(1, BIG)))  # descending, as the store sends them
    assert await hot.run(scripts.REFILL, [hot.meta, hot.items], BIG + 1, 1, 1, *older) == Status.OK
    assert await hot.r.lindex(hot.items, 0) == b"#1|1"
    assert await hot.listed() == encoded(envs(1, BIG))


async def more_entries(hot: Hot, n: int) -> None:
    """``n`` more outbox entries (pops, as far as the ack knows) of the session."""
    pipe = hot.r.pipeline(transaction=False)
    for q in range(n):
        pipe.xadd(hot.outbox, {EntryField.OP: OpKind.POP, EntryField.SEQ: q})
    await pipe.execute()
    await hot.r.hincrby(hot.meta, Field.BEHIND_OPS, n)


async def test_add_20000_behind_then_acknowledge_20000_entries(hot: Hot) -> None:
    assert await hot.warm(0, 1, 1) == Status.OK
    assert await hot.add("b", *datas(1, BIG), window=10) == [1]  # one entry of 20,000 items
    assert await hot.listed() == encoded(envs(1, BIG))  # not in SQL yet: nothing trimmed
    [(_, entry)] = await hot.r.xrange(hot.outbox)
    assert len(entry[EntryField.LENGTHS].split(b",")) == BIG
    assert entry[EntryField.DATA] == "".join(datas(1, BIG)).encode()
    await more_entries(hot, BIG - 1)
    assert await hot.r.hget(hot.meta, Field.BEHIND_OPS) == str(BIG).encode()
    await hot.r.xgroup_create(hot.outbox, "g", id="0")
    assert await hot.run(scripts.LEASE, [hot.lease], "me", 60_000) == Status.OK
    fread = [hot.lease, hot.outbox]
    got = await hot.run(scripts.FREAD, fread, "me", "g", "me", BIG, ">", 0)
    assert len(got) == BIG
    ids = [e[0] for e in got]
    ack = [hot.outbox, hot.lease, hot.meta, hot.items, hot.reserved]
    args = ["g", 10, 0, "me", BIG, *ids, BIG, BIG, 0]
    assert await hot.run(scripts.ACK, ack, *args) == Status.OK
    assert await hot.r.xlen(hot.outbox) == 0
    assert (await hot.r.xpending(hot.outbox, "g"))["pending"] == 0
    assert await hot.r.hget(hot.meta, Field.BEHIND_OPS) == b"0"
    assert await hot.listed() == encoded(envs(BIG - 9, 10))  # trimmed to the window


async def test_a_flusher_claims_20000_pending_entries(hot: Hot) -> None:
    assert await hot.warm(0, 1, 1) == Status.OK
    await more_entries(hot, BIG)
    await hot.r.xgroup_create(hot.outbox, "g", id="0")
    assert await hot.run(scripts.LEASE, [hot.lease], "old", 60_000) == Status.OK
    fread = [hot.lease, hot.outbox]
    assert len(await hot.run(scripts.FREAD, fread, "old", "g", "old", BIG, ">", 0)) == BIG
    await hot.r.delete(hot.lease)  # the old flusher vanished; a new one takes over
    assert await hot.run(scripts.LEASE, [hot.lease], "new", 60_000) == Status.OK
    got = await hot.run(scripts.FREAD, fread, "new", "g", "new", BIG, "0", 1)
    assert len(got) == BIG


async def test_a_write_through_add_of_20000_settled_or_rolled_back(hot: Hot) -> None:
    assert await hot.warm(0, 1, 1) == Status.OK
    assert await hot.add("t", *datas(1, BIG)) == [1, 0]
    assert await hot.listed() == encoded(envs(1, BIG, "~"))
    assert await hot.r.scard(hot.reserved) == BIG
    op = [f"a|1|{BIG}|x", 1, 100, "a", 1, BIG, "x"]
    assert await hot.run(scripts.SETTLE, hot.settle_keys, *op) == Status.OK
    assert await hot.listed() == encoded(envs(BIG - 99, 100))  # kept, then trimmed
    assert await hot.r.scard(hot.reserved) == 0
    assert await hot.r.hget(hot.meta, Field.RESERVED_COUNT) == b"0"
    # A second batch of 20,000 whose commit failed: its pending entries are removed.
    assert await hot.add("t", *datas(BIG + 1, BIG)) == [BIG + 1, 0]
    op = [f"a|{BIG + 1}|{BIG}|x", 0, 100, "a", BIG + 1, BIG, "x"]
    assert await hot.run(scripts.SETTLE, hot.settle_keys, *op) == Status.OK
    assert await hot.listed() == encoded(envs(BIG - 99, 100))
    assert await hot.r.scard(hot.reserved) == 0


async def test_recovery_finishes_a_write_through_add_of_20000(hot: Hot) -> None:
    assert await hot.warm(0, 1, 1) == Status.OK
    assert await hot.add("t", *datas(1, BIG), window=BIG) == [1, 0]
    recover = [hot.meta, hot.items, hot.reserved, hot.outbox, hot.inflight]
    assert await hot.run(scripts.RECOVER, recover, f"a|1|{BIG}|x", "x", 1, BIG) == Status.OK
    assert await hot.listed() == encoded(envs(1, BIG))
    assert await hot.r.scard(hot.reserved) == 0


async def test_a_clear_keeps_20000_entries_reserved_after_it_began(hot: Hot) -> None:
    assert await hot.warm(0, 1, 1) == Status.OK
    assert await hot.add("b", "j1") == [1]
    assert await hot.add("t", *datas(2, BIG)) == [2, 0]  # reserved after the clear began
    got = await hot.run(scripts.CLEAR, hot.write, "b", "x", 7, 1)
    assert got[:2] == [Status.OK, BIG + 1]
    assert sorted(int(q) for q in got[2:]) == list(range(2, BIG + 2))
    assert await hot.listed() == encoded(envs(2, BIG, "~"))
    [(_, entry)] = (await hot.r.xrange(hot.outbox))[1:]
    assert len(entry[EntryField.KEEP].split(b",")) == BIG


async def test_replace_a_tail_of_20000_with_20000(hot: Hot) -> None:
    assert await hot.warm(BIG, 1, 1, *envs(1, BIG)) == Status.OK
    args = ["x", 7, BIG, BIG, *envs(1, BIG), *datas(BIG + 1, BIG)]
    got = await hot.run(scripts.REPLACE, hot.write, *args)
    assert got[0] == Status.OK
    assert await hot.listed() == encoded(envs(BIG + 1, BIG))
    assert await hot.r.hget(hot.meta, Field.LAST_SEQ) == str(2 * BIG).encode()


async def test_evict_and_drop_a_session_of_20000(hot: Hot) -> None:
    assert await hot.warm(BIG, 1, 1, *envs(1, BIG)) == Status.OK
    assert await hot.run(scripts.EVICT, hot.evict_keys) == Status.OK
    assert not await hot.r.exists(hot.meta, hot.items)
    assert await hot.warm(BIG, 1, 1, *envs(1, BIG)) == Status.STALE_SNAPSHOT
    await hot.r.delete(hot.gen)
    assert await hot.warm(BIG, 1, 1, *envs(1, BIG)) == Status.OK
    drop = [hot.meta, hot.items, hot.reserved, hot.index, hot.gen]
    assert await hot.run(scripts.DROP, drop, "x", 10**12) == [Status.OK, BIG]
    assert not await hot.r.exists(hot.meta, hot.items)
