"""One store, many event loops: ``asyncio.run`` per call, threads with loops of their own.

Scripts, notebook helpers, Celery tasks and ``Runner.run_sync`` each run a
fresh event loop per call, and thread-per-request servers run one loop per
thread. Connections belong to the loop that opened them, so the store keeps
clients per loop (:mod:`tiered_session.ops.runtime`). These tests are
synchronous on purpose: each loop is made and closed by the test itself.

Backends: fakeredis + in-memory SQLite (the embedded default), fakeredis +
a SQLite file (clients passed in), and the real Redis + PostgreSQL, both
from URLs and passed in as clients.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tiered_session import TieredStore

from .conftest import PG_URL, REDIS_URL, require_servers, unique_name
from .support import message

KINDS = ["fake-mem", "fake-file", "real-url", "real-clients"]


class Target:
    """Stores on one backend for one test; drops what they wrote at the end."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.name = unique_name("loops")
        self.server = fakeredis.FakeServer()
        self.file = tmp_path / f"{self.name}.db"

    def options(self, **options: Any) -> dict[str, Any]:
        return {
            "key_prefix": self.name,
            "sessions_table": f"{self.name}_s",
            "messages_table": f"{self.name}_m",
            "create_tables": True,
            **options,
        }

    def store(self, **options: Any) -> TieredStore:
        store = self._store(**options)
        store.target = self  # type: ignore[attr-defined]
        return store

    def _store(self, **options: Any) -> TieredStore:
        opts = self.options(**options)
        if self.kind == "fake-mem":
            return TieredStore(**opts)
        if self.kind == "fake-file":
            redis = fakeredis.FakeAsyncRedis(server=self.server, decode_responses=False)
            engine = create_async_engine(f"sqlite+aiosqlite:///{self.file}")
            return TieredStore(redis=redis, engine=engine, owns_clients=True, **opts)
        if self.kind == "real-url":
            return TieredStore.from_url(REDIS_URL, PG_URL, **opts)
        redis = Redis.from_url(REDIS_URL, decode_responses=False)
        return TieredStore(
            redis=redis, engine=create_async_engine(PG_URL), owns_clients=True, **opts
        )

    async def drop(self) -> None:
        if not self.kind.startswith("real"):
            return
        redis = Redis.from_url(REDIS_URL, decode_responses=False)
        keys = [k async for k in redis.scan_iter(match=f"{self.name}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        engine = create_async_engine(PG_URL)
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP TABLE IF EXISTS "{self.name}_m" CASCADE'))
            await conn.execute(text(f'DROP TABLE IF EXISTS "{self.name}_s" CASCADE'))
        await engine.dispose()


@pytest.fixture(params=KINDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    kind: str = request.param
    if kind.startswith("real"):
        require_servers()
    t = Target(kind, tmp_path)
    yield t
    asyncio.run(t.drop())


@pytest.fixture(params=["through", "behind"])
def mode(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


def in_sql(store: TieredStore, session_id: str) -> list[Any]:
    """What SQL holds for a session, read on a loop of its own (no flush first).

    Read with the store's own engine where the database lives in it (in-memory
    SQLite), else with an engine of the test's own (the store may be closed).
    """
    target: Target = store.target  # type: ignore[attr-defined]

    async def read() -> list[Any]:
        if target.kind == "fake-mem":
            rows = await store.sql.latest(session_id, None, None)
            return [json.loads(data) for _, data in rows]
        url = f"sqlite+aiosqlite:///{target.file}" if target.kind == "fake-file" else PG_URL
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                found = await conn.execute(
                    text(
                        f'SELECT message_data FROM "{target.name}_m" '
                        "WHERE session_id = :s ORDER BY seq"
                    ),
                    {"s": session_id},
                )
                return [json.loads(r[0]) for r in found]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_asyncio_run_per_call(target: Target, mode: str) -> None:
    store = target.store(write_mode=mode, hot_items=4)
    s = store.session("per-call")
    for i in range(6):
        asyncio.run(s.add_items([message(i)]))
    assert asyncio.run(s.get_items()) == [message(i) for i in range(6)]
    assert asyncio.run(s.get_items(limit=2)) == [message(4), message(5)]
    assert asyncio.run(s.pop_item()) == message(5)
    asyncio.run(store.evict("per-call"))  # the next read comes from SQL, on another loop
    assert asyncio.run(s.get_items()) == [message(i) for i in range(5)]
    assert in_sql(store, "per-call") == [message(i) for i in range(5)]
    asyncio.run(store.aclose())


def test_write_behind_drains_when_a_loop_ends(target: Target) -> None:
    """What a loop accepted is in SQL once the loop has ended: no flush() called."""
    store = target.store(write_mode="behind")
    s = store.session("drained")
    asyncio.run(s.add_items([message(1), message(2)]))
    assert in_sql(store, "drained") == [message(1), message(2)]
    asyncio.run(s.add_items([message(3)]))  # the next loop runs a flusher of its own
    assert in_sql(store, "drained") == [message(1), message(2), message(3)]
    asyncio.run(store.aclose())


def test_a_second_loop_is_reported_once_in_write_behind(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    store = target.store(write_mode="behind")
    with caplog.at_level(logging.WARNING, logger="tiered_session"):
        for i in range(3):
            asyncio.run(store.session("warned").add_items([message(i)]))
        asyncio.run(store.aclose())
    said = [r.getMessage() for r in caplog.records if "more than one event loop" in r.message]
    assert len(said) == 1, said
    assert "flush()" in said[0]


def test_threads_with_their_own_loops_share_one_store(target: Target, mode: str) -> None:
    store = target.store(write_mode=mode, hot_items=8)
    errors: list[BaseException] = []
    per_thread = 15

    def worker(n: int) -> None:
        async def run() -> None:
            own = store.session(f"own-{n}")
            for i in range(per_thread):
                await own.add_items([message(i)])
                await store.session("shared").add_items([{"role": "user", "content": f"{n}:{i}"}])
            assert await own.get_items() == [message(i) for i in range(per_thread)]

        try:
            asyncio.run(run())
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors

    async def check() -> list[Any]:
        await store.flush(timeout=30)
        return await store.session("shared").get_items()

    shared = asyncio.run(check())
    assert len(shared) == 3 * per_thread
    for n in range(3):  # each thread's items, in its order, once
        mine = [m["content"] for m in shared if m["content"].startswith(f"{n}:")]
        assert mine == [f"{n}:{i}" for i in range(per_thread)]
    assert in_sql(store, "shared") == shared
    asyncio.run(store.aclose())


def test_aclose_from_another_loop_closes_a_running_loop_s_clients(target: Target) -> None:
    """A loop kept running in a thread: aclose() from the main thread closes its clients there."""
    store = target.store(write_mode="behind")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        on_thread = asyncio.run_coroutine_threadsafe(
            store.session("far").add_items([message(1)]), loop
        )
        on_thread.result(30)
        far = asyncio.run_coroutine_threadsafe(_current(store), loop).result(30)
        asyncio.run(store.session("near").add_items([message(2)]))
        asyncio.run(store.flush(timeout=10))  # the flusher runs on the thread's loop
        assert in_sql(store, "near") == [message(2)]
        assert not far.closing
        asyncio.run(store.aclose())
        assert far.closing and store.closed
        if target.kind != "fake-mem":  # (an in-memory database ends with its store)
            assert in_sql(store, "far") == [message(1)]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _current(store: TieredStore) -> Any:
    return store.runtimes.current()


@pytest.mark.filterwarnings(
    # Runner.run_sync keeps its loop open after finalizing async generators, so
    # asyncio warns of every later one, SQLAlchemy's ``engine.begin()`` included.
    "ignore:asynchronous generator .* was scheduled after loop.shutdown_asyncgens:ResourceWarning"
)
def test_runner_run_sync_repeated(target: Target, mode: str) -> None:
    agents = pytest.importorskip("agents")
    from agents.testing import ScriptedModel, assistant_message

    agents.set_tracing_disabled(True)
    store = target.store(write_mode=mode)
    session = store.session("run-sync")
    model = ScriptedModel([[assistant_message(f"answer {i}")] for i in range(3)])
    agent = agents.Agent(name="assistant", model=model)
    try:
        for i in range(3):  # each on the thread's default loop, kept open between runs
            result = agents.Runner.run_sync(agent, f"question {i}", session=session)
            assert result.final_output == f"answer {i}"
    finally:
        run_sync_loop = _default_loop()
    # asyncio.run from here on: the other loop's clients are closed on their loop
    history = asyncio.run(session.get_items())
    asyncio.run(store.aclose())
    run_sync_loop.close()
    assert [h.get("content") for h in history if h.get("role") == "user"] == [
        f"question {i}" for i in range(3)
    ]
    assert len(history) == 6
    if target.kind != "fake-mem":
        assert in_sql(store, "run-sync") == history  # aclose() drained the outbox


def _default_loop() -> asyncio.AbstractEventLoop:
    """The loop Runner.run_sync left open (the SDK never closes it)."""
    policy = asyncio.get_event_loop_policy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loop = policy.get_event_loop()
    policy.set_event_loop(None)
    return loop


def test_loops_closed_without_finalizing_close_their_clients_first(
    target: Target, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``run_until_complete`` then ``close()`` on threads (no shutdown_asyncgens)."""
    store = target.store(write_mode=mode)
    s = store.session("closed-loops")

    def add(i: int) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(s.add_items([message(i)]))
        finally:
            loop.close()

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        with ThreadPoolExecutor(max_workers=5) as pool:
            for f in [pool.submit(add, i) for i in range(10)]:
                f.result(60)
        got = asyncio.run(s.get_items())
        assert sorted(m["content"] for m in got) == sorted(message(i)["content"] for i in range(10))
        if mode == "behind":  # each loop drained what it accepted before it closed
            assert len(in_sql(store, "closed-loops")) == 10
        asyncio.run(store.aclose())
    assert "destroyed but it is pending" not in caplog.text
