"""The benchmark workloads: what is timed, and how each result is checked afterwards.

A workload runs one *cell* (one backend, one repeat) and returns a
:class:`Sample`. Timing covers only the calls themselves; preparing data and
checking every answer against the expected history happen outside it. A cell
whose answers are wrong (or that raises) is returned with ``ok=False`` and is
flagged in the report instead of ranked.

Example:
    >>> s = Sample(lat_ns=[1000, 3000, 2000], ops=3, seconds=0.006)
    >>> s.p50_us, round(s.ops_s)
    (2.0, 500)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._workload import turn_items
from ._backends import AsyncpgFloor, Backend, BenchEnv, TieredBehind

if TYPE_CHECKING:
    from .._store import TieredStore

__all__ = ["Sample", "Sizes", "Workload", "make_workloads"]


class WrongResult(Exception):
    """A backend returned data different from the expected history."""


@dataclass
class Sample:
    """The outcome of one cell."""

    lat_ns: list[int] = field(default_factory=list)
    ops: int = 0
    seconds: float = 0.0
    ok: bool = True
    error: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def p50_us(self) -> float:
        """Median latency per call, microseconds."""
        return statistics.median(self.lat_ns) / 1000 if self.lat_ns else 0.0

    @property
    def p99_us(self) -> float:
        """99th percentile latency per call, microseconds."""
        if not self.lat_ns:
            return 0.0
        s = sorted(self.lat_ns)
        return s[min(len(s) - 1, int(len(s) * 0.99))] / 1000

    @property
    def ops_s(self) -> float:
        """Operations per second."""
        return self.ops / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Sizes:
    """How much work each workload does per cell."""

    calls: int = 500
    warmup: int = 30
    concurrent_sessions: int = 64
    concurrent_turns: int = 50
    workers: int = 4
    worker_turns: int = 100
    scale_sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
    flush_items: int = 30_000
    lag_seconds: float = 3.0
    lag_rate: int = 1_000

    @classmethod
    def quick(cls) -> Sizes:
        """Small sizes for a smoke run."""
        return cls(
            calls=30,
            warmup=3,
            concurrent_sessions=64,
            concurrent_turns=5,
            workers=4,
            worker_turns=20,
            scale_sizes=(1_000, 10_000),
            flush_items=3_000,
            lag_seconds=1.0,
        )


def _items(n: int, session: int = 0) -> list[Any]:
    """``n`` realistic items (3-item turns)."""
    out: list[Any] = []
    t = 0
    while len(out) < n:
        out.extend(turn_items(session, t))
        t += 1
    return out[:n]


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise WrongResult(msg)


async def _check_sql(store: TieredStore, sent: dict[str, list[list[Any]]]) -> None:
    """Every session's rows in SQL are its sent batches, in order."""
    for sid, batches in sent.items():
        rows = await store.sql.latest(sid, None, None)
        want = [x for bt in batches for x in bt]
        got = [json.loads(d) for _, d in rows]
        _check(got == want, f"SQL rows of {sid} differ ({len(got)} rows, {len(want)} sent)")


async def _timed(n: int, call: Callable[[int], Awaitable[Any]]) -> list[int]:
    pc = time.perf_counter_ns
    lat: list[int] = []
    for i in range(n):
        t0 = pc()
        await call(i)
        lat.append(pc() - t0)
    return lat


