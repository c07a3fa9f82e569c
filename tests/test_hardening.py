"""Hardening: corrupt values on read, identifiers, secrets, set-up mistakes, hangs, eviction.

Each test fails without the fix it covers. Faults that are a server's run on
real servers: an extra Redis started (and stopped by PID) with the policy
under test, a TCP endpoint that accepts and never answers, the real
PostgreSQL with a database or role that does not exist.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import text

from tiered_session import (
    ConfigurationError,
    CorruptDataError,
    InvalidInputError,
    StorageUnavailableError,
    StoreConfig,
    TieredSession,
    TieredStore,
)
from tiered_session._codec import decode_item, encode_item
from tiered_session._config import redact_url
from tiered_session.hot.checks import eviction_problem

from .conftest import PG_URL, REDIS_URL, Backend, StoreFactory, require_servers, unique_name
from .support import message
from .test_faults import PrivateRedis


# ---------------------------------------------------------------- 5. corrupt values on read
@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity"])
async def test_nan_and_infinity_rows_are_corrupt_on_read(
    make_store: StoreFactory, backend: Backend, bad: str
) -> None:
    store = make_store(hot_items=2)
    s = store.session("nan")
    await s.add_items([message(1), message(2), message(3)])
    await store.flush()
    async with store.sql.begin() as conn:  # damage the oldest row, below the hot window
        await conn.execute(
            text(f'UPDATE "{backend.messages_table}" SET message_data = :d WHERE seq = 1'),
            {"d": f'{{"role": "user", "content": {bad}}}'},
        )
    await store.evict("nan")
    with pytest.raises(CorruptDataError, match="seq=1"):
        await s.get_items()
    assert (await store.stats())["corrupt_rows"] >= 1


@pytest.mark.parametrize("bad", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_not_json_for_the_decoder(bad: bytes) -> None:
    with pytest.raises(CorruptDataError, match="not a JSON value"):
        decode_item(b'{"x": ' + bad + b"}")


async def test_integers_beyond_64_bits_round_trip_exactly(make_store: StoreFactory) -> None:
    store = make_store(hot_items=2)
    s = store.session("big")
    item = {"role": "user", "n": 3**50, "neg": -(3**45), "small": 1}  # not exact as floats
    assert decode_item(encode_item(item)) == item
    await s.add_items([item])
    got = (await s.get_items())[0]
    assert got == item and isinstance(got["n"], int)
    await store.flush()
    await store.evict("big")
    assert (await s.get_items())[0]["n"] == 3**50  # read back from SQL


# ---------------------------------------------------------------- 9. identifiers and ids
@pytest.mark.parametrize("option", ["key_prefix", "sessions_table", "messages_table"])
def test_identifiers_with_a_trailing_newline_are_refused(option: str) -> None:
    with pytest.raises(ConfigurationError):
        StoreConfig(**{option: "name_x\n"})


async def test_a_session_id_that_is_not_utf8_fails_before_any_write(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    with pytest.raises(InvalidInputError, match="UTF-8"):
        await store.session("bad\udc80id").add_items([message(1)])
    with pytest.raises(InvalidInputError, match="UTF-8"):
        TieredSession("\ud800")
    assert await store.list_sessions() == []


# ---------------------------------------------------------------- 11. secrets and contents
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:s3cret@h:6379/0", "redis://user:***@h:6379/0"),
        ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://u:s3c@ret@h/0", "redis://u:***@h/0"),
        (
            "rediss://h:6380/0?password=s3cret&ssl_cert_reqs=none",
            "rediss://h:6380/0?password=***&ssl_cert_reqs=none",
        ),
        ("unix:///tmp/r.sock?db=1&password=s3cret", "unix:///tmp/r.sock?db=1&password=***"),
        (
            "postgresql+asyncpg://app:s3cret@db/x?sslpassword=s3cret",
            "postgresql+asyncpg://app:***@db/x?sslpassword=***",
        ),
        ("postgres:s3cret@db/x", "<a URL without scheme://>"),
    ],
)
def test_urls_are_redacted(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)


def test_a_bad_sql_url_error_never_holds_its_password() -> None:
    for url in ("postgres:s3cret@db/agents", "postgresql+asyncpg://app:s3cret@db:notaport/x"):
        with pytest.raises(ConfigurationError) as info:
            TieredStore.from_url("redis://127.0.0.1:6379/0", url)
        assert "s3cret" not in str(info.value)


async def test_a_malformed_hot_entry_is_reported_without_its_content(
    make_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store(hot_items=10)
    s = store.session("damaged")
    await s.add_items([message(1)])
    k = store.session_keys("damaged")
    await store.hot.redis.rpush(k.items, b"PRIVATE-user-words with no separator")
    with caplog.at_level(logging.ERROR, logger="tiered_session"), pytest.raises(CorruptDataError):
        await s.get_items()
    assert "PRIVATE" not in caplog.text
    assert "damaged" in caplog.text  # where: the session


# ---------------------------------------------------------------- 6. no silent fallback
def test_a_real_tier_beside_an_implicit_embedded_one_is_refused() -> None:
    with pytest.raises(ConfigurationError, match='redis_url="memory://"'):
        TieredStore.from_url(sql_url=PG_URL)
    with pytest.raises(ConfigurationError, match="sql_url"):
        TieredStore.from_url(redis_url="redis://127.0.0.1:6379/0")
    TieredStore.from_url()  # both embedded: the default
    TieredStore.from_url("memory://", "sqlite+aiosqlite://")  # asked for by name


async def test_memory_redis_with_a_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'h.db'}"
    async with TieredStore.from_url("memory://", url, create_tables=True) as store:
        await store.session("f").add_items([message(1)])
    async with TieredStore.from_url("memory://", url) as store:
        assert await store.session("f").get_items() == [message(1)]


def test_db_path_keeps_history_in_a_file_across_processes(tmp_path: Path) -> None:
    db = tmp_path / "data" / "conv.db"  # the directory does not exist yet
    script = textwrap.dedent(
        """
        import asyncio, sys
        from tiered_session import TieredSession
        async def main(n):
            async with TieredSession("conv", db_path=sys.argv[1]) as s:
                await s.add_items([{"role": "user", "content": f"turn {n}"}])
                print([i["content"] for i in await s.get_items()])
        asyncio.run(main(int(sys.argv[2])))
        """
    )
    outs = [
        subprocess.run(
            [sys.executable, "-c", script, str(db), str(n)],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        for n in (1, 2)
    ]
    assert outs == ["['turn 1']", "['turn 1', 'turn 2']"]
    assert db.exists()


def test_db_path_refuses_write_behind(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="write-through only"):
        TieredSession("x", db_path=tmp_path / "x.db", write_mode="behind")


# ---------------------------------------------------------------- 7. hangs
@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A loopback port that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


@pytest.mark.servers
async def test_a_sql_server_that_never_answers_fails_calls_in_time(silent_port: int) -> None:
    require_servers()
    name = unique_name("hang")
    store = TieredStore.from_url(
        REDIS_URL,
        f"postgresql+asyncpg://postgres@127.0.0.1:{silent_port}/test",
        key_prefix=name,
    )
    started = time.monotonic()
    await store.start()  # an outage, not a mistake: the store starts
    assert time.monotonic() - started < 15
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError) as info:
        await store.session("x").add_items([message(1)])
    assert time.monotonic() - started < 15
    reason = str(info.value).split("unreachable:", 1)[-1].strip()
    assert reason and "TimeoutError" in reason, str(info.value)
    await store.aclose(drain_timeout=1)


# ---------------------------------------------------------------- 8. mistakes are not outages
@pytest.mark.servers
@pytest.mark.parametrize(
    ("sql_url", "named"),
    [
        ("postgresql+asyncpg://postgres@127.0.0.1:5432/no_such_db_ts", "no_such_db_ts"),
        ("postgresql+asyncpg://no_such_role_ts@127.0.0.1:5432/test", "no_such_role_ts"),
    ],
)
async def test_a_wrong_database_or_role_is_a_configuration_error(sql_url: str, named: str) -> None:
    require_servers()
    store = TieredStore.from_url(REDIS_URL, sql_url, create_tables=True)
    with pytest.raises(ConfigurationError, match=named):
        async with store:
            pass
    await store.aclose()


async def test_a_sqlite_file_in_a_missing_directory_is_a_configuration_error(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'x.db'}"
    store = TieredStore.from_url("memory://", url, create_tables=True)
    with pytest.raises(ConfigurationError, match="missing"):
        await store.start()
    await store.aclose()


@pytest.mark.servers
async def test_a_redis_db_out_of_range_is_a_configuration_error() -> None:
    require_servers()
    store = TieredStore.from_url(REDIS_URL.rsplit("/", 1)[0] + "/99", PG_URL)
    with pytest.raises(ConfigurationError, match="no db 99"):
        await store.start()
    await store.aclose()


# ---------------------------------------------------------------- 10. workers starting together
@pytest.mark.servers
@pytest.mark.processes
def test_twenty_workers_creating_the_schema_at_once(tmp_path: Path) -> None:
    require_servers()
    name = unique_name("race")
    script = textwrap.dedent(
        f"""
        import asyncio, logging, sys
        logging.basicConfig(level=logging.WARNING)
        from tiered_session import TieredStore
        async def main():
            store = TieredStore.from_url(
                {REDIS_URL!r}, {PG_URL!r}, key_prefix={name!r},
                sessions_table={name + "_s"!r}, messages_table={name + "_m"!r},
                create_tables=True, run_flusher=False,
                engine_kwargs={{"pool_size": 2}})  # 20 processes: stay within max_connections
            async with store:
                await store.session("w" + sys.argv[1]).add_items([{{"n": 1}}])
        asyncio.run(main())
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(i)], stderr=subprocess.PIPE, text=True)
        for i in range(20)
    ]
    try:
        errs = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 20, errs
        assert not [e for e in errs if "unreachable" in e or "Error" in e], errs
    finally:
        asyncio.run(_drop(name))


