"""Guarantees beyond plain semantics: reads, memory bound, expiry, ownership, protocol."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event

from tiered_session import Flusher, StorageUnavailableError, TieredSession, TieredStore
from tiered_session.cold.tier import Op
from tiered_session.hot import scripts

from .conftest import Backend, StoreFactory
from .support import short as msg


class SqlSpy:
    """Records every SQL statement a store runs (through SQLAlchemy or asyncpg directly)."""

    def __init__(self, backend: Backend, store: TieredStore) -> None:
        self.statements: list[str] = []
        self._engine = backend.engine.sync_engine
        event.listen(self._engine, "before_cursor_execute", self._record)
        self._driver = store.sql.driver
        connection = store.sql.driver.connection
        spy = self

        class Recording:
            def __init__(self, conn: Any) -> None:
                self._conn = conn

            def __getattr__(self, name: str) -> Any:
                method = getattr(self._conn, name)

                async def call(statement: str, *args: Any) -> Any:
                    spy.statements.append(" ".join(statement.split()))
                    return await method(statement, *args)

                return call

        @contextlib.asynccontextmanager
        async def recording_connection() -> AsyncIterator[Any]:
            async with connection() as conn:
                yield Recording(conn)

        store.sql.driver.connection = recording_connection  # type: ignore[method-assign]

    def _record(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(" ".join(statement.split()))

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._record)
        del self._driver.connection  # back to the class's method


class CommandSpy:
    """Records the Redis commands a store ran on its hot path (scripts by name)."""

    def __init__(self, store: TieredStore) -> None:
        self.calls: list[str] = []
        names = {script.sha: script.name for script in scripts.ALL}
        send = store.hot.send

        async def spy(*args: Any) -> Any:
            reply = await send(*args)  # (an EVALSHA refused with NOSCRIPT is not counted)
            self.calls.append(names[args[1]] if args[0] == "EVALSHA" else str(args[0]))
            return reply

        store.hot.send = spy


async def test_hot_reads_are_one_plain_command_and_no_sql(
    make_store: StoreFactory, backend: Backend
) -> None:
    store = make_store(hot_items=50, run_flusher=False)
    s = store.session("hot")
    await s.add_items([msg(i) for i in range(1000)])
    await Flusher(store).drain()
    await s.get_items(limit=1)  # warm
    spy, commands = SqlSpy(backend, store), CommandSpy(store)
    try:
        assert await s.get_items(limit=20) == [msg(i) for i in range(980, 1000)]
        assert await s.get_items(limit=50) == [msg(i) for i in range(950, 1000)]
    finally:
        spy.close()
    assert commands.calls == ["LRANGE", "LRANGE"]  # one plain command each, no script
    assert spy.statements == []


async def test_cold_reads_push_the_limit_into_sql(
    make_store: StoreFactory, backend: Backend
) -> None:
    store = make_store(hot_items=10, run_flusher=False)
    s = store.session("cold")
    await s.add_items([msg(i) for i in range(300)])
    await Flusher(store).drain()
    await s.get_items(limit=1)
    spy, commands = SqlSpy(backend, store), CommandSpy(store)
    try:
        assert await s.get_items(limit=25) == [msg(i) for i in range(275, 300)]
    finally:
        spy.close()
    assert commands.calls == ["LRANGE"]
    selects = [st for st in spy.statements if st.upper().startswith("SELECT")]
    assert len(selects) == 1
    sql = selects[0].upper()
    assert "ORDER BY" in sql and "DESC" in sql and "LIMIT" in sql and "SEQ <" in sql


async def test_unflushed_items_stay_in_redis_then_trim(backend: Backend) -> None:
    store = backend.store(write_mode="behind", hot_items=3, run_flusher=False, hot_ttl=30)
    s = store.session("bound")
    k = store.keys.session("bound")
    await s.add_items([msg(i) for i in range(10)])
    # Read-your-writes with nothing in SQL yet, and no trimming of unflushed items.
    assert await s.get_items() == [msg(i) for i in range(10)]
    assert await s.get_items(limit=7) == [msg(i) for i in range(3, 10)]
    assert await backend.redis.llen(k.items) == 1 + 10  # the header, then the items
    assert await backend.redis.pttl(k.items) == -1  # never expires while unflushed
    assert await backend.redis.pttl(k.meta) == -1
    assert await Flusher(store).drain() == 1
    assert await backend.redis.llen(k.items) == 1 + 3  # the hot window, the rest is in SQL
    assert 0 < await backend.redis.pttl(k.meta) <= 30_000
    assert await s.get_items() == [msg(i) for i in range(10)]


async def test_idle_flushed_sessions_expire(make_store: StoreFactory, backend: Backend) -> None:
    store = make_store(hot_items=3, hot_ttl=30)
    s = store.session("ttl")
    await s.add_items([msg(1)])
    await store.flush()
    k = store.keys.session("ttl")
    await s.get_items()
    assert 0 < await backend.redis.pttl(k.meta) <= 30_000
    assert 0 < await backend.redis.pttl(k.items) <= 30_000
    await backend.redis.delete(k.meta, k.items)  # as if expired
    assert await s.get_items() == [msg(1)]


async def test_reads_refresh_the_expiry_at_most_every_quarter_ttl(
    make_store: StoreFactory, backend: Backend
) -> None:
    """A session that is only read stays hot; the refresh costs a script call rarely."""
    store = make_store(hot_items=3, hot_ttl=40, run_flusher=False)
    s = store.session("read-only")
    await s.add_items([msg(1)])
    await Flusher(store).drain()
    k = store.keys.session("read-only")
    await backend.redis.pexpire(k.meta, 1_000)  # as if the last write were 39 s ago
    await backend.redis.pexpire(k.items, 1_000)
    commands = CommandSpy(store)
    assert await s.get_items() == [msg(1)]
    assert commands.calls == ["LRANGE"]  # refreshed less than ttl/4 ago (by the write)
    store.reads.expiry.refreshed(k, time.monotonic() - 11)  # more than ttl/4 ago
    assert await s.get_items() == [msg(1)]
    assert commands.calls == ["LRANGE", "LRANGE", "touch"]
    assert 30_000 < await backend.redis.pttl(k.meta) <= 40_000
    assert 30_000 < await backend.redis.pttl(k.items) <= 40_000


async def test_concurrent_cold_start_installs_once(make_store: StoreFactory) -> None:
    writer = make_store(hot_items=4)
    s = writer.session("race")
    await s.add_items([msg(i) for i in range(9)])
    await writer.flush()
    await writer.evict("race")
    stores = [make_store(hot_items=4) for _ in range(3)]
    results = await asyncio.gather(
        *(st.session("race").get_items(limit=n) for st in stores for n in (2, 6, None)),
        *(st.session("race").add_items([msg(100 + i)]) for i, st in enumerate(stores)),
    )
    full = await writer.session("race").get_items()
    assert full[:9] == [msg(i) for i in range(9)]
    assert sorted(x["content"] for x in full[9:]) == ["m100", "m101", "m102"]
    limits = [n for _ in stores for n in (2, 6, None)]
    for r, n in zip(results[:9], limits, strict=True):
        # each read saw the history at some instant: 9 old items plus 0-3 new ones
        assert any(r == (full[:t] if n is None else full[:t][-n:]) for t in range(9, 13))


async def test_injected_clients_are_not_closed(backend: Backend) -> None:
    store = TieredStore(redis=backend.redis, engine=backend.engine, **backend.options())
    await store.session("own").add_items([msg(1)])
    await store.aclose()
    assert await backend.redis.ping()
    async with backend.engine.connect():
        pass


async def test_from_url_session_owns_its_store() -> None:
    session = TieredSession.from_url("owned", write_mode="behind")
    await session.add_items([msg(1)])
    assert await session.get_items() == [msg(1)]
    await session.aclose()
    assert session.store.closed
    async with TieredSession("ctx") as s2:
        await s2.add_items([msg(2)])
    assert s2.store.closed


def test_embedded_sessions_are_private() -> None:
    async def run() -> tuple[list[Any], list[Any]]:
        a, b = TieredSession("same"), TieredSession("same")
        await a.add_items([msg(1)])
        try:
            return await a.get_items(), await b.get_items()
        finally:
            await a.aclose()
            await b.aclose()

    assert asyncio.run(run()) == ([msg(1)], [])


def test_satisfies_the_sdk_protocol() -> None:
    from agents.memory import Session, SessionSettings

    s = TieredSession("proto", session_settings=SessionSettings(limit=2))
    assert isinstance(s, Session)

    async def run() -> list[Any]:
        await s.add_items([msg(i) for i in range(5)])
        try:
            return await s.get_items()
        finally:
            await s.aclose()

    assert asyncio.run(run()) == [msg(3), msg(4)]


def test_no_agents_import_at_run_time() -> None:
    code = (
        "import asyncio, sys\n"
        "from tiered_session import TieredSession\n"
        "async def main():\n"
        "    async with TieredSession('x', write_mode='behind') as s:\n"
        "        await s.add_items([{'a': 1}]); await s.get_items(); await s.pop_item()\n"
        "asyncio.run(main())\n"
        "assert 'agents' not in sys.modules, 'agents was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_evict_and_flush_time_out_without_a_flusher(backend: Backend) -> None:
    store = backend.store(write_mode="behind", run_flusher=False)
    await store.session("stuck").add_items([msg(1)])
    try:
        await store.evict("stuck", timeout=0.2)
    except TimeoutError as e:
        assert "flusher" in str(e)
    else:
        raise AssertionError("evict returned although nothing flushed the session")
    try:
        await store.flush(timeout=0.2)
    except TimeoutError as e:
        assert "flusher" in str(e)
    else:
        raise AssertionError("flush returned although nothing was flushed")
    assert await store.session("stuck").get_items() == [msg(1)]


@pytest.mark.servers
async def test_more_concurrent_calls_than_pooled_connections(real_backend: Backend) -> None:
    b = real_backend
    store = TieredStore.from_url(
        b.redis_url,
        b.sql_url,
        write_mode="behind",
        redis_kwargs={"max_connections": 8},
        **b.options(),
    )
    try:
        sessions = [store.session(f"burst{i}") for i in range(300)]
        await asyncio.gather(*(s.add_items([msg(i)]) for i, s in enumerate(sessions)))
        got = await asyncio.gather(*(s.get_items() for s in sessions))
        assert got == [[msg(i)] for i in range(300)]
        await store.flush()
    finally:
        await store.aclose()


@pytest.mark.servers
async def test_write_through_bursts_share_a_fixed_sql_pool(real_backend: Backend) -> None:
    """from_url gives PostgreSQL a fixed pool: no overflow connection opened and closed per call.

    More concurrent write-through adds than pooled connections wait for one, and
    the pool never holds more than pool_size connections.
    """
    b = real_backend
    store = TieredStore.from_url(b.redis_url, b.sql_url, write_mode="through", **b.options())
    opened: list[object] = []
    event.listen(store.engine.sync_engine, "connect", lambda *a: opened.append(a))
    try:
        pool = store.engine.pool
        assert pool.size() == 10  # type: ignore[attr-defined]  (no overflow: tests/test_cold.py)
        sessions = [store.session(f"tburst{i}") for i in range(64)]
        for turn in range(3):
            await asyncio.gather(*(s.add_items([msg(turn)]) for s in sessions))
        got = await asyncio.gather(*(s.get_items() for s in sessions))
        assert got == [[msg(0), msg(1), msg(2)]] * 64
        assert len(opened) <= 10
    finally:
        await store.aclose()
    custom = TieredStore.from_url(
        b.redis_url, b.sql_url, engine_kwargs={"pool_size": 3, "max_overflow": 2}, **b.options()
    )
    assert custom.engine.pool.size() == 3
    await custom.aclose()


async def test_reads_and_writes_race_evictions(make_store: StoreFactory) -> None:
    store = make_store(hot_items=4)
    s = store.session("churn")
    expected = [msg(i) for i in range(10)]
    await s.add_items(expected)
    stop = asyncio.Event()

    async def evictor() -> None:
        # Far more often than any real eviction policy, yet not on every loop tick:
        # a write that is evicted between its warm-up and its script retries, and an
        # evictor that never lets it through would starve it.
        while not stop.is_set():
            await store.evict("churn")
            await asyncio.sleep(0.003)

    async def reader() -> None:
        for _ in range(40):
            got = await s.get_items(limit=6)
            assert got == expected[-6:]

    task = asyncio.create_task(evictor())
    try:
        await asyncio.gather(reader(), reader())
        for i in range(10, 30):
            await s.add_items([msg(i)])
            expected.append(msg(i))
    finally:
        stop.set()
        await task
    assert await s.get_items() == expected


async def test_a_reused_seq_with_another_item_is_dead_lettered_not_dropped(
    backend: Backend,
) -> None:
    """Redis handing out a seq SQL already holds (it lost writes) never drops the new item.

    The idempotent insert skips the row; the flusher sees the stored item differs
    from the entry's, so it keeps the entry in the dead-letter stream instead of
    acknowledging it. A true replay (the same item) is still skipped silently.
    """
    from tiered_session.outbox.dead_letters import list_dead_letters

    store = backend.store(write_mode="behind", outbox_shards=1, max_attempts=2)
    s = store.session("lost")
    await s.add_items([msg(1), msg(2)])
    await store.flush(timeout=20)
    k = store.keys.session("lost")
    await backend.redis.hset(k.meta, b"n", 1)  # as if restored from an older snapshot
    await s.add_items([msg(99)])  # gets seq 2 again, which SQL holds with msg(2)
    await s.add_items([msg(3)])
    await store.flush(timeout=20)
    rows = await store.sql.latest("lost", None, None)
    assert [(q, json.loads(d)) for q, d in rows] == [(1, msg(1)), (2, msg(2)), (3, msg(3))]
    dead = await list_dead_letters(store.hot)
    assert [(d["session_id"], d["seq"]) for d in dead] == [("lost", "2")]
    assert "already holds a different item" in dead[0]["reason"]
    assert (await store.stats())["dead_letters"] == 1
    # Replaying an entry already applied (same item, same seq) is not a collision.
    op = Op(kind="a", session_id="lost", seq=3, rows=[rows[2]])
    async with store.sql.begin() as conn:
        await store.sql.apply(conn, [op])
    assert len(await store.sql.latest("lost", None, None)) == 3


async def test_a_session_missing_one_of_its_keys_is_rewarmed_or_refused(
    make_store: StoreFactory, backend: Backend, write_mode: str
) -> None:
    """Redis dropping one key of a session (a maxmemory eviction) never yields a wrong answer.

    With nothing pending, the session re-warms from SQL. With writes pending
    (write-behind, not flushed yet), resetting its counters could reuse seqs:
    the call is refused with an error that names the Redis setting to fix.
    """
    store = make_store(hot_items=3, run_flusher=False)
    s = store.session("half")
    k = store.keys.session("half")
    flusher = Flusher(store)
    await s.add_items([msg(i) for i in range(5)])
    await flusher.drain()
    await backend.redis.delete(k.items)  # the list is gone, the metadata hash is not
    assert await s.get_items() == [msg(i) for i in range(5)]
    assert await s.get_items(limit=2) == [msg(3), msg(4)]
    await s.add_items([msg(5)])
    assert await s.get_items(limit=2) == [msg(4), msg(5)]
    if write_mode == "behind":
        await backend.redis.delete(k.items)  # msg(5) is still only in the outbox
        with pytest.raises(StorageUnavailableError, match="maxmemory-policy noeviction"):
            await s.get_items()
        with pytest.raises(StorageUnavailableError, match="maxmemory-policy noeviction"):
            await s.add_items([msg(6)])
    await flusher.drain()
    await flusher.release()
    rows = [json.loads(d) for _, d in await store.sql.latest("half", None, None)]
    assert rows == [msg(i) for i in range(6)]
