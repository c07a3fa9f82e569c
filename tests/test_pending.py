"""Write-through batches between their SQL commit and their settle (pending entries).

A write-through add appends its items *pending* when it reserves their seqs,
returns right after its SQL commit, and leaves the settle (which makes them
plain entries) to ride with its store's next command for the session, or to a
background task a moment later. These tests hold that settle back, so the
window that is normally a fraction of a millisecond stays open, and check what
every other client sees meanwhile: readers get the committed batch and never
an uncommitted one (nor anything after it), pops and clears wait for adds
reserved before them and pass over adds reserved after them. Every test runs
on every backend pair; the second store stands for another process.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from tiered_session import Flusher, TieredStore
from tiered_session.hot import scripts
from tiered_session.hot.scripts import Status
from tiered_session.hot.tier import Call
from tiered_session.ops.through import WriteThrough

from .conftest import Backend
from .support import short as msg

pytestmark = pytest.mark.parametrize("backend_kind", ["fake-mem", "fake-file", "real"])


def hold_settles(store: TieredStore) -> list[Call]:
    """Keep the store's deferred settles instead of sending them."""
    held: list[Call] = []
    assert isinstance(store.mode, WriteThrough)
    store.mode.settles.defer = lambda k, call: held.append(call)  # type: ignore[method-assign]
    return held


async def release(store: TieredStore, held: list[Call]) -> None:
    for call in held:
        assert await store.hot.run(*call) == Status.OK
    held.clear()


async def reserve(store: TieredStore, sid: str, items: list[Any]) -> int:
    """Take the first step of a write-through add only (a writer whose commit is under way)."""
    k = store.keys.session(sid)
    datas = [orjson.dumps(i) for i in items]
    args = [b"t", store.config.hot_items, 0, 0, sid, int(time.time() * 1000), *datas]
    res = await store.hot.run(*store.hot.add_call(k, args))
    return int(res[0])


async def commit(store: TieredStore, sid: str, first: int, items: list[Any]) -> None:
    await store.sql.insert_new(sid, first, [orjson.dumps(i).decode() for i in items])


async def settle(store: TieredStore, sid: str, first: int, count: int) -> None:
    k = store.keys.session(sid)
    args = [f"a|{first}|{count}|{sid}", 1, store.config.hot_items, b"a", first, count, sid]
    assert await store.hot.run(*store.hot.settle_call(k, args)) == Status.OK


async def pending_entries(store: TieredStore, sid: str) -> int:
    envs = await store.redis.lrange(store.keys.session(sid).items, 1, -1)
    return sum(e[:1] == b"~" for e in envs)


async def test_a_returned_add_is_read_by_everyone_before_its_settle(backend: Backend) -> None:
    writer = backend.store(write_mode="through", hot_items=5)
    other = backend.store(write_mode="through", hot_items=5)
    held = hold_settles(writer)
    w, o = writer.session("s"), other.session("s")
    await w.add_items([msg(i) for i in range(8)])
    await w.add_items([msg(8), msg(9)])  # its reserve saw the first batch pending: it settles
    assert len(held) == 1 and await pending_entries(writer, "s") == 8
    want = [msg(i) for i in range(10)]
    assert await o.get_items() == want
    assert await o.get_items(limit=3) == want[-3:]
    assert await o.get_items(limit=12) == want
    assert await w.get_items(limit=1) == want[-1:]
    await release(writer, held)
    assert await pending_entries(writer, "s") == 0
    assert await o.get_items(limit=3) == want[-3:]
    assert await o.get_items() == want


async def test_an_uncommitted_batch_and_everything_after_it_stay_unseen(backend: Backend) -> None:
    store = backend.store(write_mode="through", hot_items=5)
    reader = backend.store(write_mode="through", hot_items=5).session("s")
    base = [msg(i) for i in range(10)]
    await store.session("s").add_items(base)
    await store.flush()
    x, y = [msg("x0"), msg("x1")], [msg("y0")]
    fx = await reserve(store, "s", x)  # commit still under way
    fy = await reserve(store, "s", y)
    await commit(store, "s", fy, y)  # committed, but its writer waits for x before returning
    assert await reader.get_items() == base
    assert await reader.get_items(limit=3) == base[-3:]  # read past the pending tail
    assert await reader.get_items(limit=1) == base[-1:]
    await commit(store, "s", fx, x)
    assert await reader.get_items() == [*base, *x, *y]
    assert await reader.get_items(limit=2) == [x[1], y[0]]
    await settle(store, "s", fx, 2)
    await settle(store, "s", fy, 1)
    assert await pending_entries(store, "s") == 0
    assert await reader.get_items(limit=4) == [base[-1], *x, *y]