class Workload:
    """One workload; subclasses define ``cell``."""

    name = ""
    title = ""
    unit = "call"
    #: "latency": ratio of p50 per call; "throughput": ratio of ops/s
    kind = "latency"

    def __init__(self, sizes: Sizes, env: BenchEnv) -> None:
        self.sizes = sizes
        self.env = env
        self._prepared: dict[str, Any] = {}

    def applies(self, b: Backend) -> bool:
        """Whether this workload runs on ``b``."""
        return True

    async def prepare(self, b: Backend) -> Any:
        """Untimed set-up shared by every repeat of ``b``."""
        return None

    async def cell(self, b: Backend, rep: int, prepared: Any) -> Sample:
        """Run and check one cell."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the workload keeps between cells (worker processes)."""

    async def run(self, b: Backend, rep: int) -> Sample:
        """Prepare once, run the cell, flag wrong answers and errors."""
        try:
            if b.name not in self._prepared:
                self._prepared[b.name] = await self.prepare(b)
                await b.settle()
            return await self.cell(b, rep, self._prepared[b.name])
        except WrongResult as e:
            return Sample(ok=False, error=f"wrong result: {e}")
        except Exception as e:
            return Sample(ok=False, error=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")


class Add(Workload):
    """``add_items`` of a 3-item turn."""

    name = "add"
    title = "add_items (3-item turn)"

    async def cell(self, b: Backend, rep: int, prepared: Any) -> Sample:
        s = b.session(f"add-{rep}")
        n, w = self.sizes.calls, self.sizes.warmup
        batches = [turn_items(rep, t) for t in range(n + w)]
        for t in range(w):
            await s.add_items(batches[t])
        lat = await _timed(n, lambda i: s.add_items(batches[w + i]))
        got = await s.get_items()
        _check(got == [x for bt in batches for x in bt], "history differs after adds")
        return Sample(lat, n, sum(lat) / 1e9)


class _Read(Workload):
    size = 0
    limit: int | None = None

    async def prepare(self, b: Backend) -> Any:
        items = _items(self.size, session=self.size)
        await b.populate(f"{self.name}", items)
        return items[-self.limit :] if self.limit else items

    async def cell(self, b: Backend, rep: int, prepared: Any) -> Sample:
        s = b.session(f"{self.name}")
        n, lim = self.sizes.calls, self.limit
        for _ in range(self.sizes.warmup):
            await s.get_items(limit=lim)
        results: list[Any] = []

        async def call(_: int) -> None:
            results.append(await s.get_items(limit=lim))

        lat = await _timed(n, call)
        bad = sum(1 for r in results if r != prepared)
        _check(bad == 0, f"{bad}/{n} reads differ from the stored history")
        return Sample(lat, n, sum(lat) / 1e9)


class Get20(_Read):
    """``get_items(limit=20)`` on a 1,000-item session."""

    name = "get20"
    title = "get_items(limit=20), 1,000 items"
    size = 1_000
    limit = 20


class Read200(_Read):
    """``get_items()`` of a whole 200-item session."""

    name = "read200"
    title = "get_items() of 200 items"
    size = 200
    limit = None


class Scale(_Read):
    """``get_items(limit=20)`` on a long session."""

    limit = 20

    def __init__(self, sizes: Sizes, env: BenchEnv, size: int) -> None:
        super().__init__(sizes, env)
        self.size = size
        label = f"{size // 1000}k"
        self.name = f"scale-{label}"
        self.title = f"get_items(limit=20), {size:,} items"


class Turn(Workload):
    """A chat turn as the SDK Runner does it: read the last 20, add 3."""

    name = "turn"
    title = "chat turn (get 20 + add 3)"
    unit = "turn"

    async def cell(self, b: Backend, rep: int, prepared: Any) -> Sample:
        s = b.session(f"turn-{rep}")
        n, w = self.sizes.calls, self.sizes.warmup
        batches = [turn_items(rep + 100, t) for t in range(n + w)]
        reads: list[Any] = []

        async def turn(t: int) -> None:
            reads.append(await s.get_items(limit=20))
            await s.add_items(batches[t])

        for t in range(w):
            await turn(t)
        lat = await _timed(n, lambda i: turn(w + i))
        _verify_turns(reads, batches, 20)
        got = await s.get_items()
        _check(got == [x for bt in batches for x in bt], "history differs after turns")
        return Sample(lat, n, sum(lat) / 1e9)


def _verify_turns(reads: list[Any], batches: list[list[Any]], limit: int) -> None:
    history: list[Any] = []
    for t, got in enumerate(reads):
        _check(got == history[-limit:], f"read before turn {t} differs")
        history.extend(batches[t])


class Concurrent(Workload):
    """Many sessions doing chat turns at once on one event loop."""

    name = "concurrent"
    title = "64 sessions x 50 turns, one event loop"
    unit = "turn"
    kind = "throughput"

    def __init__(self, sizes: Sizes, env: BenchEnv) -> None:
        super().__init__(sizes, env)
        self.title = (
            f"{sizes.concurrent_sessions} sessions x {sizes.concurrent_turns} turns, one loop"
        )

    async def cell(self, b: Backend, rep: int, prepared: Any) -> Sample:
        ns, nt = self.sizes.concurrent_sessions, self.sizes.concurrent_turns
        sessions = [b.session(f"conc-{rep}-{i}") for i in range(ns)]
        batches = [[turn_items(1000 + i, t) for t in range(nt)] for i in range(ns)]
        reads: list[list[Any]] = [[] for _ in range(ns)]
        lat: list[int] = []
        pc = time.perf_counter_ns

        async def user(i: int) -> None:
            s = sessions[i]
            for t in range(nt):
                t0 = pc()
                reads[i].append(await s.get_items(limit=20))
                await s.add_items(batches[i][t])
                lat.append(pc() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(user(i) for i in range(ns)))
        seconds = time.perf_counter() - start
        for i in range(ns):
            _verify_turns(reads[i], batches[i], 20)
            got = await sessions[i].get_items()
            _check(got == [x for bt in batches[i] for x in bt], f"session {i} differs")
        return Sample(lat, ns * nt, seconds)


class Pop(Workload):
    """``pop_item`` until a 100-item session is down to 10 items."""

    name = "pop"
    title = "pop_item"

    async def cell(self, b: Backend, rep: int, prepared: Any) -> Sample:
        n = self.sizes.calls
        sid = f"pop-{rep}"
        items = _items(n + 10, session=rep + 200)
        await b.populate(sid, items)
        await b.settle()
        s = b.session(sid)
        popped: list[Any] = []

        async def call(_: int) -> None:
            popped.append(await s.pop_item())

        lat = await _timed(n, call)
        _check(popped == items[::-1][:n], "popped items differ from the newest ones")
        _check(await s.get_items() == items[:10], "history differs after pops")
        return Sample(lat, n, sum(lat) / 1e9)


class Processes(Workload):
    """Worker processes doing chat turns on shared sessions (total turns/s)."""

    name = "processes"
    title = "4 processes on 4 shared sessions"
    unit = "turn"
    kind = "throughput"

    def __init__(self, sizes: Sizes, env: BenchEnv) -> None:
        super().__init__(sizes, env)
        self.title = f"{sizes.workers} processes on {sizes.workers} shared sessions"
        self._procs: list[asyncio.subprocess.Process] = []

    def applies(self, b: Backend) -> bool:
        from ._backends import ALL_BACKENDS

        return b.shareable and b.name in ALL_BACKENDS

    async def _pool(self) -> list[asyncio.subprocess.Process]:
        if not self._procs:
            for _ in range(self.sizes.workers):
                self._procs.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "tiered_session._bench._worker",
                        json.dumps(self.env.to_json()),
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                    )
                )
        return self._procs

    async def close(self) -> None:
        for p in self._procs:
            assert p.stdin is not None
            with contextlib.suppress(OSError):
                p.stdin.write(b"quit\n")
                await p.stdin.drain()
            try:
                await asyncio.wait_for(p.wait(), 30)
            except TimeoutError:
                p.kill()
                await p.wait()
        self._procs = []

    async def cell(self, b: Backend, rep: int, prepared: Any) -> Sample:
        nw, nt = self.sizes.workers, self.sizes.worker_turns
        sids = [f"proc-{rep}-{i}" for i in range(nw)]
        procs = await self._pool()
        for w, p in enumerate(procs):
            task = {"backend": b.name, "sessions": sids, "turns": nt, "worker": w}
            await _send(p, json.dumps(task))
        for p in procs:
            line = await _line(p)
            if line != b"ready":
                raise RuntimeError(f"worker did not start: {line[:200]!r}")
        for p in procs:
            await _send(p, "go")
        outs = [json.loads(await _line(p)) for p in procs]
        errors = [o["error"] for o in outs if o.get("error")]
        if errors:
            raise RuntimeError(f"worker failed: {errors[0]}")
        await b.settle()
        # Every worker's turns are in each session once, in the worker's order.
        for i, sid in enumerate(sids):
            got = await b.session(sid).get_items()
            for w in range(nw):
                mine = [x for t in range(nt) if (w + t) % nw == i for x in worker_turn(w, t)]
                seen = [x for x in got if x in mine]
                _check(
                    seen == mine, f"session {i}: worker {w}'s items lost, duplicated or reordered"
                )
            total = sum(1 for w in range(nw) for t in range(nt) if (w + t) % nw == i) * 3
            _check(len(got) == total, f"session {i}: {len(got)} items, expected {total}")
        start = min(o["start"] for o in outs)
        end = max(o["end"] for o in outs)
        lat = [x for o in outs for x in o["lat_ns"]]
        return Sample(lat, nw * nt, end - start)


