"""``docker-compose.cluster.yml``: three cluster masters, PostgreSQL and two flushers, on 127.0.0.1.

The file is parsed (no Docker needed): every service listens on loopback
only, the nodes run in cluster mode with the settings the store relies on,
and the flushers' commands use options ``tiered-session flush`` has.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.cluster.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
NODES = ["redis-1", "redis-2", "redis-3"]


def _opt(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_the_services_are_a_cluster_postgres_and_two_flushers() -> None:
    assert set(SERVICES) == {*NODES, "cluster-init", "postgres", "flusher-1", "flusher-2"}
    assert set(COMPOSE["volumes"]) == {"redis-1", "redis-2", "redis-3", "postgres-data"}


def test_everything_listens_on_loopback_only() -> None:
    for name, svc in SERVICES.items():
        assert svc.get("network_mode") == "host", name  # (cluster nodes announce 127.0.0.1)
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    for name in NODES:
        assert _opt(SERVICES[name]["command"], "--bind") == "127.0.0.1"
    assert "listen_addresses=127.0.0.1" in SERVICES["postgres"]["command"]


def test_the_nodes_run_in_cluster_mode_with_what_the_store_needs() -> None:
    ports = set()
    for name in NODES:
        cmd = SERVICES[name]["command"]
        assert cmd[0] == "redis-server"
        assert _opt(cmd, "--cluster-enabled") == "yes"
        assert _opt(cmd, "--appendonly") == "yes"  # the outbox survives a restart
        assert _opt(cmd, "--maxmemory-policy") == "noeviction"  # (checked at start)
        assert _opt(cmd, "--requirepass") == _opt(cmd, "--masterauth")
        ports.add(_opt(cmd, "--port"))
        assert f"-p {_opt(cmd, '--port')} ping" in SERVICES[name]["healthcheck"]["test"][1]
    assert len(ports) == 3
    init = SERVICES["cluster-init"]
    script = init["command"][-1]
    assert all(f"127.0.0.1:{p}" in script for p in ports) and "--cluster create" in script
    assert set(init["depends_on"]) == set(NODES)


def test_the_flushers_commands_use_flush_options_and_point_at_the_services() -> None:
    node_ports = {_opt(SERVICES[n]["command"], "--port") for n in NODES}
    pg_port = re.search(r"port=(\d+)", " ".join(SERVICES["postgres"]["command"]))
    assert pg_port is not None
    usage = subprocess.run(
        [sys.executable, "-m", "tiered_session", "flush", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in ("flusher-1", "flusher-2"):
        svc = SERVICES[name]
        cmd = svc["command"]
        assert cmd[:2] == ["tiered-session", "flush"]
        for option in (a for a in cmd[2:] if a.startswith("--")):
            assert option in usage, f"{name}: tiered-session flush has no {option}"
        url = _opt(cmd, "--redis-url")
        found = re.fullmatch(r"redis://:devpassword@127\.0\.0\.1:(\d+)/0", url)
        assert found is not None and found.group(1) in node_ports
        assert f"127.0.0.1:{pg_port.group(1)}/" in _opt(cmd, "--sql-url")
        assert svc["depends_on"]["cluster-init"]["condition"] == "service_completed_successfully"
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
