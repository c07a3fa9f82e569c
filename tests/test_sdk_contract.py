"""What code written for the SDK's sessions expects of any session.

``session_settings`` defaults to ``SessionSettings()`` and takes a dict as the
SDK's sessions do; compaction through the SDK's wrappers is atomic against a
concurrent append, a cancelled or failed compaction leaves the history it
found, and a subclass that overrides a storage method keeps seeing every
change (the atomic hooks decline for it, as the SDK's own sessions do).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

agents = pytest.importorskip("agents")

from agents.memory import OpenAIResponsesCompactionSession, SessionSettings  # noqa: E402

from tiered_session import SessionSettingsError, TieredSession, TieredStore  # noqa: E402

from .conftest import StoreFactory  # noqa: E402


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": text}


# ---------------------------------------------------------------- session_settings
def test_session_settings_default_to_the_sdk_s() -> None:
    s = TieredSession("settings")
    assert isinstance(s.session_settings, SessionSettings)
    assert s.session_settings.limit is None
    assert TieredStore().session("x").session_settings == SessionSettings()


def test_session_settings_take_a_dict_and_refuse_unknown_keys() -> None:
    s = TieredSession("settings", session_settings={"limit": 2})
    assert s.session_settings == SessionSettings(limit=2)
    with pytest.raises(TypeError, match="Unknown session settings: limt"):
        TieredSession("settings", session_settings={"limt": 2})
    with pytest.raises(SessionSettingsError, match="SessionSettings instance or a dict, got int"):
        TieredSession("settings", session_settings=3)
    s.session_settings = {"limit": 1}  # assignment coerces too
    assert s.session_settings == SessionSettings(limit=1)
    s.session_settings = None
    assert s.session_settings == SessionSettings()


async def test_session_settings_limit_applies_to_reads(make_store: StoreFactory) -> None:
    store = make_store()
    s = store.session("limited", session_settings={"limit": 2})
    await s.add_items([user(str(i)) for i in range(5)])
    assert await s.get_items() == [user("3"), user("4")]
    assert len(await s.get_items(limit=4)) == 4


# ---------------------------------------------------------------- compaction
class _Compactor:
    """A stand-in for the Responses API's compact endpoint."""

    def __init__(self, output: list[Any], fail: bool = False) -> None:
        self.output = output
        self.fail = fail
        self.responses = self

    async def compact(self, **_: Any) -> Any:
        if self.fail:
            raise RuntimeError("the compaction endpoint failed")
        return type("Compacted", (), {"output": self.output})()


async def test_replacement_is_atomic_against_concurrent_appends(make_store: StoreFactory) -> None:
    store = make_store(hot_items=20)
    s = store.session("race")
    await s.add_items([user(f"old {i}") for i in range(6)])
    summary = [user("summary")]
    late = [user(f"late {i}") for i in range(20)]

    async def append(item: dict[str, Any]) -> None:
        await s.add_items([item])

    results = await asyncio.gather(
        *(append(x) for x in late[:10]),
        s._atomic_replace_items(summary),
        *(append(x) for x in late[10:]),
    )
    assert results[10] is True
    got = await s.get_items()
    # Each append landed wholly before the replacement (replaced away) or after it
    # (kept once); nothing of the old history survives beside the summary.
    assert got[0] == summary[0], got
    rest = [x["content"] for x in got[1:]]
    assert len(rest) == len(set(rest)) and set(rest) <= {x["content"] for x in late}
    await store.flush()
    await store.evict("race")
    assert await s.get_items() == got


@pytest.mark.parametrize("yields", [0, 1, 2, 5, 20])
async def test_a_cancelled_replacement_leaves_old_or_new_history(
    make_store: StoreFactory, yields: int
) -> None:
    store = make_store(hot_items=20)
    s = store.session("cancelled")
    old = [user(f"old {i}") for i in range(4)]
    await s.add_items(old)
    summary = [user("summary")]
    task = asyncio.create_task(s._atomic_replace_items(summary))
    for _ in range(yields):
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    got = await s.get_items()
    assert got in (old, summary)
    await store.flush()
    await store.evict("cancelled")
    assert await s.get_items() == got


async def test_a_failed_compaction_leaves_the_history(make_store: StoreFactory) -> None:
    store = make_store(hot_items=20)
    inner = store.session("failed")
    history = [user("q"), {"type": "message", "role": "assistant", "content": "a"}]
    await inner.add_items(history)
    session = OpenAIResponsesCompactionSession(
        session_id="failed",
        underlying_session=inner,
        client=_Compactor([user("summary")], fail=True),  # type: ignore[arg-type]
        compaction_mode="input",
    )
    with pytest.raises(RuntimeError, match="endpoint failed"):
        await session.run_compaction({"force": True})
    assert await inner.get_items() == history


class CountingSession(TieredSession):
    """A subclass that owns how items are written: it counts them."""

    added: list[Any]
    clears: int

    async def add_items(self, items: list[Any]) -> None:
        self.added.extend(items)
        await super().add_items(items)

    async def clear_session(self) -> None:
        self.clears += 1
        await super().clear_session()


async def test_a_subclass_overriding_storage_sees_compaction(make_store: StoreFactory) -> None:
    store = make_store(hot_items=20)
    inner = CountingSession("sub", store=store)
    inner.added, inner.clears = [], 0
    await inner.add_items([user("q"), user("r")])
    assert await inner._atomic_replace_items([user("x")]) is False  # declined: not bypassed
    assert await inner._get_compaction_snapshot(5) is None
    assert await inner.get_items() == [user("q"), user("r")]
    session = OpenAIResponsesCompactionSession(
        session_id="sub",
        underlying_session=inner,
        client=_Compactor([user("summary")]),  # type: ignore[arg-type]
        compaction_mode="input",
    )
    await session.run_compaction({"force": True})
    assert await inner.get_items() == [user("summary")]
    assert inner.clears == 1 and inner.added[-1] == user("summary")  # through its methods


async def test_a_plain_subclass_keeps_the_atomic_hooks(make_store: StoreFactory) -> None:
    class Named(TieredSession):
        def label(self) -> str:
            return f"conversation {self.session_id}"

    store = make_store(hot_items=20)
    s = Named("named", store=store)
    await s.add_items([user("q")])
    assert await s._atomic_replace_items([user("x")]) is True
    assert await s.get_items() == [user("x")]
