"""Outages with real servers stopped and started: PostgreSQL, Redis (restarted, paused), poison.

The PostgreSQL and Redis servers stopped here are private ones the tests start
themselves (own port, own data directory, stopped by PID); the shared servers
are only used with this test's own key prefix and table names.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tiered_session import (
    BackpressureError,
    StorageUnavailableError,
    TieredSession,
    TieredStore,
)
from tiered_session.ops.through import WriteThrough

from .conftest import PG_URL, REDIS_URL, REQUIRE, Backend, require_servers
from .support import free_port, wait_port
from .support import message as msg

pytestmark = [pytest.mark.faults, pytest.mark.servers]

ROOT = Path(__file__).resolve().parent.parent


def _pg_bin() -> Path | None:
    """The directory of initdb and pg_ctl (the newest installed PostgreSQL)."""
    found = shutil.which("initdb")
    if found and (Path(found).resolve().parent / "pg_ctl").exists():
        return Path(found).resolve().parent
    dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    return dirs[-1] if dirs and (dirs[-1] / "initdb").exists() else None


PG_BIN = _pg_bin()


def _missing(what: str) -> None:
    """Skip, or fail when the fault tests are mandatory (TIERED_SESSION_REQUIRE_SERVERS=1)."""
    if REQUIRE:
        pytest.fail(f"{what}, and TIERED_SESSION_REQUIRE_SERVERS=1", pytrace=False)
    pytest.skip(what)


# ---------------------------------------------------------------------- private servers
class PrivatePostgres:
    """A PostgreSQL cluster in a temporary directory, run as the postgres OS user."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tiered-session-pg-"))
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        self._pg("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N")

    def _pg(self, tool: str, *args: str) -> None:
        assert PG_BIN is not None
        cmd = [str(PG_BIN / tool), *args]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg(
            "pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start"
        )
        wait_port(self.port, up=True)

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        wait_port(self.port, up=False)

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    """A redis-server on its own port with no persistence, stopped by PID."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *options: str) -> None:
        """Start it (again), with extra ``redis-server`` options if given."""
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
                *options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, up=True)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        wait_port(self.port, up=False)

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def destroy(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    if PG_BIN is None:
        _missing("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            _missing("running as root and there is no 'postgres' OS user to run PostgreSQL")
        if shutil.which("runuser") is None:
            _missing("running as root and runuser is not installed")
    pg = PrivatePostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        _missing("redis-server is not installed")
    r = PrivateRedis(tmp_path)
    try:
        r.start()
        yield r
    finally:
        r.destroy()


@pytest.fixture
async def stores() -> AsyncIterator[list[TieredStore]]:
    """Stores a test built with from_url; closed at teardown."""
    made: list[TieredStore] = []
    try:
        yield made
    finally:
        for s in made:
            await s.aclose(drain_timeout=1)


def _no_flusher_tasks_but(*stores: TieredStore) -> bool:
    allowed = {s.flusher_task for s in stores}
    return all(
        t in allowed for t in asyncio.all_tasks() if t.get_name() == "tiered-session-flusher"
    )


# ---------------------------------------------------------------------- PostgreSQL outage
async def test_postgres_outage_behind_drains_through_refuses_backlog_bounded(
    private_pg: PrivatePostgres, real_backend: Backend, stores: list[TieredStore]
) -> None:
    opts = real_backend.options(outbox_shards=2, lease_ttl=1, hot_items=50)
    behind = TieredStore.from_url(
        REDIS_URL, private_pg.url, write_mode="behind", max_backlog=2000, **opts
    )
    through = TieredStore.from_url(
        REDIS_URL, private_pg.url, write_mode="through", run_flusher=False, **opts
    )
    stores += [behind, through]
    await behind.start()
    await through.start()
    sids = [f"b{i}" for i in range(8)]
    accepted: dict[str, list[Any]] = {sid: [msg(f"{sid}-warm")] for sid in sids}
    for sid in sids:
        await behind.session(sid).add_items(accepted[sid])
    ts = through.session("t")
    await ts.add_items([msg("t0")])
    await behind.flush(timeout=10)

    private_pg.stop()
    down = time.monotonic()
    errors_before = behind.counters.flush_errors
    refused = n = 0
    # Write-behind under load while SQL is down, for 3 s and until the bound is hit.
    while time.monotonic() - down < 3.0 or (refused == 0 and time.monotonic() - down < 15):
        for sid in sids:
            item = msg(f"{sid}-{n}")
            try:
                await behind.session(sid).add_items([item])
            except BackpressureError as e:
                assert "max_backlog=2000" in str(e)
                refused += 1
            else:
                accepted[sid].append(item)
        n += 1
        await asyncio.sleep(0.002)
    # Reads keep working from the hot window.
    assert await behind.session("b3").get_items(limit=5) == accepted["b3"][-5:]
    stats = await behind.stats()
    assert 2000 <= stats["backlog"] <= 4000  # at most 2 shards x max_backlog
    assert stats["flush_lag_seconds"] >= 2.0
    # Write-through refuses and leaves nothing visible.
    with pytest.raises(StorageUnavailableError) as err:
        await ts.add_items([msg("t-lost")])
    assert not isinstance(err.value, BackpressureError)
    assert "SQL" in str(err.value)
    assert await ts.get_items() == [msg("t0")]
    # A store closing during the outage gives up draining after its deadline, cleanly.
    closing = TieredStore.from_url(
        REDIS_URL, private_pg.url, write_mode="behind", **{**opts, "create_tables": False}
    )
    await closing.start()
    t0 = time.monotonic()
    await closing.aclose(drain_timeout=0.5)
    assert time.monotonic() - t0 < 6.5
    assert _no_flusher_tasks_but(behind)
    errors_during = behind.counters.flush_errors - errors_before
    outage = time.monotonic() - down
    private_pg.start()

    await behind.flush(timeout=30)  # the backlog drains once SQL is back
    lost = dups = 0
    for sid in sids:
        rows = [json.loads(d) for _, d in await behind.sql.latest(sid, None, None)]
        lost += len([x for x in accepted[sid] if x not in rows])
        dups += len(rows) - len({json.dumps(r) for r in rows})
        assert rows == accepted[sid]
        assert await behind.session(sid).get_items() == accepted[sid]
    await ts.add_items([msg("t1")])
    assert await ts.get_items() == [msg("t0"), msg("t1")]
    assert [json.loads(d) for _, d in await through.sql.latest("t", None, None)] == [
        msg("t0"),
        msg("t1"),
    ]
    items = sum(len(v) for v in accepted.values())
    print(
        f"\npostgres outage: {outage:.1f}s, items accepted={items}, refused by backpressure="
        f"{refused}, lost={lost}, duplicates={dups}, flush attempts while down={errors_during}"
    )
    assert refused > 0 and lost == 0 and dups == 0
    assert errors_during < 40  # capped exponential backoff: no spinning


# ---------------------------------------------------------------------- Redis outages
def _pair(redis_url: str, b: Backend, **extra: Any) -> tuple[TieredStore, TieredStore]:
    opts = b.options(outbox_shards=4, lease_ttl=1, hot_items=5, inflight_timeout=1, **extra)
    through = TieredStore.from_url(redis_url, PG_URL, write_mode="through", **opts)
    behind = TieredStore.from_url(redis_url, PG_URL, write_mode="behind", **opts)
    return through, behind


async def _filled_pair(
    redis_url: str, b: Backend, stores: list[TieredStore], **extra: Any
) -> tuple[TieredStore, TieredStore, TieredSession, TieredSession, list[Any], list[Any]]:
    """A write-through and a write-behind store, each with a session of 8 items in SQL."""
    through, behind = _pair(redis_url, b, **extra)
    stores += [through, behind]
    await through.start()
    await behind.start()
    t, s = through.session("t"), behind.session("b")
    items_t = [msg(f"t{i}") for i in range(8)]
    items_b = [msg(f"b{i}") for i in range(8)]
    await t.add_items(items_t)
    await s.add_items(items_b)
    await behind.flush(timeout=10)
    return through, behind, t, s, items_t, items_b


async def test_redis_restarted_empty(
    private_redis: PrivateRedis, real_backend: Backend, stores: list[TieredStore]
) -> None:
    through, behind, t, b, items_t, items_b = await _filled_pair(
        private_redis.url, real_backend, stores
    )

    private_redis.kill()
    # Reads are served from SQL (degraded), writes are refused in both modes.
    assert await t.get_items() == items_t
    assert await t.get_items(limit=3) == items_t[-3:]
    assert await b.get_items(limit=20) == items_b
    assert through.counters.degraded_reads == 2 and behind.counters.degraded_reads == 1
    for call in (t.add_items([msg("x")]), b.add_items([msg("x")]), t.pop_item(), b.clear_session()):
        with pytest.raises(StorageUnavailableError, match="Redis unreachable"):
            await call
    private_redis.start()  # empty: every session re-warms from SQL

    assert await t.get_items() == items_t
    assert await b.get_items(limit=2) == items_b[-2:]
    assert await t.pop_item() == items_t[-1]
    await b.add_items([msg("b8")])
    await t.add_items([msg("t8")])
    await behind.flush(timeout=10)  # the flusher found the outbox gone and set it up again
    assert await t.get_items() == [*items_t[:-1], msg("t8")]
    assert await b.get_items() == [*items_b, msg("b8")]
    rows = [json.loads(d) for _, d in await behind.sql.latest("b", None, None)]
    assert rows == [*items_b, msg("b8")]
    assert (await behind.stats())["degraded_reads"] == 1


async def test_redis_paused_past_client_timeout_then_resumed_with_old_data(
    private_redis: PrivateRedis, real_backend: Backend, stores: list[TieredStore]
) -> None:
    through, behind, t, b, items_t, items_b = await _filled_pair(
        private_redis.url, real_backend, stores, redis_kwargs={"socket_timeout": 0.5}
    )

    private_redis.pause()
    paused = time.monotonic()
    assert await t.get_items() == items_t  # after the 0.5 s client timeout: from SQL
    assert await b.get_items(limit=4) == items_b[-4:]
    with pytest.raises(StorageUnavailableError, match="Redis unreachable"):
        await t.add_items([msg("t-refused")])  # through: must never become visible
    with pytest.raises(StorageUnavailableError, match="Redis unreachable"):
        await b.add_items([msg("b-maybe")])  # behind: outcome unknown after a timeout
    with pytest.raises(StorageUnavailableError):
        await t.pop_item()
    await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - paused)))
    private_redis.resume()

    # The old hot window is still right (no write bypassed Redis); the refused
    # write-through add never shows up, also not after recovery.
    deadline = time.monotonic() + 8.0  # the flusher may be in its 2 s backoff
    while time.monotonic() < deadline:
        got = await t.get_items()
        assert got == items_t, got
        if not await through.redis.hlen(through.keys.session("t").shard.inflight):
            break
        await asyncio.sleep(0.05)
    assert not await through.redis.hlen(through.keys.session("t").shard.inflight)
    assert await t.get_items() == items_t
    assert [json.loads(d) for _, d in await through.sql.latest("t", None, None)] == items_t
    await behind.flush(timeout=10)
    hot_b = await b.get_items()
    assert hot_b in (items_b, [*items_b, msg("b-maybe")])
    assert [json.loads(d) for _, d in await behind.sql.latest("b", None, None)] == hot_b
    await t.add_items([msg("t8")])
    assert await t.get_items(limit=2) == [items_t[-1], msg("t8")]
    assert through.counters.degraded_reads == 1


# ---------------------------------------------------------------------- poison
async def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tiered_session", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_poison_entry_goes_to_dead_letters_and_the_queue_keeps_moving(
    real_backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    require_servers()
    store = real_backend.store(write_mode="behind", outbox_shards=1, max_attempts=3)
    await store.start()
    s = store.session("good")
    await s.add_items([msg(1)])
    outbox = store.keys.shard(0).outbox
    bad = b'{"a":"\x00"}'  # PostgreSQL text cannot hold NUL: rejected every time
    fields = {b"o": b"a", b"s": b"poison", b"q": b"1", b"t": b"0", b"l": b"%d" % len(bad)}
    await store.redis.xadd(outbox, {**fields, b"d": bad})
    await store.redis.xadd(outbox, {b"o": b"a", b"s": b"broken"})  # undecodable
    await s.add_items([msg(2), msg(3)])
    with caplog.at_level(logging.ERROR, logger="tiered_session.flusher"):
        await store.flush(timeout=20)
    rows = [json.loads(d) for _, d in await store.sql.latest("good", None, None)]
    assert rows == [msg(1), msg(2), msg(3)]  # the entries behind the poison went through
    dead_logs = [r for r in caplog.records if "dead letters" in r.getMessage()]
    assert len(dead_logs) == 2  # each logged once, with its reason
    stats = await store.stats()
    assert stats["dead_letters"] == 2 and stats["backlog"] == 0

    cli = [
        "--redis-url",
        REDIS_URL,
        "--sql-url",
        PG_URL,
        "--key-prefix",
        real_backend.prefix,
        "--sessions-table",
        real_backend.sessions_table,
        "--messages-table",
        real_backend.messages_table,
        "--shards",
        "1",
    ]
    listed = await _cli("dead-letters", "list", "--json", *cli)
    assert listed.returncode == 0, listed.stderr
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    by_session = {e["session_id"]: e for e in entries}
    assert set(by_session) == {"poison", "broken"}
    assert "UTF8" in by_session["poison"]["reason"]
    assert "undecodable" in by_session["broken"]["reason"]

    # Replay: an entry whose cause was fixed is applied; the poison fails again.
    good = b'{"n":1}'
    dead = store.keys.shard(0).dead
    fixed = {b"o": b"a", b"s": b"revived", b"q": b"1", b"t": b"0", b"l": b"7", b"d": good}
    fixed_id = (await store.redis.xadd(dead, {b"id": b"0-1", b"reason": b"test", **fixed})).decode()
    replay = await _cli(
        "dead-letters", "replay", f"0:{fixed_id}", by_session["poison"]["ref"], *cli
    )
    assert replay.returncode == 0, replay.stderr
    assert "replayed 2 of 2" in replay.stdout
    await store.flush(timeout=20)
    assert [json.loads(d) for _, d in await store.sql.latest("revived", None, None)] == [{"n": 1}]
    stats_cli = await _cli("stats", "--json", *cli)
    assert stats_cli.returncode == 0, stats_cli.stderr
    shown = json.loads(stats_cli.stdout)
    assert shown["dead_letters"] == 2 and shown["backlog"] == 0  # poison + broken again
    for key in ("backlog", "flush_lag_seconds", "flushed_entries", "cache_hits", "cache_misses"):
        assert key in shown
    assert {"cold_reads", "degraded_reads", "live_flushers"} <= set(shown)


async def test_write_through_commit_lands_but_redis_pauses_before_settle(
    private_redis: PrivateRedis, real_backend: Backend, stores: list[TieredStore]
) -> None:
    """add_items returns (the items are committed) and they become visible, never half."""
    through, _ = _pair(private_redis.url, real_backend, redis_kwargs={"socket_timeout": 0.3})
    stores.append(through)
    await through.start()
    t = through.session("t")
    await t.add_items([msg(0)])
    armed = [True]
    insert_new = through.sql.insert_new

    async def pause_after_insert(*args: Any) -> None:
        await insert_new(*args)
        if armed[0]:
            armed[0] = False
            private_redis.pause()  # the SQL commit happened; the settle cannot

    through.sql.insert_new = pause_after_insert  # type: ignore[method-assign]
    try:
        await t.add_items([msg(1), msg(2)])  # returns: the items are committed in SQL
    finally:
        private_redis.resume()
        del through.sql.insert_new
    assert not armed[0]
    rows = [json.loads(d) for _, d in await through.sql.latest("t", None, None)]
    assert rows == [msg(0), msg(1), msg(2)]
    assert await t.get_items() == [msg(0), msg(1), msg(2)]  # settled on the next call
    assert isinstance(through.mode, WriteThrough)
    assert not through.mode.settles.unsettled
    assert not await through.redis.hlen(through.keys.session("t").shard.inflight)


async def test_redis_restored_from_an_older_snapshot_never_deletes_committed_rows(
    private_redis: PrivateRedis, real_backend: Backend, stores: list[TieredStore]
) -> None:
    through, _ = _pair(private_redis.url, real_backend)
    stores.append(through)
    await through.start()
    t = through.session("t")
    await t.add_items([msg(0), msg(1)])
    await through.redis.save()  # the snapshot Redis will come back with
    await t.add_items([msg(2), msg(3)])
    private_redis.kill()
    private_redis.start()  # loads the older snapshot: its counter is behind SQL
    # The snapshot may hold the first add still pending (its settle follows the
    # commit): each retry is refused until a flusher has settled that add as SQL
    # shows (inflight_timeout=1) and the session reloads from SQL.
    refusals = []
    deadline = time.monotonic() + 15
    while True:
        try:
            await t.add_items([msg(4)])
            break
        except StorageUnavailableError as e:
            if "Redis unreachable" not in str(e):  # a pooled connection found closed
                refusals.append(str(e))
            assert time.monotonic() < deadline, refusals
            await asyncio.sleep(0.2)
    assert refusals and all("Redis was behind SQL" in r for r in refusals), refusals
    want = [msg(i) for i in range(5)]
    assert await t.get_items() == want
    assert [json.loads(d) for _, d in await through.sql.latest("t", None, None)] == want
