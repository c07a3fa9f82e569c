"""The registry of a store's runtimes: one per event loop that has used the store.

See :mod:`.runtime` for what a runtime holds and when it closes. The first
loop gets the clients the store was built with; each further loop a copy of
them, made on first use.

Example:
    >>> import asyncio
    >>> from tiered_session import TieredStore
    >>> store = TieredStore(write_mode="behind")
    >>> async def add(n):
    ...     await store.session("s").add_items([{"n": n}])
    ...     return store.hot is store.runtimes.current().hot
    >>> asyncio.run(add(1)), asyncio.run(add(2))   # two loops, one store
    (True, True)
    >>> asyncio.run(store.session("s").get_items())
    [{'n': 1}, {'n': 2}]
    >>> asyncio.run(store.aclose())
"""

from __future__ import annotations

import asyncio
import logging
import threading

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from ..cold.engine import engine_for_another_loop, serves_any_loop
from ..hot.connection import redis_for_another_loop
from .runtime import STOP_GRACE, Runtime, Shared

__all__ = ["Runtimes"]

log = logging.getLogger("tiered_session")


class Runtimes:
    """The runtimes of one store, one per event loop that has used it."""

    def __init__(
        self, shared: Shared, redis: Redis, engine: AsyncEngine, *, owns: tuple[bool, bool]
    ) -> None:
        self.shared = shared
        self._loop_free_engine = serves_any_loop(engine)
        #: the engine every runtime shares (SQLite), closed with the store
        self.shared_engine = engine if self._loop_free_engine else None
        self.owns_shared_engine = owns[1] and self._loop_free_engine
        own_engine = owns[1] and not self._loop_free_engine
        #: the runtime made with the store's own clients
        self.home = Runtime(shared, redis, engine, owns=(owns[0], own_engine))
        self._by_loop: dict[asyncio.AbstractEventLoop, Runtime] = {}
        self._last: tuple[asyncio.AbstractEventLoop | None, Runtime] = (None, self.home)
        self._lock = threading.Lock()

    def current(self) -> Runtime:
        """The running loop's runtime (made on first use); outside a loop, the last one used."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return self._last[1]
        last = self._last
        if last[0] is loop and not last[1].closing:
            return last[1]
        return self._for(loop)

    def _for(self, loop: asyncio.AbstractEventLoop) -> Runtime:
        with self._lock:
            rt = self._by_loop.get(loop)
            if self.shared.closed and (rt is None or rt.closing):
                return self._last[1]  # ready() says the store is closed; open nothing new
            if rt is not None and rt.closing:
                # The loop finalized its async generators and lives on (Runner.run_sync
                # does that after each run): start afresh on it.
                del self._by_loop[loop]
                rt = None
            if rt is None:
                for old in [o for o in self._by_loop if o.is_closed()]:
                    self._by_loop.pop(old).abandon()
                if self.home.loop is None and not self.home.closing:
                    rt = self.home
                else:
                    rt = Runtime(
                        self.shared,
                        redis_for_another_loop(self.home.redis),
                        self.shared_engine or engine_for_another_loop(self.home.engine),
                        owns=(True, not self._loop_free_engine),
                    )
                rt.bind(loop)
                self._by_loop[loop] = rt
            self._last = (loop, rt)
            return rt

    def all(self) -> list[Runtime]:
        """Every runtime made so far (the home one first)."""
        with self._lock:
            found = list(self._by_loop.values())
        return found if self.home in found else [self.home, *found]

    async def close(self, drain_timeout: float) -> None:
        """Close every runtime: on its own loop where that loop runs, this one last."""
        here = self.current()
        rts = self.all()
        owner = self.shared.flusher_owner
        # Nobody drains the outbox on the way out: this loop does it once.
        drain = owner is None and self.shared.config.run_flusher
        drain = drain and self.shared.config.write_mode == "behind"
        rts.sort(key=lambda r: (r is here, r is not owner))
        for rt in rts:
            if rt is here:
                await rt.close(drain_timeout, drain=drain)
            elif rt.loop is None:
                await rt.close(drain_timeout)
            elif rt.loop.is_closed():
                rt.abandon()
            else:
                await _close_on_its_loop(rt, rt.loop, drain_timeout)
        if self.shared_engine is not None and self.owns_shared_engine:
            await self.shared_engine.dispose()


async def _close_on_its_loop(
    rt: Runtime, loop: asyncio.AbstractEventLoop, drain_timeout: float
) -> None:
    """Close a runtime on its own loop: running in another thread, or idle (then on a thread).

    An idle loop is one kept open between calls (``Runner.run_sync`` keeps the
    thread's default loop): a helper thread runs it just for the close.
    """
    try:
        if loop.is_running():
            done = asyncio.run_coroutine_threadsafe(rt.close(drain_timeout), loop)
            await asyncio.wait_for(asyncio.wrap_future(done), drain_timeout + STOP_GRACE)
        else:
            await asyncio.wait_for(
                asyncio.to_thread(loop.run_until_complete, rt.close(drain_timeout)),
                drain_timeout + STOP_GRACE,
            )
    except Exception as e:
        log.warning("could not close the store's clients of another event loop: %s", e)
        rt.abandon()
