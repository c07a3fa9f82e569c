"""Redis Cluster: detecting it, the errors that mean "cluster", and the hot path on one.

A store built from a URL starts with a client of the node the URL names; at
start (:meth:`~tiered_session.hot.tier.HotTier.connect`) ``INFO cluster``
says whether that node belongs to a cluster, and if so the store swaps that
client for a ``RedisCluster`` built from the same URL and options
(``redis_cluster=True`` builds it at once, ``False`` never does). A client
passed in is the caller's: a single-node one on a cluster node is refused.

A single-node client that meets a cluster anyway gets ``MOVED``/``ASK``
replies (redis-py drops the word: ``"11229 10.0.0.7:6379"``) or ``CROSSSLOT``:
:func:`redirect_problem` turns those into the ConfigurationError they are, so
callers and flushers stop instead of retrying.

On a cluster, :class:`ClusterWire` sends each command as the single-node
path does (:mod:`.wire`: packed in one join, written straight to the socket),
on the master of the command's slot: the slot of its first key's hash tag (a
CRC16 of a few bytes, well under a microsecond) looked up in redis-py's slot
map. It follows ``MOVED``, ``ASK`` and ``TRYAGAIN`` (the command did not
run), retries a connection that could not be opened after reloading the slot
map (nothing was sent), and retries nothing else: a command sent on a
connection that then failed may have run. After a failover the next calls
reload the slot map and find the new master.

Example:
    >>> from redis.exceptions import MovedError
    >>> print(redirect_problem(MovedError("11229 10.0.0.7:6379")))  # doctest: +ELLIPSIS
    Redis answered MOVED 11229 10.0.0.7:6379: this is a Redis Cluster, ...
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    MovedError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._errors import ConfigurationError
from .connection import cluster_from_spec, is_embedded, spec_of
from .wire import pack_command, write_packed

__all__ = ["ClusterWire", "cluster_enabled", "redirect_problem", "settle_client"]

_HOW = (
    "build the store with TieredStore.from_url(redis_url=...) (a cluster is detected at "
    "start; redis_cluster=True forces it), or pass redis=RedisCluster(...)"
)


def redirect_problem(e: BaseException) -> ConfigurationError | None:
    """A cluster redirection met by a single-node client, as a ConfigurationError; else None."""
    if isinstance(e, AskError):
        word = "MOVED" if isinstance(e, MovedError) else "ASK"
        return ConfigurationError(
            f"Redis answered {word} {e.slot_id} {e.host}:{e.port}: this is a Redis Cluster, "
            f"and the store talks to a single node of it; {_HOW}"
        )
    if isinstance(e, ResponseError) and str(e).startswith(("CROSSSLOT", "Keys in request")):
        return ConfigurationError(
            f"Redis answered CROSSSLOT ({e}): this is a Redis Cluster, and the store talks to "
            f"a single node of it; {_HOW}"
        )
    return None


async def cluster_enabled(redis: Any) -> bool:
    """Whether the server ``redis`` talks to is a Redis Cluster node (``INFO cluster``).

    A server that refuses ``INFO`` is taken for a single Redis. Connection
    errors are raised.
    """
    try:
        info = await redis.info("cluster")
    except ResponseError as e:
        if "DB index" in str(e):  # (said at once: the store tells what to do)
            raise
        return False
    return bool(int(info.get("cluster_enabled", 0) or 0))


async def settle_client(redis: Any) -> Any:
    """The client the store should use: ``redis``, or a cluster client built in its place.

    Initializes a cluster client (reads the slot map). Raises ConfigurationError
    for a single-node client passed in for a cluster node, redis-py errors when
    Redis cannot be reached.
    """
    if is_embedded(redis):
        return redis
    if isinstance(redis, RedisCluster):
        await redis.initialize()
        return redis
    spec = spec_of(redis)
    if spec is not None and spec.cluster is False:
        return redis
    if not await cluster_enabled(redis):
        return redis
    if spec is None:
        raise ConfigurationError(
            "the Redis client passed in talks to a node of a Redis Cluster (INFO cluster: "
            f"cluster_enabled:1), which serves only its own slots; {_HOW}"
        )
    cluster = cluster_from_spec(spec)
    try:
        await cluster.initialize()
    except BaseException:
        await cluster.aclose()
        raise
    await redis.aclose()  # the node client was the store's own, built from the same URL
    return cluster


# ---------------------------------------------------------------------- the hot path
#: redirections (MOVED, ASK, TRYAGAIN) one call follows before it gives up
_REDIRECTS = 16
#: the shortest pause between two reloads of the slot map after failures
_REFRESH_EVERY = 0.25
#: commands without a key: they run on the connection of the commands before them
_KEYLESS = frozenset({"WAIT", "PING", "INFO", "TIME", "SCRIPT", "ASKING"})
_ASKING = b"*1\r\n$6\r\nASKING\r\n"
_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


class _NotSent(Exception):
    """A connection could not be opened: the command was not sent, it may be retried."""


def _key_of(args: Sequence[Any]) -> Any:
    name = args[0]
    if name in ("EVALSHA", "EVAL"):
        return args[3] if len(args) > 3 and int(args[2]) > 0 else None
    return None if name in _KEYLESS or len(args) < 2 else args[1]


class ClusterWire:
    """``send`` and ``send_many`` on a Redis Cluster: one write to the slot's master.

    Args:
        cluster: an initialized ``RedisCluster`` (``decode_responses=False``).
        timeout: seconds a call waits for a free connection of a node whose
            ``max_connections`` (less a few spare for redis-py's own commands) are busy.
    """

    def __init__(self, cluster: RedisCluster, timeout: float = 20.0) -> None:
        self.cluster = cluster
        self.nodes = cluster.nodes_manager
        self.timeout = timeout
        self._gates: dict[str, asyncio.Semaphore] = {}
        self._stale = False
        self._refreshed = 0.0

    async def send(self, *args: Any) -> Any:
        """Run one command; its error reply is raised."""
        key = _key_of(args)
        if key is None:
            return await self.cluster.execute_command(*args)
        (reply,) = await self.on_slot(key_slot(key), [args])
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def send_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Run commands of one slot in one write (others one by one); error replies in place."""
        slots = {key_slot(k) for c in commands if (k := _key_of(c)) is not None}
        if len(slots) == 1:
            return await self.on_slot(slots.pop(), commands)
        replies: list[Any] = []
        for c in commands:
            try:
                replies.append(await self.send(*c))
            except ResponseError as e:
                replies.append(e)
        return replies

    async def on_slot(self, slot: int, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Run ``commands`` (all on ``slot``) on its master, following redirections."""
        ask: ClusterNode | None = None
        reopened = False
        for _ in range(_REDIRECTS):
            if self._stale:
                await self.refresh()
            node = ask or self.nodes.get_node_from_slot(slot)
            try:
                replies = await self._exchange(node, commands, asking=ask is not None)
            except _NotSent as e:
                if reopened:
                    raise e.__cause__ from None  # type: ignore[misc]
                reopened = True
                await self.refresh()
                continue
            keyed = [r for c, r in zip(commands, replies, strict=True) if _key_of(c) is not None]
            down = next((r for r in keyed if isinstance(r, ClusterDownError)), None)
            if down is not None:
                self._stale = True
                raise RedisConnectionError(f"Redis Cluster cannot serve slot {slot}: {down}")
            if not keyed or not all(isinstance(r, AskError | TryAgainError) for r in keyed):
                return replies
            ask = None
            first = keyed[0]
            if isinstance(first, MovedError):
                await self.nodes.move_slot(first)
            elif isinstance(first, AskError):
                ask = self.nodes.get_node(host=first.host, port=first.port)
                if ask is None:
                    await self.refresh(at_once=True)
            else:
                await asyncio.sleep(0.05)
        raise ClusterError(f"slot {slot} was still redirected after {_REDIRECTS} tries")

    async def by_node(self, calls: Sequence[tuple[int, Sequence[Any]]]) -> list[Any]:
        """Run ``(slot, command)`` calls: one write per master, all masters at once.

        Replies come back in order (error replies in place); a call whose slot
        moved meanwhile is sent again on its own, following the redirection.
        """
        groups: dict[str, list[int]] = {}
        for i, (slot, _) in enumerate(calls):
            groups.setdefault(self.nodes.get_node_from_slot(slot).name, []).append(i)
        replies: list[Any] = [None] * len(calls)

        async def one(idx: list[int]) -> None:
            got = await self.on_slot(calls[idx[0]][0], [calls[i][1] for i in idx])
            for i, reply in zip(idx, got, strict=True):
                replies[i] = await self.send(*calls[i][1]) if isinstance(reply, AskError) else reply

        await asyncio.gather(*(one(idx) for idx in groups.values()))
        return replies

    async def refresh(self, *, at_once: bool = False) -> None:
        """Reload the slot map (at most every ``_REFRESH_EVERY`` seconds unless ``at_once``)."""
        now = time.monotonic()
        if not at_once and now - self._refreshed < _REFRESH_EVERY:
            return
        self._refreshed, self._stale = now, False
        try:
            await self.nodes.initialize()
        except RedisClusterException as e:
            self._stale = True
            raise RedisConnectionError(f"Redis Cluster unreachable: {e}") from e

    async def _exchange(
        self, node: ClusterNode, commands: Sequence[Sequence[Any]], *, asking: bool
    ) -> list[Any]:
        gate = self._gates.get(node.name)
        if gate is None:
            spare = min(8, node.max_connections // 4)
            gate = self._gates[node.name] = asyncio.Semaphore(node.max_connections - spare)
        if gate.locked():  # every connection busy: wait for one, up to the timeout
            try:
                async with asyncio.timeout(self.timeout):
                    await gate.acquire()
            except TimeoutError:
                raise RedisConnectionError(
                    f"no connection to Redis node {node.name} became free within {self.timeout}s"
                ) from None
        else:
            await gate.acquire()  # (free: no wait)
        conn = node.acquire_connection()
        try:
            if conn.should_reconnect():  # type: ignore[no-untyped-call]
                await conn.disconnect()
            if not conn.is_connected:
                try:
                    await conn.connect()  # type: ignore[no-untyped-call]
                except _DOWN as e:
                    self._stale = True
                    raise _NotSent from e
            encode = conn.encoder.encode
            data = b"".join(pack_command(encode, tuple(c)) for c in commands)
            await write_packed(conn, _ASKING + data if asking else data)
            if asking:
                await conn.read_response()
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as e:
                    replies.append(e)
            return replies
        except _DOWN:
            self._stale = True  # the next call reloads the slot map first
            raise
        except AttributeError as e:
            if conn.is_connected:
                raise
            # redis-py's own commands reset every connection of the cluster on some
            # errors (CLUSTERDOWN during a failover), in-use ones too: an outage here.
            self._stale = True
            raise RedisConnectionError("connection closed by the cluster client mid-call") from e
        finally:
            node.release(conn)
            gate.release()
