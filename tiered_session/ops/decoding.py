"""Turning stored entries and rows back into items, loudly when one is corrupt.

A corrupt item never shortens a history silently: the read fails with
:class:`CorruptDataError`, the problem is logged and counted.

Example:
    >>> from tiered_session._stats import Counters
    >>> from tiered_session.hot.keys import KeySpace
    >>> d = Decoder(Counters())
    >>> d.entries(KeySpace("doc", shards=1).session("s"), [b'1|{"a":1}'])
    [{'a': 1}]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson

from .._codec import EXACT, decode_item, entry_json, split_envelope
from .._errors import CorruptDataError
from .._stats import Counters
from ..hot.keys import SessionKeys

__all__ = ["Decoder"]

log = logging.getLogger("tiered_session")
_loads = orjson.loads


class Decoder:
    """Decodes items; reports corrupt ones in ``counters.corrupt_rows`` and the log."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters

    def entries(self, k: SessionKeys, envs: Sequence[bytes]) -> list[Any]:
        """Items of hot-list envelopes, in order."""
        try:  # fast path: skip "<seq>|", parse the JSON as stored
            datas = [entry_json(e) for e in envs]
            return [decode_item(d) if d[:1] == EXACT else _loads(d) for d in datas]
        except ValueError:  # orjson.JSONDecodeError is a ValueError too
            pass
        pairs = []  # slow path: find and name the bad entry
        for env in envs:
            try:
                pairs.append(split_envelope(env))
            except CorruptDataError as e:
                self.report(k, "Redis hot list", e)
                raise
        return self.rows(k, pairs)

    def rows(self, k: SessionKeys, rows: Sequence[tuple[int, bytes | str]]) -> list[Any]:
        """Items of (seq, json) rows, in order."""
        out = []
        for seq, data in rows:
            try:
                out.append(decode_item(data))
            except CorruptDataError as e:
                self.report(k, f"item seq={seq}", e)
                raise CorruptDataError(
                    f"session {k.session_id!r}: item seq={seq} is not valid JSON; "
                    "repair or delete that row in SQL, then evict the session"
                ) from e
        return out

    def report(self, k: SessionKeys, where: str, e: Exception) -> None:
        """Count and log a corrupt item."""
        self.counters.corrupt_rows += 1
        log.error("corrupt item in %s of session %r: %s", where, k.session_id, e)
