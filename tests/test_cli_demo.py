"""The main job: ``tiered-session demo`` on the embedded default and on real servers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import Backend


def _demo(*args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "tiered_session", "demo", "--json", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.mark.parametrize("mode", ["through", "behind"])
def test_demo_on_the_embedded_default(mode: str) -> None:
    r = _demo("--sessions", "12", "--turns", "6", "--hot-items", "5", "--write-mode", mode)
    assert r["sessions_mismatched"] == 0
    assert r["sessions_verified"] == 12
    assert r["turns"] == 72
    assert isinstance(r["turns_per_second"], float) and r["turns_per_second"] > 0
    assert 0 <= r["cache_hit_ratio"] <= 1  # type: ignore[operator]
    assert r["cold_reads"] > 0  # type: ignore[operator]  # window 5 < history 20
    assert r["write_mode"] == mode
    # the figures add up: each read is a hit or a cold read; each load a first read or a re-read
    assert r["reads"] == 72 == r["cache_hits"] + r["cold_reads"]  # type: ignore[operator]
    assert r["degraded_reads"] == 0
    assert r["cache_hit_ratio"] == round(r["cache_hits"] / 72, 4)  # type: ignore[operator]
    assert r["cache_misses"] == r["loads_new_sessions"] + r["loads_after_eviction"]  # type: ignore[operator]
    assert r["loads_new_sessions"] == 12
    assert r["loads_after_eviction"] == r["evictions"] == 10  # the default --evict


def test_demo_defaults_to_the_library_write_mode_and_can_evict_nothing() -> None:
    r = _demo("--sessions", "3", "--turns", "4", "--evict", "0")
    assert r["write_mode"] == "through"
    assert r["hot_items"] == 50 and r["history"] == 20
    assert r["cold_reads"] == 0 and r["cache_hits"] == r["reads"] == 12
    assert r["cache_misses"] == r["loads_new_sessions"] == 3 and r["evictions"] == 0
    assert r["sessions_mismatched"] == 0


def test_demo_rejects_nonsense_sizes() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tiered_session", "demo", "--sessions", "-3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("tiered-session: error: Invalid value for '--sessions'")


def test_demo_human_output_and_no_progress_when_piped() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tiered_session", "demo", "--sessions", "4", "--turns", "3"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    for label in ("turns/s", "cache hit ratio", "cold reads", "flush lag", "verified"):
        assert label in out.stdout
    assert "4/4 sessions identical" in out.stdout
    assert "write-through" in out.stdout and "embedded" in out.stdout
    assert "reads              12, one per turn = cache hits + cold reads" in out.stdout
    assert "12 reads found every item in Redis" in out.stdout
    # no cold reads with these sizes: the report says why, and how to see some
    assert "a --hot-items below --history" in out.stdout
    assert "4 new (first read) + 8 after an eviction (8 evicted by --evict)" in out.stdout
    assert out.stderr == ""  # the progress bar only draws on a terminal


@pytest.mark.servers
def test_demo_on_real_servers(real_backend: Backend) -> None:
    b = real_backend
    r = _demo(
        "--sessions",
        "10",
        "--turns",
        "5",
        *b.cli_args(),
    )
    assert r["sessions_mismatched"] == 0
    assert r["sessions_verified"] == 10
