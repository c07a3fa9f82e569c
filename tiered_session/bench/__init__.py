"""The benchmark harness behind ``tiered-session bench`` (and ``python -m benchmarks``).

It measures TieredSession (write-through, write-behind, embedded default)
against the Agents SDK's own sessions and two physical floors (raw redis-py,
raw asyncpg) in one run, with backends interleaved inside every repeat, and
checks every result outside the timed part.

Example:
    >>> from tiered_session.bench import WORKLOADS
    >>> "turn" in WORKLOADS
    True
"""

from __future__ import annotations

from .backends import ALL_BACKENDS
from .env import BenchEnv
from .report import terminal, write_outputs
from .runner import WORKLOADS, BenchOptions, run_bench
from .sample import Sizes

__all__ = [
    "ALL_BACKENDS",
    "WORKLOADS",
    "BenchEnv",
    "BenchOptions",
    "Sizes",
    "run_bench",
    "terminal",
    "write_outputs",
]
