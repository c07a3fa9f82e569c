"""Advanced sessions against plain ones: ``adv-add`` and ``adv-get20``.

The same calls as ``add`` and ``get20``, on the TieredSession rows, through
``store.advanced_session(id)``: each read checks the session's current branch
in the same Redis script, each add in the same script that appends. Compare
each row's p50 with the plain workload's in the same run (``adv-add`` with
``add``, ``adv-get20`` with ``get20``).

Example:
    >>> from tiered_session.bench.env import BenchEnv
    >>> from tiered_session.bench.sample import Sizes
    >>> [w.name for w in advanced_workloads(Sizes(), BenchEnv(namespace="abc", tmpdir="/tmp"))]
    ['adv-add', 'adv-get20']
"""

from __future__ import annotations

from typing import Any

from tiered_session import TieredStore
from tiered_session._workload import turn_items

from .env import Backend, BenchEnv
from .sample import Sample, Sizes, check
from .workload import Workload, flatten, history, timed

__all__ = ["AdvancedAdd", "AdvancedGet20", "advanced_workloads"]


def _store_of(b: Backend) -> TieredStore | None:
    store = getattr(b, "store", None)
    return store if isinstance(store, TieredStore) else None


class _Advanced(Workload):
    def applies(self, b: Backend) -> bool:
        """The TieredSession rows."""
        return _store_of(b) is not None

    def session(self, b: Backend, name: str) -> Any:
        store = _store_of(b)
        assert store is not None
        return store.advanced_session(name)


class AdvancedAdd(_Advanced):
    """``add_items`` of a 3-item turn on an advanced session (its current branch)."""

    name = "adv-add"
    title = "advanced: add_items (3-item turn)"

    async def cell(self, b: Backend, rep: int, prepared: Any) -> Sample:
        """Time adds of fresh turns; check the whole history afterwards."""
        s = self.session(b, f"adv-add-{rep}")
        n, w = self.sizes.calls, self.sizes.warmup
        batches = [turn_items(rep, t) for t in range(n + w)]
        for t in range(w):
            await s.add_items(batches[t])
        lat = await timed(n, lambda i: s.add_items(batches[w + i]))
        check(await s.get_items() == flatten(batches), "history differs after adds")
        return Sample(lat, n, sum(lat) / 1e9)


class AdvancedGet20(_Advanced):
    """``get_items(limit=20)`` of a 1,000-item advanced session's current branch."""

    name = "adv-get20"
    title = "advanced: get_items(limit=20), 1,000 items"

    async def prepare(self, b: Backend) -> Any:
        """Write the history through the plain session (it is ``main``)."""
        items = history(1_000, session=1_000)
        await b.populate(self.name, items)
        return items[-20:]

    async def cell(self, b: Backend, rep: int, prepared: Any) -> Sample:
        """Time the reads; check every answer."""
        s = self.session(b, self.name)
        for _ in range(self.sizes.warmup):
            await s.get_items(limit=20)
        results: list[Any] = []

        async def call(_: int) -> None:
            results.append(await s.get_items(limit=20))

        lat = await timed(self.sizes.calls, call)
        bad = sum(1 for r in results if r != prepared)
        check(bad == 0, f"{bad}/{len(results)} reads differ from the stored history")
        return Sample(lat, len(results), sum(lat) / 1e9)


def advanced_workloads(sizes: Sizes, env: BenchEnv) -> list[Workload]:
    """The advanced-session workloads, in run order."""
    return [AdvancedAdd(sizes, env), AdvancedGet20(sizes, env)]
