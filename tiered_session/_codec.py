"""JSON encoding of items and the envelope format used in the Redis list.

An item is encoded once, with orjson, to the exact bytes stored in both tiers.
The hot list holds *envelopes*: ``b"<seq>|<json>"``.

Example:
    >>> from tiered_session._codec import encode_item, envelope, split_envelope
    >>> data = encode_item({"role": "user", "content": "hi"})
    >>> split_envelope(envelope(7, data))
    (7, b'{"role":"user","content":"hi"}')
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from ._errors import CorruptDataError, InvalidInputError

__all__ = ["decode_item", "encode_item", "envelope", "split_envelope"]

# orjson natively serialises datetimes and dataclasses, which the reference
# (json.dumps) rejects; pass them through so both refuse the same items.
_OPTS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


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
        data = _encode_strict(item)
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
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        try:
            return json.loads(data)
        except ValueError as e:
            raise CorruptDataError(f"stored item is not valid JSON: {e}") from e


def envelope(seq: int, data: bytes) -> bytes:
    """Wrap item JSON with its sequence number for the hot list."""
    return b"%d|%s" % (seq, data)


def split_envelope(env: bytes) -> tuple[int, bytes]:
    """Split an envelope into (seq, json bytes); raise CorruptDataError if malformed."""
    sep = env.find(b"|")
    try:
        if sep <= 0:
            raise ValueError("no separator")
        return int(env[:sep]), env[sep + 1 :]
    except ValueError as e:
        raise CorruptDataError(f"malformed hot-tier entry {env[:40]!r}") from e
