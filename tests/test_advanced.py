"""AdvancedTieredSession against the SDK's AdvancedSQLiteSession, and its own promises."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import agents.extensions.memory.advanced_sqlite_session as sdk_advanced
import pytest

import tiered_session.advanced as our_advanced
from tests.advanced_support import Differential, oracle
from tests.conftest import StoreFactory

#: a fixed clock for generated branch ids (``branch_from_turn_<n>_<time>``) on both sides
FIXED_CLOCK = SimpleNamespace(time=lambda: 1_764_000_000.0)


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdk_advanced, "time", FIXED_CLOCK)
    monkeypatch.setattr(our_advanced, "time", FIXED_CLOCK)


@pytest.mark.parametrize("seed", range(4))
async def test_random_scenarios_answer_as_the_sdk(
    make_store: StoreFactory, tmp_path: Path, seed: int, fixed_clock: None
) -> None:
    store = make_store(hot_items=3)
    await store.start()
    rng = random.Random(seed)
    ref = oracle(tmp_path, "conv")
    mine = store.advanced_session("conv")
    diff = Differential(ref, mine, store, rng)
    try:
        for _ in range(120):
            await diff.step()
        await diff.branches()
    finally:
        ref.close()
