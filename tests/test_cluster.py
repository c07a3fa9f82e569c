"""Redis Cluster: from a URL to any node or an injected client, every script on one slot.

The module starts its own three-master cluster on free loopback ports (a
temporary directory each, see :mod:`tests.cluster_support`) and stops the
servers by PID afterwards. Each behaviour runs twice: with a ``RedisCluster``
passed in, and with a store built from ``redis://<one node>`` (cluster mode
detected at start).
"""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from sqlalchemy.ext.asyncio import create_async_engine

from tiered_session import ConfigurationError, Flusher, TieredStore

from .cluster_support import LocalCluster
from .conftest import PG_URL, Backend, unique_name
from .test_differential import _run
from .test_durability import SHARDS, Procs, _compare, _sql_history

pytestmark = pytest.mark.servers

CLIENTS = ["injected", "url"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("cluster"), masters=3).start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def cluster_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    """A three-master cluster of its own, by ports (other test modules import this)."""
    c = LocalCluster(tmp_path_factory.mktemp("cluster"), masters=3).start()
    try:
        yield c.ports
    finally:
        c.stop()


class Stores:
    """Stores of one test on the cluster, closed (with their clients) at the end."""

    def __init__(self, cluster: LocalCluster, client: str, tmp: Path) -> None:
        self.cluster = cluster
        self.client = client
        self.sql_url = f"sqlite+aiosqlite:///{tmp / 'c.db'}"
        self.name = unique_name()
        self.engine = create_async_engine(self.sql_url)
        self.rc = RedisCluster(host="127.0.0.1", port=cluster.ports[0], decode_responses=False)
        self.made: list[TieredStore] = []

    def store(self, **options: Any) -> TieredStore:
        opts: dict[str, Any] = {"key_prefix": self.name, "create_tables": True, **options}
        if self.client == "url":
            store = TieredStore.from_url(self.cluster.url, self.sql_url, **opts)
        else:
            store = TieredStore(redis=self.rc, engine=self.engine, **opts)  # type: ignore[arg-type]
        self.made.append(store)
        return store

    async def close(self) -> None:
        for store in self.made:
            await store.aclose()
        await self.rc.aclose()
        await self.engine.dispose()


@pytest.fixture(params=CLIENTS)
async def stores(
    cluster: LocalCluster, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Stores]:
    s = Stores(cluster, request.param, tmp_path)
    try:
        yield s
    finally:
        await s.close()


@pytest.mark.parametrize("mode", ["through", "behind"])
async def test_sessions_work_on_a_cluster(stores: Stores, mode: str) -> None:
    pair = [stores.store(write_mode=mode, hot_items=3) for _ in range(2)]
    await _run(pair, seed=5, steps=150)
    rc = pair[0].redis
    assert isinstance(rc, RedisCluster)  # from a URL: detected at start
    # Every key of a session hashes to its shard's slot; shards spread over the nodes.
    nodes = set()
    for sid in ("a", "b", "c", "d", "e", "f", "g", "h"):
        await pair[0].session(sid).add_items([{"n": sid}])
        k = pair[0].keys.session(sid)
        keys = [k.meta, k.items, k.reserved, k.gen, k.current, k.shard.outbox, k.shard.inflight]
        keys += [k.shard.dead, k.shard.lease, k.shard.index]
        assert {rc.keyslot(key) for key in keys} == {k.shard.slot}
        nodes.add(rc.get_node_from_key(k.meta).name)
    assert len(nodes) > 1
    await pair[0].flush(timeout=20)
    for sid in ("a", "h"):
        await pair[1].evict(sid)
        assert await pair[1].session(sid).get_items() == [{"n": sid}]


async def test_the_shards_spread_evenly_over_the_masters(stores: Stores) -> None:
    store = stores.store()
    await store.start()
    assert store.keys.shards == 128  # the cluster default
    rc = store.redis
    assert isinstance(rc, RedisCluster)
    per_node = collections.Counter(
        rc.get_node_from_key(sh.outbox).name for sh in store.keys.all_shards()
    )
    assert len(per_node) == 3 and max(per_node.values()) - min(per_node.values()) <= 1, per_node
    assert await rc.get(store.keys.marker) == b"2 128"


