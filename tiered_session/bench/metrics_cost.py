"""What metrics cost: the same chat turns with OpenTelemetry metrics off and on.

``metrics-off`` and ``metrics-on`` are the ``turn`` workload (get 20 + add 3)
on the TieredSession rows, plus the raw redis-py floor as the common
reference of the ``x redis`` column. One cell measures both: the store is
instrumented (:func:`tiered_session.metrics.instrument`, OpenTelemetry SDK,
in-memory reader) and its turns alternate between the hooks removed (exactly
the path of a store never instrumented) and set, so drift of the machine hits
both alike. ``metrics-off`` reports the former, ``metrics-on`` the latter;
afterwards, untimed, the cell checks every read, the history, and that every
"on" call was recorded. :func:`cost` turns a results document into the
medians and their ratio per backend; run the module for that table alone::

    python -m tiered_session.bench.metrics_cost --backends redis-floor,tiered-behind

Example:
    >>> from tiered_session.bench.env import BenchEnv
    >>> from tiered_session.bench.sample import Sizes
    >>> off, on = metrics_workloads(Sizes(), BenchEnv(namespace="abc123", tmpdir="/tmp"))
    >>> off.name, on.name, on.kind
    ('metrics-off', 'metrics-on', 'latency')
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import statistics
import tempfile
import uuid
from typing import Any

from tiered_session import TieredStore
from tiered_session._workload import turn_items

from .aggregate import aggregate
from .backends import make_backend
from .env import DEFAULT_PG, DEFAULT_REDIS, Backend, BenchEnv
from .floors import RedisFloor
from .sample import Sample, Sizes, check
from .workload import Workload, flatten, timed, verify_turns

__all__ = ["MetricsOff", "MetricsOn", "cost", "cost_table", "measure", "metrics_workloads"]

#: the workloads' names, off first
NAMES = ("metrics-off", "metrics-on")


def _store_of(b: Backend) -> TieredStore | None:
    store = getattr(b, "store", None)
    return store if isinstance(store, TieredStore) else None


def _applies(b: Backend) -> bool:
    """The TieredSession rows (with the OpenTelemetry SDK installed) and the Redis floor."""
    if isinstance(b, RedisFloor):
        return True
    return _store_of(b) is not None and importlib.util.find_spec("opentelemetry.sdk") is not None


class _Pairs:
    """The "on" samples a ``metrics-off`` cell measured alongside its own, for ``metrics-on``."""

    def __init__(self) -> None:
        self.on: dict[tuple[str, int], Sample] = {}


class MetricsOff(Workload):
    """Chat turns without metrics (the default); measures ``metrics-on``'s turns too.

    It returns the turns run with the hooks removed and keeps the others for
    ``metrics-on`` of the same backend and repeat.
    """

    name = "metrics-off"
    title = "chat turn (get 20 + add 3), metrics off"
    unit = "turn"

    def __init__(self, sizes: Sizes, env: BenchEnv, pairs: _Pairs | None = None) -> None:
        super().__init__(sizes, env)
        self.pairs = _Pairs() if pairs is None else pairs

    def applies(self, b: Backend) -> bool:
        """The TieredSession rows, and the Redis floor as the common reference."""
        return _applies(b)

    async def cell(self, b: Backend, rep: int, prepared: Any) -> Sample:
        """Alternate turns off and on; keep the "on" ones; return the "off" ones."""
        off, on = await self.paired(b, rep)
        self.pairs.on[(b.name, rep)] = on
        return off

    async def paired(self, b: Backend, rep: int) -> tuple[Sample, Sample]:
        """Time turns alternately off and on; check every read, the history and the metrics."""
        store = _store_of(b)
        handle, reader = _instrumented(store) if store is not None else (None, None)
        try:
            s = b.session(f"metrics-{rep}")
            n, w = self.sizes.calls, self.sizes.warmup
            batches = [turn_items(rep + 300, t) for t in range(2 * (n + w))]
            reads: list[Any] = []
            timed_on = 0

            async def turn(t: int) -> None:
                nonlocal timed_on
                if store is not None:
                    store.counters.hooks = handle if t % 2 else None
                    timed_on += t % 2
                reads.append(await s.get_items(limit=20))
                await s.add_items(batches[t])

            for t in range(2 * w):
                await turn(t)
            lat = await timed(2 * n, lambda i: turn(2 * w + i))
            if store is not None:
                store.counters.hooks = handle
            verify_turns(reads, batches, 20)
            check(await s.get_items() == flatten(batches), "history differs after turns")
            if reader is not None:
                counts = await asyncio.to_thread(_call_counts, reader)
                want = {"get_items": timed_on + 1, "add_items": timed_on}
                check(counts == want, f"metrics recorded {counts}, expected {want}")
        finally:
            if handle is not None:
                handle.close()
        off, on = lat[0::2], lat[1::2]
        return Sample(off, n, sum(off) / 1e9), Sample(on, n, sum(on) / 1e9)


class MetricsOn(Workload):
    """The same turns with the store instrumented (OpenTelemetry SDK, in-memory reader)."""

    name = "metrics-on"
    title = "chat turn (get 20 + add 3), OpenTelemetry metrics on"
    unit = "turn"

    def __init__(self, sizes: Sizes, env: BenchEnv, pairs: _Pairs | None = None) -> None:
        super().__init__(sizes, env)
        self.off = MetricsOff(sizes, env, pairs)

    def applies(self, b: Backend) -> bool:
        """As ``metrics-off``."""
        return _applies(b)

    async def cell(self, b: Backend, rep: int, prepared: Any) -> Sample:
        """The "on" turns of the ``metrics-off`` cell (measured now if it did not run)."""
        found = self.off.pairs.on.pop((b.name, rep), None)
        if found is None:
            found = (await self.off.paired(b, rep))[1]
        return found


def metrics_workloads(sizes: Sizes, env: BenchEnv) -> list[Workload]:
    """``metrics-off`` and ``metrics-on``, sharing their measurements."""
    pairs = _Pairs()
    return [MetricsOff(sizes, env, pairs), MetricsOn(sizes, env, pairs)]


def _instrumented(store: TieredStore) -> tuple[Any, Any]:
    """Instrument ``store`` with the OpenTelemetry SDK; (handle, reader)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from tiered_session.metrics import instrument

    reader = InMemoryMetricReader()
    return instrument(store, MeterProvider(metric_readers=[reader])), reader


