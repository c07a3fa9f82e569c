"""Bad input fails loudly, before anything is written; corrupt stored data is reported."""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any

import pytest
from sqlalchemy import insert

from tiered_session import (
    ConfigurationError,
    CorruptDataError,
    InvalidInputError,
    TieredSession,
    TieredSessionError,
    TieredStore,
)

from .conftest import Backend


def ok(i: int) -> dict[str, Any]:
    return {"role": "user", "content": f"m{i}"}


BAD_ITEMS: list[Any] = [
    {"x": {1, 2}},  # a set
    {"x": object()},
    {"x": float("nan")},
    {"x": float("inf")},
    {"x": datetime.datetime(2024, 1, 1)},  # json.dumps refuses it: so do we
    "just a string",
    ["a", "list"],
    None,
]


@pytest.mark.parametrize("bad", BAD_ITEMS, ids=lambda b: type(b).__name__)
async def test_bad_item_rejects_the_whole_batch(store: TieredStore, bad: Any) -> None:
    s = store.session("bad-items")
    await s.add_items([ok(0)])
    with pytest.raises(InvalidInputError):
        await s.add_items([ok(1), bad, ok(2)])
    await store.flush()
    assert await s.get_items() == [ok(0)]
    assert [q for q, _ in await store.sql.latest("bad-items", None, None)] == [1]
    await s.add_items([ok(3)])  # seq numbering is not disturbed
    assert await s.get_items() == [ok(0), ok(3)]


async def test_items_must_be_a_list(store: TieredStore) -> None:
    with pytest.raises(InvalidInputError):
        await store.session("x").add_items({"role": "user"})  # type: ignore[arg-type]


@pytest.mark.parametrize("limit", [-1, -100, 1.5, "3", True])
async def test_bad_limit(store: TieredStore, limit: Any) -> None:
    s = store.session("limits")
    await s.add_items([ok(0)])
    with pytest.raises(InvalidInputError):
        await s.get_items(limit=limit)
    assert await s.get_items() == [ok(0)]


@pytest.mark.parametrize("sid", ["", "x" * 513, "é" * 257, 42, None, "a\x00b"])
def test_bad_session_id(sid: Any) -> None:
    store = TieredStore()
    with pytest.raises(InvalidInputError):
        store.session(sid)
    with pytest.raises(InvalidInputError):
        TieredSession(sid)


def test_longest_session_id_is_fine() -> None:
    assert TieredStore().session("x" * 512).session_id == "x" * 512


@pytest.mark.parametrize(
    "options",
    [
        {"sessions_table": "agent sessions"},
        {"messages_table": "drop table x;--"},
        {"messages_table": ""},
        {"sessions_table": "1abc"},
        {"sessions_table": "same", "messages_table": "same"},
        {"key_prefix": "a b"},
        {"key_prefix": "{tag}"},
        {"key_prefix": "a:b"},
        {"key_prefix": ""},
        {"write_mode": "sideways"},
        {"hot_items": 0},
        {"hot_items": -5},
        {"outbox_shards": 0},
        {"hot_ttl": -1},
        {"lease_ttl": 0.1},
        {"no_such_option": 1},
    ],
)
def test_bad_configuration(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError) as err:
        TieredStore(**options)
    assert isinstance(err.value, TieredSessionError)
    assert str(err.value)


@pytest.mark.parametrize(
    ("redis_url", "sql_url"),
    [
        ("http://localhost", None),
        (None, "sqlite:///x.db"),
        (None, "postgresql://postgres@localhost/test"),
        (None, "mysql+aiomysql://root@localhost/test"),
    ],
)
def test_bad_urls(redis_url: str | None, sql_url: str | None) -> None:
    with pytest.raises(ConfigurationError):
        TieredStore.from_url(redis_url, sql_url)


async def test_corrupt_sql_row_is_reported_not_skipped(
    store: TieredStore, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    s = store.session("corrupt")
    await s.add_items([ok(0), ok(1)])
    await store.flush()
    async with store.sql.begin() as conn:
        await conn.execute(
            insert(store.sql.messages).values(session_id="corrupt", seq=3, message_data="{not json")
        )
    await store.evict("corrupt")
    caplog.set_level(logging.ERROR, logger="tiered_session")
    with pytest.raises(CorruptDataError, match="seq=3"):
        await s.get_items()
    assert (await store.stats())["corrupt_rows"] >= 1
    assert "corrupt" in caplog.text
    # Reads that do not touch the corrupt row still work.
    await store.evict("corrupt")
    with pytest.raises(CorruptDataError):
        await s.get_items(limit=1)


async def test_corrupt_hot_entry_is_reported(store: TieredStore, backend: Backend) -> None:
    s = store.session("corrupt-hot")
    await s.add_items([ok(0)])
    k = store.keys.session("corrupt-hot")
    await backend.redis.rpush(k.items, b"garbage-without-separator")
    with pytest.raises(CorruptDataError):
        await s.get_items()
    assert (await store.stats())["corrupt_rows"] == 1


async def test_closed_store_refuses_work() -> None:
    store = TieredStore()
    s = store.session("x")
    await s.add_items([ok(0)])
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(TieredSessionError):
        await s.get_items()


async def test_empty_batch_is_a_no_op(store: TieredStore) -> None:
    s = store.session("empty-batch")
    await s.add_items([])
    assert await s.get_items() == []


async def test_unicode_and_big_numbers_round_trip(store: TieredStore) -> None:
    s = store.session("unicode-ïd-✓")
    item = {"text": 'héllo ✓ 🚀 \u2028 "quotes" \\', "big": 2**70, "neg": -(2**63), "f": 1e-300}
    await s.add_items([item])
    await store.flush()
    await store.evict("unicode-ïd-✓")
    assert await s.get_items() == [item]


async def test_sessions_gather_on_one_loop(store: TieredStore) -> None:
    sessions = [store.session(f"g{i}") for i in range(20)]
    await asyncio.gather(*(s.add_items([ok(i)]) for i, s in enumerate(sessions)))
    got = await asyncio.gather(*(s.get_items() for s in sessions))
    assert got == [[ok(i)] for i in range(20)]
