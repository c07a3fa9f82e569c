"""Throughput workloads: many sessions on one event loop, and worker processes sharing sessions.

Example:
    >>> worker_turn(0, 0) == worker_turn(0, 0) != worker_turn(1, 0)
    True
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any

from tiered_session._workload import turn_items

from .backends import ALL_BACKENDS
from .env import Backend, BenchEnv
from .sample import Sample, Sizes, check
from .workload import Workload, flatten, verify_turns

__all__ = ["Concurrent", "Processes", "worker_turn"]

#: the module each worker process runs
WORKER_MODULE = "tiered_session.bench.worker"


def worker_turn(worker: int, turn: int) -> list[Any]:
    """The items worker ``worker`` adds on its turn ``turn`` (unique across workers)."""
    return turn_items(5000 + worker, turn)


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
        """Run every session's turns at once; check each session's reads and history."""
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
            verify_turns(reads[i], batches[i], 20)
            got = await sessions[i].get_items()
            check(got == flatten(batches[i]), f"session {i} differs")
        return Sample(lat, ns * nt, seconds)


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
        """Whether worker processes can build ``b`` and share its sessions."""
        # Workers build their backend by name, so backends added by tests cannot run there.
        return b.shareable and b.name in ALL_BACKENDS

    async def _pool(self) -> list[asyncio.subprocess.Process]:
        # Started once and kept across cells: process start-up is not what is measured.
        if not self._procs:
            for _ in range(self.sizes.workers):
                self._procs.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        WORKER_MODULE,
                        json.dumps(self.env.to_json()),
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                    )
                )
        return self._procs

    async def close(self) -> None:
        """Ask the workers to quit; kill those that do not within 30 s."""
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
        """Run the workers' turns at once; check no item was lost, doubled or reordered."""
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
        # `go` only once every worker is ready: opening backends stays out of the timed span.
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
                check(
                    seen == mine, f"session {i}: worker {w}'s items lost, duplicated or reordered"
                )
            total = sum(1 for w in range(nw) for t in range(nt) if (w + t) % nw == i) * 3
            check(len(got) == total, f"session {i}: {len(got)} items, expected {total}")
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
