"""Shared by the advanced-session tests: items, run results, and the oracle differential.

The oracle is the Agents SDK's ``AdvancedSQLiteSession``; a scenario is driven
step by step on it and on an ``AdvancedTieredSession``, and every answer (or
error) must match, times aside.
"""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agents.extensions.memory.advanced_sqlite_session import AdvancedSQLiteSession
from agents.usage import InputTokensDetails, OutputTokensDetails, Usage

from tiered_session import TieredStore

TERMS = ["weather", "Paris", "tool", "again", "ZZZ", "é", "50%", "a_b"]


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def random_item(rng: random.Random, n: int) -> dict[str, Any]:
    """One item of a kind the structure rules tell apart."""
    kind = rng.choice(
        ["user", "user", "user_parts", "assistant", "call", "call_ns", "output", "mcp",
         "mcp_label", "web", "shell", "search_call", "search_out", "reasoning", "custom"]
    )  # fmt: skip
    word = rng.choice(TERMS)
    if kind == "user":
        return user(f"msg {n} about {word}" if rng.random() < 0.8 else f"{word.upper()} {n}")
    if kind == "user_parts":
        parts = [{"type": "input_text", "text": f"part {n} {word}"}, {"type": "input_image"}]
        return {"role": "user", "content": parts}
    if kind == "assistant":
        return {"role": "assistant", "content": f"reply {n} {word}"}
    if kind == "call":
        name = rng.choice(["get_weather", "lookup", "get_weather"])
        return {"type": "function_call", "name": name, "call_id": f"c{n}", "arguments": "{}"}
    if kind == "call_ns":
        ns = rng.choice(["tools", "lookup"])
        return {"type": "function_call", "name": "lookup", "namespace": ns, "call_id": f"c{n}"}
    if kind == "output":
        return {"type": "function_call_output", "call_id": f"c{n}", "output": f"out {word}"}
    if kind == "mcp":
        return {"type": "mcp_call", "server_label": "srv", "name": "fetch", "id": f"m{n}"}
    if kind == "mcp_label":
        return {"type": "mcp_approval_request", "server_label": "srv2", "id": f"m{n}"}
    if kind == "web":
        return {"type": "web_search_call", "id": f"w{n}", "status": "completed"}
    if kind == "shell":
        return {"type": "shell_call", "id": f"s{n}"}
    if kind == "search_call":
        return {"type": "tool_search_call", "id": f"t{n}"}
    if kind == "search_out":
        return {"type": "tool_search_output", "id": f"t{n}"}
    if kind == "reasoning":
        return {"type": "reasoning", "id": f"r{n}", "summary": []}
    return {"type": "custom_tool_call", "name": "calc", "call_id": f"k{n}", "input": "1+1"}


def run_result(rng: random.Random) -> Any:
    """What ``store_run_usage`` reads from a ``RunResult``."""
    usage = Usage(
        requests=rng.randint(1, 3),
        input_tokens=rng.randint(1, 500),
        output_tokens=rng.randint(1, 500),
        total_tokens=rng.randint(1, 1000),
        input_tokens_details=InputTokensDetails(
            cached_tokens=rng.randint(0, 9), cache_write_tokens=rng.randint(0, 3)
        ),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=rng.randint(0, 9)),
    )
    return SimpleNamespace(context_wrapper=SimpleNamespace(usage=usage))


def oracle(tmp_path: Path, session_id: str) -> AdvancedSQLiteSession:
    return AdvancedSQLiteSession(
        session_id=session_id, db_path=str(tmp_path / "oracle.db"), create_tables=True
    )


TIME_KEYS = ("timestamp", "created_at")


def timeless(answer: Any) -> Any:
    """An answer with its times removed (they differ between two runs)."""
    if isinstance(answer, list):
        return [timeless(a) for a in answer]
    if isinstance(answer, dict):
        return {k: timeless(v) for k, v in answer.items() if k not in TIME_KEYS}
    return answer


async def outcome(coro: Any) -> tuple[str, Any]:
    try:
        return "ok", timeless(await coro)
    except ValueError as e:
        return "ValueError", str(e)


