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
    assert "[#" not in out.stderr  # the progress bar only draws on a terminal


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
