"""AdvancedTieredSession: its deliberate differences from the SDK, workers, Runner, SDK tools."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from agents import Agent, Runner, function_tool, set_tracing_disabled
from agents.extensions.memory import EncryptedSession
from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession
from agents.memory import Session
from agents.testing import ScriptedModel, assistant_message, function_call
from agents.usage import InputTokensDetails, OutputTokensDetails, Usage
from openai.types.responses.response_usage import InputTokensDetailsCacheWriteTokensDetails

from tiered_session import AdvancedTieredSession, BranchError, TieredStore
from tiered_session.hot.keys import BRANCH_SEP

from .advanced_support import oracle, run_result, timeless, user
from .conftest import Backend, StoreFactory

set_tracing_disabled(True)


def turns_of(n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(1, n + 1):
        out += [user(f"question {i}"), {"role": "assistant", "content": f"answer {i}"}]
    return out


def usage_result(requests: int, tokens: int, details: Any = None) -> Any:
    usage = Usage(
        requests=requests,
        input_tokens=tokens,
        output_tokens=tokens,
        total_tokens=2 * tokens,
        input_tokens_details=details or InputTokensDetails(cached_tokens=1, cache_write_tokens=0),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=2),
    )
    return SimpleNamespace(context_wrapper=SimpleNamespace(usage=usage))


async def test_is_an_sdk_session_and_errors_are_value_errors() -> None:
    async with AdvancedTieredSession("x") as s:
        assert isinstance(s, Session)
        with pytest.raises(ValueError, match="does not exist"):
            await s.switch_to_branch("nope")
        with pytest.raises(BranchError):
            await s.delete_branch("main")
        with pytest.raises(ValueError, match="does not contain a user message"):
            await s.create_branch_from_turn(1)
        with pytest.raises(ValueError, match="No user turns found"):
            await s.create_branch_from_content("x")
        with pytest.raises(ValueError, match="cannot be empty"):
            await s.create_branch_from_turn(1, " ")


# ---------------------------------------------------------------------- deliberate differences
async def test_1_a_branch_from_the_first_turn_is_real(store: TieredStore, tmp_path: Path) -> None:
    ref = oracle(tmp_path, "c")
    try:
        await ref.add_items([user("first")])
        await ref.create_branch_from_turn(1, "empty")
        assert [b["branch_id"] for b in await ref.list_branches()] == ["main"]  # a phantom
        with pytest.raises(ValueError):
            await ref.switch_to_branch("empty")
    finally:
        ref.close()
    s = store.advanced_session("c")
    await s.add_items([user("first")])
    assert await s.create_branch_from_turn(1, "empty") == "empty"
    listed = {b["branch_id"]: b for b in await s.list_branches()}
    assert listed["empty"]["message_count"] == 0 and listed["empty"]["is_current"]
    assert await s.get_items() == []
    await s.switch_to_branch("main")
    await s.switch_to_branch("empty")
    await s.add_items([user("other start")])
    assert await s.get_items() == [user("other start")]
    await s.delete_branch("empty", force=True)
    assert [b["branch_id"] for b in await s.list_branches()] == ["main"]


async def test_2_force_delete_works_with_main_empty(store: TieredStore, tmp_path: Path) -> None:
    ref = oracle(tmp_path, "c")
    try:
        await ref.add_items(turns_of(2))
        await ref.create_branch_from_turn(2, "b")
        while await ref.get_items(branch_id="main"):
            await ref.switch_to_branch("main")
            await ref.pop_item()
        await ref.switch_to_branch("b")
        with pytest.raises(ValueError):  # the SDK cannot switch to an empty main
            await ref.delete_branch("b", force=True)
    finally:
        ref.close()
    s = store.advanced_session("c")
    await s.add_items(turns_of(2))
    await s.create_branch_from_turn(2, "b")
    await s.switch_to_branch("main")
    while await s.pop_item() is not None:
        pass
    await s.switch_to_branch("b")
    await s.delete_branch("b", force=True)
    assert await s.list_branches() == []
    await s.add_items([user("again")])
    assert (await s.list_branches())[0]["is_current"]


async def test_3_usage_of_a_resumed_turn_adds_up(store: TieredStore) -> None:
    s = store.advanced_session("c")
    await s.add_items(turns_of(1))
    await s.store_run_usage(usage_result(1, 10))
    await s.store_run_usage(usage_result(2, 5))  # the same turn, resumed
    turn = await s.get_turn_usage(1)
    assert isinstance(turn, dict)
    assert (turn["requests"], turn["input_tokens"], turn["total_tokens"]) == (3, 15, 30)
    assert turn["input_tokens_details"]["cached_tokens"] == 2
    assert turn["output_tokens_details"] == {"reasoning_tokens": 4}
    assert await s.get_session_usage() == {
        "requests": 3,
        "input_tokens": 15,
        "output_tokens": 15,
        "total_tokens": 30,
        "total_turns": 1,
    }


async def test_4_nested_usage_details_are_kept(store: TieredStore, tmp_path: Path) -> None:
    nested = InputTokensDetails(
        cached_tokens=3,
        cache_write_tokens=4,
        cache_write_tokens_details=InputTokensDetailsCacheWriteTokensDetails(
            ttl_12h_tokens=1, ttl_30m_tokens=3
        ),
    )
    ref = oracle(tmp_path, "c")
    try:
        await ref.add_items(turns_of(1))
        await ref.store_run_usage(usage_result(1, 10, nested))
        assert (await ref.get_turn_usage(1))["input_tokens_details"] is None  # lost by the SDK
    finally:
        ref.close()
    s = store.advanced_session("c")
    await s.add_items(turns_of(1))
    await s.store_run_usage(usage_result(1, 10, nested))
    details = (await s.get_turn_usage(1))["input_tokens_details"]  # type: ignore[call-overload]
    assert details["cache_write_tokens_details"] == {"ttl_12h_tokens": 1, "ttl_30m_tokens": 3}
    assert details["cached_tokens"] == 3


async def test_5_the_current_branch_belongs_to_the_session(make_store: StoreFactory) -> None:
    worker_a, worker_b = make_store(hot_items=3), make_store(hot_items=3)
    a = worker_a.advanced_session("chat")
    await a.add_items(turns_of(3))
    await a.create_branch_from_turn(2, "edit")
    await a.add_items([user("edited question 2")])
    b = worker_b.advanced_session("chat")  # the next request lands on another worker
    assert (await b.get_items())[-1] == user("edited question 2")
    await b.add_items([{"role": "assistant", "content": "edited answer"}])
    assert len(await a.get_items()) == 4
    await b.switch_to_branch("main")
    assert await a.get_items() == turns_of(3)  # `a` follows without being told
    await a.add_items([user("question 4")])
    assert await b.get_items(limit=1) == [user("question 4")]
    assert {x["branch_id"]: x["is_current"] for x in await a.list_branches()} == {
        "main": True,
        "edit": False,
    }


async def test_5_a_switch_never_splits_an_add(make_store: StoreFactory) -> None:
    writer, switcher = make_store(hot_items=4), make_store(hot_items=4)
    s = switcher.advanced_session("race")
    await s.add_items(turns_of(1))
    await s.create_branch_from_turn(1, "other")
    w = writer.advanced_session("race")
    batches = [[{"role": "assistant", "content": f"{n}.{i}"} for i in range(3)] for n in range(40)]

    async def adds() -> None:
        for batch in batches:
            await w.add_items(batch)

    async def switches() -> None:
        for n in range(20):
            await s.switch_to_branch("main" if n % 2 else "other")
            await asyncio.sleep(0)

    await asyncio.gather(adds(), switches())
    main = await s.get_items(branch_id="main")
    other = await s.get_items(branch_id="other")
    landed = [
        x["content"] for x in main + other if x.get("role") == "assistant" and "." in x["content"]
    ]
    assert sorted(landed) == sorted(
        x["content"] for b in batches for x in b
    )  # none lost or doubled
    for items in (main, other):
        tagged = [x["content"] for x in items if "." in x.get("content", "")]
        for n in {t.split(".")[0] for t in tagged}:  # every batch whole, in order, on one branch
            assert [t for t in tagged if t.split(".")[0] == n] == [f"{n}.0", f"{n}.1", f"{n}.2"]


async def test_6_a_plain_session_is_main(store: TieredStore) -> None:
    plain = store.session("mixed")
    await plain.add_items(turns_of(2))
    s = store.advanced_session("mixed")
    assert [t["turn"] for t in await s.get_conversation_turns()] == [1, 2]
    await s.add_items([{"type": "function_call", "name": "lookup", "call_id": "1"}])
    assert await s.get_tool_usage() == [("lookup", 1, 2)]
    await s.create_branch_from_turn(2, "b")
    await plain.add_items([user("question 3")])  # the plain session keeps writing main
    assert (await s.get_items(branch_id="main"))[-1] == user("question 3")
    assert await s.get_items() == turns_of(1)
    assert {b["branch_id"]: b["message_count"] for b in await s.list_branches()} == {
        "main": 6,
        "b": 2,
    }


# ---------------------------------------------------------------------- SDK tools around it
async def test_compaction_replaces_only_the_current_branch(store: TieredStore) -> None:
    s = store.advanced_session("c")
    await s.add_items(turns_of(3))
    await s.store_run_usage(usage_result(1, 7))
    await s.create_branch_from_turn(3, "b")
    assert await s._atomic_replace_items([user("summary")]) is True
    assert await s.get_items() == [user("summary")]
    assert await s.get_items(branch_id="main") == turns_of(3)
    assert (await s.get_session_usage() or {})["requests"] == 1


async def test_encrypted_session_around_it(store: TieredStore) -> None:
    from cryptography.fernet import Fernet

    s = store.advanced_session("enc")
    wrapped = EncryptedSession("enc", s, Fernet.generate_key().decode(), ttl=3600)
    await wrapped.add_items(turns_of(2))
    assert await wrapped.get_items() == turns_of(2)
    raw = await s.get_items()
    assert "question" not in str(raw) and all(x.get("__enc__") == 1 for x in raw)


async def test_sqlalchemy_session_reads_main_in_order(backend: Backend) -> None:
    store = backend.store(hot_items=3, write_mode="through")
    s = store.advanced_session("sdk")
    await s.add_items(turns_of(3))
    await s.create_branch_from_turn(2, "b")
    await s.add_items([user("branch only")])
    sdk = SQLAlchemySession(
        "sdk",
        engine=backend.engine,
        sessions_table=backend.sessions_table,
        messages_table=backend.messages_table,
    )
    assert await sdk.get_items() == turns_of(3)


async def test_branches_are_listed_oldest_first(store: TieredStore) -> None:
    s = store.advanced_session("order")
    await s.add_items(turns_of(2))
    for name in ("zz", "aa"):
        await asyncio.sleep(1.05)  # SQLite's clock counts seconds
        await s.switch_to_branch("main")
        await s.create_branch_from_turn(2, name)
    assert [b["branch_id"] for b in await s.list_branches()] == ["main", "zz", "aa"]


async def test_a_branch_is_its_own_session_inside(store: TieredStore) -> None:
    s = store.advanced_session("in")
    await s.add_items(turns_of(2))
    await s.create_branch_from_turn(2, "b")
    sessions = [x["session_id"] for x in await store.list_sessions()]
    assert sessions == ["in"]  # a branch's history is not listed as a session
    with pytest.raises(ValueError, match="U\\+001F"):
        store.session(f"in{BRANCH_SEP}b")


async def test_runner_with_store_run_usage(make_store: StoreFactory, tmp_path: Path) -> None:
    @function_tool
    def get_weather(city: str) -> str:
        """Return the weather of a city."""
        return f"sunny in {city}"

    def script() -> list[Any]:
        return [
            [assistant_message("Hello!", item_id="m1")],
            [function_call("get_weather", {"city": "Paris"}, call_id="call-1")],
            [assistant_message("Sunny.", item_id="m2")],
        ]

    async def drive(session: Any) -> list[Any]:
        agent = Agent(name="a", model=ScriptedModel(script()), tools=[get_weather])
        answers: list[Any] = []
        for text in ("hi", "weather in Paris?"):
            result = await Runner.run(agent, text, session=session)
            await session.store_run_usage(result)
        for query in ("get_conversation_turns", "get_tool_usage", "get_conversation_by_turns"):
            answers.append(await getattr(session, query)())
        answers.append(await session.get_turn_usage())
        answers.append(await session.get_session_usage())
        answers.append(await session.get_items())
        return [
            [{k: v for k, v in a.items() if k != "timestamp"} for a in x]
            if isinstance(x, list) and x and isinstance(x[0], dict)
            else x
            for x in answers
        ]

    ref = oracle(tmp_path, "run")
    try:
        expected = await drive(ref)
    finally:
        ref.close()
    got = await drive(make_store(hot_items=2).advanced_session("run"))
    assert got == expected
    assert got[1] == [("get_weather", 1, 2)]


async def test_usage_of_a_popped_turn_is_dropped(store: TieredStore, tmp_path: Path) -> None:
    async def drive(s: Any) -> list[Any]:
        await s.add_items(turns_of(2))
        await s.store_run_usage(run_result(random.Random(1)))
        await s.pop_item()  # turn 2 keeps its question
        one = await s.get_turn_usage()
        await s.pop_item()  # turn 2 is gone
        return [one, await s.get_turn_usage(), await s.get_session_usage()]

    ref = oracle(tmp_path, "p")
    try:
        expected = await drive(ref)
    finally:
        ref.close()
    assert await drive(store.advanced_session("p")) == expected


async def test_import_sqlite_reads_advanced_sqlite_session_files(
    store: TieredStore, tmp_path: Path
) -> None:
    ref = oracle(tmp_path, "conv")
    try:
        await ref.add_items(turns_of(3))
        await ref.store_run_usage(usage_result(1, 10))
        await ref.create_branch_from_turn(2, "retry")
        await ref.add_items([user("retried"), {"type": "function_call", "name": "f"}])
        await ref.store_run_usage(usage_result(2, 3))
        await ref.create_branch_from_turn(1, "gone")  # nothing before turn 1: a phantom
        await ref.switch_to_branch("retry")
        await ref.create_branch_from_turn(2, "deleted")
        await ref.switch_to_branch("main")
        await ref.delete_branch("deleted")
        queries = ["list_branches", "get_conversation_turns", "get_tool_usage", "get_turn_usage"]

        async def answers(s: Any) -> list[Any]:
            out = [await s.get_session_usage()]
            for branch in ("main", "retry"):
                await s.switch_to_branch(branch)
                out.append(await s.get_items())
                for q in queries:
                    got = await getattr(s, q)()
                    out.append(
                        sorted(timeless(got), key=str) if q == "list_branches" else timeless(got)
                    )
            return out

        expected = await answers(ref)
        report = await store.import_sdk_sqlite(tmp_path / "oracle.db")
    finally:
        ref.close()
    assert report["sessions_imported"] == 1
    assert report["items_imported"] == 6 + 4
    s = store.advanced_session("conv")
    assert await answers(s) == expected
    with pytest.raises(ValueError, match="already been used"):
        await s.create_branch_from_turn(1, "deleted")  # its id stays used
    again = await store.import_sdk_sqlite(tmp_path / "oracle.db")
    assert again["sessions_unchanged"] == 1  # idempotent
    assert (await s.get_session_usage() or {})["requests"] == 1 + 2  # not imported twice


async def test_jsonl_backups_carry_branches_and_usage(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    source = make_store(hot_items=3)
    s = source.advanced_session("conv")
    await s.add_items(turns_of(3))
    await s.store_run_usage(usage_result(1, 10))
    await s.create_branch_from_turn(2, "retry")
    await s.add_items([user("retried")])
    await s.store_run_usage(usage_result(2, 3))
    await s.create_branch_from_turn(1, "dropped")
    await s.switch_to_branch("retry")
    await s.delete_branch("dropped")

    async def answers(x: Any) -> list[Any]:
        listed = sorted(timeless(await x.list_branches()), key=lambda b: b["branch_id"])
        out: list[Any] = [await x.get_session_usage(), listed]
        for branch in ("main", "retry"):
            out += [await x.get_items(branch_id=branch), await x.get_turn_usage(branch_id=branch)]
        return out

    expected = await answers(s)
    backup = tmp_path / "backup.jsonl"
    assert await source.export_jsonl(backup) == 1
    target = make_store(hot_items=3, key_prefix=f"{source.config.key_prefix}r")
    # (same SQL tables: delete the source's copy first, so the import has an empty slot)
    for branch in ("retry", "main"):
        await source.writes.clear_session(s._k(branch))
    await source.flush()
    await source.delete_session("conv")
    adv = await s._sql()
    await adv.forget("conv")
    report = await target.import_jsonl(backup)
    assert (report["sessions_imported"], report["items_imported"]) == (1, 6 + 3)
    restored = target.advanced_session("conv")
    assert await answers(restored) == expected
    assert [b["branch_id"] for b in await restored.list_branches() if b["is_current"]] == ["retry"]


async def test_delete_session_deletes_its_branches_and_usage(store: TieredStore) -> None:
    s = store.advanced_session("gone")
    await s.add_items(turns_of(2))
    await s.store_run_usage(usage_result(1, 1))
    await s.create_branch_from_turn(2, "b")
    await s.add_items([user("on b")])
    assert await store.delete_session("gone") is True
    fresh = store.advanced_session("gone")
    assert await fresh.get_items() == [] and await fresh.list_branches() == []
    assert await fresh.get_items(branch_id="b") == []
    assert await fresh.get_session_usage() is None
    await fresh.add_items([user("new"), user("second")])
    assert await fresh.create_branch_from_turn(2, "b") == "b"  # its id is free again


async def test_cleanup_keeps_a_session_whose_branch_is_active(store: TieredStore) -> None:
    from datetime import timedelta

    s = store.advanced_session("busy")
    await s.add_items(turns_of(2))
    await s.create_branch_from_turn(2, "b")
    await asyncio.sleep(0.3)
    await s.add_items([user("still talking, on b")])
    await store.flush()
    assert await store.cleanup(timedelta(seconds=0.2)) == 0  # main is idle, its branch is not
    assert len(await s.get_items(branch_id="main")) == 4
    await asyncio.sleep(0.3)
    assert await store.cleanup(timedelta(seconds=0.2)) == 1
    fresh = store.advanced_session("busy")
    assert await fresh.get_items(branch_id="b") == [] and await fresh.list_branches() == []
