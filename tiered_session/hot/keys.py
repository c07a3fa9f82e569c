"""The one place Redis keys are built, and the key list each script takes.

Every key of a session carries the hash tag of its outbox shard
(``<prefix>:{<tag>}:...``), so each script touches a single Redis Cluster
slot. Two layouts exist (:class:`Layout`): the spread one, whose tags sit at
evenly spaced slots that depend on the prefix (:mod:`.tags`), and the legacy
one (``{s<shard>}``), kept for stores written before the layout was recorded.
Which one a store uses, and its shard count, is settled once from Redis
(``<prefix>:layout``, see :mod:`.layout`); keys handed out before that are
rebound then. The stored key parts are short (they are repeated in every
key); their names here say what they hold.

Example:
    >>> ks = KeySpace("app", shards=16)
    >>> ks.session("user-1").meta
    b'app:{4.IGCI}:m:user-1'
    >>> ks.adopt(Layout.LEGACY, 16)
    >>> ks.session("user-1").for_read()[1]
    b'app:{s4}:l:user-1'
"""

from __future__ import annotations

import weakref
import zlib
from dataclasses import dataclass, fields
from enum import IntEnum

from .._errors import ConfigurationError
from .tags import legacy_tag, slot_of, spread_tag

__all__ = [
    "BRANCH_SEP",
    "DEFAULT_SHARDS",
    "LEGACY_SHARDS",
    "KeyPart",
    "KeySpace",
    "Layout",
    "SessionKeys",
    "ShardKeys",
    "base_session_id",
]

#: outbox shards of a new store when ``outbox_shards`` is not given: on a single
#: Redis, and on a Redis Cluster (spread evenly over 3-30 masters: see docs/cluster.md)
DEFAULT_SHARDS = {False: 16, True: 128}
#: the shard count legacy stores were written with unless told otherwise
LEGACY_SHARDS = 16

#: separates a session id from a branch name in the internal id of a branch's
#: history (``<session>\x1f<branch>``); session ids may not contain it
BRANCH_SEP = "\x1f"


def base_session_id(session_id: str) -> str:
    """The session a branch's internal id belongs to (the id itself for a session)."""
    return session_id.split(BRANCH_SEP, 1)[0]


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
    #: per-session current branch of an advanced session (``<version>|<branch>``)
    CURRENT = b":c:"
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
    #: per-prefix string ``<layout> <shards>``: the key layout the store's data uses
    LAYOUT = b":layout"


class Layout(IntEnum):
    """How shard hash tags are made (the number is what ``<prefix>:layout`` records)."""

    #: ``{s<shard>}``, the same 16 slots for every prefix (stores from before layouts)
    LEGACY = 1
    #: tags at evenly spaced slots rotated by the prefix (see :mod:`.tags`)
    SPREAD = 2


@dataclass(frozen=True, slots=True)
class ShardKeys:
    """Keys shared by all sessions of one outbox shard."""

    shard: int
    outbox: bytes
    inflight: bytes
    dead: bytes
    lease: bytes
    index: bytes
    #: the Redis Cluster slot of every key of the shard and of its sessions
    slot: int = 0

    def for_read_entries(self) -> tuple[bytes, bytes]:
        """KEYS of ``fread``."""
        return (self.lease, self.outbox)

    def for_ack(self) -> tuple[bytes, bytes]:
        """The shard's KEYS of ``ack`` (each session's ``for_ack`` follows)."""
        return (self.outbox, self.lease)


