"""A store's clients and parts on one event loop, and the registry that finds them.

Connections belong to the event loop that opened them (an asyncpg
connection, a Redis socket's stream reader). So a store keeps one
:class:`Runtime` per loop that uses it: the first loop gets the clients the
store was built with, each further loop a copy of them
(:func:`~tiered_session.hot.connection.redis_for_another_loop`,
:func:`~tiered_session.cold.engine.engine_for_another_loop`; a SQLite engine
serves every loop as it is). A runtime closes its connections when its loop
shuts down (``asyncio.run``, ``Runner.run_sync`` and pytest-asyncio finalize
async generators before closing the loop: a runtime keeps one open for this)
or at the store's ``aclose()``, whichever comes first.

One runtime at a time runs the in-process flusher. When its loop ends, the
loop's last act is to drain the write-behind outbox (within the store's drain
timeout), and the next loop that uses the store starts a flusher of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import warnings
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from .._config import StoreConfig
from .._errors import ConfigurationError, StorageUnavailableError, StoreClosedError
from .._stats import Counters
from ..cold.engine import LoopFreeLock
from ..cold.errors import configuration_problem
from ..cold.schema import ensure_schema
from ..cold.tier import SqlTier
from ..hot.checks import check_redis
from ..hot.keys import KeySpace, SessionKeys
from ..hot.tier import HotTier
from ..outbox.flusher import Flusher
from ..outbox.waiting import wait_committed, wait_flushed
from .admin import Admin
from .compaction import Compaction
from .expiry import ExpiryClock
from .modes import WriteBehind, WriteStrategy
from .reads import Reads
from .through import WriteThrough
from .transfer import Transfer
from .warming import Warmer
from .writes import Writes

__all__ = ["STOP_GRACE", "Runtime", "Shared"]

log = logging.getLogger("tiered_session")

#: seconds ``close`` waits for the flusher beyond its drain timeout before cancelling it
STOP_GRACE = 5.0


@dataclass
class Shared:
    """What every runtime of one store shares: options, keys, counters, state."""

    config: StoreConfig
    keys: KeySpace
    counters: Counters
    create_tables: bool
    closed: bool = False
    schema_checked: bool = False
    #: the runtime whose loop runs the in-process flusher, if any
    flusher_owner: Runtime | None = None
    #: seconds a closing runtime gives the flusher to drain
    drain_timeout: float = 10.0
    #: in-process flushers started so far (more than one: several loops used the store)
    flushers_started: int = 0
    warned_loops: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: one first start at a time across loops (the first one initializes the SQL dialect)
    starting: LoopFreeLock = field(default_factory=LoopFreeLock)


class Runtime:
    """The tiers and the parts of a store, on one event loop."""

    def __init__(
        self, shared: Shared, redis: Redis, engine: AsyncEngine, *, owns: tuple[bool, bool]
    ) -> None:
        cfg = shared.config
        self.shared = shared
        self.config = cfg
        self.counters = shared.counters
        self.engine = engine
        self._owns_redis, self._owns_engine = owns
        self.hot = HotTier(
            redis,
            shared.keys,
            replica_acks=cfg.replica_acks,
            replica_ack_timeout=cfg.replica_ack_timeout,
        )
        self.sql = SqlTier(engine, cfg.sessions_table, cfg.messages_table)
        self.mode: WriteStrategy = (
            WriteBehind()
            if cfg.write_mode == "behind"
            else WriteThrough(self.hot, self.sql, cfg, self._wait_committed)
        )
        expiry = ExpiryClock(cfg.hot_ttl)
        warmer = Warmer(self.hot, self.sql, cfg, self.counters, expiry)
        self.reads = Reads(self.hot, self.sql, self.counters, warmer, self.mode, expiry, self.ready)
        self.writes = Writes(
            self.hot, cfg, self.counters, warmer, self.mode, expiry, self.ready, self.wake
        )
        self.compaction = Compaction(self.hot, warmer, self.mode, cfg.hot_items, self.ready)
        self.admin = Admin(self.hot, self.sql, self.writes, self.flush, self.ready)
        self.transfer = Transfer(self.hot, self.sql, self.admin, self.flush, self.ready)
        #: the loop this runtime serves (None until first used)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started = False
        self.closing = False
        self.flusher: Flusher | None = None
        self.flusher_task: asyncio.Task[None] | None = None
        self._start_lock: asyncio.Lock | None = None
        self._stop: asyncio.Event | None = None
        self._watch: AsyncGenerator[None, None] | None = None
        self._in_watch = False

    @property
    def redis(self) -> Redis:
        """The Redis client (a cluster client once :meth:`start` found a cluster node)."""
        return self.hot.redis

    # ------------------------------------------------------------------ lifecycle
    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve ``loop`` from now on, and close with it (called on that loop)."""
        self.loop = loop
        watch = self._until_loop_ends()
        # Run it to its first yield: the loop now finalizes it at shutdown. A loop
        # that already finalized once (and lives on) warns of every async
        # generator started on it; this one is meant for its next finalization.
        with warnings.catch_warnings(), contextlib.suppress(StopIteration):
            warnings.simplefilter("ignore", ResourceWarning)
            watch.asend(None).send(None)
        self._watch = watch
        _close_before(loop, self)

    async def _until_loop_ends(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            if not self.closing and self.loop is not None and not self.loop.is_closed():
                self._in_watch = True
                await self.close(self.shared.drain_timeout, loop_ends=True)

    def abandon(self) -> None:
        """Forget a runtime whose loop closed without finalizing it (nothing to await)."""
        self.closing = True
        if self.shared.flusher_owner is self:
            self.shared.flusher_owner = None
        watch, self._watch = self._watch, None
        if watch is not None:
            with contextlib.suppress(StopIteration):
                watch.aclose().send(None)

    async def ready(self) -> None:
        """Start on first use; refuse once the store is closed; finish leftovers."""
        if not self.started:
            await self.start()
        elif self.shared.closed:
            raise StoreClosedError("this store is closed; create a new one")
        if self.shared.flusher_owner is None and self.config.run_flusher and not self.closing:
            await self._start_flusher()
        if self.mode.has_leftovers:
            await self.mode.ready()

    async def start(self) -> None:
        """Check the schema (once per store) and take the in-process flusher if none runs."""
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock, self.shared.starting:
            if self.started:
                return
            if self.shared.closed:
                raise StoreClosedError("this store is closed; create a new one")
            # (a cluster node: the cluster client from now on; False: Redis is down)
            redis_up = await self.hot.connect()
            if not self.shared.schema_checked:
                if redis_up:
                    await check_redis(self.redis, allow_eviction=self.config.allow_eviction)
                problem = None
                try:
                    await ensure_schema(self.sql, create=self.shared.create_tables)
                    self.shared.schema_checked = True
                except StorageUnavailableError as e:
                    problem = configuration_problem(e)
                    if problem is None:
                        # SQL down must not stop a process from starting: write-behind keeps
                        # accepting writes, reads are served from Redis, and SQL errors say so.
                        log.warning("SQL unreachable at start, schema not checked: %s", e)
                if problem is not None:  # a mistake: retrying would not help
                    # (raised outside the handler, after a collection: the driver's failed
                    # connection must go while its loop runs; aiosqlite's stops its thread
                    # through the loop it was opened on)
                    gc.collect()
                    where = self.engine.url.render_as_string(hide_password=True)
                    raise ConfigurationError(f"SQL at {where}: {problem}")
            if self.config.run_flusher:
                await self._start_flusher()
            self.started = True

    async def _start_flusher(self) -> None:
        with self.shared.lock:
            if self.shared.flusher_owner is not None:
                return
            self.shared.flusher_owner = self
            self.shared.flushers_started += 1
            if self.shared.flushers_started > 1:
                self._warn_loops()
        self._stop = asyncio.Event()
        self.flusher = Flusher(self)
        self.flusher.drain_timeout = self.shared.drain_timeout
        self.flusher_task = asyncio.create_task(
            self.flusher.run(self._stop, drain_on_cancel=self.config.write_mode == "behind"),
            name="tiered-session-flusher",
        )
        self.flusher_task.add_done_callback(_report_flusher_exit)
        # Let it begin: a task cancelled before its first step (the loop ending
        # right after this call) could not drain on its way out.
        await asyncio.sleep(0)

    def _warn_loops(self) -> None:
        if self.shared.warned_loops or self.config.write_mode != "behind":
            return
        self.shared.warned_loops = True
        log.warning(
            "this write-behind store is used from more than one event loop: its in-process "
            "flusher runs on one loop at a time, and each loop drains the outbox when it "
            "ends; writes wait in Redis between loops. Call flush() before a loop ends "
            "to be sure, or run a `tiered-session flush` worker"
        )

    async def close(
        self, drain_timeout: float, *, loop_ends: bool = False, drain: bool = False
    ) -> None:
        """Drain and stop this runtime's flusher, then close the clients it owns."""
        if self.closing:
            return
        self.closing = True
        try:
            await self.mode.send_deferred()
            with contextlib.suppress(StorageUnavailableError):
                await self.mode.retry_unsettled()  # (settles a cancellation cut short)
            await self._stop_flusher(drain_timeout)
            if drain:
                await self.drain_once(drain_timeout)
            await self.mode.close()
            await self.sql.close()
        finally:
            if self._owns_redis:
                await self.redis.aclose()
            if self._owns_engine:
                await self.engine.dispose()
            watch, self._watch = self._watch, None
            if watch is not None and not loop_ends:
                await watch.aclose()
            elif watch is not None and not self._in_watch:
                # (closed by the loop's close: finish it here, it has nothing left to do)
                with contextlib.suppress(StopIteration):
                    watch.aclose().send(None)

    async def _stop_flusher(self, drain_timeout: float) -> None:
        task = self.flusher_task
        owner = self.shared.flusher_owner is self
        if task is not None and not task.done():
            if self.flusher is not None:
                self.flusher.drain_timeout = drain_timeout
            if self._stop is not None:
                self._stop.set()
            try:
                # The flusher drains within drain_timeout, then releases its leases.
                await asyncio.wait_for(asyncio.shield(task), drain_timeout + STOP_GRACE)
            except TimeoutError:
                task.cancel()
                log.warning(
                    "flusher did not stop within %.1fs; cancelled it", drain_timeout + STOP_GRACE
                )
            except Exception as e:  # the flusher task itself failed: report, keep closing
                log.error("flusher task failed: %s: %s", type(e).__name__, e)
            await asyncio.gather(task, return_exceptions=True)
        self.flusher_task = None
        if owner:
            self.shared.flusher_owner = None

    async def drain_once(self, timeout: float) -> None:  # noqa: ASYNC109
        """Move what the outbox holds to SQL with a one-off flusher, then let its leases go."""
        flusher = Flusher(self)
        try:
            await flusher.drain(timeout=timeout)
        except Exception as e:
            log.warning("could not drain the outbox before closing: %s: %s", type(e).__name__, e)
        finally:
            try:
                await flusher.release()
            except Exception as e:
                log.warning("could not release flusher leases: %s: %s", type(e).__name__, e)

    # ------------------------------------------------------------------ callbacks
    def wake(self) -> None:
        """Ask the in-process flusher to look for work now, from whichever loop."""
        owner = self.shared.flusher_owner
        if owner is None or owner.flusher is None:
            return
        if owner is self:
            owner.flusher.wake()
        elif owner.loop is not None and not owner.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                owner.loop.call_soon_threadsafe(owner.flusher.wake)

    async def flush(self) -> None:
        """Return once every write accepted so far is committed in SQL."""
        await self.ready()
        await self.mode.send_deferred()
        await wait_flushed(self.hot, self.wake, None)

    async def retry_unsettled(self) -> None:
        """Finish write-through settles Redis could not take earlier (the flusher calls this)."""
        await self.mode.retry_unsettled()

    async def _wait_committed(self, k: SessionKeys, entry_id: bytes) -> None:
        await wait_committed(self.hot, k.shard, entry_id, self.wake)


def _close_before(loop: asyncio.AbstractEventLoop, rt: Runtime) -> None:
    """Close ``rt`` on ``loop`` when the loop is closed without finalizing it first.

    ``loop.run_until_complete(...)`` then ``loop.close()`` (no ``shutdown_asyncgens``)
    is common in threads and older code; the runtime's connections and flusher
    would be stranded on a closed loop. Its ``close`` is wrapped to run the
    runtime's close first. (Loops whose ``close`` cannot be replaced are left as
    they are: their runtime is dropped at the next use of the store.)
    """
    original = loop.close

    def close() -> None:
        if not rt.closing and not loop.is_closed() and not loop.is_running():
            try:
                loop.run_until_complete(rt.close(rt.shared.drain_timeout, loop_ends=True))
            except Exception as e:  # never stop the loop from closing
                log.warning("closing the store's clients of this loop failed: %s", e)
        original()

    with contextlib.suppress(AttributeError, TypeError):
        loop.close = close  # type: ignore[method-assign]


def _report_flusher_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        e = task.exception()
        log.error(
            "the in-process flusher stopped on an unexpected %s: %s; this process no longer "
            "flushes (run a `tiered-session flush` worker, or restart the process)",
            type(e).__name__,
            e,
        )
