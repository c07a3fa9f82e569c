"""Reading a store's outbox figures from any thread, through the event loop the store runs on.

Metrics are collected on other threads (an HTTP scrape, a periodic exporter)
while the store's connections belong to its event loop. The probe runs one
read there (``run_coroutine_threadsafe``) and waits up to ``timeout``
seconds; a read asked for on the loop's own thread cannot wait, so it returns
the last sample and takes a fresh one in the background. Without a running
loop, or when Redis does not answer, there is no sample (``None``): the
backlog gauges are left out rather than reported as zero.

Example:
    >>> import asyncio
    >>> from tiered_session import TieredStore
    >>> store = TieredStore(write_mode="behind", run_flusher=False)
    >>> probe = BacklogProbe(lambda: store)
    >>> async def main():
    ...     await store.session("s").add_items([{"n": 1}])
    ...     snap = await asyncio.to_thread(probe.read)     # as a scrape thread reads it
    ...     await store.aclose()
    ...     return snap.backlog.entries, sum(snap.per_shard)
    >>> asyncio.run(main())
    (1, 1)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._errors import TieredSessionError
from ..hot.tier import HotTier
from ..outbox.backlog import Backlog, read_backlog

if TYPE_CHECKING:
    from ..store import TieredStore

__all__ = ["BacklogProbe", "Snapshot", "sample"]

log = logging.getLogger("tiered_session.metrics")

#: seconds between two log lines about failed reads
_LOG_EVERY = 60.0


@dataclass(frozen=True)
class Snapshot:
    """The outbox as one read saw it."""

    backlog: Backlog
    #: entries not yet in SQL, by shard number
    per_shard: tuple[int, ...]
    #: ``time.monotonic()`` of the read
    at: float


async def sample(hot: HotTier) -> Snapshot:
    """Read the backlog figures and the length of every shard's outbox (two round trips)."""
    backlog = await read_backlog(hot)
    lengths = await hot.pipeline([("xlen", (sh.outbox,)) for sh in hot.keys.all_shards()])
    return Snapshot(backlog, tuple(int(n) for n in lengths), time.monotonic())


class BacklogProbe:
    """Samples a store's outbox for metrics, from whichever thread asks.

    Args:
        store: returns the store, or None once it is gone (a weak reference).
        timeout: seconds to wait for the store's loop to answer.
        max_age: a sample younger than this is reused (several gauges, one read).
    """

    def __init__(
        self,
        store: Callable[[], TieredStore | None],
        *,
        timeout: float = 2.0,
        max_age: float = 1.0,
    ) -> None:
        self._store = store
        self.timeout = timeout
        self.max_age = max_age
        self.last: Snapshot | None = None
        self._refreshing: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()
        self._logged = 0.0

    def read(self) -> Snapshot | None:
        """A recent sample, or None when none can be had now."""
        last = self.last
        if last is not None and time.monotonic() - last.at < self.max_age:
            return last
        store = self._store()
        if store is None or store.closed:
            return None
        rt = next(
            (
                r
                for r in store.runtimes.all()
                if r.loop is not None and not r.closing and r.loop.is_running()
            ),
            None,
        )
        if rt is None or rt.loop is None:
            return None
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is rt.loop:  # asked on the loop itself: it cannot wait for its own read
            self._refresh_soon(rt.loop, rt.hot)
            return last
        read = sample(rt.hot)
        try:
            fut = asyncio.run_coroutine_threadsafe(read, rt.loop)
        except RuntimeError:  # the loop closed meanwhile
            read.close()
            return None
        try:
            self.last = fut.result(self.timeout)
        except (TieredSessionError, TimeoutError, concurrent.futures.CancelledError) as e:
            fut.cancel()
            self._failed(e)
            return None
        return self.last

    def _refresh_soon(self, loop: asyncio.AbstractEventLoop, hot: HotTier) -> None:
        with self._lock:
            if self._refreshing:
                return
            task = loop.create_task(self._refresh(hot), name="tiered-session-metrics-probe")
            self._refreshing.add(task)
        task.add_done_callback(self._refreshing.discard)

    async def _refresh(self, hot: HotTier) -> None:
        try:
            self.last = await sample(hot)
        except TieredSessionError as e:
            self._failed(e)

    def _failed(self, e: BaseException) -> None:
        now = time.monotonic()
        if now - self._logged > _LOG_EVERY:
            self._logged = now
            log.warning(
                "metrics: could not read the outbox backlog (%s: %s); its gauges are left out",
                type(e).__name__,
                e,
            )
