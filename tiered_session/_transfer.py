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
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, TypedDict

import orjson
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, inspect, select
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ._codec import decode_item, encode_item
from ._config import StoreConfig, validate_session_id
from ._errors import ConfigurationError, CorruptDataError, InvalidInputError

if TYPE_CHECKING:
    from ._progress import Progress
    from ._store import TieredStore

__all__ = ["ImportReport", "export_jsonl", "import_jsonl", "import_sdk_sql", "import_sdk_sqlite"]

log = logging.getLogger("tiered_session")

Outcome = Literal["imported", "unchanged", "conflict"]


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
        if len(report["conflicts"]) < 100:
            report["conflicts"].append(sid)


def _naive_utc(value: Any) -> datetime | None:
    if value is None:
        return None
    dt = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(dt, datetime):
        raise InvalidInputError(f"not a timestamp: {value!r}")
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo is not None else dt


async def restore_session(
    store: TieredStore,
    session_id: str,
    datas: list[str],
    created_at: Any = None,
    updated_at: Any = None,
) -> Outcome:
    """Write one whole session into an empty slot (seqs 1..n) in one transaction."""
    sid = validate_session_id(session_id)
    sql = store.sql
    current = await sql.latest(sid, None, None)
    if current:
        same = [decode_item(d) for _, d in current] == [decode_item(d) for d in datas]
        return "unchanged" if same else "conflict"
    if await store.session_exists(sid):
        return "conflict"  # items not yet flushed to SQL
    if not datas:
        return "unchanged"
    row: dict[str, Any] = {"session_id": sid}
    for name, value in (("created_at", created_at), ("updated_at", updated_at)):
        if value is not None:
            row[name] = _naive_utc(value)
    async with sql.begin() as conn:
        await conn.execute(
            sql._insert(sql.sessions)
            .values(row)
            .on_conflict_do_nothing(index_elements=[sql.sessions.c.session_id])
        )
        await conn.execute(
            sql._insert(sql.messages),
            [{"session_id": sid, "seq": i, "message_data": d} for i, d in enumerate(datas, 1)],
        )
    # A stale hot copy (say, of a cleared session) must not hide the restored items.
    k = store.keys.session(sid)
    await store._script(
        "drop", [k.meta, k.items, k.reserved, k.shard.index, k.gen], [sid, int(time.time() * 1000)]
    )
    return "imported"


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    dt = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(dt, datetime):
        return str(dt)
    return (dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)).isoformat()


async def export_jsonl(
    store: TieredStore, path: Path, session_ids: list[str] | None, progress: Progress | None
) -> int:
    """Write sessions to ``path``; see :meth:`TieredStore.export_jsonl`."""
    await store.flush()
    if session_ids is None:
        session_ids = [i["session_id"] for i in await store._all_sessions()]
    ids = [validate_session_id(s) for s in session_ids]
    if progress is not None:
        progress.total = len(ids)
    sq = store.sql.sessions
    fh: IO[bytes] = await asyncio.to_thread(open, path, "wb")
    written = 0
    try:
        for sid in ids:
            rows = await store.sql.latest(sid, None, None)
            async with store.sql.begin() as conn:
                times = (
                    await conn.execute(
                        select(sq.c.created_at, sq.c.updated_at).where(sq.c.session_id == sid)
                    )
                ).first()
            if rows:
                sid_json = orjson.dumps(sid)
                header = {
                    "type": "session",
                    "session_id": sid,
                    "items": len(rows),
                    "created_at": _iso(times[0]) if times else None,
                    "updated_at": _iso(times[1]) if times else None,
                }
                chunk = [orjson.dumps(header)]
                for seq, data in rows:
                    try:
                        decode_item(data)
                    except CorruptDataError as e:
                        raise CorruptDataError(
                            f"session {sid!r}: SQL row seq={seq} is not valid JSON; "
                            "repair or delete that row, then export again"
                        ) from e
                    chunk.append(
                        b'{"type":"item","session_id":%s,"item":%s}' % (sid_json, data.encode())
                    )
                await asyncio.to_thread(fh.write, b"\n".join(chunk) + b"\n")
                written += 1
            if progress is not None:
                progress.advance()
    finally:
        await asyncio.to_thread(fh.close)
    return written


