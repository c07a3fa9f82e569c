"""Metrics: every OpenTelemetry instrument records what happens; the Prometheus endpoint serves it.

OpenTelemetry readings are taken on a worker thread (as a periodic exporter
takes them), so the backlog gauges can read Redis through the store's loop.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import fakeredis
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import StaticPool

from tiered_session import (
    ConfigurationError,
    Flusher,
    InvalidInputError,
    MissingDependencyError,
    StorageUnavailableError,
    TieredStore,
)
from tiered_session.metrics import instrument, serve_prometheus
from tiered_session.metrics.names import COUNTERS

from .conftest import Backend, StoreFactory
from .support import free_port, short

Point = tuple[dict[str, Any], Any]


class Readings:
    """One collection: points by instrument name (histograms as (count, sum))."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self.points: dict[str, list[Point]] = {}
        data = reader.get_metrics_data()
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for p in m.data.data_points:
                        value = (p.count, p.sum) if isinstance(p, HistogramDataPoint) else p.value
                        self.points.setdefault(m.name, []).append((dict(p.attributes or {}), value))

    def value(self, name: str, **attrs: Any) -> Any:
        found = [v for a, v in self.points.get(f"tiered_session.{name}", []) if _has(a, attrs)]
        assert len(found) == 1, (name, attrs, self.points.get(f"tiered_session.{name}"))
        return found[0]

    def all(self, name: str) -> list[Point]:
        return self.points.get(f"tiered_session.{name}", [])


def _has(attrs: dict[str, Any], want: dict[str, Any]) -> bool:
    return all(attrs.get(k) == v for k, v in want.items())


async def read(reader: InMemoryMetricReader) -> Readings:
    """Collect on a worker thread, as a periodic exporter does."""
    return await asyncio.to_thread(Readings, reader)


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    p = MeterProvider(metric_readers=[reader])
    yield p
    p.shutdown()


@pytest.fixture
async def embedded() -> AsyncIterator[tuple[fakeredis.FakeServer, list[TieredStore]]]:
    """A fakeredis server (that can be 'stopped') and the stores made on it, closed after."""
    server = fakeredis.FakeServer()
    stores: list[TieredStore] = []
    yield server, stores
    server.connected = True
    for s in stores:
        await s.aclose()


def embedded_store(
    env: tuple[fakeredis.FakeServer, list[TieredStore]], **options: Any
) -> TieredStore:
    server, stores = env
    store = TieredStore(
        redis=fakeredis.FakeAsyncRedis(server=server),
        engine=create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool),
        owns_clients=True,
        **{"create_tables": True, **options},
    )
    stores.append(store)
    return store