async def _send(p: asyncio.subprocess.Process, line: str) -> None:
    assert p.stdin is not None
    p.stdin.write(line.encode() + b"\n")
    await p.stdin.drain()


async def _line(p: asyncio.subprocess.Process) -> bytes:
    assert p.stdout is not None
    line = await asyncio.wait_for(p.stdout.readline(), 300)
    if not line:
        raise RuntimeError("worker process exited")
    return line.strip()


def worker_turn(worker: int, turn: int) -> list[Any]:
    """The items worker ``worker`` adds on its turn ``turn`` (unique across workers)."""
    return turn_items(5000 + worker, turn)


class FlusherThroughput(Workload):
    """Items/s the flusher moves from the Redis outbox into PostgreSQL."""

    name = "flusher"
    title = "flusher: outbox -> PostgreSQL"
    unit = "item"
    kind = "throughput"

    def __init__(self, sizes: Sizes, env: BenchEnv) -> None:
        super().__init__(sizes, env)
        self.title = f"flusher: {sizes.flush_items:,} items -> PostgreSQL"

    def applies(self, b: Backend) -> bool:
        return isinstance(b, TieredBehind | AsyncpgFloor)

    async def cell(self, b: Backend, rep: int, prepared: Any) -> Sample:
        n_sessions = 200
        turns = self.sizes.flush_items // (3 * n_sessions) or 1
        sids = [f"flush-{rep}-{i}" for i in range(n_sessions)]
        batches = {sid: [turn_items(i, t) for t in range(turns)] for i, sid in enumerate(sids)}
        n_items = n_sessions * turns * 3
        if isinstance(b, AsyncpgFloor):
            rows = [(sid, x) for sid in sids for bt in batches[sid] for x in bt]
            sid_col = [r[0] for r in rows]
            datas = [json.dumps(r[1], separators=(",", ":")) for r in rows]
            start = time.perf_counter()
            step = 1500
            for i in range(0, len(rows), step):
                await b.bulk_insert(sid_col[i : i + step], datas[i : i + step])
            seconds = time.perf_counter() - start
            got = await b.session(sids[-1]).get_items()
            _check(got == [x for bt in batches[sids[-1]] for x in bt], "rows differ")
            return Sample([], n_items, seconds)
        assert isinstance(b, TieredBehind)
        from .._flusher import Flusher

        store = b.flusher_store
        gate = asyncio.Semaphore(32)

        async def write(sid: str) -> None:
            s = store.session(sid)
            async with gate:
                for bt in batches[sid]:
                    await s.add_items(bt)

        await asyncio.gather(*(write(sid) for sid in sids))
        flusher = Flusher(store)
        start = time.perf_counter()
        moved = await flusher.drain()
        seconds = time.perf_counter() - start
        await flusher.release()
        _check(moved == n_sessions * turns, f"flusher moved {moved} entries")
        await _check_sql(store, batches)
        return Sample([], n_items, seconds)


