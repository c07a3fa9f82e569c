"""The Lua scripts: their files, headers, named return codes, Python twins, and real runs.

The static checks parse ``tiered_session/hot/lua/*.lua`` (comments stripped,
string literals set aside); the runs load every script into a real Lua engine
(fakeredis, and the real Redis when it is up) and drive each renumbered status.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import AsyncIterator, Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from redis.asyncio import Redis

from tiered_session.hot import scripts
from tiered_session.hot.scripts import (
    GEN_TTL_MS,
    DeadField,
    EntryField,
    Field,
    Marker,
    Mode,
    OpKind,
    Script,
    Status,
)

from .conftest import REDIS_URL, require_servers, unique_name

ROOT = Path(__file__).resolve().parent.parent
LUA = files("tiered_session.hot") / "lua"
NAMES = sorted(s.name for s in scripts.ALL)
#: scripts made of several files (a fragment whose name opens with "_", then a script)
COMPOSED = {"badd": ("_branch_guard", "add")}

#: the statuses each script returns (the first element of a table reply), as its
#: callers must handle them; a change here is a change of the scripts' contract
EXPECTED: dict[str, set[Status]] = {
    "add": {Status.COLD, Status.BACKLOG_FULL, Status.BEHIND_SQL},
    "read": {Status.COLD},
    "touch": {Status.OK},
    "pop": {Status.OK, Status.COLD, Status.NO, Status.NEEDS_REFILL, Status.WAIT_EARLIER},
    "clear": {Status.OK, Status.COLD, Status.WAIT_EARLIER},
    "settle": {Status.OK, Status.NO, Status.SETTLE_LATER},
    "warm": {Status.OK, Status.NO, Status.STALE_SNAPSHOT, Status.LIST_LOST, Status.META_LOST},
    "refill": {Status.OK, Status.NO},
    "ack": {Status.OK, Status.LEASE_LOST},
    "dead": {Status.OK},
    "evict": {Status.OK, Status.NO},
    "mark_behind": {Status.OK},
    "drop": {Status.OK, Status.NO},
    "replace": {Status.OK, Status.COLD, Status.NO},
    "recover": {Status.OK, Status.NO},
    "lease": {Status.OK, Status.NO},
    "release": {Status.OK, Status.NO},
    "heartbeat": set(),  # a count
    "fread": {Status.LEASE_LOST},  # else the entries
    "replay": {Status.OK, Status.NO},
    "badd": {
        Status.COLD,
        Status.BACKLOG_FULL,
        Status.BEHIND_SQL,
        Status.NO_POINTER,
        Status.WRONG_BRANCH,
    },
    "bread": {Status.NO_POINTER, Status.WRONG_BRANCH},  # else the entries
    "setptr": set(),  # the pointer held
}

#: Lua name prefix -> the Python class holding the twin (the rest of the name)
PREFIXED: dict[str, type] = {"E_": EntryField, "D_": DeadField, "OP_": OpKind, "MODE_": Mode}


# ---------------------------------------------------------------------- parsing
def lua_text(name: str) -> str:
    parts = COMPOSED.get(name, (name,))
    return "".join((LUA / f"{p}.lua").read_text(encoding="utf-8") for p in parts)


def strip(src: str, where: str) -> tuple[str, list[str]]:
    """The code without comments, each string literal emptied to ``''``; and the literals."""
    assert "[[" not in src and "[=" not in src, f"{where}: long brackets are not parsed here"
    out: list[str] = []
    strings: list[str] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c in "'\"":
            j = i + 1
            while src[j] != c:
                assert src[j] != "\n", f"{where}: unterminated string"
                j += 2 if src[j] == "\\" else 1
            strings.append(src[i + 1 : j])
            out.append("''")
            i = j + 1
        elif src.startswith("--", i):
            while i < n and src[i] != "\n":
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out), strings


def returns(code: str) -> Iterator[str]:
    """The expression of every ``return`` statement (``''`` for a bare return)."""
    for m in re.finditer(r"\breturn\b", code):
        i = j = m.end()
        depth = 0
        while j < len(code):
            ch = code[j]
            if ch in "({[":
                depth += 1
            elif ch in ")}]":
                depth -= 1
            elif depth == 0 and (
                ch == "\n"
                or (
                    re.match(r"(end|else|elseif|until)\b", code[j:])
                    and not (code[j - 1].isalnum() or code[j - 1] == "_")
                )
            ):
                break
            j += 1
        yield code[i:j].strip()


def first_element(expr: str) -> str:
    """A table constructor's first element, or the expression itself."""
    if not expr.startswith("{"):
        return expr
    depth = 0
    for j, ch in enumerate(expr):
        if ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
            if depth == 0:
                return expr[1:j].strip()
        elif ch == "," and depth == 1:
            return expr[1:j].strip()
    raise AssertionError(f"unbalanced return {expr!r}")