# ---------------------------------------------------------------------- counters
async def test_counters_record_hits_misses_and_cold_reads(
    make_store: StoreFactory, reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    store = make_store(hot_items=5)
    handle = instrument(store, provider)
    s = store.session("u")
    await s.add_items([short(i) for i in range(4)])
    await s.add_items([short(i) for i in range(4, 12)])
    await store.flush(timeout=10)  # (write-behind: Redis keeps only the window once flushed)
    assert await s.get_items(limit=3) == [short(i) for i in range(9, 12)]  # hot window: a hit
    assert await s.get_items() == [short(i) for i in range(12)]  # older than the window: cold
    await store.evict("u")
    assert len(await s.get_items(limit=2)) == 2  # evicted: a miss (warm-up), then a hit
    got = await read(reader)
    c = store.counters
    assert c.cache_hits >= 2 and c.cold_reads >= 1 and c.cache_misses >= 1
    for name, _ in COUNTERS:
        assert got.value(name) == getattr(c, name), name
    assert got.value("items_added") == 12
    attrs = got.all("cache_hits")[0][0]
    assert attrs == {"key_prefix": store.config.key_prefix, "write_mode": store.config.write_mode}
    handle.close()


async def test_call_durations_by_operation(
    embedded: Any, reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    store = embedded_store(embedded, write_mode="behind")
    instrument(store, provider)
    s = store.session("u")
    await s.add_items([short(1), short(2)])
    await s.get_items()
    await s.get_items(limit=1)
    assert await s.pop_item() == short(2)
    await s.clear_session()
    await store.get_items("u")  # the store's own calls are timed too
    got = await read(reader)
    counts = {a["operation"]: v[0] for a, v in got.all("call.duration") if a["outcome"] == "ok"}
    assert counts == {"add_items": 1, "get_items": 3, "pop_item": 1, "clear_session": 1}
    for _, (n, total) in got.all("call.duration"):
        assert n > 0 and 0 < total < 10


async def test_degraded_reads_and_errors_by_kind_while_redis_is_down(
    embedded: Any, reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    server, _ = embedded
    store = embedded_store(embedded, write_mode="through")
    instrument(store, provider)
    s = store.session("u")
    await s.add_items([short(1), short(2)])
    with pytest.raises(InvalidInputError):
        await s.get_items(limit=-1)
    server.connected = False  # Redis unreachable
    assert await s.get_items() == [short(1), short(2)]  # from SQL: degraded
    with pytest.raises(StorageUnavailableError):
        await s.add_items([short(3)])
    got = await read(reader)
    assert got.value("degraded_reads") == 1
    assert got.value("errors", operation="get_items", kind="invalid_input") == 1
    assert got.value("errors", operation="add_items", kind="storage_unavailable") == 1
    assert got.value("errors", operation="flush", kind="flush_commit") == 0
    assert got.value("call.duration", operation="add_items", outcome="error")[0] == 1
    assert got.value("call.duration", operation="get_items", outcome="ok")[0] == 1
    assert got.all("backlog") == []  # Redis does not answer: left out, not zero
    server.connected = True
    assert await s.get_items() == [short(1), short(2)]


async def test_flush_errors_by_kind(
    tmp_path: Any, reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    store = TieredStore.from_url(
        "memory://",
        f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        write_mode="behind",
        run_flusher=False,
        create_tables=True,
    )
    try:
        instrument(store, provider)
        await store.session("u").add_items([short(1)])
        async with store.engine.begin() as conn:  # SQL cannot take the batch
            await conn.execute(text(f'DROP TABLE "{store.config.messages_table}"'))
        flusher = Flusher(store)
        assert await flusher.step() == 0
        await flusher.release()
        got = await read(reader)
        assert got.value("errors", operation="flush", kind="flush_commit") == 1
        assert got.value("errors", operation="flush", kind="flush_ack") == 0
        assert got.value("flushed_entries") == 0
        assert sum(n for _, n in got.all("backlog")) == 1
    finally:
        await store.aclose()


async def test_flushed_items_and_flush_lag(
    embedded: Any, reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    store = embedded_store(embedded, write_mode="behind", run_flusher=False)
    instrument(store, provider)
    s = store.session("u")
    await s.add_items([short(1), short(2), short(3)])
    await s.add_items([short(4), short(5)])
    await asyncio.sleep(0.05)
    flusher = Flusher(store)
    assert await flusher.drain() == 2
    await flusher.release()
    got = await read(reader)
    assert got.value("flushed_entries") == 2
    assert got.value("flushed_items") == 5
    assert got.value("flush_batches") >= 1
    n, total = got.value("flush.lag")
    assert n == got.value("flush_batches") and 0.04 <= total < 20  # one per batch


async def test_dead_letters(
    embedded: Any, reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    store = embedded_store(embedded, write_mode="behind", run_flusher=False, outbox_shards=1)
    instrument(store, provider)
    await store.session("u").add_items([short(1)])
    await store.redis.xadd(store.keys.shard(0).outbox, {b"o": b"a", b"s": b"broken"})
    flusher = Flusher(store)
    assert await flusher.drain() == 2
    await flusher.release()
    got = await read(reader)
    assert got.value("dead_lettered") == 1  # this process moved one
    assert got.value("dead_letters") == 1  # the streams hold one
    assert got.value("flushed_entries") == 1
    assert got.value("backlog", shard=0) == 0


async def test_backlog_gauge_per_shard(
    embedded: Any, reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    store = embedded_store(embedded, write_mode="behind", run_flusher=False, outbox_shards=4)
    handle = instrument(store, provider)
    handle.probe.max_age = 0.0  # a fresh sample at each collection
    sids = [f"s{i}" for i in range(12)]
    for sid in sids:
        await store.session(sid).add_items([short(1)])
    want = [0] * 4
    for sid in sids:
        want[store.session_keys(sid).shard.shard] += 1
    got = await read(reader)
    per_shard = {a["shard"]: n for a, n in got.all("backlog")}
    assert per_shard == dict(enumerate(want))
    assert got.value("backlog.age") >= 0
    assert got.value("live_flushers") == 0
    assert got.value("dead_letters") == 0
    flusher = Flusher(store)
    await flusher.drain()
    await flusher.release()
    got = await read(reader)
    assert {a["shard"]: n for a, n in got.all("backlog")} == dict.fromkeys(range(4), 0)


async def test_a_collection_on_the_loop_itself_never_blocks_it(
    embedded: Any, reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    store = embedded_store(embedded, write_mode="behind", run_flusher=False, outbox_shards=2)
    instrument(store, provider)
    await store.session("u").add_items([short(1)])
    assert Readings(reader).all("backlog") == []  # no sample yet: one is taken meanwhile
    await asyncio.sleep(0.05)
    assert sum(n for _, n in Readings(reader).all("backlog")) == 1


# ---------------------------------------------------------------------- the handle
async def test_handle_close_removes_the_hooks_and_the_series(
    embedded: Any, reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    store = embedded_store(embedded)
    assert store.counters.hooks is None  # never instrumented: nothing timed
    handle = instrument(store, provider)
    assert store.counters.hooks is handle
    with pytest.raises(ConfigurationError, match="instrumented already"):
        instrument(store, provider)
    handle.close()
    handle.close()
    assert store.counters.hooks is None
    await store.session("u").get_items()
    got = await read(reader)
    assert got.all("cache_hits") == [] and got.all("call.duration") == []
    with instrument(store, provider, attributes={"store": "again"}):
        assert store.counters.hooks is not None
    assert store.counters.hooks is None


async def test_two_stores_on_one_meter_are_told_apart(
    embedded: Any, reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    a = embedded_store(embedded, key_prefix="a")
    b = embedded_store(embedded, key_prefix="b")
    instrument(a, provider, attributes={"store": "a"})
    instrument(b, provider, attributes={"store": "b"})
    await a.session("u").add_items([short(1)])
    await b.session("u").add_items([short(1), short(2)])
    got = await read(reader)
    assert got.value("items_added", store="a") == 1
    assert got.value("items_added", store="b") == 2
    assert got.value("call.duration", store="b", operation="add_items")[0] == 1


# ---------------------------------------------------------------------- Prometheus
def _scrape(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        body = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(body)}


def _sample(families: dict[str, Any], family: str, **labels: str) -> float:
    found = [
        s.value
        for s in families[family].samples
        if all(s.labels.get(k) == v for k, v in labels.items()) and not s.name.endswith("_created")
    ]
    assert len(found) == 1, (family, labels, families[family].samples)
    value: float = found[0]
    return value


async def test_prometheus_endpoint_serves_counters_and_backlog(embedded: Any) -> None:
    store = embedded_store(embedded, write_mode="behind", run_flusher=False, outbox_shards=2)
    port = free_port()
    server = serve_prometheus(store, port)
    try:
        assert server.port == port and server.url == f"http://127.0.0.1:{port}/metrics"
        s = store.session("u")
        await s.add_items([short(1), short(2)])
        await s.get_items(limit=1)
        fams = await asyncio.to_thread(_scrape, port)
        assert _sample(fams, "tiered_session_cache_hits") == 1
        assert _sample(fams, "tiered_session_items_added") == 2
        assert fams["tiered_session_items_added"].type == "counter"
        shard = str(store.session_keys("u").shard.shard)
        assert _sample(fams, "tiered_session_backlog", shard=shard) == 1
        assert sum(s.value for s in fams["tiered_session_backlog"].samples) == 1
        assert _sample(fams, "tiered_session_backlog_age_seconds") >= 0
        assert _sample(fams, "tiered_session_dead_letters") == 0
        assert _sample(fams, "tiered_session_errors", operation="flush", kind="flush_ack") == 0
        assert "process_cpu_seconds" in fams

        flusher = Flusher(store)
        await flusher.drain()
        await flusher.release()
        fams = await asyncio.to_thread(_scrape, port)
        assert _sample(fams, "tiered_session_flushed_items") == 2
        assert sum(s.value for s in fams["tiered_session_backlog"].samples) == 0

        embedded[0].connected = False  # Redis down: counters still, backlog left out
        fams = await asyncio.to_thread(_scrape, port)
        assert _sample(fams, "tiered_session_flushed_entries") == 1
        assert "tiered_session_backlog" not in fams
        embedded[0].connected = True
    finally:
        server.close()
    server.close()  # idempotent
    with pytest.raises(OSError):
        await asyncio.to_thread(_scrape, port)


async def test_prometheus_endpoint_before_the_store_runs_on_a_loop() -> None:
    store = TieredStore()
    with serve_prometheus(store, 0) as server:
        fams = await asyncio.to_thread(_scrape, server.port)
        assert _sample(fams, "tiered_session_cache_hits") == 0
        assert "tiered_session_backlog" not in fams  # no loop runs the store yet
    await store.aclose()


def test_prometheus_port_in_use_or_invalid() -> None:
    store = TieredStore()
    with (
        serve_prometheus(store, 0) as server,
        pytest.raises(ConfigurationError, match="cannot serve metrics"),
    ):
        serve_prometheus(store, server.port)
    with pytest.raises(ConfigurationError, match="port"):
        serve_prometheus(store, 70000)


async def test_prometheus_on_the_real_servers(
    real_backend: Backend, reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    store = real_backend.store(write_mode="behind", outbox_shards=4)
    instrument(store, provider)
    with serve_prometheus(store, 0) as server:
        await store.session("u").add_items([short(1)])
        await store.flush(timeout=10)
        fams = await asyncio.to_thread(_scrape, server.port)
        assert _sample(fams, "tiered_session_flushed_entries") == 1
        assert _sample(fams, "tiered_session_live_flushers") >= 1
        assert len(fams["tiered_session_backlog"].samples) == 4
    got = await read(reader)
    assert got.value("flushed_items") == 1 and got.value("flush.lag")[0] >= 1
    assert got.value("live_flushers") >= 1


# ---------------------------------------------------------------------- missing extras
def test_missing_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'tiered-session\[prometheus\]'"):
        serve_prometheus(TieredStore(), 0)


def test_missing_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'tiered-session\[otel\]'"):
        instrument(TieredStore())


def test_the_package_imports_without_the_extras() -> None:
    code = (
        "import sys\n"
        "sys.modules['prometheus_client'] = None\n"
        "sys.modules['opentelemetry'] = None\n"
        "import tiered_session.metrics as m\n"
        "from tiered_session import TieredStore, MissingDependencyError\n"
        "try:\n"
        "    m.serve_prometheus(TieredStore(), 0)\n"
        "except MissingDependencyError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'tiered-session[prometheus]'" in out.stdout
