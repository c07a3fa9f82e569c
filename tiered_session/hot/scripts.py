"""The Lua scripts (``lua/*.lua``, shipped as package data) and the names of what they store.

Every multi-step change to a session's Redis state is one script. Each
receives all its keys through ``KEYS`` (the key lists live in
:mod:`tiered_session.hot.keys`) and touches one cluster slot. Each file opens
with its KEYS, ARGV and return values; ``lua/_prelude.lua``, prepended to every
script, names the stored hash fields, outbox entry fields, operation kinds and
return codes, and documents the hot list's layout. The Python twins of those
names are below (a test keeps the two equal). A command given many values (a
batch, a hot window, a flush batch's ids) gets them in slices (the prelude's
``chunked``): ``unpack()`` fails past a few thousand values.

Example:
    >>> ADD.name, len(ADD.sha)
    ('add', 40)
    >>> Status(-1).name, Field.LAST_SEQ
    ('COLD', b'n')
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum
from importlib import resources

from .._codec import HEADER, PENDING

__all__ = [
    "ACK",
    "ADD",
    "ALL",
    "BADD",
    "BREAD",
    "CLEAR",
    "DEAD",
    "DROP",
    "EVICT",
    "FREAD",
    "GEN_TTL_MS",
    "HEARTBEAT",
    "LEASE",
    "MARK_BEHIND",
    "POP",
    "READ",
    "RECOVER",
    "REFILL",
    "RELEASE",
    "REPLACE",
    "REPLAY",
    "SETPTR",
    "SETTLE",
    "TOUCH",
    "WARM",
    "DeadField",
    "EntryField",
    "Field",
    "Marker",
    "Mode",
    "OpKind",
    "Script",
    "Status",
]


class Status(IntEnum):
    """Every status a script returns (the prelude's return codes)."""

    #: done (installed, held, taken over, ...)
    OK = 1
    #: the script did nothing; each script's header says what that means for it
    NO = 0
    #: the session is not in Redis: warm it from SQL, then retry
    COLD = -1
    #: add: the shard's outbox reached ``max_backlog``
    BACKLOG_FULL = -2
    #: pop: the list is empty but older items live in SQL
    NEEDS_REFILL = -3
    #: pop, clear: an add reserved before this call is pending
    WAIT_EARLIER = -4
    #: add: the session is marked behind SQL
    BEHIND_SQL = -5
    #: warm: evicted since the SQL read began; read again
    STALE_SNAPSHOT = -6
    #: warm: the list is gone while writes are pending
    LIST_LOST = -7
    #: ack, fread: another flusher holds the shard's lease
    LEASE_LOST = -8
    #: settle: an earlier add of the session is still pending; call again
    SETTLE_LATER = -9
    #: warm: the hash is gone while the list holds writes SQL does not have yet
    META_LOST = -10
    #: badd, bread: the session's branch pointer is not in Redis: install it from SQL
    NO_POINTER = -11
    #: badd, bread: another branch is current (the reply carries the pointer)
    WRONG_BRANCH = -12


class Field:
    """Fields of a session's metadata hash (stored names; see ``lua/_prelude.lua``)."""

    LAST_SEQ = b"n"
    FLOOR = b"f"
    WHOLE = b"full"
    BEHIND_OPS = b"p"
    IN_SQL = b"w"
    RESERVED_COUNT = b"h"
    TAKES = b"io"
    BEHIND_SQL_FLAG = b"b"
    BARRIERS = b"pb"


class EntryField:
    """Fields of an outbox stream entry."""

    OP = b"o"
    SESSION = b"s"
    SEQ = b"q"
    TIME = b"t"
    LENGTHS = b"l"
    DATA = b"d"
    KEEP = b"k"
    COUNT = b"c"


class DeadField:
    """Fields a dead letter adds to the entry's own."""

    OUTBOX_ID = b"id"
    REASON = b"reason"


class OpKind:
    """Operation kinds: an outbox entry's ``OP``, and the first letter of an in-flight op id."""

    ADD = b"a"
    #: settle of an add SQL refused outright (its seqs may hold other rows)
    ADD_REFUSED = b"A"
    POP = b"p"
    CLEAR = b"c"
    #: delete the seqs of a write-through add whose commit failed
    UNDO = b"x"


class Mode:
    """Write modes, as ``add``, ``pop`` and ``clear`` take them (``ARGV[1]``)."""

    BEHIND = b"b"
    THROUGH = b"t"


class Marker:
    """Markers in the hot list (names as in the prelude)."""

    #: opens the list's header ``#<whole>|<floor>`` (the format: :mod:`tiered_session._codec`)
    HEADER_MARK = HEADER
    #: opens a pending entry ``~<seq>|<json>``
    PENDING_MARK = PENDING
    #: ``PENDING_MARK`` as a byte
    PENDING_BYTE = PENDING[0]
    #: an entry marked by index (LSET) for removal (LREM)
    TOMBSTONE = b"~-"


#: lifetime of an eviction generation after its last bump (ms): longer than any
#: warm-up that read SQL before the bump
GEN_TTL_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Script:
    """One script as sent to Redis: its name, full source (with the prelude) and SHA1."""

    name: str
    source: str
    sha: str


def _read(name: str) -> str:
    return (resources.files("tiered_session.hot") / "lua" / f"{name}.lua").read_text("utf-8")


_PRELUDE = _read("_prelude")


def _load(name: str, *parts: str) -> Script:
    """The script ``name``: the prelude, then the files ``parts`` (default: ``name``)."""
    source = _PRELUDE + "".join(_read(p) for p in parts or (name,))
    return Script(name, source, hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest())


ADD = _load("add")
READ = _load("read")
TOUCH = _load("touch")
POP = _load("pop")
CLEAR = _load("clear")
SETTLE = _load("settle")
WARM = _load("warm")
REFILL = _load("refill")
ACK = _load("ack")
DEAD = _load("dead")
EVICT = _load("evict")
MARK_BEHIND = _load("mark_behind")
DROP = _load("drop")
REPLACE = _load("replace")
RECOVER = _load("recover")
LEASE = _load("lease")
RELEASE = _load("release")
HEARTBEAT = _load("heartbeat")
FREAD = _load("fread")
REPLAY = _load("replay")
#: ``add`` on an advanced session's branch, guarded by the session's branch pointer
BADD = _load("badd", "_branch_guard", "add")
BREAD = _load("bread")
SETPTR = _load("setptr")

#: every script
ALL = (
    ADD, READ, TOUCH, POP, CLEAR, SETTLE, WARM, REFILL, ACK, DEAD,
    EVICT, MARK_BEHIND, DROP, REPLACE, RECOVER, LEASE, RELEASE, HEARTBEAT, FREAD, REPLAY,
    BADD, BREAD, SETPTR,
)  # fmt: skip

#: every script by name
