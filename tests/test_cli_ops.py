"""The operator CLI, run as a subprocess against the real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import PG_URL, Backend

pytestmark = pytest.mark.servers


async def cli(
    *args: str, tty_stderr: bool = False, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run ``python -m tiered_session ARGS``; return (exit code, stdout, stderr)."""
    master = slave = -1
    if tty_stderr:
        master, slave = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tiered_session",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=slave if tty_stderr else asyncio.subprocess.PIPE,
        env={
            **os.environ,
            "TIERED_SESSION_REDIS_URL": "",
            "TIERED_SESSION_SQL_URL": "",
            **(env or {}),
        },
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    if tty_stderr:
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        os.close(master)
        err = b"".join(chunks)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), (err or b"").decode()


def server_args(b: Backend) -> list[str]:
    return b.cli_args()


def msg(sid: str, i: int) -> dict[str, Any]:
    return {"role": "user", "content": f"{sid} #{i}"}


async def test_sessions_commands(real_backend: Backend, tmp_path: Path) -> None:
    b = real_backend
    store = b.store(write_mode="behind")
    items = {sid: [msg(sid, i) for i in range(n + 2)] for n, sid in enumerate(["a", "b", "c"])}
    for sid, its in items.items():
        await store.session(sid).add_items(its)
        await asyncio.sleep(0.01)
    await store.flush()
    args = server_args(b)

    code, out, err = await cli("sessions", "list", *args, "--json")
    assert code == 0, err
    assert [i["session_id"] for i in json.loads(out)] == ["c", "b", "a"]
    code, out, _ = await cli("sessions", "list", *args, "--limit", "1", "--offset", "1")
    assert code == 0 and out.splitlines()[0].startswith("session_id")
    assert [ln.split()[0] for ln in out.splitlines()[1:]] == ["b"]

    code, out, _ = await cli("sessions", "show", "c", *args)
    assert code == 0 and [json.loads(ln) for ln in out.splitlines()] == items["c"]
    code, out, _ = await cli("sessions", "show", "c", *args, "--limit", "1")
    assert [json.loads(ln) for ln in out.splitlines()] == items["c"][-1:]

    code, out, _ = await cli("sessions", "stats", "b", *args, "--json")
    stats = json.loads(out)
    assert code == 0 and stats["items"] == 3 and stats["unflushed_items"] == 0
    code, out, _ = await cli("sessions", "stats", "b", *args)
    assert "items" in out and "bytes" in out

    backup = tmp_path / "backup.jsonl"
    code, out, err = await cli("sessions", "export", str(backup), *args)
    assert code == 0 and "exported 3 session(s)" in out
    assert "\r" not in err  # no progress bar when stderr is not a terminal
    code, out, err = await cli("sessions", "export", str(backup), *args, tty_stderr=True)
    assert code == 0 and "export" in err and "3/3 sessions" in err  # ... and one on a terminal
    assert "ETA" in err

    code, out, _ = await cli("sessions", "delete", "a", *args)
    assert code == 0 and "deleted a" in out
    code, out, _ = await cli("sessions", "delete", "a", *args)
    assert code == 1 and "not found" in out
    assert await store.session("a").get_items() == []

    code, out, _ = await cli("sessions", "import", str(backup), *args)
    assert code == 0 and "imported 1 session(s) (2 items); unchanged 2" in out
    assert await store.session("a").get_items() == items["a"]

    code, out, _ = await cli("sessions", "cleanup", "--older-than", "1h", *args)
    assert code == 0 and "deleted 0 session(s)" in out
    await asyncio.sleep(1.1)
    code, out, _ = await cli("sessions", "cleanup", "--older-than", "1s", "--dry-run", *args)
    assert code == 0 and "would delete 3 session(s)" in out
    code, out, _ = await cli("sessions", "cleanup", "--older-than", "1s", *args, "--json")
    assert code == 0 and json.loads(out)["deleted"] == 3
    assert await store.list_sessions() == []

    code, _, err = await cli("sessions", "cleanup", "--older-than", "soon", *args)
    assert code == 2 and "invalid duration" in err


