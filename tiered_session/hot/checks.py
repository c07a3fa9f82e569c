"""What the store checks of a Redis server before relying on it.

A Redis that evicts any key under memory pressure (``maxmemory-policy
allkeys-*``) silently drops writes not yet in SQL, so it is refused unless
``allow_eviction=True``. ``noeviction`` and the ``volatile-*`` policies are
safe: only keys with a TTL are evicted, and a session's keys get one only
once everything of it is in SQL. A db number the server does not have is a
configuration mistake, not an outage. On a Redis Cluster every master is
checked.

Example:
    >>> import asyncio
    >>> from tiered_session.hot.connection import embedded_redis
    >>> asyncio.run(check_redis(embedded_redis(), allow_eviction=False))
"""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from .._errors import ConfigurationError
from .connection import is_embedded

__all__ = ["SAFE_POLICIES", "check_redis", "db_problem", "eviction_problem"]

log = logging.getLogger("tiered_session")

#: policies under which Redis never evicts a key without a TTL
SAFE_POLICIES = (
    "noeviction",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
)

_unchecked_logged = False


def eviction_problem(policy: str) -> str | None:
    """Why ``policy`` can lose writes, or None when it is safe."""
    if policy in SAFE_POLICIES or not policy.startswith("allkeys-"):
        return None
    return (
        f"Redis evicts any key under memory pressure (maxmemory-policy {policy}): writes not "
        "yet in SQL would be lost. Set maxmemory-policy to noeviction or a volatile-* policy "
        "(volatile-lru, volatile-lfu, volatile-random, volatile-ttl: they only evict keys "
        "with a TTL, and a session's keys get one only once all of it is in SQL), or pass "
        "allow_eviction=True to accept the loss"
    )


async def check_redis(redis: Any, *, allow_eviction: bool) -> None:
    """Raise ConfigurationError for an unsafe eviction policy or a db the server lacks.

    Where ``CONFIG GET`` is not allowed (managed services), logs once how to
    check by hand. An unreachable Redis is left to the calls that need it.
    """
    global _unchecked_logged
    if is_embedded(redis):
        return
    try:
        if isinstance(redis, RedisCluster):
            per_node = await redis.config_get("maxmemory-policy", target_nodes=redis.PRIMARIES)
            replies = list(per_node.values())
        else:
            replies = [await redis.config_get("maxmemory-policy")]
    except ResponseError as e:
        text = str(e)
        wrong_db = db_problem(e, redis)
        if wrong_db is not None:
            raise wrong_db from None
        if not _unchecked_logged:
            _unchecked_logged = True
            log.warning(
                "could not check Redis's maxmemory-policy (CONFIG GET refused: %s); make sure "
                "it is noeviction or volatile-* (an allkeys-* policy loses writes not yet in "
                "SQL): `redis-cli CONFIG GET maxmemory-policy`, or your provider's settings",
                text.splitlines()[0][:120],
            )
        return
    except (RedisConnectionError, RedisError, OSError, RedisClusterException):
        return  # down: the calls that need it say so
    for reply in replies:
        policy = _policy(reply)
        problem = None if policy is None else eviction_problem(policy)
        if problem is not None and not allow_eviction:
            raise ConfigurationError(problem)


def db_problem(e: ResponseError, redis: Any) -> ConfigurationError | None:
    """The ConfigurationError for a db number the server lacks (None for other errors)."""
    text = str(e)
    if "DB index is out of range" not in text and "invalid DB index" not in text:
        return None
    return ConfigurationError(
        f"Redis has no db {_db_of(redis)}: use a db number the server has "
        "(0-15 unless its 'databases' setting says more) in redis_url"
    )


def _policy(reply: Any) -> str | None:
    if isinstance(reply, dict):
        for key, value in reply.items():
            k = key.decode() if isinstance(key, bytes) else str(key)
            if k == "maxmemory-policy":
                return value.decode() if isinstance(value, bytes) else str(value)
    return None


def _db_of(redis: Any) -> Any:
    pool = getattr(redis, "connection_pool", None)
    return getattr(pool, "connection_kwargs", {}).get("db", "?")
