"""Write modes as strategies: what a write does after its script took it in Redis.

Writes run the same script loop in both modes (:mod:`.writes`); the mode
decides the rest. Write-behind is done once the script returns: the flusher
commits the outbox entry. Write-through commits in SQL, then settles the
operation in Redis (:class:`~tiered_session.ops.through.WriteThrough`).

Example:
    >>> WriteBehind().code
    b'b'
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol, TypeVar

from ..hot.keys import SessionKeys
from ..hot.scripts import Mode
from ..hot.tier import Call

__all__ = ["WriteBehind", "WriteStrategy", "run_to_completion"]

T = TypeVar("T")


async def run_to_completion(aw: Awaitable[T]) -> T:
    """Run a mutation to its end even if the caller is cancelled meanwhile.

    The cancellation is re-raised once the mutation has settled, so a batch is
    applied whole or not at all, never half.
    """
    task = asyncio.ensure_future(aw)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError as e:
            cancelled = cancelled or e
    if cancelled is not None:
        if not task.cancelled():
            task.exception()  # mark retrieved; the cancellation wins
        raise cancelled
    return task.result()


class WriteStrategy(Protocol):
    """What differs between the write modes."""

    #: the mode as the scripts know it
    code: bytes

    @property
    def has_leftovers(self) -> bool:
        """Whether an earlier call left work for :meth:`ready` (checked on every call)."""

    #: whether an add must run to completion even if its caller is cancelled
    shields_adds: bool

    def take_deferred(self, k: SessionKeys) -> list[Call] | None:
        """Settles of the session's committed adds that the next command should carry."""

    async def send_deferred(self, k: SessionKeys | None = None) -> None:
        """Send the session's (or every) deferred settle now."""

    async def run_after(self, settles: Sequence[Call], last: Call | tuple[Any, ...]) -> Any:
        """Send ``settles`` ahead of ``last`` in one write; return ``last``'s reply."""

    async def added(self, k: SessionKeys, reply: Sequence[Any], datas: list[bytes]) -> None:
        """After the add script accepted the batch (``reply`` is its reply)."""

    async def popped(self, k: SessionKeys, seq: int, env: bytes) -> None:
        """After the pop script took the entry ``env``."""

    async def cleared(self, k: SessionKeys, upto: int, keep: list[int]) -> None:
        """After the clear script emptied the list up to ``upto`` (except ``keep``)."""

    async def replaced(self, k: SessionKeys, entry_id: bytes) -> None:
        """After a compaction's outbox entries up to ``entry_id`` were queued."""

    async def ready(self) -> None:
        """Before a call: finish what an earlier call left (when Redis was down)."""

    async def retry_unsettled(self) -> None:
        """Finish what earlier calls left; raise while Redis is still down."""

    async def close(self) -> None:
        """Send or report what is left; the store is closing."""


class WriteBehind:
    """Write-behind: the script's outbox entry is the write; the flusher commits it."""

    code = Mode.BEHIND
    has_leftovers = False
    #: one atomic script (after a warm-up that writes no item): a cancelled caller
    #: leaves the whole batch or none without a shield
    shields_adds = False

    def take_deferred(self, k: SessionKeys) -> list[Call] | None:
        """Nothing is ever deferred."""
        return None

    async def send_deferred(self, k: SessionKeys | None = None) -> None:
        """Nothing to send."""

    async def run_after(self, settles: Sequence[Call], last: Call | tuple[Any, ...]) -> Any:
        """Never called: there are no settles."""
        raise AssertionError("write-behind defers no settles")

    async def added(self, k: SessionKeys, reply: Sequence[Any], datas: list[bytes]) -> None:
        """Accepted: done."""

    async def popped(self, k: SessionKeys, seq: int, env: bytes) -> None:
        """Taken: done."""

    async def cleared(self, k: SessionKeys, upto: int, keep: list[int]) -> None:
        """Cleared: done."""

    async def replaced(self, k: SessionKeys, entry_id: bytes) -> None:
        """Queued: done."""

    async def ready(self) -> None:
        """Nothing is left over."""

    async def retry_unsettled(self) -> None:
        """Nothing is left over."""

    async def close(self) -> None:
        """Nothing is left over."""