async def test_operations_visit_every_master(stores: Stores, tmp_path: Path) -> None:
    store = stores.store(write_mode="behind")
    sids = [f"user-{i}" for i in range(30)]
    for sid in sids:
        await store.session(sid).add_items([{"role": "user", "content": sid}])
    rc = store.redis
    assert isinstance(rc, RedisCluster)
    masters = {rc.get_node_from_key(store.keys.session(s).meta).name for s in sids}
    assert len(masters) == 3
    # Pending in the outbox, then flushed: both are seen.
    assert {i["session_id"] for i in await store.list_sessions(limit=100)} == set(sids)
    stats = await store.stats()
    assert stats["items_added"] == 30 and stats["live_flushers"] >= 1
    await store.flush(timeout=20)
    assert (await store.stats())["backlog"] == 0
    assert (await store.session_stats("user-7"))["items"] == 1
    assert await store.export_jsonl(tmp_path / "out.jsonl") == 30
    assert await store.delete_session("user-7")
    assert await store.cleanup(timedelta(0)) == 29
    assert await store.list_sessions() == []


async def test_a_call_is_one_command_on_the_sessions_slot(stores: Stores) -> None:
    store = stores.store(write_mode="behind", run_flusher=False, hot_items=10)
    session = store.session("one")
    await session.add_items([{"n": 0}])
    sent: list[tuple[Any, ...]] = []
    send = store.hot.send

    async def counting(*args: Any) -> Any:
        sent.append(args)
        return await send(*args)

    store.hot.send = counting
    await session.add_items([{"n": 1}, {"n": 2}])
    assert await session.get_items(limit=2) == [{"n": 1}, {"n": 2}]
    (add, read) = sent  # one script for the add, one command (LRANGE) for the read
    slot = store.keys.session("one").shard.slot
    assert add[0] == "EVALSHA" and key_slot(add[3]) == slot
    assert read[0] == "LRANGE" and key_slot(read[1]) == slot
    # Finding the slot's master costs well under a few microseconds.
    rc = store.redis
    assert isinstance(rc, RedisCluster)
    key = store.keys.session("one").meta
    n = 20_000
    started = time.perf_counter()
    for _ in range(n):
        rc.nodes_manager.get_node_from_slot(key_slot(key))
    assert (time.perf_counter() - started) / n < 5e-6


async def test_an_idle_flusher_reads_no_shard(stores: Stores) -> None:
    store = stores.store(write_mode="behind", run_flusher=False, flush_interval=0.02)
    await store.start()
    flusher = Flusher(store)
    reads = 0
    read_entries = store.hot.read_entries

    async def counting(*args: Any) -> Any:
        nonlocal reads
        reads += 1
        return await read_entries(*args)

    store.hot.read_entries = counting  # type: ignore[method-assign,assignment]
    stop = asyncio.Event()
    task = asyncio.create_task(flusher.run(stop))
    try:
        deadline = time.monotonic() + 10
        while len(flusher.owned_shards) < store.keys.shards:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # (first reads of taken shards: their own pending entries)
        reads = 0
        await asyncio.sleep(0.5)
        assert reads == 0  # idle: one XLEN pipeline per master per tick, no script
        await store.session("x").add_items([{"n": 1}])
        deadline = time.monotonic() + 5
        while (await store.stats())["backlog"]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert reads >= 1
    finally:
        stop.set()
        await task


