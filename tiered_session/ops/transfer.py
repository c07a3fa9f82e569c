"""Moving sessions in and out: JSONL backup/restore and import of SDK SQLite files.

The JSONL format has one header line per session followed by one line per
item, in order::

    {"type":"session","session_id":"u1","items":2,"created_at":"…","updated_at":"…"}
    {"type":"item","session_id":"u1","item":{"role":"user","content":"hi"}}
    {"type":"item","session_id":"u1","item":{"role":"assistant","content":"hello"}}

Imports are idempotent: a session that already holds the same items is left
alone, one holding different items is reported as a conflict and skipped.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from tiered_session import TieredStore
    >>> async def main(path):
    ...     async with TieredStore.from_url() as a, TieredStore.from_url() as b:
    ...         await a.session("u1").add_items([{"role": "user", "content": "hi"}])
    ...         await a.export_jsonl(path)
    ...         report = await b.import_jsonl(path)
    ...         return report["sessions_imported"], await b.session("u1").get_items()
    >>> asyncio.run(main(pathlib.Path(tempfile.mkdtemp()) / "backup.jsonl"))
    (1, [{'role': 'user', 'content': 'hi'}])
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any, Literal, TypedDict

import orjson
from sqlalchemy.engine import URL

from .._codec import EXACT, decode_item, encode_item
from .._config import StoreConfig, validate_session_id
from .._errors import ConfigurationError, CorruptDataError
from .._progress import Progress
from .._time import iso, now_ms
from ..cold.advanced import AdvancedSql, AdvancedTables, existing
from ..cold.catalog import Catalog
from ..cold.engine import engine_from_url
from ..cold.sdk_source import OrderBy, SdkSource, SdkStructure
from ..cold.tier import SqlTier
from ..hot.keys import BRANCH_SEP, base_session_id
from ..hot.tier import HotTier
from .admin import Admin
from .branch_import import advanced_record, import_structure, live_branches, restore_record

__all__ = ["ImportReport", "Transfer"]

log = logging.getLogger("tiered_session")

Outcome = Literal["imported", "unchanged", "conflict"]

#: conflicting session ids an import report lists at most
_CONFLICTS_LISTED = 100
#: bytes a JSONL import reads at a time
_READ_CHUNK = 1 << 20
#: how an exported item line holding big integers reads (the item starts with EXACT)
_EXACT_ITEM = b'"item":' + EXACT


class ImportReport(TypedDict):
    """What an import did."""

    sessions_imported: int
    items_imported: int
    sessions_unchanged: int
    sessions_conflicting: int
    #: ids of (up to 100) conflicting sessions
    conflicts: list[str]
    #: SDK rows that were not valid JSON (the SDK skips them too)
    corrupt_rows_skipped: int


def _new_report() -> ImportReport:
    return ImportReport(
        sessions_imported=0,
        items_imported=0,
        sessions_unchanged=0,
        sessions_conflicting=0,
        conflicts=[],
        corrupt_rows_skipped=0,
    )


def _count(report: ImportReport, sid: str, outcome: Outcome, items: int) -> None:
    if outcome == "imported":
        report["sessions_imported"] += 1
        report["items_imported"] += items
    elif outcome == "unchanged":
        report["sessions_unchanged"] += 1
    else:
        report["sessions_conflicting"] += 1
        if len(report["conflicts"]) < _CONFLICTS_LISTED:
            report["conflicts"].append(sid)


class Transfer:
    """Backups and imports of a store's sessions."""

    def __init__(
        self,
        hot: HotTier,
        sql: SqlTier,
        admin: Admin,
        flush: Callable[[], Awaitable[None]],
        ready: Callable[[], Awaitable[None]],
    ) -> None:
        self.hot = hot
        self.sql = sql
        self.catalog = Catalog(sql)
        self.admin = admin
        self._flush = flush
        self._ready = ready

    async def restore_session(
        self, session_id: str, datas: list[str], created_at: Any = None, updated_at: Any = None
    ) -> Outcome:
        """Write one whole session into an empty slot (seqs 1..n) in one transaction."""
        validate_session_id(base_session_id(session_id))  # a branch's history: its session's
        sid = session_id
        current = await self.sql.latest(sid, None, None)
        if current:
            same = [decode_item(d) for _, d in current] == [decode_item(d) for d in datas]
            return "unchanged" if same else "conflict"
        if await self.admin.session_exists(sid):
            return "conflict"  # items not yet flushed to SQL
        if not datas:
            return "unchanged"
        await self.catalog.restore(sid, datas, created_at, updated_at)
        # A stale hot copy (say, of a cleared session) must not hide the restored items.
        await self.hot.drop(self.hot.keys.session(sid), now_ms())
        return "imported"

    async def export_jsonl(
        self, path: Path, session_ids: list[str] | None, progress: Progress | None
    ) -> int:
        """Write sessions (all, or ``session_ids``) to a JSON Lines file; return how many.

        Everything accepted before the call is flushed to SQL first. Each
        session is a header line followed by one line per item, in order.
        """
        await self._flush()
        if session_ids is None:
            session_ids = [i["session_id"] for i in await self.admin.all_sessions()]
        ids = [validate_session_id(s) for s in session_ids]
        if progress is not None:
            progress.total = len(ids)
        fh: IO[bytes] = await asyncio.to_thread(open, path, "wb")
        written = 0
        try:
            adv = await self._advanced(create=False)
            for sid in ids:
                rows = await self.sql.latest(sid, None, None)
                record = None if adv is None else await advanced_record(adv, sid)
                if rows or record:
                    times = await self.catalog.times(sid)
                    chunk = _session_lines(sid, rows, times)
                    for branch in [] if record is None else live_branches(record):
                        internal = f"{sid}{BRANCH_SEP}{branch}"
                        chunk += _session_lines(
                            internal, await self.sql.latest(internal, None, None), None
                        )
                    if record is not None:
                        chunk.append(orjson.dumps(record))
                    await asyncio.to_thread(fh.write, b"\n".join(chunk) + b"\n")
                    written += 1
                if progress is not None:
                    progress.advance()
        finally:
            await asyncio.to_thread(fh.close)
        return written

    async def import_jsonl(self, path: Path, progress: Progress | None) -> ImportReport:
        """Restore sessions written by :meth:`export_jsonl` (idempotent).

        A session that already exists with the same items is left as it is; one
        that exists with different items is reported as a conflict and skipped.
        """
        await self._ready()
        if not await asyncio.to_thread(path.is_file):
            raise ConfigurationError(f"backup file {str(path)!r} not found")
        report = _new_report()
        size = (await asyncio.to_thread(path.stat)).st_size
        if progress is not None:
            progress.total = size
        header: dict[str, Any] | None = None
        datas: list[str] = []
        imported: dict[str, bool] = {}  # session -> whether this import wrote it

        async def finish() -> None:
            if header is None:
                return
            sid = header["session_id"]
            if len(datas) != header.get("items", len(datas)):
                raise CorruptDataError(
                    f"backup of session {sid!r} is truncated: header says {header['items']} "
                    f"items, found {len(datas)}"
                )
            outcome = await self.restore_session(
                sid, datas, header.get("created_at"), header.get("updated_at")
            )
            if BRANCH_SEP in sid:  # a branch's history: items of its session
                report["items_imported"] += len(datas) if outcome == "imported" else 0
            else:
                _count(report, sid, outcome, len(datas))
                imported[sid] = outcome == "imported"

        fh: IO[bytes] = await asyncio.to_thread(open, path, "rb")
        lineno = 0
        try:
            while lines := await asyncio.to_thread(fh.readlines, _READ_CHUNK):
                for line in lines:
                    lineno += 1
                    if progress is not None:
                        progress.advance(len(line))
                    if not line.strip():
                        continue
                    try:
                        # (an item written exactly, its big integers kept: see EXACT)
                        rec = json.loads(line) if _EXACT_ITEM in line else orjson.loads(line)
                        kind = rec["type"]
                    except (ValueError, KeyError, TypeError) as e:
                        raise CorruptDataError(f"{path}:{lineno}: not a backup record: {e}") from e
                    if kind == "session":
                        await finish()
                        header, datas = rec, []
                    elif kind == "advanced":
                        await finish()
                        header = None
                        if imported.get(rec.get("session_id", "")):
                            adv = await self._advanced(create=True)
                            assert adv is not None
                            await restore_record(adv, rec)
                    elif kind == "item" and header is not None:
                        if rec.get("session_id") != header["session_id"]:
                            raise CorruptDataError(f"{path}:{lineno}: item outside its session")
                        datas.append(encode_item(rec["item"]).decode())
                    else:
                        raise CorruptDataError(f"{path}:{lineno}: unexpected record type {kind!r}")
            await finish()
        finally:
            await asyncio.to_thread(fh.close)
        return report

    async def import_sdk_sqlite(
        self,
        path: Path,
        *,
        sessions_table: str = "agent_sessions",
        messages_table: str = "agent_messages",
        progress: Progress | None = None,
    ) -> ImportReport:
        """Import every session of an SDK ``SQLiteSession``/``AsyncSQLiteSession`` file.

        Items keep the SDK's order (by row id). Rows that are not valid JSON are
        skipped (the SDK skips them too) and counted. Idempotent.
        """
        if not await asyncio.to_thread(path.is_file):
            raise ConfigurationError(f"SQLite file {str(path)!r} not found")
        url = URL.create("sqlite+aiosqlite", database=str(path)).render_as_string()
        return await self._import(url, str(path), sessions_table, messages_table, "id", progress)

    async def import_sdk_sql(
        self,
        source_url: str,
        *,
        sessions_table: str = "agent_sessions",
        messages_table: str = "agent_messages",
        progress: Progress | None = None,
    ) -> ImportReport:
        """Import every session of another database written by the SDK's ``SQLAlchemySession``.

        Items keep the SDK's order (``created_at, id``). To adopt SDK tables in
        the store's own database, migrate them in place instead. Idempotent.
        """
        return await self._import(
            source_url, None, sessions_table, messages_table, "created_at", progress
        )

    async def _import(
        self,
        url: str,
        where: str | None,
        sessions_table: str,
        messages_table: str,
        order_by: OrderBy,
        progress: Progress | None,
    ) -> ImportReport:
        StoreConfig(sessions_table=sessions_table, messages_table=messages_table)  # validates
        engine = engine_from_url(url)
        try:
            if where is None:
                where = engine.url.render_as_string(hide_password=True)
            await self._ready()
            source = SdkSource(engine, where, sessions_table, messages_table, order_by)
            report = _new_report()
            started = False
            async for sid, raw, times, structure in source.read():
                if progress is not None and not started:
                    progress.total = source.count
                started = True
                if structure is not None:  # AdvancedSQLiteSession's: main is its history
                    raw = structure.branches.get("main", [])
                datas = self._valid_rows(sid, raw, report)
                outcome = await self.restore_session(sid, datas, *(times or (None, None)))
                items = len(datas)
                if structure is not None and outcome == "imported":
                    items += await self._import_branches(sid, structure, report)
                _count(report, sid, outcome, items)
                if progress is not None:
                    progress.advance()
            return report
        finally:
            await engine.dispose()

    async def _advanced(self, *, create: bool) -> AdvancedSql | None:
        """Advanced sessions' SQL (its tables created if ``create``; else None if missing)."""
        if not create:
            return await existing(self.sql)
        adv = AdvancedSql(self.sql, AdvancedTables(self.sql.messages.name))
        await adv.ensure(create=True)
        return adv

    async def _import_branches(
        self, sid: str, structure: SdkStructure, report: ImportReport
    ) -> int:
        adv = await self._advanced(create=True)
        assert adv is not None

        async def restore(internal: str, raw: list[Any]) -> int:
            datas = self._valid_rows(internal, raw, report)
            return len(datas) if await self.restore_session(internal, datas) == "imported" else 0

        return await import_structure(adv, sid, structure, restore)

    @staticmethod
    def _valid_rows(sid: str, raw: list[Any], report: ImportReport) -> list[str]:
        datas = []
        for data in raw:
            try:
                decode_item(data)
            except (CorruptDataError, TypeError):
                report["corrupt_rows_skipped"] += 1
                log.warning("skipped a row of session %r that is not valid JSON", sid)
                continue
            datas.append(data)
        return datas


def _session_lines(
    sid: str, rows: list[tuple[int, str]], times: tuple[Any, Any] | None
) -> list[bytes]:
    """The backup lines of one session: its header, then one line per item."""
    header = {
        "type": "session",
        "session_id": sid,
        "items": len(rows),
        "created_at": iso(times[0]) if times else None,
        "updated_at": iso(times[1]) if times else None,
    }
    sid_json = orjson.dumps(sid)
    lines = [orjson.dumps(header)]
    for seq, data in rows:
        try:
            decode_item(data)
        except CorruptDataError as e:
            raise CorruptDataError(
                f"session {sid!r}: SQL row seq={seq} is not valid JSON; "
                "repair or delete that row, then export again"
            ) from e
        lines.append(b'{"type":"item","session_id":%s,"item":%s}' % (sid_json, data.encode()))
    return lines
