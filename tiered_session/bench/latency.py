"""Latency workloads: one session, one call at a time, the time of each call recorded.

Example:
    >>> from tiered_session.bench.env import BenchEnv
    >>> from tiered_session.bench.sample import Sizes
    >>> Scale(Sizes(), BenchEnv(namespace="abc123", tmpdir="/tmp"), 10_000).name
    'scale-10k'
"""

from __future__ import annotations

from typing import Any

from tiered_session._workload import turn_items

from .env import Backend, BenchEnv
from .sample import Sample, Sizes, check
from .workload import Workload, flatten, history, timed, verify_turns

__all__ = ["Add", "Get20", "Pop", "Read200", "Scale", "Turn"]


class Add(Workload):
    """``add_items`` of a 3-item turn."""

    name = "add"
    title = "add_items (3-item turn)"

    async def cell(self, b: Backend, rep: int, prepared: Any) -> Sample:
        """Time ``add_items`` of fresh turns; check the whole history afterwards."""
        s = b.session(f"add-{rep}")
        n, w = self.sizes.calls, self.sizes.warmup
        batches = [turn_items(rep, t) for t in range(n + w)]
        for t in range(w):
            await s.add_items(batches[t])
        lat = await timed(n, lambda i: s.add_items(batches[w + i]))
        got = await s.get_items()
        check(got == flatten(batches), "history differs after adds")
        return Sample(lat, n, sum(lat) / 1e9)


class _Read(Workload):
    size = 0
    limit: int | None = None

    async def prepare(self, b: Backend) -> Any:
        items = history(self.size, session=self.size)
        await b.populate(f"{self.name}", items)
        return items[-self.limit :] if self.limit else items

    async def cell(self, b: Backend, rep: int, prepared: Any) -> Sample:
        s = b.session(f"{self.name}")
        n, lim = self.sizes.calls, self.limit
        for _ in range(self.sizes.warmup):
            await s.get_items(limit=lim)
        results: list[Any] = []

        async def call(_: int) -> None:
            results.append(await s.get_items(limit=lim))

        lat = await timed(n, call)
        bad = sum(1 for r in results if r != prepared)
        check(bad == 0, f"{bad}/{n} reads differ from the stored history")
        return Sample(lat, n, sum(lat) / 1e9)


class Get20(_Read):
    """``get_items(limit=20)`` on a 1,000-item session."""

    name = "get20"
    title = "get_items(limit=20), 1,000 items"
    size = 1_000
    limit = 20


class Read200(_Read):
    """``get_items()`` of a whole 200-item session."""

    name = "read200"
    title = "get_items() of 200 items"
    size = 200
    limit = None


class Scale(_Read):
    """``get_items(limit=20)`` on a long session."""

    limit = 20

    def __init__(self, sizes: Sizes, env: BenchEnv, size: int) -> None:
        super().__init__(sizes, env)
        self.size = size
        label = f"{size // 1000}k"
        self.name = f"scale-{label}"
        self.title = f"get_items(limit=20), {size:,} items"


class Turn(Workload):
    """A chat turn as the SDK Runner does it: read the last 20, add 3."""

    name = "turn"
    title = "chat turn (get 20 + add 3)"
    unit = "turn"

    async def cell(self, b: Backend, rep: int, prepared: Any) -> Sample:
        """Time read-then-add turns; check every read and the final history."""
        s = b.session(f"turn-{rep}")
        n, w = self.sizes.calls, self.sizes.warmup
        batches = [turn_items(rep + 100, t) for t in range(n + w)]
        reads: list[Any] = []

        async def turn(t: int) -> None:
            reads.append(await s.get_items(limit=20))
            await s.add_items(batches[t])

        for t in range(w):
            await turn(t)
        lat = await timed(n, lambda i: turn(w + i))
        verify_turns(reads, batches, 20)
        got = await s.get_items()
        check(got == flatten(batches), "history differs after turns")
        return Sample(lat, n, sum(lat) / 1e9)


class Pop(Workload):
    """``pop_item`` until a 100-item session is down to 10 items."""

    name = "pop"
    title = "pop_item"

    async def cell(self, b: Backend, rep: int, prepared: Any) -> Sample:
        """Time ``pop_item`` on a populated session; check what came back and what is left."""
        n = self.sizes.calls
        sid = f"pop-{rep}"
        items = history(n + 10, session=rep + 200)
        await b.populate(sid, items)
        await b.settle()
        s = b.session(sid)
        popped: list[Any] = []

        async def call(_: int) -> None:
            popped.append(await s.pop_item())

        lat = await timed(n, call)
        check(popped == items[::-1][:n], "popped items differ from the newest ones")
        check(await s.get_items() == items[:10], "history differs after pops")
        return Sample(lat, n, sum(lat) / 1e9)
