"""Runner end to end with the SDK's offline ScriptedModel: TieredSession vs SQLiteSession.

Every scenario runs the same script on a TieredSession (every backend pair, both
write modes, a small hot window, an eviction in the middle) and on the SDK's
SQLiteSession; the stored history and every model input must be identical.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

agents = pytest.importorskip("agents")

from agents import (  # noqa: E402
    Agent,
    RunConfig,
    Runner,
    SQLiteSession,
    function_tool,
    set_tracing_disabled,
)
from agents.memory import SessionSettings  # noqa: E402
from agents.testing import ScriptedModel, assistant_message, function_call  # noqa: E402

from tiered_session import TieredSession, TieredStore  # noqa: E402

from .conftest import StoreFactory  # noqa: E402

set_tracing_disabled(True)

SCENARIOS = ["plain", "streamed", "session_limit", "run_config_limit", "input_callback"]


@function_tool
def get_weather(city: str) -> str:
    """Return the weather of a city."""
    return f"sunny in {city}"


def script() -> list[Any]:
    return [
        [assistant_message("Hello! How can I help?", item_id="m1")],
        [function_call("get_weather", {"city": "Paris"}, call_id="call-1")],
        [assistant_message("It is sunny in Paris.", item_id="m2")],
        [assistant_message("Noted.", item_id="m3")],
        [function_call("get_weather", {"city": "Oslo"}, call_id="call-2")],
        [assistant_message("Sunny in Oslo too.", item_id="m4")],
    ]


def keep_last_two(history: list[Any], new: list[Any]) -> list[Any]:
    return history[-2:] + new


async def drive(
    session: Any, scenario: str, store: TieredStore | None = None
) -> tuple[list[Any], list[Any]]:
    """Run four user turns; return (model inputs, stored history)."""
    model = ScriptedModel(script())
    agent = Agent(name="assistant", model=model, tools=[get_weather])
    config = RunConfig()
    if scenario == "run_config_limit":
        config = RunConfig(session_settings=SessionSettings(limit=3))
    elif scenario == "input_callback":
        config = RunConfig(session_input_callback=keep_last_two)
    turns = ["hi", "weather in Paris?", "thanks", "and Oslo?"]
    for n, text in enumerate(turns):
        if scenario == "streamed":
            result = Runner.run_streamed(agent, text, session=session, run_config=config)
            async for _ in result.stream_events():
                pass
        else:
            await Runner.run(agent, text, session=session, run_config=config)
        if store is not None and n == 1:
            await store.evict(session.session_id)  # next turn reads cold from SQL
    model.assert_complete()
    inputs = [call.input for call in model.calls]
    return inputs, await session.get_items(limit=10_000)


def settings_for(scenario: str) -> SessionSettings | None:
    return SessionSettings(limit=2) if scenario == "session_limit" else None


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_runner_matches_sqlite_session(make_store: StoreFactory, scenario: str) -> None:
    reference = SQLiteSession("conv", session_settings=settings_for(scenario))
    try:
        expected = await drive(reference, scenario)
    finally:
        reference.close()
    store = make_store(hot_items=3)
    session = store.session("conv", session_settings=settings_for(scenario))
    got = await drive(session, scenario, store)
    assert got[0] == expected[0]  # every model input
    assert got[1] == expected[1]  # the stored history
    await store.flush()
    await store.evict("conv")
    assert await session.get_items(limit=10_000) == expected[1]  # and from SQL alone


async def test_tiered_session_is_an_sdk_session() -> None:
    from agents.memory import Session

    async with TieredSession("x") as session:
        assert isinstance(session, Session)


async def test_encrypted_session_wrapping_tiered(make_store: StoreFactory) -> None:
    from agents.extensions.memory import EncryptedSession
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    reference = SQLiteSession("enc")
    try:
        expected = await drive(EncryptedSession("enc", reference, key, ttl=3600), "plain")
    finally:
        reference.close()
    store = make_store(hot_items=3)
    inner = store.session("enc")
    got = await drive(EncryptedSession("enc", inner, key, ttl=3600), "plain", store)
    assert got == expected
    raw = await inner.get_items()
    assert raw and all(item.get("__enc__") == 1 for item in raw)  # stored encrypted
    assert "Paris" not in str(raw)


class _Compacted:
    def __init__(self, output: list[Any]) -> None:
        self.output = output
        self.usage = None


class _FakeResponses:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def compact(self, **kwargs: Any) -> _Compacted:
        self.requests.append(kwargs)
        summary = {"type": "message", "role": "user", "content": f"summary #{len(self.requests)}"}
        return _Compacted([summary])


class _FakeClient:
    def __init__(self) -> None:
        self.responses = _FakeResponses()


async def test_compaction_replaces_history(make_store: StoreFactory) -> None:
    from agents.memory import OpenAIResponsesCompactionSession

    store = make_store(hot_items=3)
    inner = store.session("compact")
    client = _FakeClient()
    session = OpenAIResponsesCompactionSession(
        "compact",
        inner,
        client=client,  # type: ignore[arg-type]
        compaction_mode="input",
        should_trigger_compaction=lambda ctx: len(ctx["session_items"]) >= 4,
    )
    model = ScriptedModel(script())
    agent = Agent(name="assistant", model=model, tools=[get_weather])
    await Runner.run(agent, "hi", session=session)
    await Runner.run(agent, "weather in Paris?", session=session)
    assert client.responses.requests  # automatic compaction ran after a turn
    history = await inner.get_items()
    assert {"type": "message", "role": "user", "content": "summary #1"} in history
    # Manual compaction replaces the whole stored history.
    await session.run_compaction({"force": True})
    expected = [
        {"type": "message", "role": "user", "content": f"summary #{len(client.responses.requests)}"}
    ]
    assert await inner.get_items() == expected
    await store.flush()
    await store.evict("compact")
    assert await inner.get_items() == expected


async def compact_partial(inner: Any) -> tuple[list[Any], list[Any]]:
    """Four turns seeing 3 items of history; compaction after the last one."""
    from agents.memory import OpenAIResponsesCompactionSession

    client = _FakeClient()
    trigger = {"on": False}
    session = OpenAIResponsesCompactionSession(
        "partial",
        inner,
        client=client,  # type: ignore[arg-type]
        compaction_mode="input",
        should_trigger_compaction=lambda ctx: trigger["on"],
    )
    model = ScriptedModel([[assistant_message(f"r{i}", item_id=f"m{i}")] for i in range(4)])
    agent = Agent(name="assistant", model=model)
    for i in range(4):
        trigger["on"] = i == 3
        await Runner.run(agent, f"u{i}", session=session)
    return client.responses.requests, await inner.get_items(limit=10_000)


async def test_compaction_replaces_only_the_newest_items_atomically(
    make_store: StoreFactory,
) -> None:
    """The atomic snapshot hook: a partial suffix is replaced, older history kept."""
    reference = SQLiteSession("partial", session_settings=SessionSettings(limit=3))
    try:
        expected = await compact_partial(reference)
    finally:
        reference.close()
    store = make_store(hot_items=50)
    inner = store.session("partial", session_settings=SessionSettings(limit=3))
    got = await compact_partial(inner)
    assert got == expected
    assert len(got[1]) == 5 and got[1][-1]["content"] == "summary #1"  # u0 r0 u1 r1 summary
    await store.flush()
    await store.evict("partial")
    assert await inner.get_items(limit=10_000) == expected[1]


async def test_compaction_snapshot_refuses_a_changed_tail(make_store: StoreFactory) -> None:
    store = make_store(hot_items=10)
    session = store.session("snap")
    await session.add_items([{"role": "user", "content": str(i)} for i in range(4)])
    snap = await session._get_compaction_snapshot(2)
    assert snap.items == [{"role": "user", "content": "2"}, {"role": "user", "content": "3"}]
    assert not snap.complete
    await session.pop_item()
    assert await snap.replace_suffix(0, [{"role": "user", "content": "x"}]) is False
    snap = await session._get_compaction_snapshot(5)
    assert snap.complete and len(snap.items) == 3
    await session.add_items([{"role": "user", "content": "late"}])
    assert await snap.replace_suffix(1, [{"role": "user", "content": "x"}]) is False
    snap = await session._get_compaction_snapshot(5)
    assert await snap.replace_suffix(1, [{"role": "user", "content": "x"}]) is True
    expected = [{"role": "user", "content": "0"}, {"role": "user", "content": "x"}]
    assert await session.get_items() == expected
    await store.flush()
    await store.evict("snap")
    assert await session.get_items() == expected
    await session.add_items([{"role": "user", "content": "after"}])
    assert await session.get_items(limit=1) == [{"role": "user", "content": "after"}]


async def test_atomic_replace_of_the_whole_history(make_store: StoreFactory) -> None:
    store = make_store(hot_items=3)
    session = store.session("whole")
    await session.add_items([{"role": "user", "content": str(i)} for i in range(8)])
    await store.flush()
    await store.evict("whole")  # most of the history only in SQL
    summary = [{"role": "user", "content": "summary"}, {"role": "assistant", "content": "ok"}]
    assert await session._atomic_replace_items(summary) is True
    assert await session.get_items() == summary
    if store.config.write_mode == "through":  # committed in SQL when the call returns
        rows = await store.sql.latest("whole", None, None)
        assert [orjson.loads(d) for _, d in rows] == summary
    await store.flush()
    await store.evict("whole")
    assert await session.get_items() == summary
    await session.add_items([{"role": "user", "content": "next"}])
    assert await session.get_items(limit=2) == [summary[1], {"role": "user", "content": "next"}]


async def encrypted_compaction(inner: Any, key: str) -> tuple[int, list[Any]]:
    from agents.extensions.memory import EncryptedSession
    from agents.memory import OpenAIResponsesCompactionSession

    client = _FakeClient()
    trigger = {"on": False}
    compacting = OpenAIResponsesCompactionSession(
        "enc-compact",
        inner,
        client=client,  # type: ignore[arg-type]
        compaction_mode="input",
        should_trigger_compaction=lambda ctx: trigger["on"],
    )
    session = EncryptedSession("enc-compact", compacting, key, ttl=3600)
    model = ScriptedModel([[assistant_message(f"r{i}", item_id=f"m{i}")] for i in range(4)])
    agent = Agent(name="assistant", model=model)
    for i in range(4):
        trigger["on"] = i == 3
        await Runner.run(agent, f"u{i}", session=session)
    return len(client.responses.requests), await session.get_items()


async def test_encrypted_compaction_on_tiered(make_store: StoreFactory) -> None:
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    reference = SQLiteSession("enc-compact", session_settings=SessionSettings(limit=3))
    try:
        expected = await encrypted_compaction(reference, key)
    finally:
        reference.close()
    store = make_store(hot_items=50)
    inner = store.session("enc-compact", session_settings=SessionSettings(limit=3))
    got = await encrypted_compaction(inner, key)
    assert got == expected and got[0] == 1
    assert "summary" not in str(await inner.get_items())  # stored encrypted
