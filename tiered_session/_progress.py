"""A dependency-free progress bar: drawn on a terminal, silent when piped.

Example:
    >>> import io
    >>> bar = Progress(3, "demo", stream=io.StringIO())  # not a TTY: prints nothing
    >>> bar.advance(3); bar.close()
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Counts work done and redraws one line on a TTY (at most 10 times a second)."""

    def __init__(self, total: int, label: str, *, stream: TextIO | None = None) -> None:
        self.total = max(total, 0)
        self.label = label
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self._start = time.monotonic()
        self._last = 0.0

    def advance(self, n: int = 1) -> None:
        """Record ``n`` more units of work."""
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last >= 0.1 or self.done >= self.total):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        width = 30
        frac = min(1.0, self.done / self.total) if self.total else 1.0
        filled = int(frac * width)
        rate = self.done / max(now - self._start, 1e-9)
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
            f"{self.done}/{self.total} ({rate:,.0f}/s)"
        )
        self.stream.flush()

    def close(self) -> None:
        """Finish the line."""
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
