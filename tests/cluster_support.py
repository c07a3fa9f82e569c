"""A local Redis Cluster for the tests: its own loopback ports and directories, stopped by PID.

``LocalCluster(tmp, masters=3, replicas=1).start()`` starts the servers and
joins them (``redis-cli --cluster create``); ``kill(port)`` ends one with
SIGKILL, ``stop()`` ends them all. Nothing is shared with the Redis other
tests use.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import REQUIRE


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> list[int]:
    """Loopback ports whose cluster bus ports (+10000) are free too."""
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < n:
        port = rng.randrange(20000, 30000)
        if port not in ports and _port_free(port) and _port_free(port + 10000):
            ports.append(port)
    return ports


def need_redis_tools() -> None:
    """Skip (or fail under TIERED_SESSION_REQUIRE_SERVERS=1) without redis-server/redis-cli."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        if REQUIRE:
            pytest.fail("redis-server/redis-cli not installed")
        pytest.skip("redis-server/redis-cli not installed")


def cli(port: int, *args: str, timeout: float = 10) -> str:
    """Run ``redis-cli -p port args...``; return its output."""
    out = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, timeout=timeout, text=True
    )
    return out.stdout


class LocalCluster:
    """``masters`` masters with ``replicas`` replicas each, on free loopback ports."""

    def __init__(
        self, tmp: Path, *, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 1000
    ) -> None:
        need_redis_tools()
        self.tmp = tmp
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.ports = free_ports(masters * (1 + replicas))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """A URL naming one node (any node reaches the whole cluster)."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> LocalCluster:
        try:
            for port in self.ports:
                self._start_node(port)
            for port in self.ports:
                self._wait_ping(port)
            subprocess.run(
                [
                    "redis-cli",
                    "--cluster",
                    "create",
                    *[f"127.0.0.1:{p}" for p in self.ports],
                    "--cluster-replicas",
                    str(self.replicas),
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self.wait_ok()
            if self.replicas:
                self.wait_replicas_synced()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, port: int) -> None:
        d = self.tmp / str(port)
        d.mkdir(exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [
                "redis-server",
                *("--port", str(port), "--bind", "127.0.0.1"),
                *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                *("--cluster-node-timeout", str(self.node_timeout_ms)),
                *("--save", "", "--appendonly", "no", "--dir", str(d)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _wait_ping(self, port: int) -> None:
        deadline = time.monotonic() + 10
        while cli(port, "ping").strip() != "PONG":
            assert time.monotonic() < deadline, f"redis-server on {port} did not start"
            time.sleep(0.05)

    def live_ports(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def wait_ok(self, limit: float = 30) -> None:
        """Wait until every live node reports ``cluster_state:ok`` and agrees on the masters."""
        deadline = time.monotonic() + limit
        while True:
            states = [cli(p, "cluster", "info") for p in self.live_ports()]
            if all("cluster_state:ok" in s for s in states):
                return
            assert time.monotonic() < deadline, f"cluster not ok: {states}"
            time.sleep(0.1)

    def wait_replicas_synced(self, limit: float = 30) -> None:
        deadline = time.monotonic() + limit
        while True:
            roles = [cli(p, "info", "replication") for p in self.live_ports()]
            replicas = [r for r in roles if "role:slave" in r]
            if len(replicas) == self.masters * self.replicas and all(
                "master_link_status:up" in r for r in replicas
            ):
                return
            assert time.monotonic() < deadline, "replicas did not sync"
            time.sleep(0.1)

    def master_ports(self) -> list[int]:
        return [p for p in self.live_ports() if "role:master" in cli(p, "info", "replication")]

    def master_of(self, slot: int) -> int:
        """The port of the live master serving ``slot``."""
        for port in self.master_ports():
            for line in cli(port, "cluster", "nodes").splitlines():
                fields = line.split()
                if "myself" in fields[2] and "master" in fields[2]:
                    for rng in fields[8:]:
                        lo, _, hi = rng.partition("-")
                        if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                            return port
        raise AssertionError(f"no live master serves slot {slot}")

    def kill(self, port: int) -> None:
        """End one node with SIGKILL (by PID)."""
        proc = self.procs[port]
        proc.kill()
        proc.wait(10)

    def restart(self, port: int) -> None:
        """Start a killed node again: it rejoins (a failed-over master as a replica)."""
        self._start_node(port)
        self._wait_ping(port)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
