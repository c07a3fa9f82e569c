"""The files users read and run: docker-compose.yml, README quick start, metadata, CI scripts."""

from __future__ import annotations

import os
import re
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from packaging.requirements import Requirement

import tiered_session

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return services


def option(command: list[str], name: str) -> str:
    """The value after ``name`` in an argv list."""
    assert name in command, f"{name} missing from {command}"
    return command[command.index(name) + 1]


def redis_password() -> str:
    return option(compose_services()["redis"]["command"], "--requirepass")


def flusher_urls() -> tuple[str, str]:
    command = compose_services()["flusher"]["command"]
    return option(command, "--redis-url"), option(command, "--sql-url")


def host_urls() -> tuple[str, str]:
    """The flusher's URLs as seen from the host: the ports are published on localhost."""
    redis_url, sql_url = flusher_urls()
    return redis_url.replace("@redis:", "@localhost:"), sql_url.replace("@postgres:", "@localhost:")


def test_docker_compose_services_ports_and_health() -> None:
    services = compose_services()
    assert set(services) >= {"redis", "postgres", "flusher"}
    redis, pg = services["redis"], services["postgres"]
    assert "127.0.0.1:6379:6379" in redis["ports"]
    assert "127.0.0.1:5432:5432" in pg["ports"]
    assert "--appendonly" in redis["command"]
    assert option(redis["command"], "--appendonly") == "yes"
    # Memory pressure must never drop one key of a session (see docs/storage.md).
    assert option(redis["command"], "--maxmemory-policy") == "noeviction"
    for svc in (redis, pg):
        assert svc["healthcheck"]["test"]
        assert svc["volumes"]
    assert pg["image"].startswith("postgres:")
    assert redis["image"].startswith("redis:7")


def test_docker_compose_publishes_ports_on_loopback_only() -> None:
    published = 0
    for name, svc in compose_services().items():
        assert svc.get("network_mode") != "host", name
        for port in svc.get("ports", []):
            # "127.0.0.1:HOST:CONTAINER" only: a bare "HOST:CONTAINER" listens on every interface
            assert isinstance(port, str), f"{name}: {port!r} (use the string form)"
            assert port.startswith("127.0.0.1:") and port.count(":") == 2, f"{name}: {port}"
            published += 1
    assert published == 2  # Redis and PostgreSQL; the flusher publishes nothing


def test_docker_compose_redis_requires_a_password() -> None:
    redis = compose_services()["redis"]
    password = redis_password()
    assert password and not password.startswith("-")
    # The health check logs in (redis-cli reads REDISCLI_AUTH) and needs a real PONG: an
    # unauthenticated ping gets a NOAUTH error, with exit status 0.
    assert redis["environment"]["REDISCLI_AUTH"] == password
    test = " ".join(redis["healthcheck"]["test"])
    assert "redis-cli" in test and "PONG" in test


def test_docker_compose_flusher_runs_tiered_session_flush() -> None:
    services = compose_services()
    flusher, env = services["flusher"], services["postgres"]["environment"]
    command = flusher["command"]
    assert command[:2] == ["tiered-session", "flush"]
    redis_url, sql_url = (urlsplit(u) for u in flusher_urls())
    assert (redis_url.scheme, redis_url.hostname, redis_url.port, redis_url.path) == (
        "redis",
        "redis",
        6379,
        "/0",
    )
    assert redis_url.password == redis_password()
    assert sql_url.scheme == "postgresql+asyncpg"
    assert (sql_url.hostname, sql_url.port, sql_url.path) == ("postgres", 5432, "/agents")
    assert (sql_url.username, sql_url.password) == (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"])
    assert sql_url.path == "/" + env["POSTGRES_DB"]
    assert "--create-tables" in command
    for dependency in ("redis", "postgres"):
        assert flusher["depends_on"][dependency]["condition"] == "service_healthy"
    assert "ports" not in flusher
    build = flusher["build"]["dockerfile_inline"]
    assert "pip install" in build and "COPY tiered_session" in build


def test_readme_urls_match_the_compose_file() -> None:
    redis_url, sql_url = host_urls()
    assert redis_url == f"redis://:{redis_password()}@localhost:6379/0"
    assert redis_url in README
    assert sql_url in README


def test_every_url_example_uses_the_compose_credentials() -> None:
    """Examples on localhost are the compose servers; 127.0.0.1 URLs are the suite's defaults."""
    redis_url, sql_url = host_urls()
    redis_base = redis_url.rsplit("/", 1)[0]
    texts = {"README.md": README} | {
        f"docs/{p.name}": p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))
    }
    texts["docker-compose.yml"] = (ROOT / "docker-compose.yml").read_text()
    seen = 0
    for name, text in texts.items():
        text = text.replace(":***@", ":REDACTED@")  # a log line shows URLs with the password hidden
        for url in re.findall(r"redis://[^\s`'\"]*@?localhost[^\s`'\"]*", text):
            if ":REDACTED@" in url:
                continue
            assert url.rstrip(".,;:)").rsplit("/", 1)[0] == redis_base, f"{name}: {url}"
            seen += 1
        for url in re.findall(r"postgresql\+asyncpg://[^\s`'\"]*localhost[^\s`'\"]*", text):
            if ":REDACTED@" in url:
                continue
            assert url.rstrip(".,;:)") == sql_url, f"{name}: {url}"
            seen += 1
    assert seen >= 6


