"""Outbox entries: stream entries written by the scripts, decoded into SQL operations.

An entry's fields (named in :class:`tiered_session.hot.scripts.EntryField`):
the operation (add, pop, clear, or undo of a write-through add that failed),
the session id, the first seq, the time accepted (ms), and for adds the item
lengths and the items' JSON, concatenated.

Example:
    >>> op, why = parse_entry({b"o": b"a", b"s": b"u", b"q": b"3", b"l": b"2", b"d": b"{}"})
    >>> (op.kind, list(op.rows), why)
    ('a', [(3, '{}')], '')
"""

from __future__ import annotations

from dataclasses import dataclass

from ..cold.tier import Op
from ..hot.scripts import EntryField, OpKind

__all__ = ["Entry", "pairs", "parse_entry"]


@dataclass
class Entry:
    """One outbox entry read by a flusher."""

    id: bytes
    fields: dict[bytes, bytes]
    op: Op | None = None
    error: str = ""

    @property
    def session_id(self) -> str:
        """The entry's session id ('' when the entry lacks one)."""
        return self.fields.get(EntryField.SESSION, b"").decode("utf-8", "replace")

    @property
    def is_barrier(self) -> bool:
        """Whether the entry changes rows already in SQL (anything but an add)."""
        return self.fields.get(EntryField.OP, OpKind.ADD) != OpKind.ADD


def pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    """Turn a flat ``[field, value, ...]`` reply into a dict."""
    return {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def parse_entry(f: dict[bytes, bytes]) -> tuple[Op | None, str]:
    """Decode an outbox entry into an Op, or explain why it cannot be."""
    try:
        kind = f[EntryField.OP]
        sid = f[EntryField.SESSION].decode("utf-8", "surrogatepass")
        seq = int(f[EntryField.SEQ])
        if kind == OpKind.ADD:
            data = f[EntryField.DATA]
            rows: list[tuple[int, str]] = []
            pos = 0
            for i, ln in enumerate(f[EntryField.LENGTHS].split(b",")):
                n = int(ln)
                rows.append((seq + i, data[pos : pos + n].decode("utf-8")))
                pos += n
            if pos != len(data):
                return None, "item lengths do not match the data"
            return Op("a", sid, seq, rows=rows), ""
        if kind == OpKind.POP:
            return Op("p", sid, seq), ""
        if kind == OpKind.CLEAR:
            keep = [int(x) for x in f.get(EntryField.KEEP, b"").split(b",") if x]
            return Op("c", sid, seq, keep=keep), ""
        if kind == OpKind.UNDO:
            return Op("x", sid, seq, count=int(f[EntryField.COUNT])), ""
        return None, f"unknown operation {kind.decode('utf-8', 'replace')!r}"
    except (KeyError, ValueError, UnicodeDecodeError) as e:
        return None, f"undecodable entry: {type(e).__name__}: {e}"
