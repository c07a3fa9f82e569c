"""Logs: one line per event, shard changes summed up in one line, no item contents."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import insert

from tiered_session import CorruptDataError, Flusher, TieredStore
from tiered_session.outbox.leases import shard_ranges

SECRET = "do-not-log-7f3a"


@pytest.fixture
async def behind() -> AsyncIterator[TieredStore]:
    store = TieredStore(write_mode="behind", run_flusher=False, outbox_shards=16)
    await store.start()
    yield store
    await store.aclose()


def _lines(caplog: pytest.LogCaptureFixture, word: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if word in r.getMessage()]


def test_shard_ranges() -> None:
    assert shard_ranges(list(range(16))) == "shards 0-15"
    assert shard_ranges([7]) == "shard 7"
    assert shard_ranges([9, 1, 3, 2, 5, 6]) == "shards 1-3,5-6,9"


async def test_taking_and_handing_over_shards_is_one_line_each(
    behind: TieredStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tiered_session.flusher")
    first = Flusher(behind)
    await first.step()
    took = _lines(caplog, " took ")
    assert len(took) == 1, [r.getMessage() for r in caplog.records]
    assert "took shards 0-15; holds 16 of 16, 1 flusher(s) live" in took[0].getMessage()
    assert took[0].shards == list(range(16))  # type: ignore[attr-defined]
    assert took[0].event == "shards_took"  # type: ignore[attr-defined]

    caplog.clear()
    second = Flusher(behind)
    await second.step()  # counts two live flushers; nothing free to take yet
    first.leases.renew_soon()
    await first.step()  # hands half over
    second.leases.renew_soon()
    await second.step()  # takes it
    handed = _lines(caplog, "handed over")
    assert [r.getMessage().split(" ", 2)[2] for r in handed] == [
        "handed over shards 8-15; holds 8 of 16, 2 flusher(s) live"
    ]
    took = _lines(caplog, " took ")
    assert len(took) == 1 and "took shards 8-15; holds 8 of 16" in took[0].getMessage()
    await first.release()
    await second.release()


async def test_lost_leases_are_one_line(
    behind: TieredStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tiered_session.flusher")
    flusher = Flusher(behind, shards=[0, 1, 2, 3])
    await flusher.step()
    for shard in range(4):  # another flusher took them over (ours expired meanwhile)
        await behind.redis.set(behind.keys.shard(shard).lease, b"someone-else")
    caplog.clear()
    flusher.leases.renew_soon()
    await flusher.step()
    lost = _lines(caplog, "lost")
    assert len(lost) == 1 and lost[0].levelno == logging.WARNING
    assert "lost shards 0-3: lease expired; holds 0 of 4" in lost[0].getMessage()
    assert not _lines(caplog, " took ")


async def test_no_item_contents_in_the_logs(
    behind: TieredStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tiered_session")
    s = behind.session("u")
    await s.add_items([{"role": "user", "content": SECRET}])
    # An outbox entry whose item lengths do not match its data: dead-lettered.
    data = json.dumps({"content": SECRET}).encode()
    fields = {b"o": b"a", b"s": b"u", b"q": b"9", b"t": b"0", b"l": b"3", b"d": data}
    await behind.redis.xadd(behind.keys.session("u").shard.outbox, fields)
    flusher = Flusher(behind)
    await flusher.drain()
    await flusher.release()
    # A corrupt row in SQL: the read fails and is logged.
    async with behind.engine.begin() as conn:
        await conn.execute(insert(behind.sql.sessions).values(session_id="c"))
        await conn.execute(
            insert(behind.sql.messages).values(
                session_id="c", seq=1, message_data='{"content": "' + SECRET
            )
        )
    with pytest.raises(CorruptDataError):
        await behind.session("c").get_items()
    assert _lines(caplog, "dead letters") and _lines(caplog, "corrupt item")
    for r in caplog.records:  # neither in the message nor in the extra fields
        assert SECRET not in r.getMessage() and SECRET not in str(vars(r))