class Differential:
    """Drives the oracle and a session with the same random steps, comparing answers."""

    def __init__(self, ref: Any, mine: Any, store: TieredStore, rng: random.Random) -> None:
        self.ref, self.mine, self.store, self.rng = ref, mine, store, rng
        self.n = 0
        self.log: list[str] = []

    async def same(self, what: str, call: Any) -> Any:
        theirs = await outcome(call(self.ref))
        ours = await outcome(call(self.mine))
        self.log.append(what)
        assert ours == theirs, f"{what} after {self.log[-8:-1]}:\n ours   {ours}\n theirs {theirs}"
        return theirs[1]

    async def branches(self) -> list[dict[str, Any]]:
        """``list_branches`` of both, compared in branch order.

        Branches created within the same second of SQLite's clock are listed
        in either order (``test_branches_are_listed_oldest_first`` checks it).
        """

        async def listed(s: Any) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = await s.list_branches()
            return sorted(found, key=lambda b: b["branch_id"])

        answer: list[dict[str, Any]] = await self.same("list_branches", listed)
        return answer

    async def step(self) -> None:
        rng = self.rng
        op = rng.choices(
            ["add", "get", "pop", "branch", "content", "switch", "delete", "usage", "query",
             "clear", "evict"],
            weights=[30, 10, 6, 6, 3, 6, 4, 6, 12, 1, 3],
        )[0]  # fmt: skip
        if op == "add":
            items = []
            for _ in range(rng.choice([1, 1, 2, 3])):
                self.n += 1
                items.append(random_item(rng, self.n))
            await self.same(f"add {len(items)}", lambda s: s.add_items(items))
        elif op == "get":
            limit = rng.choice([None, 0, 1, 2, 5, 50])
            branch = rng.choice(
                [None, None, "main", *[b["branch_id"] for b in await self.branches()]]
            )
            await self.same(f"get {limit} {branch}", lambda s: s.get_items(limit, branch))
        elif op == "pop":
            await self._pop()
        elif op in ("branch", "content"):
            await self._branch(op)
        elif op == "switch":
            names = [b["branch_id"] for b in await self.branches()]
            target = rng.choice([*names, "nope"])
            if target == "main" and "main" not in names:
                return  # a deliberate difference: main is always switchable here
            await self.same(f"switch {target}", lambda s: s.switch_to_branch(target))
        elif op == "delete":
            await self._delete()
        elif op == "usage":
            await self._usage()
        elif op == "query":
            await self._query()
        elif op == "clear":
            await self.same("clear", lambda s: s.clear_session())
        else:
            await self._evict()

    async def _pop(self) -> None:
        listed = await self.branches()
        current = [b for b in listed if b["is_current"]]
        # A deliberate difference: a branch emptied by pops stays listed here.
        if current and current[0]["branch_id"] != "main" and current[0]["message_count"] <= 1:
            return
        await self.same("pop", lambda s: s.pop_item())

    async def _branch(self, op: str) -> None:
        rng = self.rng
        turns = await self.same("turns", lambda s: s.get_conversation_turns())
        name = rng.choice([None, None, *[f"b{self.n}"] * 5, "main", "", "  ", "dup"])
        if op == "content":
            term = rng.choice(TERMS)
            matches = await self.same("find", lambda s: s.find_turns_by_content(term))
            if matches and matches[0]["turn"] == 1 and await self._first_is_user():
                return  # a deliberate difference: a branch with nothing before it is real here
            await self._create(lambda s: s.create_branch_from_content(term, name), name)
            return
        valid = [t["turn"] for t in turns] * 4
        turn = rng.choice([*valid, 0, 99]) if turns else rng.choice([1, 0])
        if turn == 1 and await self._first_is_user():
            return  # the same deliberate difference
        await self._create(lambda s: s.create_branch_from_turn(turn, name), name)

    async def _create(self, call: Any, name: str | None) -> None:
        await self.same(f"branch {name}", call)

    async def _first_is_user(self) -> bool:
        items = await self.ref.get_items()
        return bool(items) and items[0].get("role") == "user"

    async def _delete(self) -> None:
        rng = self.rng
        listed = await self.branches()
        names = [b["branch_id"] for b in listed]
        others = [n for n in names if n != "main"] * 4
        target = rng.choice([*others, "main", "nope", ""])
        force = rng.random() < 0.5
        current = [b["branch_id"] for b in listed if b["is_current"]]
        if force and current == [target] and "main" not in names:
            return  # a deliberate difference: force works with main empty here
        await self.same(f"delete {target} {force}", lambda s: s.delete_branch(target, force))

    async def _usage(self) -> None:
        # One usage per turn: storing twice adds up here (a deliberate difference).
        turns = await self.same("turns", lambda s: s.get_conversation_turns())
        last = turns[-1]["turn"] if turns else 0
        if await self.ref.get_turn_usage(last) != {}:
            return
        result = run_result(self.rng)
        await self.same("store_run_usage", lambda s: s.store_run_usage(result))

    async def _query(self) -> None:
        rng = self.rng
        names = [b["branch_id"] for b in await self.branches()]
        branch = rng.choice([None, None, *names, "nope"])
        term = rng.choice(TERMS)
        turn = rng.choice([None, 0, 1, 2, 3])
        which = rng.choice(["turns", "find", "by_turns", "tools", "session_usage", "turn_usage"])
        calls = {
            "turns": lambda s: s.get_conversation_turns(branch),
            "find": lambda s: s.find_turns_by_content(term, branch),
            "by_turns": lambda s: s.get_conversation_by_turns(branch),
            "tools": lambda s: s.get_tool_usage(branch),
            "session_usage": lambda s: s.get_session_usage(branch),
            "turn_usage": lambda s: s.get_turn_usage(turn, branch),
        }
        await self.same(f"{which} {branch}", calls[which])

    async def _evict(self) -> None:
        """Drop every branch of the session from Redis (write-behind: once flushed)."""
        await self.store.flush(timeout=30)
        sid = self.mine.session_id
        for branch in ["main", *[b["branch_id"] for b in await self.branches()]]:
            k = self.mine._k(branch)
            await self.store.hot.evict(k)
        assert sid
