"""The cold tier on its own: the error classifier, engines, statements and catalog queries.

The classifier is checked on errors real servers raise (SQLite's and
PostgreSQL's, through SQLAlchemy and through asyncpg directly); the catalog's
queries on every SQL backend of the suite (in-memory SQLite, an SQLite file,
the real PostgreSQL).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
import sqlalchemy.exc
from sqlalchemy import text
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import StaticPool

from tiered_session import ConfigurationError, StorageUnavailableError
from tiered_session.cold.catalog import Catalog
from tiered_session.cold.driver import Driver
from tiered_session.cold.engine import PG_POOL, embedded_engine, engine_from_url
from tiered_session.cold.errors import (
    DATA_EXCEPTION,
    INTEGRITY_VIOLATION,
    SeqCollisionError,
    describe,
    is_data_refusal,
    is_driver_error,
    is_poison,
    refused_by_constraint,
    sqlstate_class,
)
from tiered_session.cold.schema import ensure_schema
from tiered_session.cold.statements import Statements
from tiered_session.cold.tables import build_tables
from tiered_session.cold.tier import SqlTier

from .conftest import PG_URL, Backend, require_servers, unique_name

PG_DSN = PG_URL.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture
async def sql(backend: Backend) -> AsyncIterator[SqlTier]:
    """A SQL tier with its tables, on the test's backend (the fixture drops them)."""
    tier = SqlTier(backend.engine, backend.sessions_table, backend.messages_table)
    await ensure_schema(tier, create=True)
    try:
        yield tier
    finally:
        await tier.close()


@pytest.fixture
async def pg_sql() -> AsyncIterator[SqlTier]:
    """A SQL tier on the real PostgreSQL, with tables of its own (dropped after)."""
    require_servers()
    name = unique_name()
    engine = create_async_engine(PG_URL)
    tier = SqlTier(engine, f"{name}_sessions", f"{name}_messages")
    await ensure_schema(tier, create=True)
    try:
        yield tier
    finally:
        await tier.close()
        async with engine.begin() as conn:
            await conn.run_sync(tier.metadata.drop_all)
        await engine.dispose()


# ---------------------------------------------------------------------- the classifier
def test_sqlstate_classes_are_named() -> None:
    assert (DATA_EXCEPTION, INTEGRITY_VIOLATION) == ("22", "23")


def test_errors_without_a_sqlstate() -> None:
    for err in (ValueError("x"), OSError("down"), None):
        assert sqlstate_class(err) is None
        assert not is_data_refusal(err)
    refused = DataError("SELECT 1", {}, Exception("bad value"))
    assert is_data_refusal(refused) and sqlstate_class(refused) is None
    wrapped = StorageUnavailableError("SQL operation failed")
    assert not is_poison(wrapped) and not refused_by_constraint(wrapped)


async def test_sqlite_constraint_refusal_is_poison_and_refused_by_constraint() -> None:
    engine = embedded_engine()
    tier = SqlTier(engine, "agent_sessions", "agent_messages")
    try:
        await ensure_schema(tier, create=True)
        await tier.insert_new("s", 1, ['{"n":1}'])
        with pytest.raises(StorageUnavailableError) as caught:
            await tier.insert_new("s", 1, ['{"n":2}'])
        err = caught.value
        assert isinstance(err.__cause__, IntegrityError)
        assert sqlstate_class(err.__cause__) is None  # SQLite has no SQLSTATE
        assert is_poison(err) and refused_by_constraint(err)
        assert not is_driver_error(err.__cause__)
        assert 'n":2' not in str(err)  # the parameters (user data) stay out of the message
    finally:
        await tier.close()
        await engine.dispose()


async def test_sqlite_operational_error_is_not_poison() -> None:
    """A missing table is the database's state, not the entry's: the flush is retried."""
    engine = embedded_engine()
    tier = SqlTier(engine, "agent_sessions", "agent_messages")  # tables never created
    try:
        with pytest.raises(StorageUnavailableError, match="no such table") as caught:
            await tier.latest("s", None, None)
        assert isinstance(caught.value.__cause__, sqlalchemy.exc.OperationalError)
        assert not is_poison(caught.value) and not refused_by_constraint(caught.value)
    finally:
        await engine.dispose()


def test_a_seq_collision_is_poison_but_no_constraint_refusal() -> None:
    try:
        raise StorageUnavailableError("seq taken") from SeqCollisionError("s", 3)
    except StorageUnavailableError as err:
        assert is_poison(err) and not refused_by_constraint(err)
        assert str(err.__cause__) == "session 's': seq 3 holds another item"