class FlushLag(Workload):
    """Age of the oldest unflushed entry, sampled under a steady write load."""

    name = "flushlag"
    title = "flush lag under 1,000 turns/s"
    unit = "turn"
    kind = "lag"

    def __init__(self, sizes: Sizes, env: BenchEnv) -> None:
        super().__init__(sizes, env)
        self.title = f"flush lag at {sizes.lag_rate:,} turns/s (p50/p99 = lag)"

    def applies(self, b: Backend) -> bool:
        return isinstance(b, TieredBehind)

    async def cell(self, b: Backend, rep: int, prepared: Any) -> Sample:
        assert isinstance(b, TieredBehind)
        store = b.store
        rate, secs = self.sizes.lag_rate, self.sizes.lag_seconds
        n_sessions = 50  # users; each does a turn every 50 ms at 1,000 turns/s
        sids = [f"lag-{rep}-{i}" for i in range(n_sessions)]
        sent: dict[str, list[Any]] = {sid: [] for sid in sids}
        period = n_sessions / rate  # each session is one user doing a turn every `period` s
        turns = max(1, int(secs / period))
        lags: list[int] = []
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                lags.append(int((await store.stats())["flush_lag_seconds"] * 1e9))
                await asyncio.sleep(0.01)

        async def user(i: int) -> None:
            sid = sids[i]
            s = store.session(sid)
            for t in range(turns):
                delay = start + (t + i / n_sessions) * period - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                items = turn_items(i, t)
                await s.add_items(items)
                sent[sid].append(items)

        sampler = asyncio.create_task(sample())
        start = time.perf_counter()
        await asyncio.gather(*(user(i) for i in range(n_sessions)))
        seconds = time.perf_counter() - start
        k = n_sessions * turns
        stop.set()
        await sampler
        await store.flush(timeout=60)
        await _check_sql(store, sent)
        return Sample(lags, k, seconds)


def make_workloads(sizes: Sizes, env: BenchEnv) -> list[Workload]:
    """Every workload, in run order."""
    out: list[Workload] = [
        Add(sizes, env),
        Get20(sizes, env),
        Read200(sizes, env),
        Turn(sizes, env),
        Concurrent(sizes, env),
        Pop(sizes, env),
        Processes(sizes, env),
    ]
    out += [Scale(sizes, env, n) for n in sizes.scale_sizes]
    out += [FlusherThroughput(sizes, env), FlushLag(sizes, env)]
    return out
