"""Hash tags of the outbox shards, and the Redis Cluster slot each one lands on.

Redis Cluster hashes a key by its hash tag (the text between the first ``{``
and the next ``}``): ``CRC16(tag) mod 16384`` is the key's slot, and every
master serves a range of slots. Tags picked at random (``{s0}`` ... ``{s15}``,
the legacy layout) land wherever CRC16 puts them: 16 of them split 6/4/6 over
three masters, and every store shares the same 16 slots whatever its prefix.

The spread layout places shard ``i`` of ``n`` exactly on slot
``(base + i * 16384 // n) mod 16384``, with ``base`` derived from the key
prefix: the shards of a store sit at evenly spaced slots, so any master that
serves a fraction ``f`` of the slots serves about ``f * n`` shards (with even
slot ranges, every master holds ``n // masters`` or one more), and two
prefixes use different slots. A tag is ``<shard>.`` plus four characters from
``@ABCDEFGHIJKLMNO`` chosen to hit the slot: CRC16 is linear over GF(2), so
those characters are solved for, not searched.

Example:
    >>> tag = spread_tag("app", 3, 16)
    >>> tag
    b'3.MNCH'
    >>> slot_of(tag) == (slot_of(b"app") + 3 * 16384 // 16) % 16384
    True
"""

from __future__ import annotations

import binascii

__all__ = ["SLOTS", "legacy_tag", "slot_of", "spread_slot", "spread_tag"]

#: hash slots of a Redis Cluster
SLOTS = 16384
_MASK = SLOTS - 1
#: the characters solved for: ``@`` (0x40) plus a nibble each, so 16 free bits
_FREE = 4
_FREE_BASE = 0x40


def slot_of(tag: bytes) -> int:
    """The cluster slot of a hash tag's content (as Redis computes it)."""
    return binascii.crc_hqx(tag, 0) & _MASK


def legacy_tag(shard: int) -> bytes:
    """The tag of a shard in the legacy layout (``s<shard>``, the same for every prefix)."""
    return b"s%d" % shard


def spread_slot(prefix: str, shard: int, shards: int) -> int:
    """The slot shard ``shard`` of ``shards`` occupies in the spread layout of ``prefix``."""
    return (slot_of(prefix.encode()) + shard * SLOTS // shards) & _MASK


def _pivots() -> dict[int, tuple[int, int]]:
    """Per slot bit: (effect on the slot, choice of free bits) with that bit as its highest.

    The slot of ``head + free characters`` is the slot of ``head + "@@@@"`` XOR a
    linear function of the 16 free bits (CRC16 with a zero start is linear, and
    leading zero bytes do not change it); Gaussian elimination inverts it.
    """
    pivots: dict[int, tuple[int, int]] = {}
    for pos in range(_FREE):
        for bit in range(4):
            msg = bytearray(_FREE)
            msg[pos] = 1 << bit
            effect, choice = slot_of(bytes(msg)), 1 << (4 * pos + bit)
            for top in range(13, -1, -1):
                if not effect >> top & 1:
                    continue
                if top not in pivots:
                    pivots[top] = (effect, choice)
                    break
                effect ^= pivots[top][0]
                choice ^= pivots[top][1]
    assert len(pivots) == 14, "the free characters must reach every slot"
    return pivots


_PIVOTS = _pivots()


def spread_tag(prefix: str, shard: int, shards: int) -> bytes:
    """The hash tag content of a shard in the spread layout: it lands on :func:`spread_slot`."""
    head = b"%d." % shard
    want = spread_slot(prefix, shard, shards) ^ slot_of(head + b"@" * _FREE)
    choice = 0
    for top in range(13, -1, -1):
        if want >> top & 1:
            effect, bits = _PIVOTS[top]
            want ^= effect
            choice ^= bits
    return head + bytes(_FREE_BASE | (choice >> (4 * pos) & 15) for pos in range(_FREE))
