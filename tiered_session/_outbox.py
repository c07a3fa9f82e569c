"""Outbox entries: decoding them into SQL operations, and classifying SQL failures.

An entry is a Redis stream entry written by the Lua scripts with fields
``o`` (operation: ``a`` add, ``p`` pop, ``c`` clear, ``x`` undo of an add),
``s`` (session id), ``q`` (first seq), ``t`` (time accepted, ms), and for
adds ``l`` (item lengths) and ``d`` (the items' JSON, concatenated).

Example:
    >>> op, why = parse_entry({b"o": b"a", b"s": b"u", b"q": b"3", b"l": b"2", b"d": b"{}"})
    >>> (op.kind, list(op.rows), why)
    ('a', [(3, '{}')], '')
"""

from __future__ import annotations

from sqlalchemy.exc import DataError, IntegrityError

from ._sql import Op, SeqCollisionError

__all__ = ["is_poison", "pairs", "parse_entry"]


def pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    """Turn a flat ``[field, value, ...]`` reply into a dict."""
    return {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def is_poison(err: Exception) -> bool:
    """True when SQL rejected the data itself (retrying the same entry cannot help)."""
    cause = err.__cause__
    if isinstance(cause, IntegrityError | DataError | SeqCollisionError):
        return True
    code = getattr(getattr(cause, "orig", None), "sqlstate", None)
    # SQLSTATE class 22: data exception; 23: integrity constraint violation.
    return isinstance(code, str) and code[:2] in ("22", "23")


def parse_entry(f: dict[bytes, bytes]) -> tuple[Op | None, str]:
    """Decode an outbox entry into an Op, or explain why it cannot be."""
    try:
        kind = f[b"o"].decode()
        sid = f[b"s"].decode("utf-8", "surrogatepass")
        seq = int(f[b"q"])
        if kind == "a":
            data = f[b"d"]
            rows: list[tuple[int, str]] = []
            pos = 0
            for i, ln in enumerate(f[b"l"].split(b",")):
                n = int(ln)
                rows.append((seq + i, data[pos : pos + n].decode("utf-8")))
                pos += n
            if pos != len(data):
                return None, "item lengths do not match the data"
            return Op("a", sid, seq, rows=rows), ""
        if kind == "p":
            return Op("p", sid, seq), ""
        if kind == "c":
            keep = [int(x) for x in f.get(b"k", b"").split(b",") if x]
            return Op("c", sid, seq, keep=keep), ""
        if kind == "x":
            return Op("x", sid, seq, count=int(f[b"c"])), ""
        return None, f"unknown operation {kind!r}"
    except (KeyError, ValueError, UnicodeDecodeError) as e:
        return None, f"undecodable entry: {type(e).__name__}: {e}"