async def _drop(name: str) -> None:
    store = TieredStore.from_url(
        REDIS_URL,
        PG_URL,
        key_prefix=name,
        sessions_table=name + "_s",
        messages_table=name + "_m",
    )
    async with store.sql.begin() as conn:
        await conn.execute(text(f'DROP TABLE IF EXISTS "{name}_m" CASCADE'))
        await conn.execute(text(f'DROP TABLE IF EXISTS "{name}_s" CASCADE'))
    keys = [k async for k in store.redis.scan_iter(match=f"{name}:*")]
    if keys:
        await store.redis.delete(*keys)
    await store.aclose()


# ---------------------------------------------------------------- 1. Redis configured to evict
@pytest.fixture
def extra_redis(tmp_path: Path) -> Iterator[Any]:
    """Start Redis servers on free loopback ports with given options; stop them by PID."""
    started: list[PrivateRedis] = []

    def start(*options: str) -> str:
        server = PrivateRedis(tmp_path)
        server.start(*options)
        started.append(server)
        return server.url

    yield start
    for server in started:
        server.destroy()


def test_eviction_policies() -> None:
    assert eviction_problem("noeviction") is None
    assert eviction_problem("volatile-lru") is None
    problem = eviction_problem("allkeys-lru")
    assert problem is not None and "allkeys-lru" in problem and "noeviction" in problem


