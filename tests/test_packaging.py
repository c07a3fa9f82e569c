"""The files users read and run: docker-compose.yml, README quick start, public surface."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

import tiered_session

ROOT = Path(__file__).resolve().parent.parent


def test_docker_compose_services_ports_and_health() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) >= {"redis", "postgres"}
    redis, pg = services["redis"], services["postgres"]
    assert "6379:6379" in redis["ports"]
    assert "5432:5432" in pg["ports"]
    assert "--appendonly" in redis["command"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    # Memory pressure must never drop one key of a session (see README, "Storage layout").
    assert redis["command"][redis["command"].index("--maxmemory-policy") + 1] == "noeviction"
    for svc in (redis, pg):
        assert svc["healthcheck"]["test"]
        assert svc["volumes"]
    assert pg["image"].startswith("postgres:")
    assert redis["image"].startswith("redis:7")
    env = pg["environment"]
    readme = (ROOT / "README.md").read_text()
    # The URL the README gives for the compose setup matches the compose file.
    url = (
        f"postgresql+asyncpg://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}"
        f"@localhost:5432/{env['POSTGRES_DB']}"
    )
    assert url in readme
    assert "redis://localhost:6379/0" in readme


def test_readme_quick_start_has_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```(?:bash)?\n(.*?)```", section, re.S)
    assert block is not None
    commands = [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(commands) == 2
    assert "tiered-session demo" in commands[0]
    assert "pytest" in commands[1] and ".[dev]" in commands[1]


def test_ci_runs_the_readme_test_command_with_servers_mandatory() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "TIERED_SESSION_REQUIRE_SERVERS=1" in ci
    assert "pytest" in ci and "ruff" in ci and "mypy" in ci


def test_public_surface() -> None:
    assert {"TieredSession", "TieredStore", "TieredSessionError"} <= set(tiered_session.__all__)
    for name in tiered_session.__all__:
        assert getattr(tiered_session, name) is not None
    assert (Path(tiered_session.__file__).parent / "py.typed").exists()
