"""Run the benchmark: open backends, interleave them inside every repeat, aggregate.

Within one repeat, every workload runs on every backend in turn (the order
rotates from repeat to repeat), so machine drift hits all backends alike.
Ratios are computed per repeat against the floors measured in that same
repeat, and the median of those ratios is reported.

Example:
    >>> opts = BenchOptions(quick=True, backends=["redis-floor"], workloads=["add"])
    >>> opts.repeats
    3
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .advanced import advanced_workloads
from .aggregate import aggregate, meta, targets
from .backends import ALL_BACKENDS, make_backend
from .env import DEFAULT_PG, DEFAULT_REDIS, Backend, BenchEnv
from .flusher import FlusherThroughput, FlushLag
from .latency import Add, Get20, Pop, Read200, Scale, Turn
from .sample import Sample, Sizes
from .throughput import Concurrent, Processes
from .workload import Workload

__all__ = ["WORKLOADS", "BenchOptions", "make_workloads", "run_bench"]

#: workload names (scaling sizes appear as ``scale-1k`` ...)
WORKLOADS = [
    "add",
    "get20",
    "read200",
    "turn",
    "concurrent",
    "pop",
    "processes",
    "scale",
    "flusher",
    "flushlag",
    "metrics-off",
    "metrics-on",
    "adv-add",
    "adv-get20",
]


@dataclass
class BenchOptions:
    """What to run."""

    quick: bool = False
    repeats: int = 3
    backends: list[str] = field(default_factory=lambda: list(ALL_BACKENDS))
    workloads: list[str] = field(default_factory=lambda: list(WORKLOADS))
    redis_url: str = DEFAULT_REDIS
    sql_url: str = DEFAULT_PG
    #: extra backends by name (tests use this to check that wrong answers are flagged)
    extra_backends: dict[str, Callable[[BenchEnv], Backend]] = field(default_factory=dict)
    #: override the work per cell (default: ``Sizes()``, or ``Sizes.quick()`` with quick)
    sizes: Sizes | None = None
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr))
    #: called after every cell with (what ran, cells done, cells in all); replaces the
    #: line ``log`` gets after each workload of a repeat
    progress: Callable[[str, int, int], None] | None = None

    def __post_init__(self) -> None:
        if self.repeats < 1:
            self.repeats = 3


async def run_bench(opts: BenchOptions, command: str = "") -> dict[str, Any]:
    """Run everything and return the results document (see :mod:`.report`)."""
    started = time.perf_counter()
    sizes = opts.sizes or (Sizes.quick() if opts.quick else Sizes())
    with tempfile.TemporaryDirectory(prefix="tsbench-") as tmp:
        env = BenchEnv(
            namespace=uuid.uuid4().hex[:6],
            tmpdir=tmp,
            redis_url=opts.redis_url,
            sql_url=opts.sql_url,
        )
        backends: list[Backend] = []
        skipped: dict[str, str] = {}
        workloads: list[Workload] = []
        try:
            for name in opts.backends + list(opts.extra_backends):
                try:
                    if name in opts.extra_backends:
                        b = opts.extra_backends[name](env)
                    else:
                        b = make_backend(name, env)
                    await b.open()
                except Exception as e:
                    skipped[name] = f"{type(e).__name__}: {e}"
                    opts.log(f"skipping backend {name}: {skipped[name]}")
                    continue
                backends.append(b)
            workloads = [
                w
                for w in make_workloads(sizes, env)
                if w.name in opts.workloads
                or (w.name.startswith("scale-") and "scale" in opts.workloads)
            ]
            samples: dict[str, dict[str, list[Sample]]] = {
                w.name: {b.name: [] for b in backends if w.applies(b)} for w in workloads
            }
            cells = opts.repeats * sum(
                len([b for b in backends if w.applies(b)]) for w in workloads
            )
            done = 0
            for rep in range(opts.repeats):
                for w in workloads:
                    todo = [b for b in backends if w.applies(b)]
                    if not todo:
                        continue
                    k = rep % len(todo)
                    for b in todo[k:] + todo[:k]:
                        # Collect the last cell's garbage, then set what survives aside: the
                        # next collection (and any during the cell) scans only new objects.
                        gc.collect()
                        gc.freeze()
                        s = await w.run(b, rep)
                        try:
                            await b.settle()
                        except Exception as e:
                            s = Sample(ok=False, error=f"settle failed: {e}")
                        samples[w.name][b.name].append(s)
                        if not s.ok:
                            opts.log(f"  {w.name:<11} {b.name:<22} FLAGGED: {s.error}")
                        done += 1
                        if opts.progress is not None:
                            step = f"repeat {rep + 1}/{opts.repeats} {w.name} {b.name}"
                            opts.progress(step, done, cells)
                    if opts.progress is None:
                        opts.log(
                            f"repeat {rep + 1}/{opts.repeats} {w.name:<11} done "
                            f"({time.perf_counter() - started:.0f}s)"
                        )
        finally:
            gc.unfreeze()
            for w in workloads:
                await w.close()
            for b in backends:
                try:
                    await b.close()
                except Exception as e:
                    opts.log(f"cleanup of {b.name} failed: {e}")
    doc = aggregate(workloads, samples, sizes)
    doc["meta"] = meta(opts.quick, opts.repeats, command, time.perf_counter() - started, skipped)
    doc["targets"] = targets(doc["workloads"])
    return doc


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
    # (imported here: `python -m tiered_session.bench.metrics_cost` runs that module as a script)
    from .metrics_cost import metrics_workloads

    out += metrics_workloads(sizes, env)
    out += advanced_workloads(sizes, env)
    return out