def test_readme_quick_start_has_the_two_commands() -> None:
    section = README.split("## Quick start", 1)[1]
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
    # the README's command: install the dev extra, run the whole suite
    assert re.search(r'^python3 -m pip install .*-e "\.\[dev\]"$', ci, re.M)
    assert re.search(r"^python3 -m pytest$", ci, re.M)


def test_ci_builds_the_docs_strictly_outside_the_tree() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    build = next(ln for ln in ci.splitlines() if "-m mkdocs build" in ln)
    assert "--strict" in build and '--site-dir "$site"' in build
    assert 'site="$(mktemp -d)"' in ci
    # --quiet drops the warnings --strict counts: the build would pass with broken links
    assert "--quiet" not in build.split("#")[0] and " -q " not in build
    assert "site/" in (ROOT / ".gitignore").read_text().split()


def test_ci_runs_the_oldest_supported_versions() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    oldest = ROOT / ".ci" / "oldest"
    assert re.search(r"^bash \.ci/oldest$", ci, re.M)
    assert ci.index("\nbash .ci/oldest") > ci.index("\npython3 -m pytest\n")
    assert os.access(oldest, os.X_OK)
    script = oldest.read_text()
    # the bounds come from pyproject.toml, pinned exactly, on the real servers
    assert "tomllib" in script and "pyproject.toml" in script and '=={m.group(2)}"' in script
    for name in ("redis", "sqlalchemy", "openai-agents"):
        assert f'"{name}"' in script
    assert "TIERED_SESSION_REQUIRE_SERVERS=1" in script and "skipped" in script
    for test in ("test_behaviour", "test_sdk_compat", "test_sdk_contract", "test_sdk_runner"):
        assert f"tests/{test}.py" in script


def requirements(specs: list[str]) -> dict[str, Requirement]:
    return {(r := Requirement(s)).name.lower(): r for s in specs}


def test_dependencies_are_pinned_to_the_tested_series() -> None:
    deps = requirements(PROJECT["dependencies"])
    for name in ("redis", "sqlalchemy"):
        spec = deps[name].specifier
        assert any(s.operator == ">=" for s in spec), name
        assert any(s.operator == "<" for s in spec), f"{name} needs an upper bound"
        assert spec.contains(version(name)), f"installed {name} {version(name)} outside {spec}"
    # hot/wire.py uses redis-py internals: one minor series
    assert str(deps["redis"].specifier) in ("<8.2,>=8.1", ">=8.1,<8.2")
    extras = PROJECT["optional-dependencies"]
    sdk = {
        str(requirements(extras[extra])["openai-agents"].specifier)
        for extra in ("agents", "bench", "dev")
    }
    assert len(sdk) == 1, f"the extras disagree on openai-agents: {sdk}"
    assert requirements(extras["agents"])["openai-agents"].specifier.contains(
        version("openai-agents")
    )


def test_project_metadata() -> None:
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    assert PROJECT["authors"] and PROJECT["keywords"]
    classifiers = set(PROJECT["classifiers"])
    expected = {"Typing :: Typed", "Framework :: AsyncIO", "Programming Language :: Python :: 3.11"}
    assert expected <= classifiers
    # PEP 639: a license expression excludes license classifiers
    assert not any(c.startswith("License ::") for c in classifiers)
    urls = PROJECT["urls"]
    assert set(urls) >= {"Homepage", "Documentation", "Repository", "Changelog"}
    mkdocs = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert urls["Documentation"] == mkdocs["site_url"]
    assert urls["Repository"] == mkdocs["repo_url"]
    assert urls["Changelog"].endswith("/CHANGELOG.md")


def test_license_is_mit_as_pyproject_says() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert re.search(r"^Copyright \(c\) \d{4} \S", text, re.M)
    flat = " ".join(text.split())
    assert "Permission is hereby granted, free of charge, to any person obtaining a copy" in flat
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in flat


def test_changelog_has_the_current_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n")
    assert PROJECT["version"] == tiered_session.__version__
    headings = re.findall(r"^## \[([^\]]+)\]", text, re.M)
    assert headings and headings[0] == PROJECT["version"], headings


def test_public_surface() -> None:
    assert {"TieredSession", "TieredStore", "TieredSessionError"} <= set(tiered_session.__all__)
    for name in tiered_session.__all__:
        assert getattr(tiered_session, name) is not None
    assert (Path(tiered_session.__file__).parent / "py.typed").exists()
