"""The hot tier: one typed call per script, plus the few plain commands the store sends.

Every call maps redis-py's failures to :class:`StorageUnavailableError`: a
refused command says so; an unreachable server says what reads and writes do
meanwhile (:func:`redis_down` tells the two apart). Scripts run by EVALSHA and
are loaded on first use on a server (and again after ``SCRIPT FLUSH``).

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

from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import ResponseError as RedisResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._errors import StorageUnavailableError
from . import scripts as lua
from .connection import can_block, direct_pool, is_embedded
from .keys import KeySpace, SessionKeys, ShardKeys
from .scripts import Script
from .wire import command_sender, commands_sender

__all__ = ["Call", "HotTier", "redis_down", "unreachable"]

T = TypeVar("T")

#: a script call ready to send: (script, keys, args)
Call = tuple[Script, Sequence[bytes], Sequence[Any]]


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
    return isinstance(e.__cause__, RedisConnectionError | RedisTimeoutError | OSError)


def _evalsha(call: Call) -> tuple[Any, ...]:
    script, keys, args = call
    return ("EVALSHA", script.sha, len(keys), *keys, *args)


class HotTier:
    """The Redis side of a store: scripts, plain commands and pipelines, errors mapped.

    Args:
        redis: a ``redis.asyncio`` client with ``decode_responses=False``.
        keys: the store's key space.
    """

    def __init__(self, redis: Redis, keys: KeySpace) -> None:
        self.redis = redis
        self.keys = keys
        #: whether the flusher may block on XREAD across its shards
        self.can_block = can_block(redis)
        #: whether this is the embedded in-process Redis
        self.embedded = is_embedded(redis)
        pool = direct_pool(redis)
        self.send = command_sender(redis, pool)
        self.send_many = commands_sender(redis, pool)

    # ------------------------------------------------------------------ plumbing
    async def run(self, script: Script, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        """Run one script (EVALSHA, loading it first where the server lacks it)."""
        try:
            try:
                return await self.send("EVALSHA", script.sha, len(keys), *keys, *args)
            except NoScriptError:
                await self.redis.script_load(script.source)
                return await self.send("EVALSHA", script.sha, len(keys), *keys, *args)
        except RedisResponseError as e:
            raise StorageUnavailableError(f"Redis rejected script {script.name!r}: {e}") from e
        except (RedisError, OSError) as e:
            raise unreachable(e) from e

    async def command(self, *args: Any) -> Any:
        """Run one plain command."""
        try:
            return await self.send(*args)
        except RedisResponseError as e:
            raise StorageUnavailableError(f"Redis rejected {args[0]}: {e}") from e
        except (RedisError, OSError) as e:
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
        is_call = isinstance(last[0], Script)
        cmd = _evalsha(last) if is_call else last
        try:
            replies = await self.send_many([*(_evalsha(c) for c in first), cmd])
        except (RedisError, OSError) as e:
            raise unreachable(e) from e
        reply = replies.pop()
        if isinstance(reply, NoScriptError) and is_call:
            script, keys, args = last
            return replies, await self.run(script, keys, args)
        if isinstance(reply, Exception):
            name = last[0].name if is_call else last[0]
            raise StorageUnavailableError(f"Redis rejected {name}: {reply}")
        return replies, reply

    async def call(self, aw: Awaitable[T]) -> T:
        """Await a redis-py call (a pipeline, a stream read), mapping its failures."""
        try:
            return await aw
        except RedisResponseError as e:
            raise StorageUnavailableError(f"Redis rejected a command: {e}") from e
        except (RedisError, OSError) as e:
            raise unreachable(e) from e

    async def pipeline(self, commands: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Run redis-py commands ``(method name, args)`` in one pipelined round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for name, args in commands:
            getattr(pipe, name)(*args)
        return await self.call(pipe.execute())

    # ------------------------------------------------------------------ session scripts
    def add_call(self, k: SessionKeys, args: Sequence[Any]) -> Call:
        """The ``add`` script call (see ``lua/add.lua`` for ``args``)."""
        return (lua.ADD, k.for_write(), args)

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
        """Read outbox entries under the lease (see ``lua/fread.lua``)."""
        return await self.run(lua.FREAD, sh.for_read_entries(), args)

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
