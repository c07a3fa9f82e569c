"""Redis Cluster: every script touches one slot, sessions spread over the nodes.

The test starts its own three-node cluster on free loopback ports (a temporary
directory each) and stops the servers by PID afterwards.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster
from sqlalchemy.ext.asyncio import create_async_engine

from tiered_session import TieredStore

from .conftest import REQUIRE, unique_name
from .test_differential import _run

pytestmark = pytest.mark.servers


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    """Ports whose cluster bus port (+10000) is free too."""
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < n:
        port = rng.randrange(20000, 30000)
        if port not in ports and _port_free(port) and _port_free(port + 10000):
            ports.append(port)
    return ports


@pytest.fixture(scope="module")
def cluster_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        if REQUIRE:
            pytest.fail("redis-server/redis-cli not installed")
        pytest.skip("redis-server/redis-cli not installed")
    base: Path = tmp_path_factory.mktemp("cluster")
    ports = _free_ports(3)
    procs = []
    try:
        for port in ports:
            d = base / str(port)
            d.mkdir()
            procs.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(d),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in ports:
            _wait_ping(port)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *[f"127.0.0.1:{p}" for p in ports],
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + 20
        while (
            b"cluster_state:ok"
            not in subprocess.run(
                ["redis-cli", "-p", str(ports[0]), "cluster", "info"], capture_output=True
            ).stdout
        ):
            assert time.monotonic() < deadline, "cluster did not come up"
            time.sleep(0.2)
        yield ports
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def _wait_ping(port: int) -> None:
    deadline = time.monotonic() + 10
    while (
        subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout
        != b"PONG\n"
    ):
        assert time.monotonic() < deadline, f"redis-server on {port} did not start"
        time.sleep(0.05)


@pytest.mark.parametrize("mode", ["through", "behind"])
async def test_sessions_work_on_a_cluster(
    cluster_ports: list[int], tmp_path: Path, mode: str
) -> None:
    rc = RedisCluster(host="127.0.0.1", port=cluster_ports[0], decode_responses=False)
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    name = unique_name()
    opts = dict(key_prefix=name, write_mode=mode, hot_items=3, create_tables=True)
    stores = [TieredStore(redis=rc, engine=engine, **opts) for _ in range(2)]
    try:
        await _run(stores, seed=5, steps=150)
        # Every key of a session hashes to its shard's slot; shards spread over the nodes.
        nodes = set()
        for sid in ("a", "b", "c", "d", "e", "f", "g", "h"):
            await stores[0].session(sid).add_items([{"n": sid}])
            k = stores[0].keys.session(sid)
            keys = [k.meta, k.items, k.reserved, k.shard.outbox, k.shard.inflight, k.shard.dead]
            slots = {rc.keyslot(key) for key in keys}
            assert len(slots) == 1
            nodes.add(rc.get_node_from_key(k.meta).name)
        assert len(nodes) > 1
        await stores[0].flush(timeout=20)
        for sid in ("a", "h"):
            await stores[1].evict(sid)
            assert await stores[1].session(sid).get_items() == [{"n": sid}]
    finally:
        for st in stores:
            await st.aclose()
        await rc.aclose()
        await engine.dispose()