async def test_schema_migrate_and_import_sqlite(real_backend: Backend, tmp_path: Path) -> None:
    from agents import SQLiteSession
    from agents.extensions.memory import SQLAlchemySession

    b = real_backend
    args = server_args(b)
    tables = ["--sessions-table", b.sessions_table, "--messages-table", b.messages_table]

    code, _, err = await cli("sessions", "list", *args)
    assert code == 2 and "tiered-session schema" in err  # tables missing: say what to run

    code, out, _ = await cli("schema", "--sql-url", PG_URL, *tables, "--print")
    assert code == 0 and f"CREATE TABLE {b.messages_table}" in out
    assert f"CREATE UNIQUE INDEX uq_{b.messages_table}_session_seq" in out
    async with b.engine.connect() as conn:
        names = await conn.run_sync(lambda c: c.dialect.get_table_names(c))
    assert b.messages_table not in names  # --print changes nothing

    # An SDK-created schema with data, upgraded in place.
    sdk_items = [msg("old", i) for i in range(5)]
    sdk = SQLAlchemySession(
        "old",
        engine=b.engine,
        create_tables=True,
        sessions_table=b.sessions_table,
        messages_table=b.messages_table,
    )
    await sdk.add_items(sdk_items[:3])
    await sdk.add_items(sdk_items[3:])
    code, _, err = await cli("sessions", "list", *args)
    assert code == 2 and "tiered-session migrate" in err
    code, out, _ = await cli("schema", "--sql-url", PG_URL, *tables)
    assert code == 2  # refuses to touch an outdated table: migrate does that
    code, out, err = await cli("migrate", "--sql-url", PG_URL, *tables)
    assert code == 0, err
    assert "added seq column: yes" in out and "numbered 5 row(s)" in out
    code, out, _ = await cli("migrate", "--sql-url", PG_URL, *tables)
    assert code == 0 and "up to date" in out
    code, out, _ = await cli("schema", "--sql-url", PG_URL, *tables)
    assert code == 0 and "created tables none" in out

    path = tmp_path / "sdk.db"
    expected = {}
    for sid in ("f1", "f2"):
        ref = SQLiteSession(sid, path)
        try:
            await ref.add_items([msg(sid, i) for i in range(4)])
            expected[sid] = await ref.get_items()
        finally:
            ref.close()
    code, out, err = await cli("import-sqlite", str(path), *args)
    assert code == 0, err
    assert "imported 2 session(s) (8 items)" in out
    code, out, _ = await cli("import-sqlite", str(path), *args, "--json")
    report = json.loads(out)
    assert code == 0 and report["sessions_unchanged"] == 2 and report["sessions_imported"] == 0

    from sqlalchemy.ext.asyncio import create_async_engine

    other_url = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    other = create_async_engine(other_url)
    try:
        ref2 = SQLAlchemySession("g1", engine=other, create_tables=True)
        await ref2.add_items([msg("g1", i) for i in range(3)])
        expected["g1"] = await ref2.get_items()
    finally:
        await other.dispose()
    code, out, err = await cli("import-sdk", "--source-url", other_url, *args)
    assert code == 0 and "imported 1 session(s) (3 items)" in out, err

    store = b.store(create_tables=False)
    assert await store.session("old").get_items() == sdk_items
    for sid, its in expected.items():
        assert await store.session(sid).get_items() == its
    code, out, _ = await cli("sessions", "list", *args, "--json")
    assert sorted(i["session_id"] for i in json.loads(out)) == ["f1", "f2", "g1", "old"]


def server_env(b: Backend) -> dict[str, str]:
    """The environment that points a command at this backend, no options needed."""
    return {
        "TIERED_SESSION_REDIS_URL": str(b.redis_url),
        "TIERED_SESSION_SQL_URL": str(b.sql_url),
        "TIERED_SESSION_KEY_PREFIX": b.prefix,
        "TIERED_SESSION_SESSIONS_TABLE": b.sessions_table,
        "TIERED_SESSION_MESSAGES_TABLE": b.messages_table,
    }


