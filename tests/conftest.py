"""Shared fixtures: one behaviour suite over every backend pair and write mode.

Backends:
  * ``fake-mem``  - fakeredis + in-memory SQLite
  * ``fake-file`` - fakeredis + SQLite file
  * ``real``      - the real Redis (db 13) + the real PostgreSQL

Real-server tests are marked ``servers``. They are skipped when a server is
unreachable, unless ``TIERED_SESSION_REQUIRE_SERVERS=1`` (CI), where they fail.

Isolation: every test gets its own key prefix and table names; teardown deletes
exactly those keys (SCAN + DEL) and drops exactly those tables.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from tiered_session import TieredStore

REDIS_URL = os.environ.get("TIERED_SESSION_TEST_REDIS", "redis://127.0.0.1:6379/13")
PG_URL = os.environ.get(
    "TIERED_SESSION_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REQUIRE = os.environ.get("TIERED_SESSION_REQUIRE_SERVERS", "") in ("1", "true", "yes")

BACKENDS = ["fake-mem", "fake-file", "real"]
MODES = ["through", "behind"]


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def servers_up() -> bool:
    return _reachable("127.0.0.1", 6379) and _reachable("127.0.0.1", 5432)


def require_servers() -> None:
    """Skip (or fail under TIERED_SESSION_REQUIRE_SERVERS=1) when servers are down."""
    if servers_up():
        return
    msg = "real Redis (127.0.0.1:6379) or PostgreSQL (127.0.0.1:5432) is unreachable"
    if REQUIRE:
        pytest.fail(msg + " and TIERED_SESSION_REQUIRE_SERVERS=1", pytrace=False)
    pytest.skip(msg)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("backend_kind") == "real":
            item.add_marker(pytest.mark.servers)


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


class Backend:
    """Clients for one test, shared by every store the test makes."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.name = unique_name()
        self.prefix = self.name
        self.sessions_table = f"{self.name}_sessions"
        self.messages_table = f"{self.name}_messages"
        self._server = fakeredis.FakeServer()
        self.redis_url: str | None = None
        self.sql_url: str | None = None
        if kind == "real":
            self.redis_url = REDIS_URL
            self.sql_url = PG_URL
        elif kind == "fake-file":
            self.sql_url = f"sqlite+aiosqlite:///{tmp_path / (self.name + '.db')}"
        self.redis = self.new_redis()
        self.engine = self.new_engine()
        self.stores: list[TieredStore] = []

    def new_redis(self) -> Redis:
        if self.redis_url is not None:
            return Redis.from_url(self.redis_url, decode_responses=False)
        client: Redis = fakeredis.FakeAsyncRedis(server=self._server, decode_responses=False)
        return client

    def new_engine(self) -> AsyncEngine:
        if self.sql_url is None:
            return create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
        return create_async_engine(self.sql_url)

    def options(self, **options: Any) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "key_prefix": self.prefix,
            "sessions_table": self.sessions_table,
            "messages_table": self.messages_table,
            "create_tables": True,
        }
        opts.update(options)
        return opts

    def cli_args(self) -> list[str]:
        """The CLI options that point a ``tiered-session`` command at this backend."""
        assert self.redis_url and self.sql_url, "CLI tests run on the real servers"
        return [
            *("--redis-url", self.redis_url, "--sql-url", self.sql_url),
            *("--key-prefix", self.prefix),
            *("--sessions-table", self.sessions_table, "--messages-table", self.messages_table),
        ]

    def store(self, **options: Any) -> TieredStore:
        """A store on this test's shared clients (the fixture closes them)."""
        store = TieredStore(redis=self.redis, engine=self.engine, **self.options(**options))
        self.stores.append(store)
        return store

    async def cleanup(self) -> None:
        for store in self.stores:
            await store.aclose()
        if self.kind == "real":
            cursor = 0
            while True:
                cursor, keys = await self.redis.scan(cursor, match=f"{self.prefix}:*", count=1000)
                if keys:
                    await self.redis.delete(*keys)
                if cursor == 0:
                    break
            async with self.engine.begin() as conn:
                for suffix in ("_branches", "_pointer", "_usage"):  # advanced sessions
                    table = self.messages_table + suffix
                    await conn.execute(text(f'DROP TABLE IF EXISTS "{table}" CASCADE'))
                await conn.execute(text(f'DROP TABLE IF EXISTS "{self.messages_table}" CASCADE'))
                await conn.execute(text(f'DROP TABLE IF EXISTS "{self.sessions_table}" CASCADE'))
        await self.redis.aclose()
        await self.engine.dispose()


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    if kind == "real":
        require_servers()
    return kind


@pytest.fixture
async def backend(backend_kind: str, tmp_path: Path) -> AsyncIterator[Backend]:
    b = Backend(backend_kind, tmp_path)
    try:
        yield b
    finally:
        await b.cleanup()


@pytest.fixture(params=MODES)
def write_mode(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


StoreFactory = Callable[..., TieredStore]


@pytest.fixture
def make_store(backend: Backend, write_mode: str) -> StoreFactory:
    """Factory of stores on the test's backend, in the test's write mode."""

    def factory(**options: Any) -> TieredStore:
        options.setdefault("write_mode", write_mode)
        return backend.store(**options)

    return factory


@pytest.fixture
async def store(make_store: StoreFactory) -> TieredStore:
    s = make_store(hot_items=5)
    await s.start()
    return s


@pytest.fixture
async def real_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    """The real Redis + PostgreSQL pair, for tests that only make sense there."""
    require_servers()
    b = Backend("real", tmp_path)
    try:
        yield b
    finally:
        await b.cleanup()