def statuses(name: str) -> set[Status]:
    """The statuses a script returns; fails on a bare or unknown code."""
    code, _ = strip(lua_text(name), f"{name}.lua")
    found: set[Status] = set()
    for expr in returns(code):
        head = first_element(expr)
        bare = re.sub(r"\[[^\[\]]*\]", "", expr)  # indexes (m[1], ARGV[6]) are no codes
        literal = re.search(r"(?<![\w.])\d+", bare)
        assert literal is None, f"{name}.lua: bare number in `return {expr}`: name the status"
        if re.fullmatch(r"[A-Z][A-Z0-9_]*", head):
            assert head in Status.__members__, f"{name}.lua: `return {expr}`: no Status.{head}"
            found.add(Status[head])
    return found


def prelude_constants() -> dict[str, str]:
    """Every upper-case top-level local of the prelude -> the Lua expression it is set to."""
    consts: dict[str, str] = {}
    for line in lua_text("_prelude").splitlines():
        m = re.fullmatch(r"local\s+([A-Z][\w\s,]*?)\s*=\s*(.+?)\s*(?:--.*)?", line)
        if m is None:
            continue
        names = [x.strip() for x in m.group(1).split(",")]
        values = [x.strip() for x in re.findall(r"'[^']*'|[^,]+", m.group(2)) if x.strip()]
        assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", x) for x in names), f"_prelude.lua: {line}"
        assert len(names) == len(values), f"_prelude.lua: {line}"
        consts.update(zip(names, values, strict=True))
    assert consts, "_prelude.lua: no constants found"
    return consts


def literal(expr: str) -> bytes | int:
    if re.fullmatch(r"-?\d+", expr):
        return int(expr)
    m = re.fullmatch(r"'([^'\\]*)'", expr)
    assert m is not None, f"_prelude.lua: constant {expr!r} is not a plain literal"
    return m.group(1).encode()


def python_twins() -> dict[str, bytes | int]:
    """The Python twin of every prelude constant, by its Lua name."""
    twins: dict[str, bytes | int] = {m.name: int(m) for m in Status}
    for cls in (Field, Marker):
        twins.update({k: v for k, v in vars(cls).items() if k.isupper()})
    for prefix, cls in PREFIXED.items():
        twins.update({prefix + k: v for k, v in vars(cls).items() if k.isupper()})
    twins["GEN_TTL_MS"] = GEN_TTL_MS
    return twins


# ---------------------------------------------------------------------- files, package data
def test_every_script_loads_from_the_package_with_the_prelude() -> None:
    on_disk = sorted(p.name[:-4] for p in LUA.iterdir() if p.name.endswith(".lua"))
    fragments = {p for parts in COMPOSED.values() for p in parts if p.startswith("_")}
    standalone = [n for n in NAMES if n not in COMPOSED]
    assert on_disk == sorted([*standalone, "_prelude", *fragments])
    prelude = lua_text("_prelude")
    for s in scripts.ALL:
        assert s.source == prelude + lua_text(s.name), s.name
        assert s.sha == hashlib.sha1(s.source.encode(), usedforsecurity=False).hexdigest()
        assert getattr(scripts, s.name.upper()) is s, f"scripts.{s.name.upper()}"
    assert len({s.sha for s in scripts.ALL}) == len(scripts.ALL)


def test_the_lua_files_are_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = config["tool"]["setuptools"]["package-data"]["tiered_session"]
    assert "hot/lua/*.lua" in data


