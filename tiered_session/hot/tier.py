"""The hot tier: one typed call per script, plus the few plain commands the store sends.

Every call maps redis-py's failures to :class:`StorageUnavailableError`: a
refused command says so; an unreachable server says what reads and writes do
meanwhile (:func:`redis_down` tells the two apart); a cluster redirection met
by a single-node client is a ConfigurationError (:mod:`.cluster`). Scripts run
by EVALSHA and are loaded on first use on a server (and again after ``SCRIPT
FLUSH``). :meth:`HotTier.connect` settles the client (a cluster?) and the key
layout before the first call. With ``replica_acks``, every script that appends
to an outbox, and the flusher's reads, are followed by ``WAIT`` on the same
connection.

Example:
    >>> import asyncio
    >>> from tiered_session.hot.connection import embedded_redis
    >>> from tiered_session.hot.keys import KeySpace
    >>> async def main():
    ...     async with embedded_redis() as redis:
    ...         hot = HotTier(redis, KeySpace("doc", shards=1))
    ...         return await hot.read(hot.keys.session("s"), 10)
    >>> asyncio.run(main())
    [-1]
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError
from redis.exceptions import ResponseError as RedisResponseError

from .._errors import ConfigurationError, StorageUnavailableError
from . import scripts as lua
from .checks import db_problem
from .cluster import settle_client
from .connection import can_block, is_embedded
from .keys import KeySpace, SessionKeys, ShardKeys
from .layout import assert_layout, settle_layout
from .link import FAILURES, redis_down, refused, senders, unreachable
from .scripts import Script
from .wire import ManySender, Sender

__all__ = ["Call", "HotTier", "redis_down", "unreachable"]

T = TypeVar("T")

log = logging.getLogger("tiered_session")

#: a script call ready to send: (script, keys, args)
Call = tuple[Script, Sequence[bytes], Sequence[Any]]


def _evalsha(call: Call) -> tuple[Any, ...]:
    script, keys, args = call
    return ("EVALSHA", script.sha, len(keys), *keys, *args)


class HotTier:
    """The Redis side of a store: scripts, plain commands and pipelines, errors mapped.

    Args:
        redis: a ``redis.asyncio`` client (or ``RedisCluster``) with ``decode_responses=False``.
        keys: the store's key space.
        replica_acks: replicas that must confirm each outbox write (0: no ``WAIT``).
        replica_ack_timeout: seconds to wait for them.
    """

    def __init__(
        self,
        redis: Redis,
        keys: KeySpace,
        *,
        replica_acks: int = 0,
        replica_ack_timeout: float = 1.0,
    ) -> None:
        self.keys = keys
        self.replica_acks = replica_acks
        self._ack_ms = max(1, int(replica_ack_timeout * 1000))
        #: whether :meth:`connect` has settled the client and the layout
        self.connected = False
        self._connecting: asyncio.Lock | None = None
        self._down: BaseException | None = None
        self.send: Sender
        self.send_many: ManySender
        self.use(redis)

    def use(self, redis: Redis) -> None:
        """Talk through ``redis`` from now on (set at start; a cluster node's cluster client)."""
        self.redis = redis
        #: whether the flusher may block on XREAD across its shards
        self.can_block = can_block(redis)
        #: whether this is the embedded in-process Redis
        self.embedded = is_embedded(redis)
        #: whether this is a Redis Cluster client
        self.cluster = isinstance(redis, RedisCluster)
        # (batches_commands: whether several commands go out in one write; _wire: a
        # cluster's wire, for calls spread over its masters)
        self._wire, self.batches_commands, self.send, self.send_many = senders(
            redis, self.replica_acks, self._ack_ms
        )

    async def connect(self) -> bool:
        """Settle the client (a cluster node's: a cluster client) and the key layout; idempotent.

        False while Redis cannot be reached; ConfigurationError for a mistake
        (a node's client passed in, a layout contradicting the options, ...).
        """
        if self.connected:
            return True
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self.connected:
                return True
            if self.replica_acks and self.embedded:
                raise ConfigurationError(
                    "replica_acks needs a Redis with replicas; the embedded Redis has none"
                )
            try:
                await _settle_client(self)
            except FAILURES as e:
                log.debug("Redis not reachable (%s); settling the client on the next call", e)
                self._down = e
                return False
            self.connected = True
            return True

    async def _settle(self) -> None:
        """Connect before a first call; a Redis that cannot be reached fails the call."""
        if not await self.connect() and self._down is not None:
            raise unreachable(self._down) from self._down

    async def lengths(self, shards: Sequence[ShardKeys]) -> list[int]:
        """The length of each shard's outbox (on a cluster: one write per master, at once)."""
        if self._wire is None:
            return [int(n) for n in await self.pipeline([("xlen", (s.outbox,)) for s in shards])]
        got = await self.call(self._wire.by_node([(s.slot, ("XLEN", s.outbox)) for s in shards]))
        if any(isinstance(r, Exception) for r in got):
            raise unreachable(next(r for r in got if isinstance(r, Exception)))
        return [int(n) for n in got]

    async def assert_layout(self) -> None:
        """Record the key layout again if Redis lost it (a flusher does this now and then)."""
        await self.call(assert_layout(self.redis, self.keys))

    # ------------------------------------------------------------------ plumbing
    async def run(self, script: Script, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        """Run one script (EVALSHA, loading it first where the server lacks it)."""
        if not self.connected:
            await self._settle()
        try:
            try:
                return await self.send("EVALSHA", script.sha, len(keys), *keys, *args)
            except NoScriptError:
                await self.redis.script_load(script.source)
                return await self.send("EVALSHA", script.sha, len(keys), *keys, *args)
        except RedisResponseError as e:
            raise refused(e, f"script {script.name!r}") from e
        except FAILURES as e:
            raise unreachable(e) from e

    async def command(self, *args: Any) -> Any:
        """Run one plain command."""
        if not self.connected:
            await self._settle()
        try:
            return await self.send(*args)
        except RedisResponseError as e:
            raise refused(e, str(args[0])) from e
        except FAILURES as e:
            raise unreachable(e) from e

    async def run_after(
        self, first: Sequence[Call], last: Call | tuple[Any, ...]
    ) -> tuple[list[Any], Any]:
        """Send script calls ``first``, then ``last`` (a call or a plain command), in one write.

        Returns the replies of ``first`` (an error reply as its exception,
        a script the server lacks as ``NoScriptError``: run it again with
        :meth:`run`) and the reply of ``last``, raised as :meth:`run` or
        :meth:`command` would.
        """
        if not self.connected:
            await self._settle()
        is_call = isinstance(last[0], Script)
        cmd = _evalsha(last) if is_call else last
        try:
            replies = await self.send_many([*(_evalsha(c) for c in first), cmd])
        except FAILURES as e:
            raise unreachable(e) from e
        reply = replies.pop()
        if isinstance(reply, NoScriptError) and is_call:
            script, keys, args = last
            return replies, await self.run(script, keys, args)
        if isinstance(reply, RedisResponseError):
            raise refused(reply, str(last[0].name if is_call else last[0]))
        if isinstance(reply, Exception):
            raise unreachable(reply) from reply
        return replies, reply

    async def call(self, aw: Awaitable[T]) -> T:
        """Await a redis-py call (a pipeline, a stream read), mapping its failures."""
        try:
            return await aw
        except RedisResponseError as e:
            raise refused(e, "a command") from e
        except FAILURES as e:
            raise unreachable(e) from e

    async def pipeline(self, commands: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Run redis-py commands ``(method name, args)`` in one pipelined round trip.

        On a cluster: one round trip per master, all at once.
        """
        if not self.connected:
            await self._settle()
        pipe = self.redis.pipeline(transaction=False)
        for name, args in commands:
            getattr(pipe, name)(*args)
        return await self.call(pipe.execute())

    # ------------------------------------------------------------------ session scripts
    def add_call(self, k: SessionKeys, args: Sequence[Any]) -> Call:
        """The ``add`` script call (see ``lua/add.lua`` for ``args``)."""
        return (lua.ADD, k.for_write(), args)

    def branch_add_call(self, k: SessionKeys, args: Sequence[Any], branch: bytes) -> Call:
        """``add`` on a branch's keys, done only while ``branch`` is current (``lua/badd``)."""
        return (lua.BADD, (*k.for_write(), k.current), (*args, branch))

    def branch_tail_call(self, k: SessionKeys, limit: int, branch: bytes) -> Call:
        """:meth:`tail_command`, done only while ``branch`` is current (``lua/bread.lua``)."""
        return (lua.BREAD, (k.current, k.items), (branch, 0 if limit < 0 else -limit, -1))

    async def pointer_and_tail(self, k: SessionKeys, limit: int) -> tuple[Any, Any]:
        """The session's branch pointer and :meth:`tail_command`'s reply, in one write.

        Cheaper than :meth:`branch_tail_call`'s script where commands batch
        (:attr:`batches_commands`); the caller checks the pointer.
        """
        try:
            pointer, envs = await self.send_many([("GET", k.current), self.tail_command(k, limit)])
        except FAILURES as e:
            raise unreachable(e) from e
        for reply in (pointer, envs):
            if isinstance(reply, Exception):
                raise StorageUnavailableError(f"Redis rejected a read: {reply}")
        return pointer, envs

    async def set_pointer(self, k: SessionKeys, version: int, branch: str) -> bytes:
        """Install a session's branch pointer unless Redis holds a newer one; the one held."""
        return bytes(await self.run(lua.SETPTR, (k.current,), (version, branch)))

    async def read(self, k: SessionKeys, limit: int) -> list[Any]:
        """``{full, floor, entries}`` of the newest ``limit`` items (-1: all), or ``{COLD}``."""
        return list(await self.run(lua.READ, k.for_read(), [limit]))

    def tail_command(self, k: SessionKeys, limit: int) -> tuple[Any, ...]:
        """The plain LRANGE of the newest ``limit`` entries (-1: the whole list with header)."""
        return ("LRANGE", k.items, 0 if limit < 0 else -limit, -1)

    async def touch(self, k: SessionKeys, ttl_ms: int) -> None:
        """Refresh a session's expiry when nothing in it is pending."""
        await self.run(lua.TOUCH, k.for_read(), [ttl_ms])

    async def pop(self, k: SessionKeys, mode: bytes, now_ms: int, n0: int) -> list[Any]:
        """Take the newest item (see ``lua/pop.lua``)."""
        return list(await self.run(lua.POP, k.for_write(), [mode, k.session_id, now_ms, n0]))

    async def clear(self, k: SessionKeys, mode: bytes, now_ms: int, n0: int) -> list[Any]:
        """Empty the session (see ``lua/clear.lua``)."""
        return list(await self.run(lua.CLEAR, k.for_write(), [mode, k.session_id, now_ms, n0]))

    def settle_call(self, k: SessionKeys, args: Sequence[Any]) -> Call:
        """The ``settle`` script call (see ``lua/settle.lua`` for ``args``)."""
        return (lua.SETTLE, k.for_settle(), args)

    async def warm(self, k: SessionKeys, args: Sequence[Any]) -> int:
        """Install a snapshot read from SQL (see ``lua/warm.lua``); returns a Status."""
        return int(await self.run(lua.WARM, k.for_evict(), args))

    async def refill(self, k: SessionKeys, args: Sequence[Any]) -> None:
        """Put older items read from SQL below the floor (see ``lua/refill.lua``)."""
        await self.run(lua.REFILL, k.for_read(), args)

    async def evict(self, k: SessionKeys) -> bool:
        """Drop a session's hot copy unless writes are pending; True when it is gone."""
        return bool(await self.run(lua.EVICT, k.for_evict(), []))

    async def mark_behind(self, k: SessionKeys) -> None:
        """Refuse adds on a session found behind SQL until it reloads."""
        await self.run(lua.MARK_BEHIND, (k.meta,), [])

    async def drop(self, k: SessionKeys, not_after_ms: int) -> tuple[bool, int]:
        """Drop a session and its index entry unless written after ``not_after_ms``.

        Returns (dropped, its last seq or -1 when it was not in Redis).
        """
        res = await self.run(lua.DROP, k.for_drop(), [k.session_id, not_after_ms])
        return int(res[0]) == lua.Status.OK, int(res[1]) if len(res) > 1 else -1

    async def replace(self, k: SessionKeys, args: Sequence[Any]) -> list[Any]:
        """Replace the newest items (compaction; see ``lua/replace.lua``)."""
        return list(await self.run(lua.REPLACE, k.for_write(), args))

    async def recover(self, k: SessionKeys, args: Sequence[Any]) -> bool:
        """Finish an operation whose writer vanished; False if it had settled meanwhile."""
        return bool(await self.run(lua.RECOVER, k.for_recover(), args))

    # ------------------------------------------------------------------ shard scripts
    async def lease(self, sh: ShardKeys, token: str, ttl_ms: int) -> bool:
        """Take or renew a shard's lease; True when held after the call."""
        return int(await self.run(lua.LEASE, (sh.lease,), [token, ttl_ms])) == lua.Status.OK

    async def release(self, sh: ShardKeys, token: str) -> None:
        """Give a shard's lease up if this token holds it."""
        await self.run(lua.RELEASE, (sh.lease,), [token])

    async def heartbeat(self, token: str, ttl_ms: int, *, leave: bool = False) -> int:
        """Register (or remove) a live flusher; return how many are live."""
        return int(
            await self.run(lua.HEARTBEAT, (self.keys.flushers,), [token, ttl_ms, int(leave)])
        )

    async def read_entries(self, sh: ShardKeys, args: Sequence[Any]) -> Any:
        """Read outbox entries under the lease (see ``lua/fread.lua``).

        With ``replica_acks``, returns once that many replicas hold what was read.
        """
        wait = [1] if self.replica_acks else []
        return await self.run(lua.FREAD, sh.for_read_entries(), [*args, *wait])

    async def ack(self, keys: Sequence[bytes], args: Sequence[Any]) -> int:
        """Acknowledge committed entries (see ``lua/ack.lua``); returns a Status."""
        return int(await self.run(lua.ACK, keys, args))

    async def dead(self, sh: ShardKeys, meta: bytes, args: Sequence[Any]) -> None:
        """Move an entry to the dead-letter stream (see ``lua/dead.lua``)."""
        await self.run(lua.DEAD, (sh.outbox, sh.dead, meta), args)

    async def replay(self, sh: ShardKeys, k: SessionKeys | None, entry_id: str) -> bool:
        """Put a dead-lettered entry back at the end of its outbox; False if it is gone."""
        meta, items = (k.meta, k.items) if k is not None else (sh.outbox + b":none",) * 2
        res = await self.run(lua.REPLAY, (sh.dead, sh.outbox, meta, items), [entry_id])
        return int(res) == lua.Status.OK


async def _settle_client(hot: HotTier) -> None:
    """Give ``hot`` the client to use (a cluster client for a cluster node); settle the layout."""
    try:
        client = await settle_client(hot.redis)
        if client is not hot.redis:
            hot.use(client)
        if not hot.keys.settled:
            await settle_layout(hot.redis, hot.keys, cluster=hot.cluster)
    except RedisResponseError as e:
        raise db_problem(e, hot.redis) or refused(e, "the start-up checks") from e
