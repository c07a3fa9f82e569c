"""AdvancedTieredSession: branches, per-turn usage and structured queries, for every worker.

The same methods, arguments and answers as the Agents SDK's
``AdvancedSQLiteSession``, on the two tiers. Each branch's items are kept as a
session of their own (the hot window in Redis, the history in SQL);
``main`` is the session itself, so ``store.session(id)`` reads and writes it.
The current branch is stored with the session (SQL, copied in Redis), and
every read and add of the current branch checks it in the same Redis script:
a worker that did not switch follows a switch made elsewhere.

Example:
    >>> import asyncio
    >>> from tiered_session import AdvancedTieredSession
    >>> async def main():
    ...     async with AdvancedTieredSession("conv-1") as s:
    ...         await s.add_items([{"role": "user", "content": "hi"}])
    ...         await s.add_items([{"role": "assistant", "content": "hello"}])
    ...         await s.add_items([{"role": "user", "content": "again"}])
    ...         branch = await s.create_branch_from_turn(2, "retry")
    ...         return branch, await s.get_items()
    >>> asyncio.run(main())
    ('retry', [{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'hello'}])
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._config import MAX_SESSION_ID_BYTES
from ._errors import BranchError
from .cold.advanced import AdvancedSql, AdvancedTables
from .hot.keys import BRANCH_SEP, SessionKeys
from .ops import structure as st
from .ops.pointer import BranchMoved, parse_pointer
from .session import TieredSession

if TYPE_CHECKING:
    from .store import TieredStore

__all__ = ["AdvancedTieredSession"]

log = logging.getLogger("tiered_session")

MAIN = "main"
#: the tables of each store, and whether they were checked or created
_TABLES: weakref.WeakKeyDictionary[TieredStore, tuple[AdvancedTables, list[bool]]] = (
    weakref.WeakKeyDictionary()
)


class AdvancedTieredSession(TieredSession):
    """A session with branches, usage per turn and structured queries.

    ``store.advanced_session(id)`` shares a store; ``AdvancedTieredSession(id)``
    alone gives a private embedded store; ``AdvancedTieredSession.from_url``
    owns a private store on real servers. Errors the SDK raises as
    ``ValueError`` are :class:`~tiered_session.BranchError` (a ``ValueError``).
    """

    def __init__(self, session_id: str, **kwargs: Any) -> None:
        super().__init__(session_id, **kwargs)
        #: the branch this object believes current (checked by every read and add)
        self._branch = MAIN
        #: each branch's keys, and its name as the scripts take it
        self._branch_keys: dict[str, tuple[SessionKeys, bytes]] = {MAIN: (self._keys, b"main")}

    # ------------------------------------------------------------------ plumbing
    def _at(self, branch: str) -> tuple[SessionKeys, bytes]:
        found = self._branch_keys.get(branch)
        if found is None:
            internal = f"{self.session_id}{BRANCH_SEP}{branch}"
            found = self.store.keys.session(internal), branch.encode()
            self._branch_keys[branch] = found
        return found

    def _k(self, branch: str) -> SessionKeys:
        return self._at(branch)[0]

    async def _sql(self) -> AdvancedSql:
        entry = _TABLES.get(self.store)
        if entry is None:
            entry = _TABLES[self.store] = (AdvancedTables(self.store.sql.messages.name), [False])
        tables, ready = entry
        adv = AdvancedSql(self.store.sql, tables)
        if not ready[0]:
            await self.store.start()
            await adv.ensure(create=self.store.runtimes.shared.create_tables)
            ready[0] = True
        return adv

    async def _follow(self, pointer: bytes | None) -> str:
        """Take the pointer Redis answered with (None: install it from SQL)."""
        if pointer is None:
            version, branch = await (await self._sql()).pointer(self.session_id)
            pointer = await self.store.hot.set_pointer(self._keys, version, branch)
        self._branch = parse_pointer(pointer)[1]
        return self._branch

    async def _current(self) -> str:
        """The session's current branch, as stored (one Redis command)."""
        await self.store.start()
        return await self._follow(await self.store.hot.command("GET", self._keys.current))

    async def _read(self, limit: int | None) -> tuple[str, list[Any]]:
        """The current branch and its newest ``limit`` items, checked in one script."""
        while True:
            branch = self._branch
            k, name = self._at(branch)
            try:
                return branch, await self.store.reads.get_items(k, limit, name)
            except BranchMoved as moved:
                await self._follow(moved.pointer)

    async def _items(self, branch_id: str | None) -> tuple[str, list[Any]]:
        if branch_id is None:
            return await self._read(None)
        return branch_id, await self.store.reads.get_items(self._k(branch_id), None)

    async def _set_current(self, branch: str) -> None:
        version = await (await self._sql()).set_pointer(self.session_id, branch)
        await self._follow(await self.store.hot.set_pointer(self._keys, version, branch))

    # ------------------------------------------------------------------ Session protocol
    async def get_items(self, limit: int | None = None, branch_id: str | None = None) -> list[Any]:
        """The newest ``limit`` items of the current branch (or of ``branch_id``)."""
        if limit is None and self._settings is not None:
            limit = self._settings.limit
        if branch_id is not None:
            return await self.store.reads.get_items(self._k(branch_id), limit)
        return (await self._read(limit))[1]

    async def add_items(self, items: list[Any]) -> None:
        """Append items to the branch current when the add is accepted (all or none)."""
        while True:
            k, name = self._at(self._branch)
            try:
                return await self.store.writes.add_items(k, items, name)
            except BranchMoved as moved:
                await self._follow(moved.pointer)

    async def pop_item(self) -> Any | None:
        """Remove and return the current branch's newest item (None when it is empty)."""
        branch = await self._current()
        item = await self.store.writes.pop_item(self._k(branch))
        if item is not None:
            rest = await self.store.reads.get_items(self._k(branch), None)
            if st.is_user(item) or not rest:  # the popped item's turn has no items left
                turn = st.turn_of_last(rest) + (1 if st.is_user(item) else 0)
                await (await self._sql()).drop_turn_usage(self.session_id, branch, turn)
        return item

    async def clear_session(self) -> None:
        """Delete every branch's items and the usage; ``main`` becomes current."""
        adv = await self._sql()
        await self._set_current(MAIN)
        branches = [b for b, _ in await adv.live(self.session_id)]
        await adv.mark_deleted(self.session_id, None)
        for branch in [*branches, MAIN]:
            await self.store.writes.clear_session(self._k(branch))

    async def _get_compaction_snapshot(
        self, limit: int, *, prune_prefix: Callable[[Any], bool] | None = None
    ) -> Any:
        """The SDK's compaction hook, on the current branch (other branches are kept)."""
        del prune_prefix
        if self._storage_overridden():
            return None
        return await self.store.compaction.snapshot(self._k(await self._current()), limit)

    async def _atomic_replace_items(self, items: list[Any]) -> bool:
        """Replace the current branch's items at once (other branches and usage are kept)."""
        if self._storage_overridden():
            return False
        return await self.store.compaction.replace_all(self._k(await self._current()), items)

    def _storage_overridden(self) -> bool:
        cls = type(self)
        names = ("get_items", "add_items", "pop_item", "clear_session")
        return any(getattr(cls, n) is not getattr(AdvancedTieredSession, n) for n in names)

    # ------------------------------------------------------------------ branches
    async def create_branch_from_turn(
        self, turn_number: int, branch_name: str | None = None
    ) -> str:
        """Copy the current branch's items before user turn ``turn_number`` to a new branch.

        The new branch becomes current. Returns its id (``branch_name``, or
        ``branch_from_turn_<n>_<unix time>``).

        Raises:
            BranchError: the turn has no user message, or ``branch_name`` is
                blank or was used before in this session.
        """
        if branch_name is not None:
            check_branch_name(self.session_id, branch_name)
        source, items = await self._read(None)
        starts = [index for turn, _, index in st.user_turns(items) if turn == turn_number]
        if not starts:
            raise BranchError(
                f"Turn {turn_number} does not contain a user message in branch '{source}'"
            )
        adv = await self._sql()
        await adv.reserve(self.session_id, MAIN)  # main's time, for list_branches
        branch = await reserve_branch(adv, self.session_id, branch_name, turn_number)
        await self.store.writes.add_items(self._k(branch), items[: starts[0]])
        await self._set_current(branch)
        log.debug("created branch %r from turn %s of %r", branch, turn_number, source)
        return branch

    async def create_branch_from_content(
        self, search_term: str, branch_name: str | None = None
    ) -> str:
        """Branch from the first user turn of the current branch that holds ``search_term``."""
        found = await self.find_turns_by_content(search_term)
        if not found:
            raise BranchError(f"No user turns found containing '{search_term}'")
        return await self.create_branch_from_turn(found[0]["turn"], branch_name)

    async def switch_to_branch(self, branch_id: str) -> None:
        """Make ``branch_id`` current for every worker (BranchError if it does not exist)."""
        if branch_id != MAIN and not await (await self._sql()).is_live(self.session_id, branch_id):
            raise BranchError(f"Branch '{branch_id}' does not exist")
        old = self._branch
        await self._set_current(branch_id)
        log.info("switched session %r from branch %r to %r", self.session_id, old, branch_id)

    async def delete_branch(self, branch_id: str, force: bool = False) -> None:
        """Delete a branch's items and usage; its id stays used.

        Raises:
            BranchError: ``branch_id`` is blank, ``main``, unknown, or current
                without ``force`` (with it, ``main`` becomes current first).
        """
        if not branch_id or not branch_id.strip():
            raise BranchError("Branch ID cannot be empty")
        if branch_id == MAIN:
            raise BranchError("Cannot delete the 'main' branch")
        adv = await self._sql()
        current = await self._current()
        exists = await adv.is_live(self.session_id, branch_id)
        if branch_id == current:
            if not force:
                raise BranchError(
                    f"Cannot delete current branch '{branch_id}'. Use force=True or switch "
                    "branches first"
                )
            if not exists:
                raise BranchError(f"Branch '{branch_id}' does not exist")
            await self._set_current(MAIN)
        if not exists:
            raise BranchError(f"Branch '{branch_id}' does not exist")
        await adv.mark_deleted(self.session_id, [branch_id])
        await self.store.writes.clear_session(self._k(branch_id))
        log.info("deleted branch %r of session %r", branch_id, self.session_id)

    async def list_branches(self) -> list[dict[str, Any]]:
        """The branches (``branch_id``, ``message_count``, ``user_turns``, ``is_current``, ...).

        ``main`` is listed once it holds an item; other branches from their
        creation until deleted, even when empty.
        """
        adv = await self._sql()
        current = await self._current()
        found = []
        main_items = await self.store.reads.get_items(self._k(MAIN), None)
        if main_items:  # since its oldest item in SQL (write-behind: its first branch)
            first = await adv.first_created(self.session_id)
            first = first or await adv.since(self.session_id, MAIN)
            found.append((MAIN, main_items, st.stamp(first)))
        for branch, created in await adv.live(self.session_id):
            found.append(
                (branch, await self.store.reads.get_items(self._k(branch), None), st.stamp(created))
            )
        return st.branch_answers(found, current)

    # ------------------------------------------------------------------ structured queries
    async def _turn_rows(self, branch_id: str | None, term: str | None) -> list[dict[str, Any]]:
        branch, items = await self._items(branch_id)
        turns = st.user_turns(items) if term is None else st.find_turns(items, term)
        times = await (await self._sql()).created_times(self._k(branch).session_id)
        return st.turn_answers(turns, times, None if term is not None else 100)

    async def get_conversation_turns(self, branch_id: str | None = None) -> list[dict[str, Any]]:
        """User turns: ``turn``, ``content`` (100 characters), ``full_content``, ``timestamp``."""
        return await self._turn_rows(branch_id, None)

    async def find_turns_by_content(
        self, search_term: str, branch_id: str | None = None
    ) -> list[dict[str, Any]]:
        """User turns whose text holds ``search_term`` (ASCII case folded), as turns are given."""
        return await self._turn_rows(branch_id, search_term)

    async def get_conversation_by_turns(
        self, branch_id: str | None = None
    ) -> dict[int, list[dict[str, str | None]]]:
        """Each turn's items as ``{"type", "tool_name"}``."""
        return st.conversation_by_turns((await self._items(branch_id))[1])

    async def get_tool_usage(self, branch_id: str | None = None) -> list[tuple[str, int, int]]:
        """``(tool_name, calls, turn)`` per tool and turn, in turn order."""
        return st.tool_usage((await self._items(branch_id))[1])  # type: ignore[return-value]

    # ------------------------------------------------------------------ usage
    async def store_run_usage(self, result: Any) -> None:
        """Add a run's token usage to the current turn of the current branch.

        Called again for the same turn (a resumed run), the usage adds up.
        Errors are logged, never raised (as in the SDK).
        """
        try:
            usage = result.context_wrapper.usage
            if usage is None:
                return
            branch, items = await self._read(None)
            if not items:  # no turn to charge
                return
            counts, details = st.usage_parts(usage)
            adv = await self._sql()
            await adv.add_usage(self.session_id, branch, st.turn_of_last(items), counts, details)
        except Exception as e:
            log.error("failed to store the usage of session %r: %s", self.session_id, e)

    async def get_session_usage(self, branch_id: str | None = None) -> dict[str, int] | None:
        """Usage summed over every branch (or ``branch_id``); None without any."""
        row = await (await self._sql()).usage_totals(self.session_id, branch_id or None)
        if row is None:
            return None
        names = ("requests", "input_tokens", "output_tokens", "total_tokens", "total_turns")
        return {name: int(value or 0) for name, value in zip(names, row, strict=True)}

    async def get_turn_usage(
        self, user_turn_number: int | None = None, branch_id: str | None = None
    ) -> list[dict[str, Any]] | dict[str, Any]:
        """One turn's usage (``{}`` if none), or every turn's, of a branch (default: current)."""
        branch = branch_id if branch_id is not None else await self._current()
        rows = await (await self._sql()).turn_usage(self.session_id, branch, user_turn_number)
        answers = [{"user_turn_number": turn, **st.usage_answer(u)} for turn, u in rows]
        if user_turn_number is None:
            return answers
        if not answers:
            return {}
        answers[0].pop("user_turn_number")
        return answers[0]

    def __repr__(self) -> str:
        return f"AdvancedTieredSession({self.session_id!r}, branch={self._branch!r})"


def check_branch_name(session_id: str, name: Any) -> None:
    """BranchError unless ``name`` can name a branch of ``session_id``."""
    if not isinstance(name, str) or not name.strip():
        raise BranchError("Branch name cannot be empty")
    if BRANCH_SEP in name or "\x00" in name:
        raise BranchError("Branch name must not contain NUL or U+001F characters")
    if len(f"{session_id}{BRANCH_SEP}{name}".encode()) > MAX_SESSION_ID_BYTES:
        raise BranchError(
            f"session id and branch name together exceed {MAX_SESSION_ID_BYTES} bytes"
        )


async def reserve_branch(adv: AdvancedSql, session_id: str, name: str | None, turn: int) -> str:
    """Reserve ``name`` (BranchError if ever used), or a new ``branch_from_turn_<n>_<time>``."""
    if name is not None:
        if name == MAIN or not await adv.reserve(session_id, name):
            raise BranchError(f"Branch ID '{name}' has already been used. Choose a new branch ID.")
        return name
    base = f"branch_from_turn_{turn}_{int(time.time())}"
    candidate, suffix = base, 1
    while not await adv.reserve(session_id, candidate):
        suffix += 1
        candidate = f"{base}_{suffix}"
    return candidate
