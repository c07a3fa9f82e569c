"""The one place Redis keys are built, and the key list each script takes.

Every key of a session carries the hash tag of its outbox shard
(``{prefix}:{s<shard>}:...``), so each script touches a single Redis Cluster
slot. The stored key parts are short (they are repeated in every key); their
names here say what they hold.

Example:
    >>> ks = KeySpace("app", shards=16)
    >>> ks.session("user-1").meta
    b'app:{s4}:m:user-1'
    >>> ks.session("user-1").for_read()[1]
    b'app:{s4}:l:user-1'
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

__all__ = ["KeyPart", "KeySpace", "SessionKeys", "ShardKeys"]


class KeyPart:
    """The stored key parts (the layout existing data uses; do not change them)."""

    #: per-session metadata hash (fields: :class:`tiered_session.hot.scripts.Field`)
    META = b":m:"
    #: per-session hot list: a header, then the newest items' entries in seq order
    ITEMS = b":l:"
    #: per-session set of write-through seqs reserved and not settled yet
    RESERVED = b":h:"
    #: per-session eviction generation (outlives the other keys, see SessionKeys)
    GENERATION = b":g:"
    #: per-shard outbox stream (write-behind operations not yet in SQL)
    OUTBOX = b":outbox"
    #: per-shard hash of write-through operations in flight (op id -> start ms)
    INFLIGHT = b":inflight"
    #: per-shard dead-letter stream
    DEAD = b":dead"
    #: per-shard flusher lease (value: the holder's token)
    LEASE = b":lease"
    #: per-shard sorted set: session id -> time of its last write (ms)
    INDEX = b":idx"
    #: per-prefix sorted set of live flushers (member: token, score: expiry ms)
    FLUSHERS = b":flushers"


@dataclass(frozen=True, slots=True)
class ShardKeys:
    """Keys shared by all sessions of one outbox shard."""

    shard: int
    outbox: bytes
    inflight: bytes
    dead: bytes
    lease: bytes
    index: bytes

    def for_read_entries(self) -> tuple[bytes, bytes]:
        """KEYS of ``fread``."""
        return (self.lease, self.outbox)

    def for_ack(self) -> tuple[bytes, bytes]:
        """The shard's KEYS of ``ack`` (each session's ``for_ack`` follows)."""
        return (self.outbox, self.lease)


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """Keys of one session, and of its shard.

    ``gen`` outlives the others: evictions bump it, so a warm-up that read SQL
    before an eviction cannot install that (by then stale) snapshot after it.
    """

    session_id: str
    shard: ShardKeys
    meta: bytes
    items: bytes
    reserved: bytes
    gen: bytes

    def for_write(self) -> tuple[bytes, ...]:
        """KEYS of ``add``, ``pop``, ``clear`` and ``replace``."""
        sh = self.shard
        return (self.meta, self.items, self.reserved, sh.outbox, sh.inflight, sh.index)

    def for_read(self) -> tuple[bytes, bytes]:
        """KEYS of ``read``, ``touch`` and ``refill``."""
        return (self.meta, self.items)

    def for_settle(self) -> tuple[bytes, ...]:
        """KEYS of ``settle``."""
        return (self.meta, self.items, self.reserved, self.shard.inflight, self.shard.outbox)

    def for_recover(self) -> tuple[bytes, ...]:
        """KEYS of ``recover``."""
        return (self.meta, self.items, self.reserved, self.shard.outbox, self.shard.inflight)

    def for_evict(self) -> tuple[bytes, ...]:
        """KEYS of ``warm`` and ``evict``."""
        return (self.meta, self.items, self.reserved, self.gen)

    def for_drop(self) -> tuple[bytes, ...]:
        """KEYS of ``drop``."""
        return (self.meta, self.items, self.reserved, self.shard.index, self.gen)

    def for_ack(self) -> tuple[bytes, bytes, bytes]:
        """The session's part of the KEYS of ``ack``."""
        return (self.meta, self.items, self.reserved)


class KeySpace:
    """Builds the keys of one store (one prefix, one shard count)."""

    def __init__(self, prefix: str, shards: int) -> None:
        self.prefix = prefix
        self.shards = shards
        #: sorted set of live flushers (member: token, score: expiry in ms)
        self.flushers = prefix.encode() + KeyPart.FLUSHERS
        self._shards = tuple(self._shard_keys(i) for i in range(shards))

    def _tag(self, shard: int) -> bytes:
        return f"{self.prefix}:{{s{shard}}}".encode()

    def _shard_keys(self, shard: int) -> ShardKeys:
        tag = self._tag(shard)
        return ShardKeys(
            shard=shard,
            outbox=tag + KeyPart.OUTBOX,
            inflight=tag + KeyPart.INFLIGHT,
            dead=tag + KeyPart.DEAD,
            lease=tag + KeyPart.LEASE,
            index=tag + KeyPart.INDEX,
        )

    def shard_of(self, session_id: str) -> int:
        """Return the shard a session belongs to (stable across processes)."""
        return zlib.crc32(session_id.encode("utf-8", "surrogatepass")) % self.shards

    def shard(self, shard: int) -> ShardKeys:
        """Return the keys of one shard."""
        return self._shards[shard]

    def all_shards(self) -> tuple[ShardKeys, ...]:
        """Return the keys of every shard."""
        return self._shards

    def session(self, session_id: str) -> SessionKeys:
        """Return the keys of one session."""
        shard = self._shards[self.shard_of(session_id)]
        tag = self._tag(shard.shard)
        sid = session_id.encode("utf-8", "surrogatepass")
        return SessionKeys(
            session_id=session_id,
            shard=shard,
            meta=tag + KeyPart.META + sid,
            items=tag + KeyPart.ITEMS + sid,
            reserved=tag + KeyPart.RESERVED + sid,
            gen=tag + KeyPart.GENERATION + sid,
        )
