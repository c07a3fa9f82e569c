"""What one benchmark cell measures (:class:`Sample`) and how much work it does (:class:`Sizes`).

Example:
    >>> s = Sample(lat_ns=[1000, 3000, 2000], ops=3, seconds=0.006)
    >>> s.p50_us, round(s.ops_s)
    (2.0, 500)
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

__all__ = ["Sample", "Sizes", "WrongResult", "check"]


class WrongResult(Exception):
    """A backend returned data different from the expected history."""


def check(cond: bool, msg: str) -> None:
    """Raise :class:`WrongResult` with ``msg`` unless ``cond`` holds."""
    if not cond:
        raise WrongResult(msg)


@dataclass
class Sample:
    """The outcome of one cell."""

    lat_ns: list[int] = field(default_factory=list)
    ops: int = 0
    seconds: float = 0.0
    ok: bool = True
    error: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def p50_us(self) -> float:
        """Median latency per call, microseconds."""
        return statistics.median(self.lat_ns) / 1000 if self.lat_ns else 0.0

    @property
    def p99_us(self) -> float:
        """99th percentile latency per call, microseconds."""
        if not self.lat_ns:
            return 0.0
        s = sorted(self.lat_ns)
        return s[min(len(s) - 1, int(len(s) * 0.99))] / 1000

    @property
    def ops_s(self) -> float:
        """Operations per second."""
        return self.ops / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Sizes:
    """How much work each workload does per cell."""

    calls: int = 500
    warmup: int = 30
    concurrent_sessions: int = 64
    concurrent_turns: int = 50
    workers: int = 4
    worker_turns: int = 100
    scale_sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
    flush_items: int = 30_000
    lag_seconds: float = 3.0
    lag_rate: int = 1_000

    @classmethod
    def quick(cls) -> Sizes:
        """Small sizes for a smoke run (``bench --quick``: under 30 s on 2 cores)."""
        return cls(
            calls=20,
            warmup=2,
            concurrent_sessions=16,
            concurrent_turns=2,
            workers=2,
            worker_turns=5,
            scale_sizes=(1_000, 2_000),
            flush_items=600,
            lag_seconds=0.3,
        )
