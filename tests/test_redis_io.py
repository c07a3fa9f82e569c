"""The lean connection pool and the one-command hot path, on real Redis.

The store sends its session commands straight over pooled connections; these
tests pin down what that path must keep: waiting (not failing) when the pool is
exhausted, a clear error after the wait, no connection leaked by cancelled
callers, and pooled connections that survive a Redis restart without failing
a call.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from tiered_session import TieredStore
from tiered_session.hot.connection import direct_pool
from tiered_session.hot.wire import LeanConnectionPool, command_sender, pack_command

from .conftest import PG_URL, REDIS_URL, Backend
from .test_faults import PrivateRedis, private_redis  # noqa: F401 - fixture

pytestmark = pytest.mark.servers

KEY = b"tiered_session_test_io:k"


@pytest.fixture
async def lean(real_backend: Backend) -> Any:
    pool = LeanConnectionPool.from_url(REDIS_URL, max_connections=4, timeout=5.0)
    client = Redis.from_pool(pool)
    await client.delete(KEY)
    try:
        yield client
    finally:
        await client.delete(KEY)
        await client.aclose()


async def test_an_exhausted_pool_makes_callers_wait_then_serves_them_all(lean: Redis) -> None:
    send = command_sender(lean, direct_pool(lean))
    replies = await asyncio.gather(*(send("RPUSH", KEY, i) for i in range(400)))
    assert sorted(replies) == list(range(1, 401))  # every call ran exactly once
    pool = lean.connection_pool
    assert isinstance(pool, LeanConnectionPool)
    assert len(pool._in_use_connections) == 0
    assert len(pool._available_connections) <= 4


async def test_waiting_past_the_timeout_is_a_clear_connection_error(real_backend: Backend) -> None:
    pool = LeanConnectionPool.from_url(REDIS_URL, max_connections=1, timeout=0.2)
    client = Redis.from_pool(pool)
    send = command_sender(client, direct_pool(client))
    try:
        blocker = asyncio.create_task(send("BLPOP", b"tiered_session_test_io:none", 1))
        await asyncio.sleep(0.05)
        with pytest.raises(RedisConnectionError, match="no Redis connection became free"):
            await send("PING")
        assert await blocker is None
        assert await send("PING") == b"PONG"  # the connection went back to the pool
    finally:
        await client.aclose()


async def test_cancelled_waiters_leak_no_connection(lean: Redis) -> None:
    send = command_sender(lean, direct_pool(lean))
    pool = lean.connection_pool
    assert isinstance(pool, LeanConnectionPool)
    tasks = [asyncio.create_task(send("RPUSH", KEY, i)) for i in range(200)]
    await asyncio.sleep(0)
    for t in tasks[::3]:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert len(pool._in_use_connections) == 0
    assert not pool._waiters
    assert await send("PING") == b"PONG"


async def test_error_replies_raise_and_keep_the_connection_usable(lean: Redis) -> None:
    send = command_sender(lean, direct_pool(lean))
    await send("SET", KEY, b"text")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await send("RPUSH", KEY, b"x")
    assert await send("GET", KEY) == b"text"


async def test_pooled_connections_survive_a_redis_restart(
    private_redis: PrivateRedis,  # noqa: F811 - fixture
    real_backend: Backend,
) -> None:
    """After a restart, no call fails on a connection the server closed while it was idle.

    A write that failed on such a connection could not tell whether it was
    applied, so the pool must notice the closed connection before sending.
    """
    for mode in ("through", "behind"):
        store = TieredStore.from_url(
            private_redis.url, PG_URL, write_mode=mode, **real_backend.options(hot_items=5)
        )
        async with store:
            sessions = [store.session(f"{mode}-{i}") for i in range(8)]
            # Eight concurrent calls leave several idle connections in the pool.
            await asyncio.gather(*(s.add_items([{"n": 0}]) for s in sessions))
            await store.flush(timeout=10)
            private_redis.kill()
            private_redis.start()
            await asyncio.sleep(0.1)  # the event loop sees the old connections close
            await asyncio.gather(*(s.add_items([{"n": 1}]) for s in sessions))
            for s in sessions:
                assert await s.get_items() == [{"n": 0}, {"n": 1}]
            for s in sessions:
                await s.clear_session()
            await store.flush(timeout=10)


def test_pack_command_writes_what_redis_py_writes() -> None:
    from redis.asyncio.connection import Connection
    from redis.exceptions import DataError

    conn = Connection()
    args = (
        "EVALSHA",
        "ab" * 20,
        2,
        b"k:1",
        "k:\u00e9",
        -7,
        1.5,
        b"",
        memoryview(b"mv"),
        b"x" * 70_000,
    )
    assert pack_command(conn.encoder.encode, args) == b"".join(
        bytes(p) for p in conn.pack_command(*args)
    )
    with pytest.raises(DataError):
        pack_command(conn.encoder.encode, ("SET", b"k", True))


async def test_commands_larger_than_one_socket_write_arrive_whole(lean: Redis) -> None:
    send = command_sender(lean, direct_pool(lean))
    big = [bytes([65 + i]) * 300_000 for i in range(4)]  # beyond the straight-write size
    replies = await asyncio.gather(*(send("RPUSH", KEY, v) for v in big))
    assert sorted(replies) == [1, 2, 3, 4]
    assert sorted(await send("LRANGE", KEY, 0, -1)) == big


async def test_the_redis_py_internals_the_adapter_uses_are_still_there(lean: Redis) -> None:
    """hot/wire.py relies on these private members of redis-py; fail loudly if they change.

    If this fails after a redis-py upgrade, widen nothing: adapt hot/wire.py to the new
    internals (or drop the direct path), then move the pin in pyproject.toml.
    """
    import importlib.metadata

    from packaging.requirements import Requirement

    pins = [r for r in importlib.metadata.requires("tiered-session") or [] if r.startswith("redis")]
    assert Requirement(pins[0]).specifier.contains(importlib.metadata.version("redis"))
    pool = lean.connection_pool
    assert isinstance(pool, LeanConnectionPool)
    assert isinstance(pool._available_connections, list)
    assert hasattr(pool._in_use_connections, "add") and hasattr(pool._in_use_connections, "discard")
    conn = await pool.get_connection()
    try:
        assert isinstance(conn._reader, asyncio.StreamReader)
        assert isinstance(conn._writer, asyncio.StreamWriter)
        assert conn in pool._in_use_connections
    finally:
        await pool.release(conn)
    assert conn in pool._available_connections
    send = command_sender(lean, direct_pool(lean))
    assert await send("PING") in (b"PONG", True)