@pytest.mark.servers
async def test_postgresql_refusals_through_asyncpg_and_sqlalchemy(pg_sql: SqlTier) -> None:
    await pg_sql.insert_new("s", 1, ["{}"])
    # asyncpg directly (the write-through insert): the driver's own exceptions.
    with pytest.raises(StorageUnavailableError) as dup:
        await pg_sql.insert_new("s", 1, ["{}"])
    assert isinstance(dup.value.__cause__, asyncpg.UniqueViolationError)
    assert sqlstate_class(dup.value.__cause__) == INTEGRITY_VIOLATION
    assert is_driver_error(dup.value.__cause__) and is_data_refusal(dup.value.__cause__)
    assert is_poison(dup.value) and refused_by_constraint(dup.value)
    with pytest.raises(StorageUnavailableError) as nul:
        await pg_sql.insert_new("s", 2, ['"\x00"'])
    assert sqlstate_class(nul.value.__cause__) == DATA_EXCEPTION
    assert is_poison(nul.value) and not refused_by_constraint(nul.value)
    # Through SQLAlchemy (the flusher's transactions): a DBAPIError wrapping the SQLSTATE.
    with pytest.raises(StorageUnavailableError) as bad:
        async with pg_sql.begin() as conn:
            await conn.execute(text("SELECT CAST('x' AS integer)"))
    cause = bad.value.__cause__
    assert isinstance(cause, sqlalchemy.exc.DBAPIError) and not is_driver_error(cause)
    assert sqlstate_class(cause) == DATA_EXCEPTION and is_poison(bad.value)
    assert "invalid input syntax for type integer" in describe(cause)
    assert "CAST" not in describe(cause)  # the statement (and its parameters) stay out
    # The connection is kept after a refused statement: the next call works.
    await pg_sql.insert_new("s", 2, ["{}"])
    assert [seq for seq, _ in await pg_sql.latest("s", None, None)] == [1, 2]


@pytest.mark.servers
async def test_a_lost_postgresql_connection_is_a_driver_error_not_a_refusal() -> None:
    require_servers()
    conn = await asyncpg.connect(PG_DSN)
    admin = await asyncpg.connect(PG_DSN)
    try:
        await admin.fetchval("SELECT pg_terminate_backend($1)", conn.get_server_pid())
        lost: Exception | None = None
        for _ in range(100):
            try:
                await conn.fetchval("SELECT 1")
            except Exception as e:
                lost = e
                break
            await asyncio.sleep(0.01)
        assert lost is not None and is_driver_error(lost)
        assert not is_data_refusal(lost) and sqlstate_class(lost) not in ("22", "23")
    finally:
        await admin.close()
        await conn.close()


async def test_an_unreachable_postgresql_is_not_poison() -> None:
    engine = engine_from_url("postgresql+asyncpg://postgres@127.0.0.1:1/test")
    tier = SqlTier(engine, "agent_sessions", "agent_messages")
    try:
        for call in (lambda: tier.latest("s", None, None), lambda: tier.insert_new("s", 1, [])):
            with pytest.raises(StorageUnavailableError, match="SQL database unreachable") as err:
                await call()
            assert isinstance(err.value.__cause__, OSError)
            assert not is_poison(err.value) and not refused_by_constraint(err.value)
            assert not is_driver_error(err.value.__cause__)
    finally:
        await tier.close()
        await engine.dispose()


# ---------------------------------------------------------------------- engines
async def test_engines_by_url() -> None:
    with pytest.raises(ConfigurationError, match="unsupported sql_url scheme"):
        engine_from_url("mysql://x")
    memory = engine_from_url("sqlite+aiosqlite://")
    pg = engine_from_url(PG_URL)
    tuned = engine_from_url(PG_URL, {"pool_size": 3})
    try:
        assert isinstance(memory.pool, StaticPool)
        assert isinstance(embedded_engine().pool, StaticPool)
        assert pg.pool.size() == PG_POOL["pool_size"]  # type: ignore[attr-defined]
        assert tuned.pool.size() == 3  # type: ignore[attr-defined]
        assert Driver(memory).kept == 0 and Driver(memory, keep=True).keep_limit == 0
    finally:
        for engine in (memory, pg, tuned):
            await engine.dispose()


