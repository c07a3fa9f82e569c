"""Settling a store's key layout from Redis: the recorded one, a legacy one found, or a new one.

``<prefix>:layout`` records the layout and shard count the data of a key
prefix uses (``"2 128"``). The first process that finds none looks for keys
of the legacy layout (``<prefix>:{s<n>}:outbox``, ``:idx``, ``:inflight``,
``:dead``, ``:lease`` of the first ``outbox_shards`` shards, 16 unless given):
any of them means a store written before layouts were recorded, which keeps
its layout; otherwise the spread layout is recorded, with ``outbox_shards``
shards or the default for the server (:data:`~.keys.DEFAULT_SHARDS`). The
record is written with ``SET NX``, so processes starting at once agree, and
re-asserted by the flushers (a Redis restarted empty gets it back).

Example:
    >>> import asyncio
    >>> from tiered_session.hot.connection import embedded_redis
    >>> async def main():
    ...     async with embedded_redis() as redis:
    ...         keys = KeySpace("doc")
    ...         await settle_layout(redis, keys, cluster=False)
    ...         return await redis.get(keys.marker), keys.shards
    >>> asyncio.run(main())
    (b'2 16', 16)
"""

from __future__ import annotations

import logging
from typing import Any

from .._errors import ConfigurationError
from .keys import DEFAULT_SHARDS, LEGACY_SHARDS, KeyPart, KeySpace, Layout
from .tags import legacy_tag

__all__ = ["assert_layout", "legacy_keys", "parse_marker", "settle_layout"]

log = logging.getLogger("tiered_session")

#: the per-shard keys whose presence shows a store written with the legacy layout
_SHARD_PARTS = (KeyPart.OUTBOX, KeyPart.INDEX, KeyPart.INFLIGHT, KeyPart.DEAD, KeyPart.LEASE)


def parse_marker(keys: KeySpace, raw: bytes) -> tuple[Layout, int]:
    """The (layout, shards) a ``<prefix>:layout`` value records."""
    try:
        layout_s, shards_s = raw.split()
        layout, shards = Layout(int(layout_s)), int(shards_s)
        if not 1 <= shards <= 4096:
            raise ValueError(shards)
    except ValueError:
        raise ConfigurationError(
            f"Redis key {keys.marker.decode()} holds {raw[:40]!r}, not a tiered-session key "
            "layout ('<layout> <shards>'): another program uses this key prefix; pick "
            "another key_prefix"
        ) from None
    return layout, shards


def legacy_keys(prefix: str, shards: int) -> list[bytes]:
    """The shard keys a store of the legacy layout has once it was used."""
    return [
        prefix.encode() + b":{" + legacy_tag(n) + b"}" + part
        for n in range(shards)
        for part in _SHARD_PARTS
    ]


async def settle_layout(redis: Any, keys: KeySpace, *, cluster: bool) -> None:
    """Adopt the layout Redis records for the prefix, recording one first if none is.

    Raises ConfigurationError when the record contradicts ``outbox_shards``
    or is not a layout record. Redis errors are the caller's to map.
    """
    raw = await redis.get(keys.marker)
    if raw is None:
        legacy_count = keys.requested or LEGACY_SHARDS
        pipe = redis.pipeline(transaction=False)
        for key in legacy_keys(keys.prefix, legacy_count):
            pipe.exists(key)
        if any(await pipe.execute()):
            choice = (Layout.LEGACY, legacy_count)
            log.info(
                "key prefix %r holds data of the legacy key layout: keeping it (%d shards)",
                keys.prefix,
                legacy_count,
            )
        else:
            choice = (Layout.SPREAD, keys.requested or DEFAULT_SHARDS[cluster])
        value = b"%d %d" % choice
        if await redis.set(keys.marker, value, nx=True):
            raw = value
        else:  # another process recorded one meanwhile: theirs wins
            raw = await redis.get(keys.marker) or value
    keys.adopt(*parse_marker(keys, raw))


async def assert_layout(redis: Any, keys: KeySpace) -> None:
    """Record the layout again if Redis lost it; log loudly if it records another one."""
    if await redis.set(keys.marker, keys.marker_value(), nx=True):
        return
    raw = await redis.get(keys.marker)
    if raw is not None and raw != keys.marker_value():
        log.error(
            "Redis key %s records the layout %r, but this process uses %r: processes of "
            "this key prefix disagree on where sessions live (was Redis restarted empty "
            "and a process started with other options?); restart them with the same "
            "outbox_shards",
            keys.marker.decode(),
            raw,
            keys.marker_value(),
        )