async def import_jsonl(store: TieredStore, path: Path, progress: Progress | None) -> ImportReport:
    """Restore sessions from ``path``; see :meth:`TieredStore.import_jsonl`."""
    await store._ready()
    if not await asyncio.to_thread(path.is_file):
        raise ConfigurationError(f"backup file {str(path)!r} not found")
    report = _new_report()
    size = (await asyncio.to_thread(path.stat)).st_size
    if progress is not None:
        progress.total = size
    header: dict[str, Any] | None = None
    datas: list[str] = []

    async def finish() -> None:
        if header is None:
            return
        sid = header["session_id"]
        if len(datas) != header.get("items", len(datas)):
            raise CorruptDataError(
                f"backup of session {sid!r} is truncated: header says {header['items']} items, "
                f"found {len(datas)}"
            )
        outcome = await restore_session(
            store, sid, datas, header.get("created_at"), header.get("updated_at")
        )
        _count(report, sid, outcome, len(datas))

    fh: IO[bytes] = await asyncio.to_thread(open, path, "rb")
    lineno = 0
    try:
        while lines := await asyncio.to_thread(fh.readlines, 1 << 20):
            for line in lines:
                lineno += 1
                if progress is not None:
                    progress.advance(len(line))
                if not line.strip():
                    continue
                try:
                    rec = orjson.loads(line)
                    kind = rec["type"]
                except (orjson.JSONDecodeError, KeyError, TypeError) as e:
                    raise CorruptDataError(f"{path}:{lineno}: not a backup record: {e}") from e
                if kind == "session":
                    await finish()
                    header, datas = rec, []
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
    store: TieredStore,
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
    engine = create_async_engine(URL.create("sqlite+aiosqlite", database=str(path)))
    try:
        return await _import_tables(
            store, engine, str(path), sessions_table, messages_table, "id", progress
        )
    finally:
        await engine.dispose()


async def import_sdk_sql(
    store: TieredStore,
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
    from ._store import _engine_from_url

    engine = _engine_from_url(source_url, {})
    try:
        where = engine.url.render_as_string(hide_password=True)
        return await _import_tables(
            store, engine, where, sessions_table, messages_table, "created_at", progress
        )
    finally:
        await engine.dispose()


async def _import_tables(
    store: TieredStore,
    engine: AsyncEngine,
    where: str,
    sessions_table: str,
    messages_table: str,
    order_by: Literal["id", "created_at"],
    progress: Progress | None,
) -> ImportReport:
    StoreConfig(sessions_table=sessions_table, messages_table=messages_table)  # validates names
    await store._ready()
    md = MetaData()
    src_s = Table(
        sessions_table,
        md,
        Column("session_id", String, primary_key=True),
        Column("created_at", String),
        Column("updated_at", String),
    )
    src_m = Table(
        messages_table,
        md,
        Column("id", Integer, primary_key=True),
        Column("session_id", String),
        Column("message_data", Text),
        Column("created_at", String),
    )
    order = (src_m.c.id,) if order_by == "id" else (src_m.c.created_at, src_m.c.id)
    report = _new_report()
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        if messages_table not in names:
            raise ConfigurationError(
                f"{where!r} has no table {messages_table!r}: not an Agents SDK session "
                "database (or pass the table names it uses)"
            )
        has_sessions = sessions_table in names
        ids = [
            r[0]
            for r in (
                await conn.execute(
                    select(src_m.c.session_id).distinct().order_by(src_m.c.session_id)
                )
            ).all()
        ]
        if progress is not None:
            progress.total = len(ids)
        for sid in ids:
            rows = (
                await conn.execute(
                    select(src_m.c.message_data).where(src_m.c.session_id == sid).order_by(*order)
                )
            ).all()
            datas = []
            for (data,) in rows:
                try:
                    decode_item(data)
                except (CorruptDataError, TypeError):
                    report["corrupt_rows_skipped"] += 1
                    log.warning("skipped a row of session %r that is not valid JSON", sid)
                    continue
                datas.append(data)
            times = None
            if has_sessions:
                times = (
                    await conn.execute(
                        select(src_s.c.created_at, src_s.c.updated_at).where(
                            src_s.c.session_id == sid
                        )
                    )
                ).first()
            outcome = await restore_session(
                store, sid, datas, *(times if times is not None else (None, None))
            )
            _count(report, sid, outcome, len(datas))
            if progress is not None:
                progress.advance()
    return report
