"""The workload base class and the helpers every workload times and checks with.

A workload runs one *cell* (one backend, one repeat) and returns a
:class:`~tiered_session.bench.sample.Sample`. Timing covers only the calls
themselves; preparing data and checking every answer against the expected
history happen outside it. A cell whose answers are wrong (or that raises) is
returned with ``ok=False`` and is flagged in the report instead of ranked.

Example:
    >>> [len(history(n)) for n in (2, 3, 7)]
    [2, 3, 7]
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import bindparam, column, select, table

from tiered_session import TieredStore
from tiered_session._workload import turn_items

from .env import Backend, BenchEnv
from .sample import Sample, Sizes, WrongResult, check

__all__ = ["Workload", "check_sql", "flatten", "history", "timed", "verify_turns"]


def history(n: int, session: int = 0) -> list[Any]:
    """``n`` realistic items (3-item turns)."""
    out: list[Any] = []
    t = 0
    while len(out) < n:
        out.extend(turn_items(session, t))
        t += 1
    return out[:n]


def flatten(batches: list[list[Any]]) -> list[Any]:
    """The history that adding ``batches`` in order builds."""
    return [x for bt in batches for x in bt]


async def timed(n: int, call: Callable[[int], Awaitable[Any]]) -> list[int]:
    """Await ``call(0)`` ... ``call(n - 1)`` one after another; return each one's nanoseconds."""
    pc = time.perf_counter_ns
    lat: list[int] = []
    for i in range(n):
        t0 = pc()
        await call(i)
        lat.append(pc() - t0)
    return lat


def verify_turns(reads: list[Any], batches: list[list[Any]], limit: int) -> None:
    """Each turn's read saw the newest ``limit`` items of the turns before it."""
    seen: list[Any] = []
    for t, got in enumerate(reads):
        check(got == seen[-limit:], f"read before turn {t} differs")
        seen.extend(batches[t])


async def check_sql(store: TieredStore, sent: dict[str, list[list[Any]]]) -> None:
    """Every session's rows in SQL are its sent batches, in order.

    The rows are read from the messages table itself (its layout is the
    documented one the SDK shares), so a store whose reads paper over missing
    rows still fails.
    """
    m = table(
        store.config.messages_table,
        column("session_id"),
        column("seq"),
        column("message_data"),
    )
    stmt = select(m.c.message_data).where(m.c.session_id == bindparam("sid")).order_by(m.c.seq)
    async with store.engine.connect() as conn:
        for sid, batches in sent.items():
            rows = (await conn.execute(stmt, {"sid": sid})).scalars().all()
            want = flatten(batches)
            got = [json.loads(d) for d in rows]
            check(got == want, f"SQL rows of {sid} differ ({len(got)} rows, {len(want)} sent)")


class Workload:
    """One workload; subclasses define ``cell``."""

    name = ""
    title = ""
    unit = "call"
    #: "latency": ratio of p50 per call; "throughput": ratio of ops/s
    kind = "latency"

    def __init__(self, sizes: Sizes, env: BenchEnv) -> None:
        self.sizes = sizes
        self.env = env
        self._prepared: dict[str, Any] = {}

    def applies(self, b: Backend) -> bool:
        """Whether this workload runs on ``b``."""
        return True

    async def prepare(self, b: Backend) -> Any:
        """Untimed set-up shared by every repeat of ``b``."""
        return None

    async def cell(self, b: Backend, rep: int, prepared: Any) -> Sample:
        """Run and check one cell."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the workload keeps between cells (worker processes)."""

    async def run(self, b: Backend, rep: int) -> Sample:
        """Prepare once, run the cell, flag wrong answers and errors."""
        try:
            if b.name not in self._prepared:
                self._prepared[b.name] = await self.prepare(b)
                await b.settle()
            return await self.cell(b, rep, self._prepared[b.name])
        except WrongResult as e:
            return Sample(ok=False, error=f"wrong result: {e}")
        except Exception as e:
            first = (str(e).splitlines() or [""])[0]  # some errors carry no message
            return Sample(ok=False, error=f"{type(e).__name__}: {first[:200]}")