# ---------------------------------------------------------------------- a client of one node
async def test_a_single_node_client_on_a_cluster_is_a_configuration_error(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    sql = f"sqlite+aiosqlite:///{tmp_path / 'n.db'}"
    name = unique_name()
    # Injected: refused at start, saying what to pass.
    node = Redis(port=cluster.ports[0])
    store = TieredStore(redis=node, key_prefix=name)
    with pytest.raises(ConfigurationError, match=r"Redis Cluster.*RedisCluster"):
        await store.start()
    await store.aclose()
    await node.aclose()
    # Forced single-node from a URL: a redirection is a ConfigurationError, not an outage.
    store = TieredStore.from_url(cluster.url, sql, redis_cluster=False, key_prefix=name)
    with pytest.raises(ConfigurationError, match="this is a Redis Cluster"):
        for n in range(50):  # (some of these sessions live on another node)
            await store.session(f"s{n}").add_items([{"n": n}])
    await store.aclose()
    # ... and a flusher stops on it instead of retrying forever.
    store = TieredStore.from_url(
        cluster.url, sql, redis_cluster=False, key_prefix=name, run_flusher=False
    )
    with pytest.raises(ConfigurationError, match="this is a Redis Cluster"):
        await asyncio.wait_for(Flusher(store).run(asyncio.Event()), 10)
    await store.aclose()


async def test_the_flush_command_works_from_a_node_url(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    sql = f"sqlite+aiosqlite:///{tmp_path / 'f.db'}"
    name = unique_name()
    store = TieredStore.from_url(
        cluster.url,
        sql,
        key_prefix=name,
        write_mode="behind",
        run_flusher=False,
        create_tables=True,
    )
    async with store:
        await store.session("s").add_items([{"n": 1}])
        args = ["flush", "--once", "--redis-url", cluster.url, "--sql-url", sql]
        cmd = [sys.executable, "-m", "tiered_session", *args, "--key-prefix", name]
        done = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert (await store.stats())["backlog"] == 0
        await store.evict("s")
        assert await store.session("s").get_items() == [{"n": 1}]


async def test_a_url_cluster_store_serves_a_second_event_loop(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    sql = f"sqlite+aiosqlite:///{tmp_path / 'l.db'}"
    store = TieredStore.from_url(
        cluster.url, sql, key_prefix=unique_name(), create_tables=True, run_flusher=False
    )
    await store.session("a").add_items([{"n": 1}])

    def other_loop() -> Any:
        async def read() -> Any:
            assert isinstance(store.redis, RedisCluster)
            return await store.session("a").get_items()

        return asyncio.run(read())

    assert await asyncio.to_thread(other_loop) == [{"n": 1}]
    await store.aclose()


# ---------------------------------------------------------------------- a flusher fleet
@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    pr = Procs(tmp_path)
    try:
        yield pr
    finally:
        pr.cleanup()


class _OnCluster:
    """The CLI options of a real backend's tables, with the cluster as Redis."""

    def __init__(self, cluster: LocalCluster, b: Backend) -> None:
        self.cluster, self.b = cluster, b

    def cli_args(self) -> list[str]:
        b = self.b
        return [
            *("--redis-url", self.cluster.url, "--sql-url", PG_URL, "--key-prefix", b.prefix),
            *("--sessions-table", b.sessions_table, "--messages-table", b.messages_table),
        ]


@pytest.mark.processes
@pytest.mark.faults
async def test_flusher_processes_share_the_shards_and_survive_a_sigkill(
    cluster: LocalCluster, real_backend: Backend, procs: Procs, tmp_path: Path
) -> None:
    on = _OnCluster(cluster, real_backend)
    store = TieredStore.from_url(
        cluster.url,
        PG_URL,
        **real_backend.options(write_mode="behind", run_flusher=False, outbox_shards=SHARDS),
    )
    try:
        await store.start()  # creates the tables
        out = tmp_path / "accepted.json"
        flushers = [procs.flusher(on), procs.flusher(on)]  # type: ignore[arg-type]
        for f in flushers:
            await procs.ready(f)
        writer = procs.writer(on, out, "--sessions", "30", "--rounds", "50", "--pause", "0.03")  # type: ignore[arg-type]
        owners: collections.Counter[bytes] = collections.Counter()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # the two split the shards 4 + 4
            owners = collections.Counter(
                [o for sh in store.keys.all_shards() if (o := await store.redis.get(sh.lease))]
            )
            if sorted(owners.values()) == [SHARDS // 2, SHARDS // 2]:
                break
            await asyncio.sleep(0.1)
        assert sorted(owners.values()) == [SHARDS // 2, SHARDS // 2], owners
        # One is killed while entries stream in; a replacement takes its shards over.
        for _ in range(2000):
            if (await store.stats())["backlog"]:
                break
            await asyncio.sleep(0.01)
        flushers[0].send_signal(signal.SIGKILL)
        assert await procs.wait(flushers[0]) == -signal.SIGKILL
        flushers.append(procs.flusher(on))  # type: ignore[arg-type]
        assert await procs.wait(writer, limit=60) == 0, procs.log(writer)
        await store.flush(timeout=30)
        for f in flushers[1:]:
            await procs.ready(f)
            f.send_signal(signal.SIGTERM)
            assert await procs.wait(f) == 0, procs.log(f)
        accepted = json.loads(out.read_text())
        got = await _sql_history(store)
        assert _compare(accepted["expected"], got) == (0, 0)
        for sid, want in accepted["expected"].items():
            assert got.get(sid, []) == want, sid  # exactly once, in accepted order
        assert accepted["items"] >= 1500
    finally:
        await store.aclose()
