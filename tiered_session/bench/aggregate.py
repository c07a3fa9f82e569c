"""Turn the cells' samples into the results document: medians, ratios to the floors, targets.

Ratios are computed per repeat against the floors measured in that same
repeat, and the median of those ratios is reported.

Example:
    >>> ratio("latency", Sample(lat_ns=[3000]), Sample(lat_ns=[2000]))
    1.5
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
from typing import Any

from .backends import LABELS
from .sample import Sample, Sizes
from .workload import Workload

__all__ = ["TARGETS", "aggregate", "meta", "ratio", "targets"]

REDIS_FLOOR = "redis-floor"
PG_FLOOR = "asyncpg-floor"


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def ratio(kind: str, s: Sample, floor: Sample | None) -> float | None:
    """Time per operation of ``s`` relative to ``floor``; ``None`` if either failed or for lag."""
    if floor is None or not floor.ok or not s.ok:
        return None
    if kind == "latency":
        return s.p50_us / floor.p50_us if floor.p50_us else None
    if kind == "throughput":
        return floor.ops_s / s.ops_s if s.ops_s else None
    return None


def aggregate(
    workloads: list[Workload], samples: dict[str, dict[str, list[Sample]]], sizes: Sizes
) -> dict[str, Any]:
    """Return the results document's ``workloads`` and ``sizes`` from every cell's samples."""
    out: dict[str, Any] = {}
    for w in workloads:
        per_backend = samples[w.name]
        cells: dict[str, Any] = {}
        for name, ss in per_backend.items():
            if not ss:
                continue
            ok = all(s.ok for s in ss)
            floors = {f: per_backend.get(f, []) for f in (REDIS_FLOOR, PG_FLOOR)}
            ratios: dict[str, list[float]] = {REDIS_FLOOR: [], PG_FLOOR: []}
            for f, fs in floors.items():
                for i, s in enumerate(ss):
                    r = ratio(w.kind, s, fs[i] if i < len(fs) else None)
                    if r is not None:
                        ratios[f].append(r)
            good = [s for s in ss if s.ok]
            cells[name] = {
                "label": LABELS.get(name, name),
                "ok": ok,
                "error": next((s.error for s in ss if not s.ok), ""),
                "p50_us": _median([s.p50_us for s in good]),
                "p99_us": _median([s.p99_us for s in good]),
                "ops_s": _median([s.ops_s for s in good]),
                "x_redis": _median(ratios[REDIS_FLOOR]) if ok else None,
                "x_asyncpg": _median(ratios[PG_FLOOR]) if ok else None,
                "repeats": [
                    {
                        "ok": s.ok,
                        "error": s.error,
                        "n": s.ops,
                        "seconds": round(s.seconds, 6),
                        "p50_us": round(s.p50_us, 2),
                        "p99_us": round(s.p99_us, 2),
                        "ops_s": round(s.ops_s, 1),
                    }
                    for s in ss
                ],
            }
        out[w.name] = {"title": w.title, "unit": w.unit, "kind": w.kind, "cells": cells}
    return {"workloads": out, "sizes": sizes.__dict__ | {"scale_sizes": list(sizes.scale_sizes)}}


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def meta(
    quick: bool, repeats: int, command: str, seconds: float, skipped: dict[str, str]
) -> dict[str, Any]:
    """Return the results document's ``meta``: when, where and how the run was made."""
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "quick": quick,
        "repeats": repeats,
        "cpu": _cpu(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "seconds": round(seconds, 1),
        "skipped": skipped,
    }


#: (name, workload, backend, what, comparison, limit)
TARGETS: list[tuple[str, str, str, str, str, float]] = [
    ("write-behind chat turn vs Redis floor", "turn", "tiered-behind", "x_redis", "<=", 1.3),
    ("write-behind add_items vs Redis floor", "add", "tiered-behind", "x_redis", "<=", 1.5),
    ("write-behind get_items(20) vs Redis floor", "get20", "tiered-behind", "x_redis", "<=", 1.2),
    (
        "write-behind 64-session throughput vs floor",
        "concurrent",
        "tiered-behind",
        "throughput",
        ">=",
        0.75,
    ),
    (
        "write-through get_items(20) vs Redis floor",
        "get20",
        "tiered-through",
        "x_redis",
        "<=",
        1.2,
    ),
    ("write-through add_items vs asyncpg floor", "add", "tiered-through", "x_asyncpg", "<=", 1.5),
    ("flusher items/s into PostgreSQL", "flusher", "tiered-behind", "ops_s", ">=", 100_000),
    ("flusher share of the COPY floor", "flusher", "tiered-behind", "pg_throughput", ">=", 0.5),
    ("flush lag p99 (ms)", "flushlag", "tiered-behind", "p99_ms", "<=", 200),
    ("get(20) longest vs 1k session, write-behind", "scale", "tiered-behind", "scale", "<=", 1.2),
    ("get(20) longest vs 1k session, write-through", "scale", "tiered-through", "scale", "<=", 1.2),
]


def targets(wl: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the results document's ``targets``: each goal with its measured value."""
    out = []
    for name, workload, backend, what, cmp, limit in TARGETS:
        value: float | None = None
        if workload == "scale":
            value = _scale_ratio(wl, backend)
        else:
            cell = wl.get(workload, {}).get("cells", {}).get(backend)
            if cell is not None and cell["ok"]:
                if what in ("throughput", "pg_throughput"):
                    x = cell["x_redis" if what == "throughput" else "x_asyncpg"]
                    value = 1 / x if x else None
                elif what == "p99_ms":
                    value = cell["p99_us"] / 1000 if cell["p99_us"] is not None else None
                else:
                    value = cell[what]
        reached = None
        if value is not None:
            reached = value <= limit if cmp == "<=" else value >= limit
        if workload == "flushlag" and value is not None:
            cell = wl["flushlag"]["cells"][backend]
            name = f"flush lag p99 (ms) at {cell['ops_s']:,.0f} turns/s"
        out.append(
            {"name": name, "backend": backend, "value": value, "cmp": cmp, "limit": limit}
            | {"reached": reached}
        )
    return out


def _scale_ratio(wl: dict[str, Any], backend: str) -> float | None:
    names = sorted((n for n in wl if n.startswith("scale-")), key=lambda n: int(n[6:].rstrip("k")))
    if len(names) < 2:
        return None
    small = wl[names[0]]["cells"].get(backend)
    big = wl[names[-1]]["cells"].get(backend)
    if not small or not big or not small["ok"] or not big["ok"]:
        return None
    ratios = [
        b["p50_us"] / s["p50_us"]
        for s, b in zip(small["repeats"], big["repeats"], strict=False)
        if s["p50_us"]
    ]
    return statistics.median(ratios) if ratios else None