async def test_pop_and_clear_wait_for_an_add_reserved_before_them(backend: Backend) -> None:
    writer = backend.store(write_mode="through", hot_items=5)
    other = backend.store(write_mode="through", hot_items=5).session("s")
    held = hold_settles(writer)
    await writer.session("s").add_items([msg(0), msg(1)])
    pop = asyncio.create_task(other.pop_item())
    await asyncio.sleep(0.1)
    assert not pop.done()  # the add returned: the pop must take its newest item
    await release(writer, held)
    assert await pop == msg(1)
    await writer.session("s").add_items([msg(2)])
    clear = asyncio.create_task(other.clear_session())
    await asyncio.sleep(0.1)
    assert not clear.done()
    await release(writer, held)
    await clear
    assert await other.get_items() == []
    await Flusher(writer).drain()
    assert await writer.sql.latest("s", None, None) == []


async def test_pop_passes_over_an_add_reserved_after_it_began(backend: Backend) -> None:
    store = backend.store(write_mode="through", hot_items=5)
    other_store = backend.store(write_mode="through", hot_items=5)
    other = other_store.session("s")
    await store.session("s").add_items([msg(0)])
    await store.flush()
    x = [msg("x")]
    fx = await reserve(store, "s", x)
    waiting = asyncio.Event()  # the pop began: its script met x pending and waits
    send = other_store.hot.send

    async def spy(*args: Any) -> Any:
        reply = await send(*args)
        if args[:2] == ("EVALSHA", scripts.POP.sha) and reply[0] == Status.WAIT_EARLIER:
            waiting.set()
        return reply

    other_store.hot.send = spy
    pop = asyncio.create_task(other.pop_item())
    await asyncio.wait_for(waiting.wait(), 10)
    await asyncio.sleep(0.05)
    assert not pop.done()  # x was reserved before the pop began
    y = [msg("y")]
    fy = await reserve(store, "s", y)  # after: the pop is ordered before it
    await commit(store, "s", fy, y)
    await commit(store, "s", fx, x)
    await settle(store, "s", fx, 1)
    assert await pop == msg("x")
    await settle(store, "s", fy, 1)
    assert await other.get_items() == [msg(0), msg("y")]
    assert [s for s, _ in await store.sql.latest("s", None, None)] == [1, fy]


async def test_the_settle_rides_with_the_next_command(backend: Backend) -> None:
    store = backend.store(write_mode="through", hot_items=50, run_flusher=False)
    s = store.session("s")
    await s.add_items([msg(0)])
    await store.flush()
    sent: list[list[str]] = []
    names = {script.sha: script.name for script in scripts.ALL}
    send_many, send = store.hot.send_many, store.hot.send

    async def spy_many(cmds: Any) -> Any:
        sent.append([names.get(c[1], "?") if c[0] == "EVALSHA" else str(c[0]) for c in cmds])
        return await send_many(cmds)

    async def spy(*args: Any) -> Any:
        sent.append([names.get(args[1], "?") if args[0] == "EVALSHA" else str(args[0])])
        return await send(*args)

    store.hot.send_many, store.hot.send = spy_many, spy
    await s.add_items([msg(1)])
    await s.add_items([msg(2)])
    assert await s.get_items(limit=2) == [msg(1), msg(2)]
    assert sent == [["add"], ["settle", "add"], ["settle", "LRANGE"]]
    await asyncio.sleep(0.05)
    assert isinstance(store.mode, WriteThrough)
    assert store.mode.settles.deferred_count == 0 and await pending_entries(store, "s") == 0
    await s.add_items([msg(3)])
    await asyncio.sleep(0.05)  # nothing else came for the session: sent on its own
    assert sent[-1] == ["settle"] and await pending_entries(store, "s") == 0