@dataclass(frozen=True, slots=True, weakref_slot=True)
class SessionKeys:
    """Keys of one session, and of its shard.

    ``gen`` outlives the others: evictions bump it, so a warm-up that read SQL
    before an eviction cannot install that (by then stale) snapshot after it.
    Keys made before their :class:`KeySpace` settled its layout are rebound
    (in place, once) when it does.
    """

    session_id: str
    shard: ShardKeys
    meta: bytes
    items: bytes
    reserved: bytes
    gen: bytes
    #: the session's current-branch pointer (shared by all its branches)
    current: bytes

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
    """Builds the keys of one store (one prefix, one layout, one shard count).

    Args:
        prefix: the store's key prefix.
        shards: the outbox shard count asked for; None takes the count recorded
            in Redis, else :data:`DEFAULT_SHARDS` (see :meth:`adopt`).
    """

    def __init__(self, prefix: str, shards: int | None = None) -> None:
        self.prefix = prefix
        #: the shard count given by the caller (None: whatever Redis records)
        self.requested = shards
        #: sorted set of live flushers (member: token, score: expiry in ms)
        self.flushers = prefix.encode() + KeyPart.FLUSHERS
        #: the string recording the layout (``<layout> <shards>``)
        self.marker = prefix.encode() + KeyPart.LAYOUT
        #: whether the layout has been settled from Redis (:meth:`adopt`)
        self.settled = False
        self._early: weakref.WeakSet[SessionKeys] = weakref.WeakSet()
        self._set(Layout.SPREAD, shards or DEFAULT_SHARDS[False])

    def _set(self, layout: Layout, shards: int) -> None:
        self.layout = layout
        self.shards = shards
        self._shards = tuple(self._shard_keys(i) for i in range(shards))

    def adopt(self, layout: Layout, shards: int) -> None:
        """Use this layout and shard count from now on; rebind keys handed out before.

        Raises ConfigurationError when the caller asked for another shard count.
        """
        if self.requested is not None and shards != self.requested:
            raise ConfigurationError(
                f"the Redis data of key_prefix {self.prefix!r} uses {shards} outbox shards "
                f"(recorded in {self.marker.decode()}), not {self.requested}: pass "
                f"outbox_shards={shards}, or leave it unset (changing the shard count of a "
                "live store would move sessions away from their pending writes)"
            )
        if (layout, shards) != (self.layout, self.shards):
            self._set(layout, shards)
            for k in list(self._early):
                fresh = self.session(k.session_id)
                for f in fields(SessionKeys):  # (frozen: rebound here, and only here)
                    object.__setattr__(k, f.name, getattr(fresh, f.name))
        self.settled = True
        self._early = weakref.WeakSet()

    def marker_value(self) -> bytes:
        """What ``<prefix>:layout`` holds for this key space."""
        return b"%d %d" % (self.layout, self.shards)

    def _tag(self, shard: int) -> bytes:
        if self.layout == Layout.LEGACY:
            return legacy_tag(shard)
        return spread_tag(self.prefix, shard, self.shards)

    def _shard_keys(self, shard: int) -> ShardKeys:
        tag = self._tag(shard)
        head = self.prefix.encode() + b":{" + tag + b"}"
        return ShardKeys(
            shard=shard,
            outbox=head + KeyPart.OUTBOX,
            inflight=head + KeyPart.INFLIGHT,
            dead=head + KeyPart.DEAD,
            lease=head + KeyPart.LEASE,
            index=head + KeyPart.INDEX,
            slot=slot_of(tag),
        )

    def shard_of(self, session_id: str) -> int:
        """Return the shard a session belongs to (stable across processes).

        A branch's history lives in the shard of its session, so one script can
        touch the session's pointer and the branch's keys.
        """
        base = base_session_id(session_id)
        return zlib.crc32(base.encode("utf-8", "surrogatepass")) % self.shards

    def shard(self, shard: int) -> ShardKeys:
        """Return the keys of one shard."""
        return self._shards[shard]

    def all_shards(self) -> tuple[ShardKeys, ...]:
        """Return the keys of every shard."""
        return self._shards

    def session(self, session_id: str) -> SessionKeys:
        """Return the keys of one session."""
        shard = self._shards[self.shard_of(session_id)]
        head = shard.outbox[: -len(KeyPart.OUTBOX)]  # <prefix>:{<tag>}
        sid = session_id.encode("utf-8", "surrogatepass")
        base = base_session_id(session_id).encode("utf-8", "surrogatepass")
        keys = SessionKeys(
            session_id=session_id,
            shard=shard,
            meta=head + KeyPart.META + sid,
            items=head + KeyPart.ITEMS + sid,
            reserved=head + KeyPart.RESERVED + sid,
            gen=head + KeyPart.GENERATION + sid,
            current=head + KeyPart.CURRENT + base,
        )
        if not self.settled:
            self._early.add(keys)
        return keys
