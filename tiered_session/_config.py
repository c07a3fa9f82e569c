"""Store options: one frozen dataclass, validated at construction.

Example:
    >>> from tiered_session import StoreConfig
    >>> StoreConfig(write_mode="behind", hot_items=50).write_mode
    'behind'
    >>> default("hot_items")
    100
"""

from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, fields
from typing import Any, Literal

from ._errors import ConfigurationError, InvalidInputError

__all__ = [
    "MAX_SESSION_ID_BYTES",
    "StoreConfig",
    "WriteMode",
    "default",
    "redact_url",
    "validate_session_id",
]

WriteMode = Literal["through", "behind"]

MAX_SESSION_ID_BYTES = 512
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_PREFIX = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Options of a [`TieredStore`][tiered_session.TieredStore].

    Attributes:
        write_mode: ``"through"`` commits every write to SQL before returning;
            ``"behind"`` returns after one Redis round trip and lets the flusher
            commit to SQL.
        hot_items: items per session kept in the Redis list (the hot window).
        key_prefix: prefix of every Redis key (letters, digits, ``_.-``).
        sessions_table: SQL table of sessions (a plain identifier).
        messages_table: SQL table of messages (a plain identifier).
        create_tables: create missing tables and indexes on first use.
        run_flusher: run a flusher task in this process (write-behind).
        outbox_shards: number of outbox streams; sessions map to one each.
            None (the default) uses the count Redis records for ``key_prefix``,
            else 16 on a single Redis and 128 on a Redis Cluster (see
            ``docs/cluster.md`` for sizing). An explicit count must match the
            recorded one.
        hot_ttl: seconds an idle, fully flushed session stays in Redis
            (0 keeps it until evicted).
        max_backlog: per-shard bound on unflushed outbox entries; past it a
            write-behind ``add_items`` raises ``BackpressureError`` (0: no bound).
        flush_batch_size: outbox entries committed per SQL transaction.
        flush_interval: seconds a flusher waits for new entries before polling.
        lease_ttl: seconds a flusher's claim on a shard lasts unless renewed.
        max_attempts: deliveries of one outbox entry before it is dead-lettered.
        inflight_timeout: seconds after which a write-through operation whose
            writer vanished is recovered by a flusher.
        session_settings: default ``SessionSettings`` handed to new sessions.
        allow_eviction: accept a Redis whose ``maxmemory-policy`` is ``allkeys-*``
            (it may evict writes not yet in SQL: they are lost). Off by default:
            such a Redis is a ConfigurationError at start.
        redis_cluster: for a store built from ``redis_url``: None detects a
            Redis Cluster at start (``INFO cluster``) and then talks to every
            master; True always builds a cluster client; False never does.
        replica_acks: write-behind only: after each write's script, wait for
            this many replicas to confirm it (``WAIT``) and raise
            ``ReplicaAckError`` when fewer do; flushers commit only entries
            that many replicas hold. 0 (the default) does not wait.
        replica_ack_timeout: seconds ``replica_acks`` waits for the replicas.
    """

    write_mode: WriteMode = "through"
    hot_items: int = 100
    key_prefix: str = "tiered_session"
    sessions_table: str = "agent_sessions"
    messages_table: str = "agent_messages"
    create_tables: bool = False
    run_flusher: bool = True
    outbox_shards: int | None = None
    hot_ttl: float = 3600.0
    max_backlog: int = 0
    flush_batch_size: int = 500
    flush_interval: float = 0.05
    lease_ttl: float = 10.0
    max_attempts: int = 5
    inflight_timeout: float = 60.0
    session_settings: Any = None
    allow_eviction: bool = False
    redis_cluster: bool | None = None
    replica_acks: int = 0
    replica_ack_timeout: float = 1.0

    def __post_init__(self) -> None:
        if self.write_mode not in ("through", "behind"):
            raise ConfigurationError(
                f"write_mode must be 'through' or 'behind', got {self.write_mode!r}"
            )
        _positive_int("hot_items", self.hot_items, 1, 1_000_000)
        if self.outbox_shards is not None:
            _positive_int("outbox_shards", self.outbox_shards, 1, 4096)
        _positive_int("flush_batch_size", self.flush_batch_size, 1, 100_000)
        _positive_int("max_attempts", self.max_attempts, 1, 1000)
        _positive_int("max_backlog", self.max_backlog, 0, 2**62)
        for name in ("hot_ttl", "flush_interval", "lease_ttl", "inflight_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigurationError(f"{name} must be a number >= 0, got {value!r}")
        if self.lease_ttl < 1:
            raise ConfigurationError("lease_ttl must be at least 1 second")
        _check_replication(self)
        if not isinstance(self.key_prefix, str) or not _PREFIX.fullmatch(self.key_prefix):
            raise ConfigurationError(
                f"key_prefix {self.key_prefix!r} is invalid: "
                "use 1-64 letters, digits, '_', '.', '-'"
            )
        for name in ("sessions_table", "messages_table"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _IDENT.fullmatch(value):
                raise ConfigurationError(
                    f"{name} {value!r} is not a valid table name: use a letter or '_' "
                    "followed by up to 62 letters, digits or '_'"
                )
        if self.sessions_table == self.messages_table:
            raise ConfigurationError("sessions_table and messages_table must differ")


def _check_replication(cfg: StoreConfig) -> None:
    if cfg.redis_cluster not in (True, False, None):
        raise ConfigurationError(
            f"redis_cluster must be True, False or None (detect), got {cfg.redis_cluster!r}"
        )
    _positive_int("replica_acks", cfg.replica_acks, 0, 64)
    timeout = cfg.replica_ack_timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ConfigurationError(f"replica_ack_timeout must be a number > 0, got {timeout!r}")
    if cfg.replica_acks and cfg.write_mode != "behind":
        raise ConfigurationError(
            "replica_acks protects write-behind entries until a flusher commits them; "
            "write-through commits to SQL before returning: use write_mode='behind' or "
            "leave replica_acks at 0"
        )


def _positive_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


def validate_session_id(session_id: Any) -> str:
    """Return the session id, or raise InvalidInputError if it is unusable."""
    if not isinstance(session_id, str):
        raise InvalidInputError(f"session_id must be a str, got {type(session_id).__name__}")
    if not session_id:
        raise InvalidInputError("session_id must not be empty")
    try:
        encoded = session_id.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidInputError(
            f"session_id must be encodable as UTF-8 (character {e.start} is a lone surrogate)"
        ) from None
    if len(encoded) > MAX_SESSION_ID_BYTES:
        raise InvalidInputError(f"session_id is longer than {MAX_SESSION_ID_BYTES} bytes (UTF-8)")
    if "\x00" in session_id:
        raise InvalidInputError("session_id must not contain NUL characters")
    if "\x1f" in session_id:
        raise InvalidInputError(
            "session_id must not contain the control character U+001F (it separates a "
            "session from a branch name in stored ids)"
        )
    return session_id


def default(name: str) -> Any:
    """The default of one :class:`StoreConfig` option (what the CLI offers too)."""
    for f in fields(StoreConfig):
        if f.name == name and f.default is not MISSING:
            return f.default
    raise KeyError(f"StoreConfig has no option {name!r} with a default")


#: query parameters whose values are secrets, in any URL redis-py or SQLAlchemy accepts
_SECRET_PARAMS = re.compile(
    r"(?i)([?&;](?:[a-z_]*pass(?:word|wd)?|pwd|secret|token|api[_-]?key|auth|credentials?|"
    r"ssl_?key(?:file)?_?password)=)[^&;#]*"
)


def redact_url(url: str | None) -> str:
    """A URL fit for logs and errors: no password, in userinfo or in query parameters.

    Example:
        >>> redact_url("redis://user:s3cret@cache:6379/0?password=s3cret&db=1")
        'redis://user:***@cache:6379/0?password=***&db=1'
        >>> redact_url("postgres:s3cret@db/agents")  # no scheme: nothing of it is shown
        '<a URL without scheme://>'
    """
    if url is None:
        return "embedded"
    if "://" not in url:
        return "<a URL without scheme://>"
    scheme, rest = url.split("://", 1)
    netloc_end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, netloc_end)  # (as urlparse: the last "@" ends the userinfo)
    if at >= 0 and ":" in rest[:at]:
        rest = rest[:at].split(":", 1)[0] + ":***" + rest[at:]
    url = f"{scheme}://{rest}"
    return _SECRET_PARAMS.sub(r"\1***", url)