# ---------------------------------------------------------------------- headers, codes
@pytest.mark.parametrize("name", NAMES)
def test_each_file_opens_with_keys_argv_and_returns(name: str) -> None:
    lines = lua_text(name).splitlines()
    header = "\n".join(
        ln for ln in lines[: next(i for i, ln in enumerate(lines) if not ln.startswith("--"))]
    )
    for word in ("KEYS", "ARGV", "Returns"):
        assert word in header, f"{name}.lua: the header does not mention {word}"
    said = set(re.findall(r"[A-Z][A-Z_]+", header.split("Returns", 1)[1]))
    missing = {s.name for s in statuses(name)} - said
    assert not missing, f"{name}.lua: its header's Returns does not name {sorted(missing)}"


@pytest.mark.parametrize("name", NAMES)
def test_each_script_returns_the_statuses_its_callers_handle(name: str) -> None:
    assert statuses(name) == EXPECTED[name], f"{name}.lua"


def test_every_status_is_returned_by_some_script() -> None:
    used = set().union(*(statuses(n) for n in NAMES))
    assert used == set(Status), f"never returned: {sorted(set(Status) - used)}"
    assert sorted(EXPECTED) == NAMES


def test_the_prelude_helpers_return_no_status() -> None:
    code, _ = strip(lua_text("_prelude"), "_prelude.lua")
    for expr in returns(code):
        head = first_element(expr)
        assert head not in Status.__members__, f"_prelude.lua: `return {expr}`"


# ---------------------------------------------------------------------- named constants
def test_prelude_constants_equal_their_python_twins() -> None:
    lua = prelude_constants()
    twins = python_twins()
    assert sorted(lua) == sorted(twins), (
        f"Lua only: {sorted(set(lua) - set(twins))}; Python only: {sorted(set(twins) - set(lua))}"
    )
    for name, expr in lua.items():
        assert literal(expr) == twins[name], f"{name}: Lua {expr}, Python {twins[name]!r}"


def test_status_codes_and_stored_names_are_unique() -> None:
    assert len({int(s) for s in Status}) == len(Status)
    for cls in (Field, EntryField, DeadField, OpKind):
        values = [v for k, v in vars(cls).items() if k.isupper()]
        assert len(values) == len(set(values)), cls.__name__


@pytest.mark.parametrize("name", NAMES)
def test_scripts_spell_stored_names_only_through_the_prelude(name: str) -> None:
    """No string literal in a script equals a field, kind or marker the prelude names."""
    named = {v.decode() for v in python_twins().values() if isinstance(v, bytes)}
    _, strings = strip(lua_text(name), f"{name}.lua")
    spelled = sorted(named.intersection(strings))
    assert not spelled, f"{name}.lua spells {spelled}: use the prelude's names"


