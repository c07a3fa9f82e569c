"""The key layout: shard tags spread evenly over any number of masters; old data keeps its layout.

The spread is measured as ``redis-cli --cluster create`` lays a cluster out:
``masters`` even, contiguous slot ranges. The layout record (``<prefix>:layout``)
is checked on every backend: a store written before it existed (legacy tags
``{s<n>}``, no record) is detected and read as it is.
"""

from __future__ import annotations

import logging
import statistics

import pytest
from redis.crc import key_slot

from tiered_session import ConfigurationError, Flusher
from tiered_session._codec import decode_item
from tiered_session.hot.keys import DEFAULT_SHARDS, KeySpace, Layout
from tiered_session.hot.tags import SLOTS, legacy_tag, slot_of, spread_slot

from .conftest import Backend

PREFIXES = ["tiered_session", "app", "agents.prod", "t-1", "x", "chat_eu-west-1", "a.b.c"]


def even_ranges(masters: int) -> list[tuple[int, int]]:
    """The slot ranges ``redis-cli --cluster create`` gives ``masters`` masters."""
    per, first, cursor, out = SLOTS / masters, 0, 0.0, []
    for i in range(masters):
        last = round(cursor + per - 1)
        if last > SLOTS - 1 or i == masters - 1:
            last = SLOTS - 1
        last = max(last, first)
        out.append((first, last))
        first, cursor = last + 1, cursor + per
    return out


def shards_per_master(slots: list[int], masters: int) -> list[int]:
    counts = [0] * masters
    for slot in slots:
        counts[next(i for i, (lo, hi) in enumerate(even_ranges(masters)) if lo <= slot <= hi)] += 1
    return counts


def spread_slots(prefix: str, shards: int) -> list[int]:
    keys = KeySpace(prefix, shards)
    return [sh.slot for sh in keys.all_shards()]


@pytest.mark.parametrize("masters", range(3, 31))
def test_the_default_cluster_shard_count_spreads_evenly_over_3_to_30_masters(
    masters: int,
) -> None:
    shards = DEFAULT_SHARDS[True]
    for prefix in PREFIXES:
        counts = shards_per_master(spread_slots(prefix, shards), masters)
        mean = shards / masters
        assert max(counts) <= 1.2 * mean and min(counts) >= 0.8 * mean, (prefix, counts)
        assert max(counts) - min(counts) <= 2, (prefix, counts)


def test_random_tags_do_not_spread_and_every_prefix_shared_them() -> None:
    legacy = [slot_of(legacy_tag(n)) for n in range(16)]
    assert shards_per_master(legacy, 3) == [6, 4, 6]
    assert shards_per_master(spread_slots("app", 16), 3) in ([5, 5, 6], [5, 6, 5], [6, 5, 5])
    # Spread tags sit where they should (Redis agrees), differ per prefix, never repeat.
    for prefix in PREFIXES:
        keys = KeySpace(prefix, 128)
        for sh in keys.all_shards():
            assert key_slot(sh.outbox) == sh.slot == spread_slot(prefix, sh.shard, 128)
        assert len({sh.slot for sh in keys.all_shards()}) == 128
    firsts = {KeySpace(p, 128).shard(0).slot for p in PREFIXES}
    assert len(firsts) == len(PREFIXES)


def test_more_shards_spread_better() -> None:
    def worst(shards: int) -> float:
        ratios = []
        for masters in range(3, 31):
            for prefix in PREFIXES:
                counts = shards_per_master(spread_slots(prefix, shards), masters)
                ratios.append(max(counts) / (shards / masters))
        return max(ratios)

    measured = {n: worst(n) for n in (16, 32, 64, 128, 256)}
    assert list(measured.values()) == sorted(measured.values(), reverse=True), measured
    assert measured[128] < 1.2 < measured[64]
    assert statistics.mean([measured[16], measured[32]]) > 1.5


# ---------------------------------------------------------------------- the layout record
async def test_a_new_store_records_its_layout(backend: Backend) -> None:
    store = backend.store()
    await store.start()
    assert store.keys.layout == Layout.SPREAD and store.keys.shards == 16
    assert await backend.redis.get(store.keys.marker) == b"2 16"
    # Another process with no shard count takes the recorded one; a different one is refused.
    other = backend.store()
    await other.start()
    assert other.keys.shards == 16
    wrong = backend.store(outbox_shards=32)
    with pytest.raises(ConfigurationError, match="outbox_shards=16"):
        await wrong.start()


async def test_a_layout_record_of_another_program_is_refused(backend: Backend) -> None:
    store = backend.store()
    await backend.redis.set(store.keys.marker, b"hello")
    with pytest.raises(ConfigurationError, match="another key_prefix"):
        await store.start()


@pytest.mark.parametrize("write_mode", ["behind", "through"])
async def test_a_store_written_before_the_layout_record_keeps_its_layout(
    backend: Backend, write_mode: str
) -> None:
    old = backend.store(write_mode=write_mode, run_flusher=False, hot_items=3)
    old.keys.adopt(Layout.LEGACY, 16)  # what versions without the record wrote
    history = {f"s{n}": [{"n": n, "i": i} for i in range(5)] for n in range(12)}
    for sid, items in history.items():
        await old.session(sid).add_items(items)
    assert b"{s" in old.keys.session("s0").meta
    assert await backend.redis.get(old.keys.marker) is None
    await old.aclose()

    new = backend.store(write_mode=write_mode)  # default options
    early = new.session("s3")  # made before the store settled its layout: rebound then
    assert await early.get_items() == history["s3"]
    assert new.keys.layout == Layout.LEGACY and new.keys.shards == 16
    assert early.store.keys.session("s3").meta == old.keys.session("s3").meta
    assert await backend.redis.get(new.keys.marker) == b"1 16"
    await new.flush(timeout=20)  # the legacy outbox drains into SQL
    for sid, items in history.items():
        assert [decode_item(d) for _, d in await new.sql.latest(sid, None, None)] == items
        await new.evict(sid)
        assert await new.session(sid).get_items() == items
    await new.session("s3").add_items([{"n": "more"}])
    assert await new.session("s3").get_items(limit=1) == [{"n": "more"}]


async def test_a_flusher_records_the_layout_again_after_redis_lost_it(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    store = backend.store(write_mode="behind", run_flusher=False)
    await store.start()
    flusher = Flusher(store)
    await backend.redis.delete(store.keys.marker)  # (as a Redis restarted empty)
    await flusher.step()
    assert await backend.redis.get(store.keys.marker) == b"2 16"
    await backend.redis.set(store.keys.marker, b"2 64")
    flusher.leases.renew_soon()
    with caplog.at_level(logging.ERROR, logger="tiered_session"):
        await flusher.step()
    assert "disagree" in caplog.text
    await flusher.release()
