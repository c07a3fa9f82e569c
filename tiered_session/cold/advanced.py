r"""The SQL of advanced sessions: branches, each session's current branch, per-turn usage.

Three tables beside the messages table, named after it:

* ``<messages>_branches(session_id, branch_id, created_at, deleted_at)``: every
  branch a session ever had. A row is never removed while its session lives,
  so a branch id once used stays reserved; ``deleted_at`` marks deleted ones.
* ``<messages>_pointer(session_id, branch_id, version)``: the current branch;
  every change bumps ``version`` (Redis keeps a copy, newest version wins).
* ``<messages>_usage(session_id, branch_id, turn, requests, input_tokens,
  output_tokens, total_tokens, input_tokens_details, output_tokens_details,
  created_at)``, one row per (session, branch, user turn).

A branch's items are a session of their own in the messages table, under the
internal id ``<session>\x1f<branch>`` (``main`` is the session itself), so
the SDK's ``SQLAlchemySession`` reading ``<session>`` sees the main history.

Example:
    >>> tables = AdvancedTables("agent_messages")
    >>> tables.usage.name, sorted(c.name for c in tables.branches.c)
    ('agent_messages_usage', ['branch_id', 'created_at', 'deleted_at', 'session_id'])
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    and_,
    delete,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from .._errors import ConfigurationError, StorageUnavailableError
from .advanced_tables import AdvancedTables, UsageRow, add_details
from .tier import SqlTier

__all__ = ["AdvancedSql", "AdvancedTables", "UsageRow", "existing"]


class AdvancedSql:
    """Branches, pointers and usage of one store's advanced sessions, on its SQL tier."""

    def __init__(self, sql: SqlTier, tables: AdvancedTables) -> None:
        self.sql = sql
        self.t = tables

    async def ensure(self, *, create: bool) -> None:
        """Create the tables (``create``), or check that they exist."""
        async with self.sql.begin() as conn:
            if create:
                await conn.run_sync(self.t.metadata.create_all)
                return
            names = [t.name for t in self.t.metadata.sorted_tables]
            have = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        missing = [n for n in names if n not in have]
        if missing:
            raise ConfigurationError(
                f"advanced sessions need the tables {missing}: create them with "
                "create_tables=True (or `tiered-session schema --create`)"
            )

    # ------------------------------------------------------------------ pointer
    async def pointer(self, session_id: str) -> tuple[int, str]:
        """``(version, branch)``: ``(0, "main")`` for a session that never switched."""
        p = self.t.pointer
        async with self.sql.begin() as conn:
            row = (
                await conn.execute(
                    select(p.c.version, p.c.branch_id).where(p.c.session_id == session_id)
                )
            ).first()
        return (0, "main") if row is None else (int(row[0]), str(row[1]))

    async def set_pointer(self, session_id: str, branch: str) -> int:
        """Make ``branch`` current; return the new version."""
        p = self.t.pointer
        ins = self.sql.upsert(p).values(session_id=session_id, branch_id=branch, version=1)
        stmt = ins.on_conflict_do_update(
            index_elements=[p.c.session_id],
            set_={"branch_id": ins.excluded.branch_id, "version": p.c.version + 1},
        ).returning(p.c.version)
        async with self.sql.begin() as conn:
            return int((await conn.execute(stmt)).scalar_one())

    # ------------------------------------------------------------------ branches
    async def reserve(self, session_id: str, branch: str) -> bool:
        """Record a new branch; False if the id was ever used in this session."""
        b = self.t.branches
        stmt = (
            self.sql.upsert(b)
            .values(session_id=session_id, branch_id=branch)
            .on_conflict_do_nothing()
        )
        async with self.sql.begin() as conn:
            return bool((await conn.execute(stmt)).rowcount)

    async def live(self, session_id: str) -> list[tuple[str, dt.datetime]]:
        """``(branch, created_at)`` of the session's branches not deleted, ``main`` aside.

        (``main`` has a row, made with the session's first branch: its time is
        :meth:`since`.)
        """
        b = self.t.branches
        stmt = (
            select(b.c.branch_id, b.c.created_at)
            .where(b.c.session_id == session_id, b.c.deleted_at.is_(None), b.c.branch_id != "main")
            .order_by(b.c.created_at, b.c.branch_id)
        )
        async with self.sql.begin() as conn:
            return [(str(r[0]), r[1]) for r in (await conn.execute(stmt)).all()]

    async def registry(self, session_id: str) -> list[tuple[str, Any, Any]]:
        """Every branch row of a session: ``(branch, created_at, deleted_at)``."""
        b = self.t.branches
        stmt = (
            select(b.c.branch_id, b.c.created_at, b.c.deleted_at)
            .where(b.c.session_id == session_id)
            .order_by(b.c.created_at, b.c.branch_id)
        )
        async with self.sql.begin() as conn:
            return [(str(r[0]), r[1], r[2]) for r in (await conn.execute(stmt)).all()]

    async def restore_registry(self, session_id: str, rows: Sequence[tuple[str, Any, Any]]) -> None:
        """Write branch rows as :meth:`registry` gave them (rows already there are kept)."""
        b = self.t.branches
        async with self.sql.begin() as conn:
            for branch, created, deleted in rows:
                values: dict[str, Any] = {"session_id": session_id, "branch_id": branch}
                if created is not None:
                    values["created_at"] = created
                values["deleted_at"] = deleted
                await conn.execute(self.sql.upsert(b).values(**values).on_conflict_do_nothing())

    def _usage_columns(self) -> list[Any]:
        """A usage row's turn, four counts and two details, in that order."""
        u = self.t.usage
        counts = (u.c.requests, u.c.input_tokens, u.c.output_tokens, u.c.total_tokens)
        return [u.c.turn, *counts, u.c.input_tokens_details, u.c.output_tokens_details]

    async def usage_rows(self, session_id: str) -> list[tuple[Any, ...]]:
        """Every usage row of a session: branch, turn, the four counts, the two details."""
        u = self.t.usage
        stmt = (
            select(u.c.branch_id, *self._usage_columns())
            .where(u.c.session_id == session_id)
            .order_by(u.c.branch_id, u.c.turn)
        )
        async with self.sql.begin() as conn:
            return [tuple(r) for r in (await conn.execute(stmt)).all()]

    async def since(self, session_id: str, branch: str) -> dt.datetime | None:
        """When a branch's row was made (None: never)."""
        b = self.t.branches
        stmt = select(b.c.created_at).where(b.c.session_id == session_id, b.c.branch_id == branch)
        async with self.sql.begin() as conn:
            found = (await conn.execute(stmt)).scalar()
        return found if isinstance(found, dt.datetime) else None

    async def is_live(self, session_id: str, branch: str) -> bool:
        """Whether the branch exists (created, not deleted)."""
        b = self.t.branches
        stmt = select(func.count()).where(
            b.c.session_id == session_id, b.c.branch_id == branch, b.c.deleted_at.is_(None)
        )
        async with self.sql.begin() as conn:
            return bool((await conn.execute(stmt)).scalar_one())

    async def mark_deleted(self, session_id: str, branches: Sequence[str] | None) -> None:
        """Mark branches deleted (all of the session's when None) and drop their usage."""
        b, u = self.t.branches, self.t.usage
        cond = [b.c.session_id == session_id, b.c.deleted_at.is_(None)]
        ucond = [u.c.session_id == session_id]
        if branches is not None:
            cond.append(b.c.branch_id.in_(list(branches)))
            ucond.append(u.c.branch_id.in_(list(branches)))
        async with self.sql.begin() as conn:
            await conn.execute(update(b).where(*cond).values(deleted_at=func.now()))
            await conn.execute(delete(u).where(*ucond))

    async def forget(self, session_id: str) -> None:
        """Remove every trace of a deleted session (branches, pointer, usage)."""
        async with self.sql.begin() as conn:
            for t in (self.t.branches, self.t.pointer, self.t.usage):
                await conn.execute(delete(t).where(t.c.session_id == session_id))

    async def first_created(self, session_id: str) -> dt.datetime | None:
        """When the oldest item of a session (its ``main`` branch) was stored in SQL."""
        m = self.sql.messages
        stmt = select(func.min(m.c.created_at)).where(m.c.session_id == session_id)
        async with self.sql.begin() as conn:
            found = (await conn.execute(stmt)).scalar()
        return found if isinstance(found, dt.datetime) else None

    async def created_times(self, session_id: str) -> list[dt.datetime]:
        """When each item of a session (or a branch's internal id) was stored, in seq order."""
        m = self.sql.messages
        stmt = select(m.c.created_at).where(m.c.session_id == session_id).order_by(m.c.seq)
        async with self.sql.begin() as conn:
            return [r[0] for r in (await conn.execute(stmt)).all()]

    # ------------------------------------------------------------------ usage
    async def add_usage(
        self,
        session_id: str,
        branch: str,
        turn: int,
        counts: tuple[int, int, int, int],
        details: tuple[dict[str, Any] | None, dict[str, Any] | None],
    ) -> None:
        """Add one run's usage to a turn's row (created at the first run)."""
        u = self.t.usage
        key = and_(u.c.session_id == session_id, u.c.branch_id == branch, u.c.turn == turn)
        for attempt in range(5):
            try:
                async with self.sql.begin() as conn:
                    await self._add_usage(conn, key, (session_id, branch, turn), counts, details)
                return
            except StorageUnavailableError as e:
                # Another writer created the row first: add to it.
                if attempt == 4 or not isinstance(e.__cause__, IntegrityError):
                    raise

    async def _add_usage(
        self,
        conn: Any,
        key: Any,
        ident: tuple[str, str, int],
        counts: tuple[int, int, int, int],
        details: tuple[dict[str, Any] | None, dict[str, Any] | None],
    ) -> None:
        u = self.t.usage
        cols = (u.c.requests, u.c.input_tokens, u.c.output_tokens, u.c.total_tokens)
        lock = select(*cols, u.c.input_tokens_details, u.c.output_tokens_details).where(key)
        if self.sql.dialect == "postgresql":
            lock = lock.with_for_update()
        row = (await conn.execute(lock)).first()
        if row is None:
            await conn.execute(
                u.insert().values(
                    session_id=ident[0],
                    branch_id=ident[1],
                    turn=ident[2],
                    requests=counts[0],
                    input_tokens=counts[1],
                    output_tokens=counts[2],
                    total_tokens=counts[3],
                    input_tokens_details=None if details[0] is None else json.dumps(details[0]),
                    output_tokens_details=None if details[1] is None else json.dumps(details[1]),
                )
            )
            return
        await conn.execute(
            update(u)
            .where(key)
            .values(
                requests=int(row[0]) + counts[0],
                input_tokens=int(row[1]) + counts[1],
                output_tokens=int(row[2]) + counts[2],
                total_tokens=int(row[3]) + counts[3],
                input_tokens_details=add_details(row[4], details[0]),
                output_tokens_details=add_details(row[5], details[1]),
            )
        )

    async def drop_turn_usage(self, session_id: str, branch: str, turn: int) -> None:
        """Forget a turn's usage (its last item was popped)."""
        u = self.t.usage
        async with self.sql.begin() as conn:
            cond = (u.c.session_id == session_id, u.c.branch_id == branch, u.c.turn == turn)
            await conn.execute(delete(u).where(*cond))

    async def usage_totals(self, session_id: str, branch: str | None) -> tuple[Any, ...] | None:
        """``(requests, input, output, total, turns)`` summed, or None without rows."""
        u = self.t.usage
        cond = [u.c.session_id == session_id]
        if branch is not None:
            cond.append(u.c.branch_id == branch)
        stmt = select(
            func.sum(u.c.requests),
            func.sum(u.c.input_tokens),
            func.sum(u.c.output_tokens),
            func.sum(u.c.total_tokens),
            func.count(),
        ).where(*cond)
        async with self.sql.begin() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None or row[0] is None else tuple(row)

    async def turn_usage(self, session_id: str, branch: str, turn: int | None) -> list[Any]:
        """``(turn, UsageRow)`` of one turn (or every turn, in turn order) of a branch."""
        u = self.t.usage
        cond = [u.c.session_id == session_id, u.c.branch_id == branch]
        if turn is not None:
            cond.append(u.c.turn == turn)
        stmt = select(*self._usage_columns()).where(*cond).order_by(u.c.turn)
        async with self.sql.begin() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            (int(r[0]), UsageRow(int(r[1]), int(r[2]), int(r[3]), int(r[4]), r[5], r[6]))
            for r in rows
        ]


async def existing(sql: SqlTier) -> AdvancedSql | None:
    """The advanced sessions' SQL of a store whose tables exist; None when they do not."""
    adv = AdvancedSql(sql, AdvancedTables(sql.messages.name))
    try:
        await adv.ensure(create=False)
    except ConfigurationError:
        return None
    return adv
