"""Backups and imports of what an advanced session keeps beside its items.

A session the SDK's ``AdvancedSQLiteSession`` wrote is imported as an advanced
session: ``main`` as the session, every other branch under its internal id,
the branch ids it used (deleted ones stay used), and its usage per turn. A
JSONL backup carries the same: each branch's history as a session record
under its internal id, then one ``advanced`` record (branches, the current
branch, usage).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from ..cold.advanced import AdvancedSql
from ..cold.advanced_tables import parse_details
from ..cold.sdk_source import SdkStructure
from ..hot.keys import BRANCH_SEP

__all__ = ["advanced_record", "import_structure", "live_branches", "restore_record"]

MAIN = "main"


def _dict(text: Any) -> dict[str, Any] | None:
    found = parse_details(text)
    return found if isinstance(found, dict) else None


async def _add_usage(adv: AdvancedSql, session_id: str, rows: list[Any]) -> None:
    """Add usage rows ``(branch, turn, requests, input, output, total, details...)``."""
    for branch, turn, requests, inp, out, total, in_details, out_details in rows:
        counts = (int(requests or 0), int(inp or 0), int(out or 0), int(total or 0))
        details = (_dict(in_details), _dict(out_details))
        await adv.add_usage(session_id, str(branch), int(turn), counts, details)


async def import_structure(
    adv: AdvancedSql,
    session_id: str,
    structure: SdkStructure,
    restore: Callable[[str, list[Any]], Awaitable[int]],
) -> int:
    """Restore a session's other branches, used ids and usage; return the items imported.

    ``restore(internal_id, raw_rows)`` writes one branch's items and returns
    how many it wrote. Called once, after ``main`` was imported.
    """
    items = 0
    for branch, raw in structure.branches.items():
        if branch == MAIN:
            continue
        items += await restore(f"{session_id}{BRANCH_SEP}{branch}", raw)
        await adv.reserve(session_id, branch)
    if len(structure.branches) > 1 or MAIN not in structure.branches:
        await adv.reserve(session_id, MAIN)
    for branch in structure.reserved:
        if branch != MAIN:
            await adv.reserve(session_id, branch)
    deleted = [b for b in structure.reserved if b != MAIN]
    if deleted:
        await adv.mark_deleted(session_id, deleted)
    await _add_usage(adv, session_id, structure.usage)
    return items


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat(sep=" ")


def _when(text: Any) -> dt.datetime | None:
    return None if text is None else dt.datetime.fromisoformat(str(text))


async def advanced_record(adv: AdvancedSql, session_id: str) -> dict[str, Any] | None:
    """The backup record of a session's branches, current branch and usage (None: none)."""
    registry = await adv.registry(session_id)
    usage = await adv.usage_rows(session_id)
    if not registry and not usage:
        return None
    return {
        "type": "advanced",
        "session_id": session_id,
        "current": (await adv.pointer(session_id))[1],
        "branches": [[b, _iso(created), _iso(deleted)] for b, created, deleted in registry],
        "usage": [list(row) for row in usage],
    }


def live_branches(record: dict[str, Any]) -> list[str]:
    """The branches of an :func:`advanced_record` whose histories are exported."""
    return [b for b, _, deleted in record["branches"] if deleted is None and b != MAIN]


async def restore_record(adv: AdvancedSql, record: dict[str, Any]) -> None:
    """Write an :func:`advanced_record` back (after its session was imported)."""
    sid = record["session_id"]
    rows = [(b, _when(created), _when(deleted)) for b, created, deleted in record["branches"]]
    await adv.restore_registry(sid, rows)
    await _add_usage(adv, sid, record["usage"])
    if record.get("current", MAIN) != MAIN:
        await adv.set_pointer(sid, record["current"])
