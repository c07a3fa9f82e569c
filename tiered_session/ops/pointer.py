"""A session's branch pointer: which branch its advanced sessions read and write.

The pointer lives in SQL (the source of truth) and in Redis as
``<version>|<branch>`` (key: :attr:`tiered_session.hot.keys.SessionKeys.current`).
A branch's reads and adds carry the branch the caller believes current; the
scripts check it against Redis and answer :class:`BranchMoved` when it is not.

Example:
    >>> parse_pointer(b"3|main")
    (3, 'main')
"""

from __future__ import annotations

from typing import Any

from ..hot.scripts import Status

__all__ = ["BranchMoved", "check_branch_reply", "parse_pointer"]


class BranchMoved(Exception):
    """The branch a read or add believed current is not: ``pointer`` is what Redis holds.

    ``pointer`` is None when Redis holds no pointer (install it from SQL).
    """

    def __init__(self, pointer: bytes | None) -> None:
        super().__init__(pointer)
        self.pointer = pointer


def parse_pointer(value: bytes) -> tuple[int, str]:
    """``(version, branch)`` of a stored pointer."""
    version, _, branch = value.partition(b"|")
    return int(version), branch.decode("utf-8", "surrogatepass")


def check_branch_reply(reply: Any) -> None:
    """Raise :class:`BranchMoved` for a guarded script's NO_POINTER / WRONG_BRANCH reply."""
    if reply and isinstance(reply[0], int):
        if reply[0] == Status.NO_POINTER:
            raise BranchMoved(None)
        if reply[0] == Status.WRONG_BRANCH:
            raise BranchMoved(bytes(reply[1]))