@pytest.mark.servers
async def test_from_url_pool_opens_no_overflow_connection() -> None:
    """Callers beyond the fixed pool wait (here: time out) instead of opening a connection."""
    require_servers()
    engine = engine_from_url(PG_URL, {"pool_size": 2, "pool_timeout": 0.2})
    held = [await engine.connect() for _ in range(2)]
    try:
        assert engine.pool.checkedout() == 2  # type: ignore[attr-defined]
        with pytest.raises(sqlalchemy.exc.TimeoutError):
            await engine.connect()
        assert engine.pool.checkedout() == 2  # type: ignore[attr-defined]
    finally:
        for conn in held:
            await conn.close()
        await engine.dispose()


# ---------------------------------------------------------------------- statements
def test_asyncpg_statements_keep_their_parameter_order() -> None:
    """Fails loudly if SQLAlchemy's ``SQLCompiler.positiontup`` changes meaning."""
    _, s, m = build_tables("agent_sessions", "agent_messages")
    st = Statements(create_async_engine(PG_URL), s, m)
    assert st.add_text is not None and "$3" in st.add_text and "$4" not in st.add_text
    params = {"sid": "s", "before": 7, "lim": 3, "seqs": [1, 2], "seq": 5}
    for stmt, order in (
        (st.latest(True, True), ["s", 7, 3]),
        (st.latest(False, True), ["s", 3]),
        (st.latest(True, False), ["s", 7]),
        (st.present(), ["s", [1, 2]]),
        (st.delete_one(), ["s", 5]),
    ):
        sql_text, args = st.driver_args(stmt, params)
        assert args == order, sql_text
        assert f"${len(order)}" in sql_text and f"${len(order) + 1}" not in sql_text


# ---------------------------------------------------------------------- catalog
async def test_catalog_lists_counts_and_times_sessions(sql: SqlTier) -> None:
    cat = Catalog(sql)
    await sql.insert_new("a", 1, ['{"n":1}', '{"n":"é"}'])
    await asyncio.sleep(0.01)
    await sql.insert_new("b", 1, ["{}"])  # newer, or a tie broken by the id: listed first
    async with sql.begin() as conn:  # a session row without items is not listed
        await conn.execute(sql.upsert(sql.sessions).values(session_id="empty"))
    assert set(await cat.created_at(["a", "b", "empty", "none"])) == {"a", "b"}
    assert [sid for sid, _, _ in await cat.page(0, 10)] == ["b", "a"]
    assert [sid for sid, _, _ in await cat.page(1, 10)] == ["a"]
    (_, created, updated), *_ = await cat.page(0, 1)
    assert created is not None and created.tzinfo is UTC and updated is not None
    assert await cat.has_items("a") and not await cat.has_items("empty")
    assert await cat.count_and_bytes("a", None) == (2, len('{"n":1}{"n":"é"}'.encode()))
    assert await cat.count_and_bytes("a", 2) == (1, 7)
    assert await cat.count_and_bytes("none", None) == (0, 0)
    assert await cat.times("a") is not None and await cat.times("none") is None
    assert await cat.max_seq("a") == 2 and await cat.max_seq("none") == 0


async def test_catalog_restores_and_clears(sql: SqlTier) -> None:
    cat = Catalog(sql)
    created = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    updated = datetime(2025, 2, 3, 4, 5, 6, tzinfo=UTC)
    await cat.restore("r", ['{"i":1}', '{"i":2}', '{"i":3}'], created, updated)
    assert await sql.latest("r", None, None) == [(1, '{"i":1}'), (2, '{"i":2}'), (3, '{"i":3}')]
    times = await cat.times("r")
    assert times is not None
    assert [str(t)[:19] for t in times] == ["2025-01-02 03:04:05", "2025-02-03 04:05:06"]
    await cat.restore("plain", ["{}"], None, None)  # the server's defaults
    assert await cat.times("plain") is not None
    await cat.clear_upto("r", 2)
    assert await sql.latest("r", None, None) == [(3, '{"i":3}')]
    await cat.clear_upto("r", 3)
    assert await cat.times("r") is None  # the session row goes with its last item


async def test_catalog_recovery_checks(sql: SqlTier) -> None:
    cat = Catalog(sql)
    await sql.insert_new("w", 1, ["1", "2", "3"])
    assert await cat.add_landed("w", 1, 3) and await cat.add_landed("w", 2, 2)
    assert not await cat.add_landed("w", 3, 2)
    assert await cat.row_data("w", 2) == "2" and await cat.row_data("w", 9) is None
    await sql.delete_one("w", 2)
    assert await cat.row_data("w", 2) is None
    assert not await cat.clear_landed("w", 3, [])
    assert not await cat.clear_landed("w", 3, [3])
    assert await cat.clear_landed("w", 3, [1, 3])
    assert await cat.clear_landed("w", 0, [])
