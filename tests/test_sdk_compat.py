"""Databases shared with the Agents SDK: both directions, migration, import of SDK files."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agents")

from agents import SQLiteSession
from agents.extensions.memory import AsyncSQLiteSession, SQLAlchemySession

from tiered_session import ConfigurationError
from tiered_session.cold.schema import inspect_schema, migrate

from .conftest import Backend

SQL_BACKENDS = ["fake-file", pytest.param("real", marks=pytest.mark.servers)]


def msg(sid: str, i: int) -> dict[str, Any]:
    return {"role": "user" if i % 2 == 0 else "assistant", "content": f"{sid} {i} é✓"}


def sdk(backend: Backend, sid: str) -> SQLAlchemySession:
    return SQLAlchemySession(
        sid,
        engine=backend.engine,
        create_tables=True,
        sessions_table=backend.sessions_table,
        messages_table=backend.messages_table,
    )


async def sdk_write(backend: Backend, sids: list[str], batches: int = 3) -> dict[str, list[Any]]:
    """Write sessions with the SDK (several same-second batches each)."""
    written: dict[str, list[Any]] = {sid: [] for sid in sids}
    for b in range(batches):
        for sid in sids:
            items = [msg(sid, 10 * b + i) for i in range(3)]
            await sdk(backend, sid).add_items(items)
            written[sid] += items
    await sdk(backend, sids[0]).pop_item()
    written[sids[0]].pop()
    return written


@pytest.mark.parametrize("backend_kind", SQL_BACKENDS, indirect=True)
async def test_store_opens_sdk_tables_after_migration(backend: Backend, write_mode: str) -> None:
    written = await sdk_write(backend, ["a", "b", "c"])
    outdated = backend.store(create_tables=False, write_mode=write_mode)
    with pytest.raises(ConfigurationError, match="tiered-session migrate"):
        await outdated.start()
    report = await migrate(backend.store().sql)
    assert report["added_seq_column"] and report["numbered_rows"] == 26
    again = await migrate(backend.store().sql)
    assert again == {
        "created_tables": [],
        "added_seq_column": False,
        "numbered_rows": 0,
        "created_indexes": [],
    }
    store = backend.store(create_tables=False, write_mode=write_mode, hot_items=4)
    await store.start()
    for sid, items in written.items():
        assert await store.session(sid).get_items() == items
        assert await store.session(sid).get_items(limit=2) == items[-2:]
    new = [msg("a", 100), msg("a", 101)]
    await store.session("a").add_items(new)
    assert await store.session("a").pop_item() == new[-1]
    await store.flush()
    assert await sdk(backend, "a").get_items() == [*written["a"], new[0]]
    assert await sdk(backend, "b").get_items() == written["b"]


@pytest.mark.parametrize("backend_kind", SQL_BACKENDS, indirect=True)
async def test_create_tables_upgrades_sdk_tables(backend: Backend) -> None:
    written = await sdk_write(backend, ["x"])
    store = backend.store(create_tables=True)
    assert await store.session("x").get_items() == written["x"]
    state = await inspect_schema(store.sql)
    assert state["seq_column"] and state["unique_seq_index"] and state["unnumbered_rows"] == 0


@pytest.mark.parametrize("backend_kind", SQL_BACKENDS, indirect=True)
async def test_migrate_numbers_rows_the_sdk_appended_later(backend: Backend) -> None:
    written = await sdk_write(backend, ["a", "b"])
    await migrate(backend.store().sql)
    later = [msg("a", 500), msg("a", 501)]
    await sdk(backend, "a").add_items(later)  # the SDK knows nothing of seq
    state = await inspect_schema(backend.store().sql)
    assert state["unnumbered_rows"] == 2
    report = await migrate(backend.store().sql)
    assert report["numbered_rows"] == 2 and not report["added_seq_column"]
    store = backend.store(create_tables=False)
    assert await store.session("a").get_items() == [*written["a"], *later]


@pytest.mark.parametrize("backend_kind", SQL_BACKENDS, indirect=True)
async def test_sdk_reads_what_we_wrote(backend: Backend, write_mode: str) -> None:
    store = backend.store(write_mode=write_mode, hot_items=3)
    expected: dict[str, list[Any]] = {}
    for sid in ("p", "q"):
        s = store.session(sid)
        for b in range(4):
            await s.add_items([msg(sid, 10 * b + i) for i in range(2)])
        await s.pop_item()
        expected[sid] = await s.get_items()
    await store.session("r").add_items([msg("r", 1)])
    await store.session("r").clear_session()
    await store.flush()
    for sid, items in expected.items():
        assert len(items) == 7
        assert await sdk(backend, sid).get_items() == items
        assert await sdk(backend, sid).get_items(limit=3) == items[-3:]
    assert await sdk(backend, "r").get_items() == []


async def test_missing_tables_are_reported(backend: Backend) -> None:
    store = backend.store(create_tables=False)
    with pytest.raises(ConfigurationError, match="tiered-session schema"):
        await store.start()


@pytest.mark.parametrize("backend_kind", SQL_BACKENDS, indirect=True)
async def test_import_sdk_sqlite_files(backend: Backend, tmp_path: Path) -> None:
    path = tmp_path / "sdk.db"
    expected: dict[str, list[Any]] = {}
    for n, sid in enumerate(["s1", "s2", "s3"]):
        ref = SQLiteSession(sid, path)
        try:
            for b in range(n + 1):
                await ref.add_items([msg(sid, 10 * b + i) for i in range(3)])
        finally:
            ref.close()
    aref = AsyncSQLiteSession("s4", path)
    await aref.add_items([msg("s4", i) for i in range(4)])
    await aref.close()
    with sqlite3.connect(path) as conn:  # a corrupt row: the SDK skips it
        conn.execute("INSERT INTO agent_messages (session_id, message_data) VALUES ('s2', '{oops')")
    for sid in ["s1", "s2", "s3", "s4"]:
        ref = SQLiteSession(sid, path)
        try:
            expected[sid] = await ref.get_items()
        finally:
            ref.close()

    store = backend.store(hot_items=2)
    report = await store.import_sdk_sqlite(path)
    assert report["sessions_imported"] == 4
    assert report["items_imported"] == sum(len(v) for v in expected.values())
    assert report["corrupt_rows_skipped"] == 1
    again = await store.import_sdk_sqlite(path)
    assert again["sessions_imported"] == 0 and again["sessions_unchanged"] == 4
    for sid, items in expected.items():
        assert await store.session(sid).get_items() == items
        assert await sdk(backend, sid).get_items() == items
    await store.session("s1").add_items([msg("s1", 999)])
    conflict = await store.import_sdk_sqlite(path)
    assert conflict["sessions_conflicting"] == 1 and conflict["conflicts"] == ["s1"]


async def test_missing_unique_index_is_reported_and_migrated(backend: Backend) -> None:
    store = backend.store(create_tables=False)
    unique = next(i for i in store.sql.messages.indexes if i.unique)
    async with store.sql.begin() as conn:  # the tables as someone made them by hand
        await conn.run_sync(store.sql.metadata.create_all)
        await conn.run_sync(unique.drop)
    with pytest.raises(ConfigurationError, match=r"unique index .*tiered-session migrate"):
        await store.start()
    report = await migrate(backend.store().sql)
    assert report["created_indexes"] == [unique.name] and not report["added_seq_column"]
    fresh = backend.store(create_tables=False)
    await fresh.session("s").add_items([msg("s", 1)])
    assert await fresh.session("s").get_items() == [msg("s", 1)]


@pytest.mark.parametrize("backend_kind", SQL_BACKENDS, indirect=True)
async def test_import_from_another_sdk_database(backend: Backend, tmp_path: Path) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    url = f"sqlite+aiosqlite:///{tmp_path / 'sdk-sqlalchemy.db'}"
    source = create_async_engine(url)
    expected = {}
    try:
        for sid in ("k1", "k2"):
            ref = SQLAlchemySession(sid, engine=source, create_tables=True)
            for b in range(3):  # same-second batches: order comes from created_at, id
                await ref.add_items([msg(sid, 10 * b + i) for i in range(2)])
            await ref.pop_item()
            expected[sid] = await ref.get_items()
    finally:
        await source.dispose()
    store = backend.store(hot_items=2)
    report = await store.transfer.import_sdk_sql(url)
    assert (report["sessions_imported"], report["items_imported"]) == (2, 10)
    assert (await store.transfer.import_sdk_sql(url))["sessions_unchanged"] == 2
    for sid, items in expected.items():
        assert await store.session(sid).get_items() == items
    with pytest.raises(ConfigurationError, match="no table"):
        await store.transfer.import_sdk_sql(url.replace("sdk-sqlalchemy", "empty"))