def _call_counts(reader: Any) -> dict[str, int]:
    """Calls recorded by the call-duration histogram, by operation."""
    out: dict[str, int] = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == "tiered_session.call.duration":
                    for p in m.data.data_points:
                        op = str(p.attributes["operation"])
                        out[op] = out.get(op, 0) + int(p.count)
    return out


def cost(doc: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per backend: median p50 off and on (us) and the median per-repeat ratio on/off."""
    wl = doc["workloads"]
    if not all(n in wl for n in NAMES):
        return {}
    off, on = (wl[n]["cells"] for n in NAMES)
    out: dict[str, dict[str, float | None]] = {}
    for name in off:
        if name not in on or not off[name]["ok"] or not on[name]["ok"]:
            continue
        ratios = [
            b["p50_us"] / a["p50_us"]
            for a, b in zip(off[name]["repeats"], on[name]["repeats"], strict=False)
            if a["p50_us"]
        ]
        out[name] = {
            "off_p50_us": off[name]["p50_us"],
            "on_p50_us": on[name]["p50_us"],
            "ratio": statistics.median(ratios) if ratios else None,
        }
    return out


def cost_table(doc: dict[str, Any]) -> str:
    """The cost of metrics as a plain-text table."""
    rows = [["backend", "off p50 us", "on p50 us", "on/off"]]
    for name, c in cost(doc).items():
        rows.append(
            [
                name,
                "-" if c["off_p50_us"] is None else f"{c['off_p50_us']:,.1f}",
                "-" if c["on_p50_us"] is None else f"{c['on_p50_us']:,.1f}",
                "-" if c["ratio"] is None else f"{c['ratio']:.3f}x",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * x for x in widths))
    return "\n".join(lines)


async def measure(
    backends: list[str], sizes: Sizes, repeats: int, redis_url: str, sql_url: str
) -> dict[str, Any]:
    """Run both workloads on ``backends``; return a results document's ``workloads``."""
    with tempfile.TemporaryDirectory(prefix="tsbench-") as tmp:
        env = BenchEnv(uuid.uuid4().hex[:6], tmp, redis_url=redis_url, sql_url=sql_url)
        workloads = metrics_workloads(sizes, env)
        opened: list[Backend] = []
        samples: dict[str, dict[str, list[Sample]]] = {w.name: {} for w in workloads}
        try:
            for name in backends:
                b = make_backend(name, env)
                await b.open()
                opened.append(b)
            for rep in range(repeats):
                for w in workloads:
                    for b in opened:
                        if w.applies(b):
                            gc.collect()
                            samples[w.name].setdefault(b.name, []).append(await w.run(b, rep))
                            await b.settle()
        finally:
            for b in opened:
                await b.close()
    return aggregate(workloads, samples, sizes)


def main(argv: list[str] | None = None) -> None:
    """Measure on the given backends and print the cost table."""
    p = argparse.ArgumentParser(description="chat turns with metrics off and on")
    p.add_argument("--quick", action="store_true", help="small sizes")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--backends", default="redis-floor,tiered-behind,tiered-through,tiered-embedded")
    p.add_argument("--redis-url", default=DEFAULT_REDIS)
    p.add_argument("--sql-url", default=DEFAULT_PG)
    args = p.parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes()
    doc = asyncio.run(
        measure(args.backends.split(","), sizes, args.repeats, args.redis_url, args.sql_url)
    )
    print(f"{sizes.calls} turns per cell, {args.repeats} repeats (median of per-repeat ratios)")
    print(cost_table(doc))


if __name__ == "__main__":
    main()
