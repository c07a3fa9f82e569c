"""Terminal output: tables on stdout, progress bars (units, rate, ETA) on stderr.

Tables are plain aligned columns (no borders, no colours when piped, never
wrapped), so their lines stay easy to read and to ``grep``. Progress bars draw
only when stderr is a terminal; piped, a command prints its result alone.

Example:
    >>> with Bar("export", unit="sessions") as bar:  # stderr not a terminal: silent
    ...     bar.total = 2
    ...     bar.advance(2)
    >>> bar.done
    2
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as RichProgress
from rich.table import Table
from rich.text import Text

from .._progress import Progress

__all__ = ["Bar", "print_pairs", "print_table", "stdout_console"]


def stdout_console() -> Console:
    """A console on stdout; when piped, wide enough that no line is wrapped."""
    console = Console(highlight=False, soft_wrap=False)
    if not console.is_terminal:
        console = Console(highlight=False, soft_wrap=False, width=100_000)
    return console


def _print(table: Table) -> None:
    console = stdout_console()
    with console.capture() as captured:
        console.print(table)
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


def print_table(head: Sequence[str], rows: Sequence[Sequence[Any]], *, right: int = 0) -> None:
    """Print aligned columns under a header; the last ``right`` columns right-aligned."""
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for i, name in enumerate(head):
        table.add_column(name, justify="right" if i >= len(head) - right else "left", no_wrap=True)
    for row in rows:
        table.add_row(*(Text(str(cell)) for cell in row))
    _print(table)


def print_pairs(pairs: Sequence[tuple[str, Any]]) -> None:
    """Print ``name  value`` lines, the names aligned."""
    table = Table(box=None, show_edge=False, pad_edge=False, show_header=False)
    table.add_column(no_wrap=True)
    table.add_column()
    for name, value in pairs:
        table.add_row(Text(name), Text(str(value)))
    _print(table)


class _Count(ProgressColumn):
    """``12/100 sessions`` (``12 sessions`` while the total is unknown)."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "")
        done = f"{task.completed:,.0f}"
        text = f"{done}/{task.total:,.0f}" if task.total is not None else done
        return Text(f"{text} {unit}".rstrip(), style="progress.download")


class _Rate(ProgressColumn):
    """``1,234 sessions/s``."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "") or "items"
        return Text("" if speed is None else f"{speed:,.0f} {unit}/s", style="progress.data.speed")


class Bar(Progress):
    """A progress bar for the library's long operations, drawn by rich on a terminal.

    The library sets ``total`` once it knows it and calls ``advance``; use the
    bar as a context manager so the terminal is restored on errors too.

    Args:
        label: what is counted, shown first.
        unit: the unit of the count (``sessions``, ``turns``...).
        total: the amount of work, when known (0: not yet).
        in_bytes: the work is bytes: sizes and speeds in kB, MB, ...
    """

    def __init__(self, label: str, *, unit: str = "", total: int = 0, in_bytes: bool = False):
        self._rich: RichProgress | None = None
        self._task: Any = None
        self._total = 0
        super().__init__(total, label, stream=io.StringIO())  # (the base class stays silent)
        console = Console(stderr=True)
        if console.is_terminal:
            count: ProgressColumn = DownloadColumn() if in_bytes else _Count()
            rate: ProgressColumn = TransferSpeedColumn() if in_bytes else _Rate()
            self._rich = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                count,
                rate,
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("elapsed"),
                TimeElapsedColumn(),
                console=console,
                refresh_per_second=5,
            )
            self._task = self._rich.add_task(
                label, total=self._total or None, unit=unit, start=True
            )
        self.enabled = self._rich is not None

    @property
    def total(self) -> int:
        """The amount of work (0 while unknown)."""
        return self._total

    @total.setter
    def total(self, value: int) -> None:
        self._total = max(int(value), 0)
        if self._rich is not None:
            self._rich.update(self._task, total=self._total or None)

    def advance(self, n: int = 1) -> None:
        """Record ``n`` more units of work."""
        self.done += n
        if self._rich is not None:
            self._rich.update(self._task, advance=n)

    def describe(self, text: str) -> None:
        """Replace the label (say, the step running now)."""
        self.label = text
        if self._rich is not None:
            self._rich.update(self._task, description=text)

    def close(self) -> None:
        """Draw the last state and give the terminal back (idempotent)."""
        if self._rich is not None:
            self._rich.stop()
            self._rich = None

    def __enter__(self) -> Bar:
        if self._rich is not None:
            self._rich.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