@pytest.mark.servers
@pytest.mark.faults
async def test_an_evicting_redis_is_refused_at_start(
    extra_redis: Any, real_backend: Backend
) -> None:
    url = extra_redis("--maxmemory", "50mb", "--maxmemory-policy", "allkeys-lru")
    store = TieredStore.from_url(url, PG_URL, **real_backend.options())
    with pytest.raises(ConfigurationError, match=r"allkeys-lru.*noeviction"):
        await store.start()
    await store.aclose()
    accepted = TieredStore.from_url(url, PG_URL, **real_backend.options(allow_eviction=True))
    await accepted.start()  # the risk taken explicitly
    await accepted.aclose()


@pytest.mark.servers
@pytest.mark.faults
async def test_an_unchecked_policy_is_logged_once(
    extra_redis: Any, real_backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    url = extra_redis("--rename-command", "CONFIG", "")  # as managed services do
    import tiered_session.hot.checks as checks

    checks._unchecked_logged = False
    with caplog.at_level(logging.WARNING, logger="tiered_session"):
        for _ in range(2):
            store = TieredStore.from_url(url, PG_URL, **real_backend.options())
            await store.start()
            await store.aclose()
    said = [r.message for r in caplog.records if "maxmemory-policy" in r.message]
    assert len(said) == 1 and "CONFIG GET maxmemory-policy" in said[0]


@pytest.mark.servers
@pytest.mark.faults
async def test_volatile_lru_under_memory_pressure_loses_nothing_acknowledged(
    extra_redis: Any, real_backend: Backend
) -> None:
    """Unflushed keys carry no TTL: a volatile-* Redis evicts only sessions already in SQL."""
    url = extra_redis("--maxmemory", "8mb", "--maxmemory-policy", "volatile-lru")
    store = TieredStore(
        redis=Redis.from_url(url, decode_responses=False),
        engine=real_backend.engine,
        owns_clients=False,
        **real_backend.options(write_mode="behind", hot_items=50, hot_ttl=3600),
    )
    acked: dict[str, list[Any]] = {}
    body = "x" * 2000
    try:
        await store.start()
        for i in range(600):  # ~12 MB of items through an 8 MB Redis
            sid = f"s{i}"
            items = [{"role": "user", "content": f"{sid} {j} {body}"} for j in range(10)]
            try:
                await store.session(sid).add_items(items)
            except StorageUnavailableError:  # OOM: refused, not acknowledged
                await store.flush(timeout=60)
                continue
            acked[sid] = items
            if i % 50 == 49:
                await store.flush(timeout=60)
        await store.flush(timeout=60)
        info = await store.redis.info("stats")
        assert int(info["evicted_keys"]) > 0, "the test did not reach memory pressure"
        assert len(acked) > 100
        for sid, items in acked.items():  # evicted ones re-warm from SQL
            assert await store.session(sid).get_items() == items, sid
            rows = await store.sql.latest(sid, None, None)
            assert len(rows) == len(items), sid
    finally:
        await store.aclose()
        redis = store.redis
        await redis.aclose()


@pytest.mark.servers
@pytest.mark.faults
async def test_the_flusher_reports_a_policy_changed_to_evict(
    extra_redis: Any,
    real_backend: Backend,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tiered_session.outbox.flusher as flusher

    monkeypatch.setattr(flusher, "_POLICY_EVERY", 0.05)
    url = extra_redis("--maxmemory", "50mb")
    store = TieredStore.from_url(url, PG_URL, **real_backend.options(write_mode="behind"))
    with caplog.at_level(logging.ERROR, logger="tiered_session.flusher"):
        async with store:
            await store.redis.config_set("maxmemory-policy", "allkeys-lru")
            await store.session("s").add_items([message(1)])
            await asyncio.sleep(0.5)
            await store.flush(timeout=10)  # it keeps flushing: what is accepted reaches SQL
    said = [r.message for r in caplog.records if "allkeys-lru" in r.message]
    assert said, caplog.text


# ---------------------------------------------------------------- 2. a seq reused in one batch
async def test_a_seq_reused_inside_one_flush_batch_is_dead_lettered_not_dropped(
    backend: Backend,
) -> None:
    """Two entries of one flush batch with the same seq: the insert keeps one, the other
    is compared with SQL and kept in the dead-letter stream, never dropped."""
    from tiered_session.outbox.dead_letters import list_dead_letters
    from tiered_session.outbox.flusher import Flusher

    store = backend.store(write_mode="behind", outbox_shards=1, max_attempts=1, run_flusher=False)
    s = store.session("reused")
    await s.add_items([message(1)])
    flusher = Flusher(store)
    await flusher.drain(timeout=20)
    await s.add_items([message(2)])  # seq 2, not flushed
    await backend.redis.hset(store.session_keys("reused").meta, b"n", 1)  # an old snapshot
    await s.add_items([message(3)])  # seq 2 again, in the same batch as message(2)
    await flusher.drain(timeout=20)
    await flusher.release()
    stored = [json.loads(d) for _, d in await store.sql.latest("reused", None, None)]
    assert stored == [message(1), message(2)]
    dead = await list_dead_letters(store.hot)
    assert [(d["session_id"], d["seq"]) for d in dead] == [("reused", "2")]
    assert "already holds a different item" in dead[0]["reason"]


async def test_a_lost_meta_hash_with_unflushed_writes_hands_out_no_seq_again(
    backend: Backend,
) -> None:
    """The hash gone (evicted) while the list holds unflushed writes: adds are refused
    until a flusher has them in SQL; then the session warms and numbers on from there."""
    from tiered_session.outbox.flusher import Flusher

    store = backend.store(write_mode="behind", run_flusher=False)
    s = store.session("nometa")
    flusher = Flusher(store)
    await s.add_items([message(1)])
    await flusher.drain(timeout=20)
    await s.add_items([message(2)])  # not flushed
    await backend.redis.delete(store.session_keys("nometa").meta)
    with pytest.raises(StorageUnavailableError, match="metadata is gone"):
        await s.add_items([message(3)])
    await flusher.drain(timeout=20)
    await s.add_items([message(3)])
    await flusher.drain(timeout=20)
    await flusher.release()
    rows = await store.sql.latest("nometa", None, None)
    assert [(q, json.loads(d)) for q, d in rows] == [
        (1, message(1)),
        (2, message(2)),
        (3, message(3)),
    ]
    assert await s.get_items() == [message(1), message(2), message(3)]


async def test_a_redis_that_never_answers_fails_calls_with_a_reason(
    silent_port: int, real_backend: Backend
) -> None:
    store = TieredStore.from_url(
        f"redis://127.0.0.1:{silent_port}/0", PG_URL, **real_backend.options()
    )
    started = time.monotonic()
    await store.start()
    with pytest.raises(StorageUnavailableError) as info:
        await store.session("x").add_items([message(1)])
    assert time.monotonic() - started < 20
    reason = str(info.value).split("(", 1)[1].split(")", 1)[0]
    assert reason.split(":", 1)[1].strip(), str(info.value)  # "TimeoutError: <something>"
    await store.aclose(drain_timeout=1)


# ---------------------------------------------------------------- 3. a session stuck for good
async def test_a_list_lost_with_writes_pending_recovers_once_they_are_flushed(
    backend: Backend,
) -> None:
    """Refused while writes are pending; once a flusher has them in SQL, the session warms."""
    from tiered_session.outbox.flusher import Flusher

    store = backend.store(write_mode="behind", hot_items=3, run_flusher=False)
    s = store.session("stuck")
    flusher = Flusher(store)
    await s.add_items([message(i) for i in range(5)])
    await flusher.drain(timeout=20)
    await s.add_items([message(5)])  # only in the outbox
    await backend.redis.delete(store.session_keys("stuck").items)  # evicted
    with pytest.raises(StorageUnavailableError, match="maxmemory-policy"):
        await s.get_items()
    await flusher.drain(timeout=20)
    assert await s.get_items() == [message(i) for i in range(6)]
    await s.add_items([message(6)])
    await flusher.drain(timeout=20)
    await flusher.release()
    assert await s.get_items(limit=2) == [message(5), message(6)]
    await store.evict("stuck", timeout=10)
    assert await s.get_items() == [message(i) for i in range(7)]
