"""What a hot tier's client is: its senders, and how its failures read.

Every hot-tier call maps redis-py's failures to
:class:`~tiered_session.StorageUnavailableError`: a refused command says so
(:func:`refused`; a cluster redirection met by a single-node client is a
ConfigurationError instead), an unreachable server says what reads and writes
do meanwhile (:func:`unreachable`; :func:`redis_down` tells the two apart).
:func:`senders` picks the path each client's commands take: the direct one
(:mod:`.wire`), the cluster one (:class:`~.cluster.ClusterWire`), or redis-py's,
with ``WAIT`` after outbox writes when ``replica_acks`` asks for it (:mod:`.acks`).

Example:
    >>> redis_down(unreachable(OSError("refused")))
    False
    >>> e = StorageUnavailableError("x"); e.__cause__ = OSError(); redis_down(e)
    True
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterError, RedisClusterException, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError as RedisResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._errors import ConfigurationError, StorageUnavailableError
from . import scripts as lua
from .acks import WAITED, acked_sender
from .cluster import ClusterWire, redirect_problem
from .connection import direct_pool, wait_timeout
from .wire import ManySender, Sender, command_sender, commands_sender

__all__ = ["FAILURES", "redis_down", "refused", "senders", "unreachable"]

#: what redis-py raises when a server (or a cluster's slot) cannot be reached
FAILURES = (RedisError, OSError, RedisClusterException)


def unreachable(e: BaseException) -> StorageUnavailableError:
    """The error every hot-tier call raises when Redis cannot be reached."""
    reason = str(e).strip() or (
        "no answer in time" if isinstance(e, TimeoutError | RedisTimeoutError) else "no message"
    )
    return StorageUnavailableError(
        f"Redis unreachable ({type(e).__name__}: {reason}). Reads fall back to SQL; writes are "
        "refused until Redis is back (a write-behind write that timed out may still have been "
        "accepted): retry later"
    )


def redis_down(e: StorageUnavailableError) -> bool:
    """True when the error says Redis could not be reached (not that it refused)."""
    down = RedisConnectionError | RedisTimeoutError | OSError | ClusterError
    return isinstance(e.__cause__, down | RedisClusterException)


def refused(e: RedisResponseError, what: str) -> ConfigurationError | StorageUnavailableError:
    """The error for a reply that refused ``what`` (a cluster redirection: a ConfigurationError)."""
    return redirect_problem(e) or StorageUnavailableError(f"Redis rejected {what}: {e}")


def senders(
    redis: Redis, acks: int, ack_ms: int
) -> tuple[ClusterWire | None, bool, Sender, ManySender]:
    """(a cluster's wire or None, whether commands batch in one write, ``send``, ``send_many``)."""
    wire = None
    if isinstance(redis, RedisCluster):
        wire = ClusterWire(redis, wait_timeout(redis))
        batches, send, send_many = True, wire.send, wire.send_many
    else:
        pool = direct_pool(redis)
        batches = pool is not None
        send, send_many = command_sender(redis, pool), commands_sender(redis, pool)
    if acks:
        shas = {s.sha for s in lua.ALL if s.name in WAITED}
        send = acked_sender(send, send_many, shas, replicas=acks, timeout_ms=ack_ms)
    return wire, batches, send, send_many
