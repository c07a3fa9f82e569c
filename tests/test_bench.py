"""Smoke test of the benchmark harness: a tiny run, its outputs and its correctness flags.

It never asserts speed: only that the harness runs, writes its files, and flags
a backend that returns wrong data instead of ranking it.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tiered_session.bench import BenchEnv, BenchOptions, Sizes, run_bench, terminal, write_outputs
from tiered_session.bench.env import BenchSession
from tiered_session.bench.tiered import TieredEmbedded

from .conftest import PG_URL, REDIS_URL, servers_up

TINY = Sizes(
    calls=5,
    warmup=1,
    concurrent_sessions=4,
    concurrent_turns=2,
    workers=2,
    worker_turns=2,
    scale_sizes=(100, 300),
    flush_items=60,
    lag_seconds=0.2,
)


class _Dropping:
    """Wraps a session and forgets the oldest item of every read."""

    def __init__(self, inner: BenchSession) -> None:
        self._inner = inner

    async def get_items(self, limit: int | None = None) -> list[Any]:
        return (await self._inner.get_items(limit))[1:]

    async def add_items(self, items: list[Any]) -> None:
        await self._inner.add_items(items)

    async def pop_item(self) -> Any | None:
        return await self._inner.pop_item()

    async def clear_session(self) -> None:
        await self._inner.clear_session()


class BrokenBackend(TieredEmbedded):
    name = "broken"

    def make_session(self, sid: str) -> BenchSession:
        return _Dropping(super().make_session(sid))


async def test_quick_run_writes_outputs_and_flags_wrong_results(tmp_path: Path) -> None:
    backends = ["tiered-embedded"] + (["redis-floor", "tiered-behind"] if servers_up() else [])
    steps: list[tuple[str, int, int]] = []
    opts = BenchOptions(
        quick=True,
        repeats=3,
        backends=backends,
        workloads=["add", "get20", "turn", "scale"],
        sizes=TINY,
        extra_backends={"broken": lambda env: BrokenBackend(env)},
        log=lambda msg: None,
        progress=lambda step, done, total: steps.append((step, done, total)),
        redis_url=REDIS_URL,  # the suite's own db (TIERED_SESSION_TEST_REDIS)
        sql_url=PG_URL,
    )
    doc = await run_bench(opts, command="test")
    # one progress step per cell, counted against the total known from the start
    cells = steps[-1][2]
    assert cells >= 3 * 4 * len(doc["workloads"])  # every workload on 4 backends at least
    assert [(d, t) for _, d, t in steps] == [(i + 1, cells) for i in range(cells)]
    assert steps[0][0].startswith("repeat 1/3 add ")
    add = doc["workloads"]["add"]["cells"]
    assert add["tiered-embedded"]["ok"] and add["tiered-embedded"]["p50_us"] > 0
    assert len(add["tiered-embedded"]["repeats"]) == 3
    # add never reads through the broken wrapper's get -- except to check: flagged
    for w in ("add", "get20", "turn"):
        cell = doc["workloads"][w]["cells"]["broken"]
        assert not cell["ok"] and "wrong result" in cell["error"]
        assert cell["x_redis"] is None
    if servers_up():
        assert add["redis-floor"]["x_redis"] == 1.0
        assert add["tiered-behind"]["ok"] and add["tiered-behind"]["x_redis"] is not None
    text = terminal(doc)
    assert "WRONG" in text
    paths = write_outputs(doc, tmp_path, png=False)
    assert [p.name for p in paths] == ["results.json", "results.md"]
    assert json.loads(paths[0].read_text())["meta"]["repeats"] == 3
    md = paths[1].read_text()
    assert "| backend |" in md and "WRONG" in md
    assert all(t["backend"] != "broken" for t in doc["targets"])
    if importlib.util.find_spec("matplotlib") is not None:
        png = write_outputs(doc, tmp_path / "png")[-1]
        assert png.name == "results.png" and png.stat().st_size > 1000


def test_bench_env_names_are_namespaced() -> None:
    env = BenchEnv(namespace="abc123", tmpdir="/tmp")
    assert env.prefix("tb").startswith("tsbench_abc123")
    assert env.pg_dsn.startswith("postgresql://")


def test_bench_command_writes_under_the_current_directory_and_says_where(tmp_path: Path) -> None:
    args = ["--quick", "--repeats", "1", "--backends", "tiered-embedded"]
    args += ["--workloads", "add,get20", "--no-chart", "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "tiered_session", "bench", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = tmp_path / "benchmarks" / "results"
    assert f"results to {out}" in done.stderr
    assert f"wrote {out / 'results.json'}, {out / 'results.md'}" in done.stderr
    doc = json.loads(done.stdout)  # --json: the results document alone on stdout
    assert doc["meta"]["command"] == (
        "tiered-session bench --quick --repeats 1 --backends tiered-embedded --workloads add,get20"
    )
    assert json.loads((out / "results.json").read_text())["workloads"].keys() == {"add", "get20"}
    assert "repeat 1/1" not in done.stderr  # no line per step when not on a terminal
    assert len(done.stderr.strip().splitlines()) == 3  # the plan, a blank line, what it wrote
