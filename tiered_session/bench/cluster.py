r"""The Redis Cluster row: TieredSession write-behind on three local cluster masters.

:class:`TieredCluster` starts a cluster of its own (three ``redis-server
--cluster-enabled yes`` on free loopback ports, in the run's temporary
directory, joined by ``redis-cli --cluster create``), builds its store from a
URL naming one node (cluster mode detected at start), and stops the servers by
PID when it closes. :func:`cluster_vs_single` reads a results document: per
workload, the cluster row's median next to the single-node write-behind row's
(``tiered-behind``, measured in the same run, interleaved), and their ratio.

    $ python -m tiered_session.bench.cluster [--quick] [--repeats 3]

Example:
    >>> doc = {"workloads": {"add": {"title": "add", "unit": "us", "kind": "latency",
    ...     "cells": {"tiered-behind": {"p50_us": 100.0}, "tiered-cluster": {"p50_us": 110.0}}}}}
    >>> cluster_vs_single(doc)[0]["ratio"]
    1.1
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import create_async_engine

from tiered_session import TieredStore

from .env import DEFAULT_PG, DEFAULT_REDIS, Backend, BenchSession, drop_tables
from .runner import BenchOptions, run_bench

__all__ = [
    "CLUSTER",
    "LocalMasters",
    "TieredCluster",
    "cluster_options",
    "cluster_vs_single",
    "main",
]

#: the row's name
CLUSTER = "tiered-cluster"
#: the single-node row it is compared with
SINGLE = "tiered-behind"
#: what ``main`` runs
WORKLOADS = ["add", "get20", "read200", "turn", "concurrent", "pop"]


def _free_port() -> int:
    """A loopback port whose cluster bus port (+10000) is free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port > 55000:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _cli(port: int, *args: str) -> str:
    done = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=30
    )
    return done.stdout


class LocalMasters:
    """Three cluster masters without replicas on free loopback ports, stopped by PID."""

    def __init__(self, where: Path, masters: int = 3) -> None:
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            raise RuntimeError("the cluster row needs redis-server and redis-cli on PATH")
        self.where = where
        self.ports = [_free_port() for _ in range(masters)]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """A URL naming the first node."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    async def start(self) -> None:
        """Start the nodes, join them, wait until every slot is served."""
        for port in self.ports:
            self._spawn(port)
        await self._until(lambda: all(_cli(p, "ping").strip() == "PONG" for p in self.ports))
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        create = ["redis-cli", "--cluster", "create", *nodes, "--cluster-yes"]
        await asyncio.to_thread(subprocess.run, create, check=True, capture_output=True)
        await self._until(
            lambda: all("cluster_state:ok" in _cli(p, "cluster", "info") for p in self.ports)
        )

    def _spawn(self, port: int) -> None:
        d = self.where / f"node-{port}"
        d.mkdir(parents=True, exist_ok=True)
        self.procs.append(
            subprocess.Popen(
                [
                    "redis-server",
                    *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(d)),
                    *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                    *("--save", "", "--appendonly", "no"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    @staticmethod
    async def _until(done: Any, limit: float = 30.0) -> None:
        deadline = time.monotonic() + limit
        while not await asyncio.to_thread(done):
            if time.monotonic() > deadline:
                raise RuntimeError("the local Redis Cluster did not come up")
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after 10 s)."""
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class TieredCluster(Backend):
    """TieredSession write-behind on a local three-master Redis Cluster (and PostgreSQL)."""

    name = CLUSTER
    #: its cluster lives as long as this process's row
    shareable = False

    async def open(self) -> None:
        """Start the cluster, then a store built from one node's URL."""
        self.masters = LocalMasters(Path(self.env.tmpdir) / "cluster")
        try:
            await self.masters.start()
            stem = self.env.prefix("tc")
            self.tables = (stem + "_s", stem + "_m")
            self.store = TieredStore.from_url(
                self.masters.url,
                self.env.sql_url,
                write_mode="behind",
                key_prefix=stem,
                sessions_table=self.tables[0],
                messages_table=self.tables[1],
                create_tables=True,
            )
            await self.store.start()
        except BaseException:
            self.masters.stop()
            raise

    def make_session(self, sid: str) -> BenchSession:
        """Return a ``TieredSession`` of the store."""
        return self.store.session(sid)

    async def settle(self) -> None:
        """Wait until every accepted write is committed in SQL."""
        await self.store.flush(timeout=120)

    async def close(self) -> None:
        """Close the store, drop its tables, stop the cluster (its keys go with it)."""
        try:
            await self.store.flush(timeout=120)
            await self.store.aclose()
            engine = create_async_engine(self.env.sql_url)
            try:
                await drop_tables(engine, self.tables[1], self.tables[0])
            finally:
                await engine.dispose()
        finally:
            self.masters.stop()


def cluster_vs_single(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Per workload with both rows: the two medians and cluster / single (time per operation)."""
    rows = []
    for name, w in doc["workloads"].items():
        cells = w["cells"]
        one, many = cells.get(SINGLE), cells.get(CLUSTER)
        if not one or not many:
            continue
        latency = w["kind"] == "latency"
        key = "p50_us" if latency else "ops_s"
        single, cluster = one.get(key), many.get(key)
        ratio = None
        if single and cluster:
            ratio = round(cluster / single if latency else single / cluster, 2)
        rows.append(
            {"workload": name, "title": w["title"], "unit": w["unit"], "measure": key}
            | {"single": single, "cluster": cluster, "ratio": ratio}
        )
    return rows


def cluster_options(**options: Any) -> BenchOptions:
    """Options of a run with the cluster row, the single-node row and the Redis floor."""
    defaults: dict[str, Any] = {"backends": ["redis-floor", SINGLE], "workloads": WORKLOADS}
    opts = BenchOptions(**(defaults | options))
    opts.extra_backends[CLUSTER] = TieredCluster
    return opts


def main(argv: list[str] | None = None) -> int:
    """Run the cluster row next to the single-node one; print medians and ratios."""
    p = argparse.ArgumentParser(prog="python -m tiered_session.bench.cluster")
    p.add_argument("--quick", action="store_true", help="less work per cell")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--redis-url", default=DEFAULT_REDIS, help="the single-node Redis")
    p.add_argument("--sql-url", default=DEFAULT_PG)
    args = p.parse_args(argv)
    opts = cluster_options(
        quick=args.quick, repeats=args.repeats, redis_url=args.redis_url, sql_url=args.sql_url
    )
    doc = asyncio.run(run_bench(opts, command=" ".join(["python -m", __name__, *(argv or [])])))
    print(f"{'workload':<12} {'measure':<8} {'single':>10} {'3-master':>10} {'ratio':>7}")
    for row in cluster_vs_single(doc):
        single, cluster = row["single"], row["cluster"]
        print(
            f"{row['workload']:<12} {row['measure']:<8} "
            f"{single or 0:>10.1f} {cluster or 0:>10.1f} {row['ratio'] or 0:>7.2f}"
        )
    failed = [n for w in doc["workloads"].values() for n, c in w["cells"].items() if not c["ok"]]
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
