"""Clients built from a URL for a Redis Cluster (no server needed): options, TLS, mistakes."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.exceptions import AskError, MovedError, ResponseError

from tiered_session import ConfigurationError, StoreConfig, TieredStore
from tiered_session.hot.cluster import redirect_problem
from tiered_session.hot.connection import (
    CLUSTER_SPARE_CONNECTIONS,
    redis_for_another_loop,
    redis_from_url,
    spec_of,
)


async def test_redis_cluster_true_builds_a_cluster_client_with_the_url_options() -> None:
    client = redis_from_url("redis://127.0.0.1:7000/0", {"max_connections": 10}, cluster=True)
    assert isinstance(client, RedisCluster)
    kwargs = client.get_connection_kwargs()
    assert kwargs["max_connections"] == 10 + CLUSTER_SPARE_CONNECTIONS
    assert kwargs["socket_timeout"] == 5.0 and kwargs["decode_responses"] is False
    spec = spec_of(client)
    assert spec is not None and spec.cluster is True
    # Another event loop gets a cluster client of its own, built the same way.
    other = redis_for_another_loop(client)
    assert isinstance(other, RedisCluster) and other is not client
    await client.aclose()
    await other.aclose()


async def test_rediss_works_the_same() -> None:
    client = redis_from_url("rediss://user:pw@127.0.0.1:7000", cluster=True)
    assert isinstance(client, RedisCluster)
    assert client.get_connection_kwargs()["connection_class"] is SSLConnection
    await client.aclose()
    # Detected later: the single-node client remembers the URL its cluster twin needs.
    node = redis_from_url("rediss://127.0.0.1:7000")
    assert isinstance(node, Redis)
    spec = spec_of(node)
    assert spec is not None and spec.url.startswith("rediss://") and spec.cluster is None
    await node.aclose()


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("redis://127.0.0.1:7000/3", "only db 0"),
        ("unix:///tmp/redis.sock", "over TCP"),
        ("memory://", "redis:// or rediss://"),
    ],
)
def test_a_url_that_cannot_reach_a_cluster_is_refused(url: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        TieredStore.from_url(url, "sqlite+aiosqlite://", redis_cluster=True)


def test_redis_cluster_must_be_a_bool_or_none() -> None:
    with pytest.raises(ConfigurationError, match="redis_cluster"):
        StoreConfig(redis_cluster="yes")  # type: ignore[arg-type]


def test_cluster_redirections_are_configuration_errors() -> None:
    moved = redirect_problem(MovedError("11229 127.0.0.1:24210"))
    assert moved is not None and "MOVED 11229 127.0.0.1:24210" in str(moved)
    assert "this is a Redis Cluster" in str(moved) and "redis_cluster=True" in str(moved)
    ask = redirect_problem(AskError("1 127.0.0.1:1"))
    assert ask is not None and "ASK 1" in str(ask)
    cross = redirect_problem(ResponseError("CROSSSLOT Keys in request don't hash to the same slot"))
    assert cross is not None and "this is a Redis Cluster" in str(cross)
    assert redirect_problem(ResponseError("NOSCRIPT")) is None
