"""``replica_acks``: a write-behind write returns once that many replicas hold it.

Redis replicates asynchronously: a master that fails right after it answered
can take an acknowledged outbox entry with it. With ``replica_acks=N`` every
script that appends to an outbox is sent together with ``WAIT N timeout`` on
the same connection (one write, two replies); fewer than N confirmations
raise :class:`~tiered_session.ReplicaAckError` (unless the script wrote
nothing: its reply opened with a status <= 0, such as ``COLD``, or it read no
entry; the caller then does what that status asks). The flusher's reads are
waited for too (``fread`` then writes once, so its connection's replication
offset covers the entries it read): SQL only gets entries N replicas hold, so
a promoted replica never hands out a seq SQL already has.

Example:
    >>> import asyncio
    >>> async def send(*args): return [1]
    >>> async def send_many(cmds): return [[7], 0]
    >>> send_acked = acked_sender(send, send_many, {"ab12"}, replicas=1, timeout_ms=10)
    >>> asyncio.run(send_acked("GET", b"k"))
    [1]
    >>> asyncio.run(send_acked("EVALSHA", "ab12", 0))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tiered_session._errors.ReplicaAckError: Redis took the write, but 0 of the 1 replicas ...
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from .._errors import ReplicaAckError
from .wire import ManySender, Sender

__all__ = ["WAITED", "acked_sender"]

#: the scripts waited for: those that append write-behind entries to an outbox, and the
#: flusher's read (what it commits to SQL must be on the replicas)
WAITED = frozenset({"add", "badd", "pop", "clear", "replace", "fread"})


def acked_sender(
    send: Sender, send_many: ManySender, shas: Collection[str], *, replicas: int, timeout_ms: int
) -> Sender:
    """``send`` that follows each EVALSHA of ``shas`` with ``WAIT`` on the same connection."""
    wait = ("WAIT", replicas, timeout_ms)

    async def send_acked(*args: Any) -> Any:
        if args[0] != "EVALSHA" or args[1] not in shas:
            return await send(*args)
        reply, acked = await send_many([args, wait])
        for r in (reply, acked):
            if isinstance(r, Exception):
                raise r
        if int(acked) < replicas and _wrote(reply):
            raise ReplicaAckError(
                f"Redis took the write, but {acked} of the {replicas} replicas asked for "
                f"(replica_acks) confirmed it within {timeout_ms} ms: it may be lost if the "
                "master fails now, or it may last; read the session before writing it "
                "again (a blind retry can store it twice)"
            )
        return reply

    return send_acked


def _wrote(reply: Any) -> bool:
    """Whether a waited script's reply says it wrote: a seq or OK first, or entries read."""
    if not isinstance(reply, list) or not reply:
        return False
    return not isinstance(reply[0], int) or reply[0] > 0
