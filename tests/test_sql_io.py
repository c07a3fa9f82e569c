"""The PostgreSQL hot path: connections kept between calls, on real PostgreSQL.

Hot statements (the write-through insert and pop, the limit-aware read) run on
a few connections kept checked out of the engine's pool. These tests pin down
what that must keep: the pool stays mostly free for transactions however many
stores share the engine, every kept connection goes back on close, and a
connection the server closed while it was kept is never used.
"""

from __future__ import annotations

import asyncio

import asyncpg  # type: ignore[import-untyped]
import pytest

from tiered_session import TieredStore

from .conftest import PG_URL, Backend
from .support import short as msg

pytestmark = pytest.mark.servers


async def test_stores_on_one_engine_keep_a_few_connections_and_return_them(
    real_backend: Backend,
) -> None:
    b = real_backend
    pool = b.engine.pool
    size = pool.size()  # type: ignore[attr-defined]
    stores = [b.store(write_mode="through") for _ in range(6)]
    for st in stores:
        await st.start()
    for turn in range(3):
        await asyncio.gather(
            *(
                st.session(f"k{i}-{j}").add_items([msg(turn)])
                for i, st in enumerate(stores)
                for j in range(8)
            )
        )
    driver = stores[0].sql.driver
    assert driver.kept_set is stores[-1].sql.driver.kept_set  # one set per engine
    assert 1 <= driver.kept <= max(1, min(4, size // 2))
    assert pool.checkedout() == driver.kept  # type: ignore[attr-defined]
    # A transaction on the engine still finds a free connection at once.
    async with asyncio.timeout(5):
        await stores[0].flush()
        assert await stores[0].session("k0-0").get_items() == [msg(0), msg(1), msg(2)]
    for st in stores:
        await st.aclose()
    assert pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_kept_connection_the_server_closed_is_never_used(real_backend: Backend) -> None:
    """A write on a connection the server closed would fail without having been tried."""
    store = real_backend.store(write_mode="through")
    s = store.session("killed")
    await s.add_items([msg(0)])
    (pg,) = store.sql.driver.kept_connections
    old_pid = pg.get_server_pid()
    admin = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", old_pid)
    finally:
        await admin.close()
    for _ in range(100):  # the event loop sees the connection close
        if pg.is_closed():
            break
        await asyncio.sleep(0.01)
    await s.add_items([msg(1)])  # no error: a fresh connection took the statement
    assert await s.get_items() == [msg(0), msg(1)]
    assert [p.get_server_pid() for p in store.sql.driver.kept_connections] != [old_pid]


async def test_from_url_pool_hands_out_the_most_recent_connection(real_backend: Backend) -> None:
    b = real_backend
    store = TieredStore.from_url(b.redis_url, b.sql_url, **b.options())
    try:
        # Returned in the order c2, c1: a LIFO pool hands c1 out next, a FIFO one c2.
        c1, c2 = await store.engine.connect(), await store.engine.connect()
        pid = {}
        for name, c in (("c1", c1), ("c2", c2)):
            raw = await c.get_raw_connection()
            pid[name] = raw.driver_connection.get_server_pid()
        await c2.close()
        await c1.close()
        async with store.engine.connect() as c3:
            raw = await c3.get_raw_connection()
            assert raw.driver_connection.get_server_pid() == pid["c1"]
    finally:
        await store.aclose()