async def test_missing_sessions_exit_1(real_backend: Backend, tmp_path: Path) -> None:
    b = real_backend
    store = b.store()
    await store.session("here").add_items([msg("here", 0)])
    args = server_args(b)

    code, out, err = await cli("sessions", "show", "gone", *args)
    assert code == 1 and out == ""
    assert err.strip() == "tiered-session: not found: session 'gone' (no items)"
    code, out, err = await cli("sessions", "show", "gone", *args, "--json")
    assert code == 1 and out == "" and "not found" in err
    code, out, err = await cli("sessions", "stats", "gone", *args, "--json")
    assert code == 1 and json.loads(out)["exists"] is False and "not found" in err

    backup = tmp_path / "backup.jsonl"
    code, out, err = await cli(
        "sessions", "export", str(backup), "--session", "here", "--session", "gone", *args
    )
    assert code == 1 and out == "" and "session 'gone'" in err
    assert not backup.exists()  # nothing half-written
    code, out, _ = await cli("sessions", "export", str(backup), "--session", "here", *args)
    assert code == 0 and "exported 1 session(s)" in out
    assert [json.loads(ln)["type"] for ln in backup.read_text().splitlines()] == [
        "session",
        "item",
    ]
    code, out, _ = await cli("sessions", "delete", "gone", *args, "--json")
    assert code == 1 and json.loads(out) == {"session_id": "gone", "deleted": False}


async def test_environment_options_after_the_command_and_json(real_backend: Backend) -> None:
    b = real_backend
    store = b.store(write_mode="behind")
    await store.session("e1").add_items([msg("e1", 0), msg("e1", 1)])
    await store.flush()
    env = server_env(b)

    code, out, err = await cli("sessions", "list", "--json", env=env)
    assert code == 0, err
    assert [i["session_id"] for i in json.loads(out)] == ["e1"]
    code, out, err = await cli("sessions", "show", "e1", "-v", "--json", env=env)
    assert code == 0 and json.loads(out) == [msg("e1", 0), msg("e1", 1)], err
    code, out, err = await cli("-v", "stats", "--json", env=env)
    assert code == 0, err
    stats = json.loads(out)
    assert {"backlog", "flush_lag_seconds", "dead_letters", "live_flushers"} <= set(stats)
    # other tables named in the environment: the command looks there
    other = {**env, "TIERED_SESSION_SESSIONS_TABLE": f"{b.name}_x"}
    code, out, err = await cli("sessions", "list", env=other)
    assert code == 2 and out == "" and f"'{b.name}_x'" in err and "tiered-session schema" in err

    code, out, _ = await cli("dead-letters", "list", env=env)
    assert code == 0
    assert out.strip() == (
        f"0 dead-lettered entries under key prefix {b.prefix!r} at {b.redis_url} (16 shards)"
    )
    code, out, _ = await cli("dead-letters", "list", "--json", env=env)
    assert code == 0 and out == ""  # JSON lines: none
    code, out, err = await cli("dead-letters", "replay", "99:1-0", "3:1-0", env=env)
    assert code == 1 and "replayed 0 of 2 dead-lettered entries" in out
    assert "no shard 99 (0-15)" in err and "no dead letter 3:1-0" in err
    code, out, _ = await cli("dead-letters", "replay", "--all", "--json", env=env)
    assert code == 0 and json.loads(out) == {"replayed": 0, "requested": 0, "not_found": []}


async def test_bad_backup_and_import_progress(real_backend: Backend, tmp_path: Path) -> None:
    b = real_backend
    store = b.store()
    await store.session("p1").add_items([msg("p1", i) for i in range(50)])
    args = server_args(b)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("this is not a backup\n")
    code, out, err = await cli("sessions", "import", str(bad), *args)
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-1].startswith("tiered-session: error: ")
    assert "not a backup record" in err and "Traceback" not in err

    backup = tmp_path / "backup.jsonl"
    assert (await cli("sessions", "export", str(backup), *args))[0] == 0
    code, out, err = await cli("sessions", "import", str(backup), *args, tty_stderr=True)
    assert code == 0 and "unchanged 1" in out
    assert "import" in err and "ETA" in err
    assert f"{backup.stat().st_size / 1000:.1f} kB" in err  # bytes, with their unit
