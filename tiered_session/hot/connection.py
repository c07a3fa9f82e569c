"""Redis clients: the embedded default, clients built from a URL, and what a client can do.

A client built from a URL remembers how (:class:`UrlSpec`): a store can then
swap a single-node client for a cluster client once it has seen a cluster
node (:mod:`.cluster`), and give another event loop a client of its own.

Example:
    >>> import asyncio
    >>> async def main():
    ...     async with embedded_redis() as redis:
    ...         return is_embedded(redis), can_block(redis), await redis.ping()
    >>> asyncio.run(main())
    (True, False, True)
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, cast

import fakeredis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from .._errors import ConfigurationError
from .wire import LeanConnectionPool

__all__ = [
    "MEMORY_URL",
    "UrlSpec",
    "can_block",
    "cluster_from_spec",
    "direct_pool",
    "embedded_redis",
    "is_embedded",
    "redis_for_another_loop",
    "redis_for_store",
    "redis_from_url",
    "spec_of",
    "wait_timeout",
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

#: connections per cluster node beyond ``max_connections``, for redis-py's own
#: commands (pipelines, stream reads) while the store's calls use the rest
CLUSTER_SPARE_CONNECTIONS = 8


@dataclass(frozen=True)
class UrlSpec:
    """How a client was built from a URL: enough to build it again, or its cluster twin."""

    url: str
    options: dict[str, Any] = field(default_factory=dict)
    #: True: a cluster; False: a single Redis; None: whatever the server says at start
    cluster: bool | None = None


_SPECS: weakref.WeakKeyDictionary[Any, UrlSpec] = weakref.WeakKeyDictionary()


def spec_of(redis: Any) -> UrlSpec | None:
    """How ``redis`` was built by :func:`redis_from_url` (None: not built there)."""
    return _SPECS.get(redis)


def embedded_redis() -> Redis:
    """An in-process Redis (fakeredis) with a server of its own."""
    client: Redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=False)
    return client


def redis_from_url(
    url: str, options: dict[str, Any] | None = None, cluster: bool | None = None
) -> Redis:
    """A client of ``url``; ``options`` override the defaults.

    ``cluster``: True builds a ``RedisCluster``; False and None a single-node
    client on a lean blocking pool (see :mod:`.wire`), which the store swaps
    for a cluster client at start (None) if the server is a cluster node.
    """
    if url == MEMORY_URL:
        if cluster:
            raise ConfigurationError("redis_cluster=True needs a redis:// or rediss:// URL")
        return embedded_redis()
    if not url.startswith(_SCHEMES):
        raise ConfigurationError(
            "redis_url must start with redis://, rediss:// or unix:// (or be memory:// for "
            "an in-process Redis)"
        )
    if cluster not in (True, False, None):
        raise ConfigurationError(f"redis_cluster must be True, False or None, got {cluster!r}")
    spec = UrlSpec(url, dict(options or {}), cluster)
    if spec.cluster:
        return cluster_from_spec(spec)
    kwargs = {**URL_DEFAULTS, **spec.options, "decode_responses": False}
    client: Redis = Redis.from_pool(LeanConnectionPool.from_url(url, **kwargs))
    _SPECS[client] = spec
    return client


def redis_for_store(
    url: str | None, options: dict[str, Any] | None, cluster: bool | None
) -> Redis | None:
    """The client a ``from_url`` store owns: None (the embedded default) or one of ``url``."""
    if url is None or (url == MEMORY_URL and not cluster):
        return None
    return redis_from_url(url, options, cluster)


def cluster_from_spec(spec: UrlSpec) -> Redis:
    """A ``RedisCluster`` for a URL naming any of its nodes (typed as the client it stands in for).

    ``max_connections`` is per node (plus a few spare, see
    :data:`CLUSTER_SPARE_CONNECTIONS`); ``timeout`` is how long a call waits for
    a free one.
    """
    if spec.url.startswith("unix://"):
        raise ConfigurationError("a Redis Cluster is reached over TCP: use redis:// or rediss://")
    kwargs = {**URL_DEFAULTS, **spec.options, "decode_responses": False}
    kwargs.pop("timeout", None)  # (the store's cluster calls wait for a connection themselves)
    kwargs["max_connections"] = int(kwargs["max_connections"]) + CLUSTER_SPARE_CONNECTIONS
    try:
        client = RedisCluster.from_url(spec.url, **kwargs)
    except RedisClusterException as e:
        raise ConfigurationError(
            f"redis_url does not fit a Redis Cluster ({e}): a cluster has only db 0, so "
            "drop any /<db> from the URL"
        ) from None
    except TypeError as e:
        raise ConfigurationError(f"redis_kwargs not accepted by RedisCluster: {e}") from None
    _SPECS[client] = UrlSpec(spec.url, spec.options, True)
    return cast(Redis, client)


def wait_timeout(redis: Any) -> float:
    """Seconds a call waits for a free connection of a client built from a URL."""
    spec = spec_of(redis)
    return float((spec.options if spec else {}).get("timeout", URL_DEFAULTS["timeout"]))


def redis_for_another_loop(redis: Redis) -> Redis:
    """A client like ``redis`` (same server, same options) with a pool of its own.

    A connection belongs to the event loop that opened it, so a store used
    from a second loop talks through a second client. The embedded fakeredis
    keeps its server: both clients see the same data.
    """
    spec = spec_of(redis)
    if isinstance(redis, RedisCluster) and spec is not None:
        return cluster_from_spec(spec)
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
    if spec is not None:
        _SPECS[clone] = spec
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
