"""Failover: a master killed under write-behind load, with ``replica_acks`` on.

Redis replicates asynchronously, so a write a master acknowledged can die with
it. With ``replica_acks=1`` every acknowledged write is on a replica, and the
flusher commits only entries a replica holds: after the replica takes over,
nothing acknowledged is missing and no seq is handed out twice. The cluster
(three masters, one replica each, a 1 s node timeout) is the test's own.
"""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from tiered_session import (
    ConfigurationError,
    ReplicaAckError,
    StorageUnavailableError,
    StoreConfig,
    TieredStore,
)
from tiered_session._codec import decode_item

from .cluster_support import LocalCluster
from .conftest import PG_URL, REDIS_URL, Backend

pytestmark = [pytest.mark.servers, pytest.mark.faults]

SESSIONS = 24


class Writers:
    """One task per session adding numbered items one at a time, noting what was acknowledged."""

    def __init__(self, store: TieredStore) -> None:
        self.store = store
        self.acked: dict[str, list[int]] = collections.defaultdict(list)
        self.failed: collections.Counter[str] = collections.Counter()
        self.stop = asyncio.Event()
        self.tasks = [asyncio.create_task(self._one(f"s{n}")) for n in range(SESSIONS)]

    async def _one(self, sid: str) -> None:
        session = self.store.session(sid)
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                await session.add_items([{"s": sid, "i": i}])
            except StorageUnavailableError:  # (ReplicaAckError too: maybe stored, maybe not)
                self.failed[sid] += 1
                await asyncio.sleep(0.05)
                continue
            self.acked[sid].append(i)
            await asyncio.sleep(0.005)

    def acked_since(self, marks: dict[str, int]) -> int:
        """Sessions with a write acknowledged after ``marks`` (per-session counts)."""
        for t in self.tasks:
            if t.done():
                t.result()  # a writer failed on something other than an outage: say so
        return sum(len(self.acked[f"s{n}"]) > marks.get(f"s{n}", 0) for n in range(SESSIONS))

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)


async def _until(check: Any, limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def test_a_killed_master_loses_nothing_acknowledged(
    real_backend: Backend, tmp_path: Path
) -> None:
    cluster = LocalCluster(tmp_path, masters=3, replicas=1, node_timeout_ms=1000).start()
    opts = real_backend.options(
        write_mode="behind", replica_acks=1, replica_ack_timeout=0.5, hot_items=20
    )
    store = TieredStore.from_url(cluster.url, PG_URL, **opts)
    try:
        await store.start()
        rc = store.redis
        assert isinstance(rc, RedisCluster)
        writers = Writers(store)
        await asyncio.sleep(1.0)
        # The master of the most sessions dies (SIGKILL) mid-stream.
        by_master = collections.Counter(
            cluster.master_of(key_slot(store.keys.session(f"s{n}").meta)) for n in range(SESSIONS)
        )
        victim = by_master.most_common(1)[0][0]
        before = {sid: len(v) for sid, v in writers.acked.items()}
        cluster.kill(victim)
        killed_at = time.monotonic()

        async def promoted() -> bool:
            return victim not in cluster.master_ports() and len(cluster.master_ports()) == 3

        await _until(promoted, 20, "no replica took over")
        cluster.wait_ok()
        cluster.restart(victim)  # it rejoins as the new master's replica
        cluster.wait_replicas_synced()
        marks = {sid: len(v) for sid, v in writers.acked.items()}

        async def resumed() -> bool:
            return writers.acked_since(marks) == SESSIONS

        await _until(resumed, 30, f"writes did not resume: {dict(writers.failed)}")
        await writers.finish()
        down_for = time.monotonic() - killed_at
        await store.flush(timeout=60)
        lost = dups = 0
        for n in range(SESSIONS):
            sid = f"s{n}"
            rows = [decode_item(d)["i"] for _, d in await store.sql.latest(sid, None, None)]
            assert rows == sorted(set(rows)), f"{sid}: SQL order or duplicates: {rows}"
            lost += len(set(writers.acked[sid]) - set(rows))
            dups += len(rows) - len(set(rows))
            # Redis and SQL agree (what a dead master took was never committed).
            got = await store.session(sid).get_items()
            assert [item["i"] for item in got] == rows, sid
        acked = sum(len(v) for v in writers.acked.values())
        print(
            f"\nfailover: acknowledged={acked} (before the kill {sum(before.values())}) "
            f"failed calls={sum(writers.failed.values())} lost={lost} duplicates={dups} "
            f"writes resumed within {down_for:.1f}s"
        )
        assert (lost, dups) == (0, 0)
        assert sum(writers.failed.values()) > 0  # the kill was felt
    finally:
        await store.aclose()
        cluster.stop()


async def test_a_write_no_replica_confirms_fails_and_is_not_flushed(real_backend: Backend) -> None:
    # The shared test Redis has no replicas: WAIT 1 never succeeds.
    opts = real_backend.options(write_mode="behind", replica_acks=1, replica_ack_timeout=0.05)
    store = TieredStore.from_url(REDIS_URL, PG_URL, **opts)
    try:
        with pytest.raises(ReplicaAckError, match="0 of the 1 replicas"):
            await store.session("s").add_items([{"n": 1}])
        # The master took it, but a flusher commits only what replicas hold.
        with pytest.raises(TimeoutError):
            await store.flush(timeout=1)
        assert await store.sql.latest("s", None, None) == []
        assert (await store.stats())["backlog"] == 1
    finally:
        await store.aclose()


async def test_replica_acks_needs_write_behind_and_a_real_redis() -> None:
    with pytest.raises(ConfigurationError, match="write_mode='behind'"):
        StoreConfig(replica_acks=1)
    with pytest.raises(ConfigurationError, match="replica_ack_timeout"):
        StoreConfig(write_mode="behind", replica_acks=1, replica_ack_timeout=0)
    store = TieredStore(write_mode="behind", replica_acks=1)
    with pytest.raises(ConfigurationError, match="embedded Redis has none"):
        await store.start()
    await store.aclose()
