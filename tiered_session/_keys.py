"""The one place Redis keys are built.

Every key of a session carries the hash tag of its outbox shard, so each
script touches a single Redis Cluster slot.

Example:
    >>> from tiered_session._keys import KeySpace
    >>> ks = KeySpace("app", shards=16)
    >>> ks.session("user-1").meta
    b'app:{s4}:m:user-1'
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

__all__ = ["KeySpace", "SessionKeys", "ShardKeys"]


@dataclass(frozen=True, slots=True)
class ShardKeys:
    """Keys shared by all sessions of one outbox shard."""

    shard: int
    outbox: bytes
    inflight: bytes
    dead: bytes
    lease: bytes
    index: bytes


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """Keys of one session: metadata hash, hot list, reserved-seq set, eviction generation.

    ``gen`` outlives the others: evictions bump it, so a warm-up that read SQL
    before an eviction cannot install that (by then stale) snapshot after it.
    """

    session_id: str
    shard: ShardKeys
    meta: bytes
    items: bytes
    reserved: bytes
    gen: bytes


class KeySpace:
    """Builds the keys of one store (one prefix, one shard count)."""

    def __init__(self, prefix: str, shards: int) -> None:
        self.prefix = prefix
        self.shards = shards
        #: sorted set of live flushers (member: token, score: expiry in ms)
        self.flushers = f"{prefix}:flushers".encode()
        self._shards = [self._shard_keys(i) for i in range(shards)]

    def _tag(self, shard: int) -> bytes:
        return f"{self.prefix}:{{s{shard}}}".encode()

    def _shard_keys(self, shard: int) -> ShardKeys:
        tag = self._tag(shard)
        return ShardKeys(
            shard=shard,
            outbox=tag + b":outbox",
            inflight=tag + b":inflight",
            dead=tag + b":dead",
            lease=tag + b":lease",
            index=tag + b":idx",
        )

    def shard_of(self, session_id: str) -> int:
        """Return the shard a session belongs to (stable across processes)."""
        return zlib.crc32(session_id.encode("utf-8", "surrogatepass")) % self.shards

    def shard(self, shard: int) -> ShardKeys:
        """Return the keys of one shard."""
        return self._shards[shard]

    def all_shards(self) -> list[ShardKeys]:
        """Return the keys of every shard."""
        return list(self._shards)

    def session(self, session_id: str) -> SessionKeys:
        """Return the keys of one session."""
        shard = self._shards[self.shard_of(session_id)]
        tag = self._tag(shard.shard)
        sid = session_id.encode("utf-8", "surrogatepass")
        return SessionKeys(
            session_id=session_id,
            shard=shard,
            meta=tag + b":m:" + sid,
            items=tag + b":l:" + sid,
            reserved=tag + b":h:" + sid,
            gen=tag + b":g:" + sid,
        )

    def session_pattern(self) -> bytes:
        """Return a SCAN pattern matching every session's metadata hash."""
        return f"{self.prefix}:{{s*}}:m:*".encode()

    def session_id_from_meta(self, key: bytes) -> str:
        """Recover the session id from a metadata key."""
        return key.split(b":m:", 1)[1].decode("utf-8", "surrogatepass")
