"""Redis clients: the embedded default, clients built from a URL, and what a client can do.

Example:
    >>> import asyncio
    >>> async def main():
    ...     async with embedded_redis() as redis:
    ...         return is_embedded(redis), can_block(redis), await redis.ping()
    >>> asyncio.run(main())
    (True, False, True)
"""

from __future__ import annotations

from typing import Any

import fakeredis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster

from .._errors import ConfigurationError
from .wire import LeanConnectionPool

__all__ = [
    "MEMORY_URL",
    "can_block",
    "direct_pool",
    "embedded_redis",
    "is_embedded",
    "redis_for_another_loop",
    "redis_from_url",
]

#: client options of a store built from a URL: fail fast when Redis is
#: unreachable or paused rather than hang; a burst of more concurrent calls
#: than connections waits up to ``timeout`` for a free one
URL_DEFAULTS: dict[str, Any] = {
    "socket_timeout": 5.0,
    "socket_connect_timeout": 2.0,
    "max_connections": 128,
    "timeout": 20.0,
}

_SCHEMES = ("redis://", "rediss://", "unix://")

#: the URL that asks for the embedded, in-process Redis by name
MEMORY_URL = "memory://"


def embedded_redis() -> Redis:
    """An in-process Redis (fakeredis) with a server of its own."""
    client: Redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=False)
    return client


def redis_from_url(url: str, options: dict[str, Any] | None = None) -> Redis:
    """A client on a lean blocking pool (see :mod:`.wire`); ``options`` override the defaults."""
    if url == MEMORY_URL:
        return embedded_redis()
    if not url.startswith(_SCHEMES):
        raise ConfigurationError(
            "redis_url must start with redis://, rediss:// or unix:// (or be memory:// for "
            "an in-process Redis)"
        )
    kwargs = {**URL_DEFAULTS, **(options or {}), "decode_responses": False}
    return Redis.from_pool(LeanConnectionPool.from_url(url, **kwargs))


def redis_for_another_loop(redis: Redis) -> Redis:
    """A client like ``redis`` (same server, same options) with a pool of its own.

    A connection belongs to the event loop that opened it, so a store used
    from a second loop talks through a second client. The embedded fakeredis
    keeps its server: both clients see the same data.
    """
    if isinstance(redis, RedisCluster):
        raise ConfigurationError(
            "a RedisCluster client passed in serves one event loop: use the store from "
            "the loop that made it, or give each loop its own store"
        )
    pool = redis.connection_pool
    options: dict[str, Any] = {
        "connection_class": pool.connection_class,
        "max_connections": pool.max_connections,
        **pool.connection_kwargs,
    }
    timeout = getattr(pool, "timeout", None)
    if timeout is not None:  # LeanConnectionPool, BlockingConnectionPool
        options["timeout"] = timeout
    clone: Redis = type(redis).from_pool(type(pool)(**options))
    return clone


def is_embedded(redis: Any) -> bool:
    """Whether ``redis`` is an in-process fakeredis client."""
    return isinstance(redis, fakeredis.FakeAsyncRedis)


def can_block(redis: Any) -> bool:
    """Whether a blocking XREAD across shards works: not on fakeredis, nor on a Cluster."""
    return not is_embedded(redis) and not isinstance(redis, RedisCluster)


def direct_pool(redis: Any) -> ConnectionPool | None:
    """The pool whose connections the hot path may use directly, or None.

    Not fakeredis (no socket), not a Cluster (one pool per node), not a client
    pinned to one connection.
    """
    pool = getattr(redis, "connection_pool", None)
    direct = (
        isinstance(redis, Redis)
        and isinstance(pool, ConnectionPool)
        and not is_embedded(redis)
        and getattr(redis, "connection", None) is None
        and not getattr(redis, "single_connection_client", False)
    )
    return pool if direct else None
