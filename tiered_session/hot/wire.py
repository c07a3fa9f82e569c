"""The one adapter to redis-py internals: a lean blocking pool and the one-command hot path.

Every session call is one command (an EVALSHA, or an LRANGE) on one pooled
connection. redis-py's generic path around a command (retry wrapper,
observability hooks, a pool lock and a readiness probe on every checkout) costs
more client time than the command itself, so the store sends its own commands
straight over a pooled connection:

- :class:`LeanConnectionPool` hands out an idle connection without a lock or a
  probe, and when all ``max_connections`` are busy makes callers wait (up to
  ``timeout`` seconds) instead of failing with "Too many connections".
- :func:`command_sender` returns ``send(*args)``: check out, write the command
  (packed in one join, written straight to the socket: redis-py's write path
  starts a task per command for its timeout), read the reply, give the
  connection back. A connection that fails mid-command is
  disconnected by redis-py and reconnects on its next use. Nothing is retried:
  the store's writes are scripts that must run at most once.

On a Redis Cluster, :class:`~tiered_session.hot.cluster.ClusterWire` does the
same on the master of each command's slot, with :func:`write_packed` and
:func:`pack_command`. Clients the direct paths cannot serve (fakeredis, a single-connection client)
go through ``execute_command`` unchanged.

This is the only module that touches redis-py's private members (the pool's
connection lists, a connection's stream reader and writer). ``redis`` is pinned
to the tested range in ``pyproject.toml``, and ``tests/test_redis_io.py`` fails
loudly when those members change shape.

Example:
    >>> pool = LeanConnectionPool.from_url("redis://127.0.0.1:6379/0", max_connections=8)
    >>> pool.max_connections
    8
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError as RedisResponseError

__all__ = [
    "LeanConnectionPool",
    "ManySender",
    "Sender",
    "command_sender",
    "commands_sender",
    "pack_command",
    "write_packed",
]

Sender = Callable[..., Awaitable[Any]]
ManySender = Callable[[Sequence[Sequence[Any]]], Awaitable[list[Any]]]


class LeanConnectionPool(ConnectionPool):
    """A connection pool that blocks when exhausted and adds nothing per checkout.

    Args:
        timeout: seconds a caller waits for a free connection when all
            ``max_connections`` are in use; then ``ConnectionError``.
        **kwargs: as for ``redis.asyncio.ConnectionPool``.
    """

    def __init__(self, *args: Any, timeout: float = 20.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout = timeout
        self._waiters: collections.deque[asyncio.Future[AbstractConnection]] = collections.deque()

    async def get_connection(
        self, command_name: Any = None, *keys: Any, **options: Any
    ) -> AbstractConnection:
        """Return a connected connection, waiting for one when all are busy."""
        try:
            conn = self._available_connections.pop()
        except IndexError:
            if len(self._in_use_connections) >= self.max_connections:
                conn = await self._wait()
            else:
                conn = self.make_connection()  # type: ignore[no-untyped-call]
        self._in_use_connections.add(conn)
        if _closed_by_peer(conn):
            # The server closed it while idle (a restart): reconnect now rather than
            # fail the command, which could not tell whether a write was applied.
            await conn.disconnect()
        if not conn.is_connected:
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
            except BaseException:
                await self.release(conn)
                raise
        return conn

    async def _wait(self) -> AbstractConnection:
        fut: asyncio.Future[AbstractConnection] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout(self.timeout):
                return await fut
        except BaseException as e:
            if fut.done() and not fut.cancelled():
                # A connection was handed over just as the wait ended.
                if isinstance(e, TimeoutError):
                    return fut.result()
                await self.release(fut.result())  # cancelled: pass it to the next caller
                raise
            fut.cancel()
            if isinstance(e, TimeoutError):
                raise RedisConnectionError(
                    f"no Redis connection became free within {self.timeout}s "
                    f"(max_connections={self.max_connections})"
                ) from None
            raise

    async def release(self, connection: AbstractConnection) -> None:
        """Give a connection back: to the longest waiter, else to the idle list."""
        self._in_use_connections.discard(connection)
        if connection.should_reconnect():  # type: ignore[no-untyped-call]
            await connection.disconnect()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._in_use_connections.add(connection)
                waiter.set_result(connection)
                return
        self._available_connections.append(connection)


def _closed_by_peer(conn: AbstractConnection) -> bool:
    """True when the event loop has already seen the server close this idle connection."""
    reader = conn._reader
    return reader is not None and (reader.at_eof() or reader.exception() is not None)


async def write_packed(conn: Any, data: bytes) -> None:
    """Write packed commands to a connection: straight to its socket when they are small."""
    writer = conn._writer
    if writer is None or len(data) > _WRITE_NOW_MAX or writer.transport.is_closing():
        await conn.send_packed_command(data, False)  # connects, or chunks and drains
    else:
        writer.write(data)
        if writer.transport.get_write_buffer_size():  # socket full: drain, with timeout
            await conn.send_packed_command([], False)


def command_sender(redis: Any, pool: ConnectionPool | None) -> Sender:
    """Return ``send(*args)`` that runs one command on ``redis`` and returns the raw reply.

    ``pool``: the client's pool when its connections may be used directly
    (see :func:`tiered_session.hot.connection.direct_pool`), else None.
    """
    if pool is None:

        async def send_generic(*args: Any) -> Any:
            return await redis.execute_command(*args)

        return send_generic
    get, release = pool.get_connection, pool.release

    async def send(*args: Any) -> Any:
        conn = await get()  # type: ignore[no-untyped-call]
        try:
            await write_packed(conn, pack_command(conn.encoder.encode, args))
            return await conn.read_response()
        finally:
            await release(conn)

    return send


def commands_sender(redis: Any, pool: ConnectionPool | None) -> ManySender:
    """Return ``send_many(commands)``: the commands in one write, their replies in order.

    An error reply comes back as its exception, in its place; the commands run
    in order on one connection. Clients without the direct path run them one
    after another.
    """
    if pool is None:

        async def send_many_generic(commands: Sequence[Sequence[Any]]) -> list[Any]:
            replies: list[Any] = []
            for args in commands:
                try:
                    replies.append(await redis.execute_command(*args))
                except RedisResponseError as e:
                    replies.append(e)
            return replies

        return send_many_generic
    get, release = pool.get_connection, pool.release

    async def send_many(commands: Sequence[Sequence[Any]]) -> list[Any]:
        conn = await get()  # type: ignore[no-untyped-call]
        try:
            encode = conn.encoder.encode
            await write_packed(conn, b"".join(pack_command(encode, tuple(c)) for c in commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except RedisResponseError as e:
                    replies.append(e)
            return replies
        finally:
            await release(conn)

    return send_many


#: a command up to this size is written straight to the socket
_WRITE_NOW_MAX = 256 * 1024


def pack_command(encode: Callable[[Any], bytes], args: tuple[Any, ...]) -> bytes:
    """Pack one command in the Redis protocol, in one join.

    The same bytes as redis-py's ``pack_command`` for commands whose name has no
    space, at about a third of its cost (it re-joins a growing buffer per
    argument). ``encode`` (the connection's encoder) handles types other than
    bytes, str and int, and refuses the ones Redis cannot take.
    """
    out = [b"*%d\r\n" % len(args)]
    put = out.append
    for a in args:
        t = type(a)
        if t is not bytes:
            a = a.encode() if t is str else b"%d" % a if t is int else encode(a)
        put(b"$%d\r\n" % len(a))
        put(a)
        put(b"\r\n")
    return b"".join(out)