# ---------------------------------------------------------------------- on a Lua engine
class Hot:
    """A client and one session's (and its shard's) keys under a unique prefix."""

    def __init__(self, r: Redis, prefix: str) -> None:
        self.r = r
        tag = f"{prefix}:{{s0}}"
        self.meta, self.items = f"{tag}:m:x", f"{tag}:l:x"
        self.reserved, self.gen = f"{tag}:h:x", f"{tag}:g:x"
        self.outbox, self.inflight, self.index = f"{tag}:outbox", f"{tag}:inflight", f"{tag}:idx"
        self.dead, self.lease, self.flushers = f"{tag}:dead", f"{tag}:lease", f"{tag}:flushers"
        self.write = [self.meta, self.items, self.reserved, self.outbox, self.inflight, self.index]
        self.evict_keys = [self.meta, self.items, self.reserved, self.gen]
        self.settle_keys = [self.meta, self.items, self.reserved, self.inflight, self.outbox]

    async def run(self, script: Script, keys: list[str], *args: Any) -> Any:
        return await self.r.evalsha(script.sha, len(keys), *keys, *args)

    async def warm(self, n: int, floor: int, full: int, gen: str, *entries: str) -> Any:
        return await self.run(scripts.WARM, self.evict_keys, n, floor, full, 0, gen, *entries)

    async def add(self, mode: str, *items: str, max_backlog: int = 0) -> Any:
        return await self.run(scripts.ADD, self.write, mode, 100, 0, max_backlog, "x", 7, *items)


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.servers)])
async def hot(request: pytest.FixtureRequest) -> AsyncIterator[Hot]:
    if request.param == "real":
        require_servers()
        r: Redis = Redis.from_url(REDIS_URL, decode_responses=False)
    else:
        r = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=False)
    prefix = unique_name("lua")
    for s in scripts.ALL:  # a syntax error fails here
        assert await r.script_load(s.source) == s.sha, s.name
    try:
        yield Hot(r, prefix)
    finally:
        keys = [k async for k in r.scan_iter(match=f"{prefix}:*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()


async def test_prelude_constants_hold_their_values_on_the_engine(hot: Hot) -> None:
    twins = python_twins()
    names = sorted(prelude_constants())
    got = await hot.r.eval(lua_text("_prelude") + f"return {{{', '.join(names)}}}", 0)
    assert dict(zip(names, got, strict=True)) == {n: twins[n] for n in names}


async def test_cold_then_warm_then_add(hot: Hot) -> None:
    assert await hot.add("b", "j1") == [Status.COLD]
    assert await hot.run(scripts.READ, [hot.meta, hot.items], -1) == [Status.COLD]
    assert await hot.run(scripts.POP, hot.write, "b", "x", 7, 0) == [Status.COLD]
    assert await hot.run(scripts.CLEAR, hot.write, "b", "x", 7, 0) == [Status.COLD]
    assert await hot.run(scripts.REPLACE, hot.write, "x", 7, 100, -1) == [Status.COLD]
    assert await hot.warm(0, 1, 1, "0") == Status.OK
    assert await hot.warm(0, 1, 1, "0") == Status.NO  # already warmed
    assert await hot.add("b", "j1") == [1]  # a seq, not a status
    assert await hot.add("t", "j2") == [2, 0]
    assert await hot.run(scripts.READ, [hot.meta, hot.items], -1) == [1, 1, [b"1|j1", b"~2|j2"]]
    assert await hot.run(scripts.TOUCH, [hot.meta, hot.items], 1000) == Status.OK


async def test_settle_waits_for_an_earlier_add(hot: Hot) -> None:
    assert await hot.warm(0, 1, 1, "0") == Status.OK
    assert await hot.add("t", "a") == [1, 0]
    assert await hot.add("t", "b") == [2, 1]
    later = ["a|2|1|x", 3, 100, "a", 2, 1, "x"]
    assert await hot.run(scripts.SETTLE, hot.settle_keys, *later) == Status.SETTLE_LATER
    earlier = ["a|1|1|x", 1, 100, "a", 1, 1, "x"]
    assert await hot.run(scripts.SETTLE, hot.settle_keys, *earlier) == Status.OK
    assert await hot.run(scripts.SETTLE, hot.settle_keys, *earlier) == Status.NO  # settled
    assert await hot.run(scripts.SETTLE, hot.settle_keys, *later) == Status.OK
    recover_keys = [hot.meta, hot.items, hot.reserved, hot.outbox, hot.inflight]
    assert await hot.run(scripts.RECOVER, recover_keys, "a|1|1|x", "x", 1, 100) == Status.NO
    assert await hot.r.lrange(hot.items, 0, -1) == [b"#1|1", b"1|a", b"2|b"]


async def test_warm_refuses_a_stale_snapshot_and_a_lost_list(hot: Hot) -> None:
    assert await hot.run(scripts.EVICT, hot.evict_keys) == Status.OK  # not there: nothing to do
    assert await hot.warm(0, 1, 1, "0") == Status.OK
    assert await hot.run(scripts.EVICT, hot.evict_keys) == Status.OK  # evicted: gen 0 -> 1
    assert await hot.warm(0, 1, 1, "0") == Status.STALE_SNAPSHOT  # read before the eviction
    assert await hot.warm(0, 1, 1, "1") == Status.OK
    assert await hot.add("b", "j") == [1]
    assert await hot.run(scripts.EVICT, hot.evict_keys) == Status.NO  # a write is pending
    await hot.r.delete(hot.items)
    assert await hot.warm(0, 1, 1, "1") == Status.LIST_LOST


async def test_pop_and_clear_codes(hot: Hot) -> None:
    assert await hot.warm(0, 1, 1, "0") == Status.OK
    assert await hot.run(scripts.POP, hot.write, "t", "x", 7, 0) == [Status.NO]  # empty
    await hot.r.delete(hot.meta, hot.items)
    assert await hot.warm(4, 5, 0, "0") == Status.OK  # seqs 1..4 live in SQL only
    assert await hot.run(scripts.POP, hot.write, "b", "x", 7, 0) == [Status.NEEDS_REFILL, 0, 0, 5]
    refill = [hot.meta, hot.items]
    assert await hot.run(scripts.REFILL, refill, 9, 4, 0, "4|d") == Status.NO  # floor moved
    assert await hot.run(scripts.REFILL, refill, 5, 4, 0, "4|d") == Status.OK
    assert await hot.add("t", "e") == [5, 0]  # pending
    # a pop or clear that began after seq 5 was reserved waits for it ...
    assert await hot.run(scripts.POP, hot.write, "t", "x", 7, 0) == [Status.WAIT_EARLIER, 5]
    assert await hot.run(scripts.CLEAR, hot.write, "t", "x", 7, 0) == [Status.WAIT_EARLIER, 5]
    # ... one that began before passes it over
    assert await hot.run(scripts.POP, hot.write, "t", "x", 7, 4) == [Status.OK, b"4|d"]
    assert await hot.run(scripts.CLEAR, hot.write, "t", "x", 7, 4) == [Status.OK, 5, b"5"]


async def test_add_refused_when_the_backlog_is_full_or_the_session_behind_sql(hot: Hot) -> None:
    assert await hot.warm(0, 1, 1, "0") == Status.OK
    assert await hot.add("b", "a", max_backlog=1) == [1]
    assert await hot.add("b", "b", max_backlog=1) == [Status.BACKLOG_FULL]
    assert await hot.run(scripts.MARK_BEHIND, [hot.meta]) == Status.OK
    assert await hot.add("b", "c") == [Status.BEHIND_SQL]


async def test_the_lease_fences_reads_and_acks(hot: Hot) -> None:
    await hot.r.xgroup_create(hot.outbox, "g", id="0", mkstream=True)
    entry_id = await hot.r.xadd(hot.outbox, {EntryField.OP: OpKind.POP})
    assert await hot.run(scripts.LEASE, [hot.lease], "me", 10_000) == Status.OK
    assert await hot.run(scripts.LEASE, [hot.lease], "other", 10_000) == Status.NO
    fread = [hot.lease, hot.outbox]
    assert await hot.run(scripts.FREAD, fread, "other", "g", "c", 10, ">", 0) == Status.LEASE_LOST
    got = await hot.run(scripts.FREAD, fread, "me", "g", "c", 10, ">", 1)
    assert got == [[entry_id, [EntryField.OP, OpKind.POP]]]
    ack = [hot.outbox, hot.lease]
    assert await hot.run(scripts.ACK, ack, "g", 100, 0, "other", 0) == Status.LEASE_LOST
    assert await hot.run(scripts.ACK, ack, "g", 100, 0, "me", 0) == Status.OK
    assert await hot.run(scripts.RELEASE, [hot.lease], "other") == Status.NO
    assert await hot.run(scripts.RELEASE, [hot.lease], "me") == Status.OK
    assert await hot.run(scripts.HEARTBEAT, [hot.flushers], "me", 10_000, 0) == 1  # a count


async def test_dead_letters_replay_and_drop(hot: Hot) -> None:
    assert await hot.warm(0, 1, 1, "0") == Status.OK
    assert await hot.add("b", "a") == [1]
    [(entry_id, fields)] = await hot.r.xrange(hot.outbox)
    flat = [x for kv in fields.items() for x in kv]
    dead = [hot.outbox, hot.dead, hot.meta]
    assert await hot.run(scripts.DEAD, dead, "g", entry_id, "bad", 0, *flat) == Status.OK
    [(dead_id, _)] = await hot.r.xrange(hot.dead)
    replay = [hot.dead, hot.outbox, hot.meta, hot.items]
    assert await hot.run(scripts.REPLAY, replay, dead_id) == Status.OK
    assert await hot.run(scripts.REPLAY, replay, dead_id) == Status.NO  # gone
    drop = [hot.meta, hot.items, hot.reserved, hot.index, hot.gen]
    assert await hot.run(scripts.DROP, drop, "x", 10**12) == [Status.NO]  # a write is pending
    await hot.r.hset(hot.meta, Field.BEHIND_OPS, 0)
    assert await hot.run(scripts.DROP, drop, "x", 0) == [Status.NO]  # written after 0
    assert await hot.run(scripts.DROP, drop, "x", 10**12) == [Status.OK, 1]
    assert await hot.run(scripts.DROP, drop, "x", 10**12) == [Status.OK, -1]  # not in Redis
