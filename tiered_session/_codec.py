"""JSON encoding of items, and the whole format of the Redis hot list's entries.

An item is encoded once, with orjson, to the exact bytes stored in both tiers.
The hot list (``lua/_prelude.lua`` writes it too) holds:

- a header first, ``b"#<full>|<floor>"``: whether the list is the whole history,
  and the lowest seq it holds (older items live in SQL);
- then one *envelope* per item, in seq order: ``b"<seq>|<json>"``;
- a write-through item whose SQL commit is not confirmed yet is *pending*:
  ``b"~<seq>|<json>"``.

Example:
    >>> from tiered_session._codec import encode_item, envelope, split_envelope
    >>> data = encode_item({"role": "user", "content": "hi"})
    >>> split_envelope(envelope(7, data))
    (7, b'{"role":"user","content":"hi"}')
    >>> parse_header(b"#1|5"), is_pending(b"~8|{}"), pending_seq(b"~8|{}")
    ((True, 5), True, 8)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import orjson

from ._errors import CorruptDataError, InvalidInputError

__all__ = [
    "HEADER",
    "PENDING",
    "decode_item",
    "encode_item",
    "entry_json",
    "envelope",
    "has_pending",
    "is_header",
    "is_pending",
    "parse_header",
    "pending_seq",
    "settled",
    "split_envelope",
]

#: first byte of the list's header entry
HEADER = b"#"
#: first byte of a pending (not yet confirmed) write-through entry
PENDING = b"~"
_SEP = b"|"

# orjson natively serialises datetimes and dataclasses, which the reference
# (json.dumps) rejects; pass them through so both refuse the same items.
_OPTS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


#: the first byte of an item holding integers beyond 64 bits (JSON whitespace)
EXACT = b" "
_EXACT_MARKS = (EXACT, " ")


def encode_item(item: Any) -> bytes:
    """Encode one item to compact JSON bytes, or raise InvalidInputError."""
    if not isinstance(item, dict):
        raise InvalidInputError(f"an item must be a JSON object (dict), got {type(item).__name__}")
    try:
        data = orjson.dumps(item, option=_OPTS)
    except TypeError as e:
        # orjson refuses integers beyond 64 bits, which JSON allows.
        if "Integer exceeds" not in str(e):
            raise InvalidInputError(f"item is not JSON-serialisable: {e}") from e
        # orjson would read them back as floats: the leading space (still JSON)
        # tells decode_item to read this item exactly.
        data = EXACT + _encode_strict(item)
    else:
        # orjson writes NaN/Infinity as null; only then do the slower strict check.
        if b"null" in data:
            _encode_strict(item)
    return data


def _encode_strict(item: Any) -> bytes:
    try:
        return json.dumps(item, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"item is not JSON-serialisable: {e}") from e


def decode_item(data: bytes | str) -> Any:
    """Decode stored JSON; raise CorruptDataError when it is not valid JSON."""
    if data[:1] in _EXACT_MARKS:
        return _decode_exact(data)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _decode_exact(data)


def _decode_exact(data: bytes | str) -> Any:
    try:
        return json.loads(data, parse_constant=_refuse_constant)
    except ValueError as e:
        raise CorruptDataError(f"stored item is not valid JSON: {e}") from e


def _refuse_constant(name: str) -> Any:
    """NaN, Infinity and -Infinity are not JSON: writes refuse them, and so do reads."""
    raise ValueError(f"{name} is not a JSON value")


def envelope(seq: int, data: bytes) -> bytes:
    """Wrap item JSON with its sequence number for the hot list."""
    return b"%d|%s" % (seq, data)


def split_envelope(env: bytes) -> tuple[int, bytes]:
    """Split an envelope into (seq, json bytes); raise CorruptDataError if malformed."""
    sep = env.find(_SEP)
    try:
        if sep <= 0:
            raise ValueError("no separator")
        return int(env[:sep]), env[sep + 1 :]
    except ValueError:
        # (where and what kind, never the entry's bytes: they are user content)
        raise CorruptDataError(
            f"malformed hot-tier entry ({len(env)} bytes, no '<seq>|' prefix)"
        ) from None


def entry_json(env: bytes) -> bytes:
    """The JSON of a settled or pending envelope (ValueError when it has no separator)."""
    return env[env.index(_SEP) + 1 :]


def is_header(env: bytes) -> bool:
    """Whether a list entry is the header."""
    return env[:1] == HEADER


def parse_header(head: bytes) -> tuple[bool, int]:
    """(whole history in the list, floor) of a header entry."""
    return head[1:2] == b"1", int(head[3:])


def is_pending(env: bytes) -> bool:
    """Whether an entry is a pending write-through one."""
    return env[:1] == PENDING


def has_pending(envs: Sequence[bytes]) -> bool:
    """Whether entries include a pending one."""
    return any(e[:1] == PENDING for e in envs)


def pending_seq(env: bytes) -> int:
    """The seq of a pending entry."""
    return int(env[1 : env.index(_SEP)])


def settled(env: bytes) -> bytes:
    """A pending entry as it reads once settled (an envelope)."""
    return env[1:] if env[:1] == PENDING else env
