"""The bench's cluster row: three local masters next to the single-node row, in one run."""

from __future__ import annotations

import pytest

from tiered_session.bench.cluster import CLUSTER, SINGLE, cluster_options, cluster_vs_single
from tiered_session.bench.runner import run_bench
from tiered_session.bench.sample import Sizes

from .cluster_support import need_redis_tools
from .conftest import PG_URL, REDIS_URL, require_servers

pytestmark = pytest.mark.servers


async def test_the_cluster_row_runs_next_to_the_single_node_one() -> None:
    require_servers()
    need_redis_tools()
    opts = cluster_options(
        repeats=1,
        workloads=["add", "get20", "concurrent"],
        redis_url=REDIS_URL,
        sql_url=PG_URL,
        sizes=Sizes(calls=30, warmup=3, concurrent_sessions=8, concurrent_turns=3),
        log=lambda _msg: None,
    )
    doc = await run_bench(opts)
    for w in ("add", "get20", "concurrent"):
        cells = doc["workloads"][w]["cells"]
        assert cells[CLUSTER]["ok"] and cells[SINGLE]["ok"], cells
    rows = {r["workload"]: r for r in cluster_vs_single(doc)}
    assert set(rows) == {"add", "get20", "concurrent"}
    assert all(r["ratio"] and r["ratio"] > 0 for r in rows.values())
    assert rows["concurrent"]["measure"] == "ops_s"
