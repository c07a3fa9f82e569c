"""TieredStore: the Redis hot tier and the SQL source of truth behind one object.

Example:
    >>> import asyncio
    >>> from tiered_session import TieredStore
    >>> async def main():
    ...     async with TieredStore.from_url(write_mode="behind") as store:
    ...         s = store.session("user-1")
    ...         await s.add_items([{"role": "user", "content": "hi"}])
    ...         await store.flush()
    ...         return await s.get_items(limit=1)
    >>> asyncio.run(main())
    [{'role': 'user', 'content': 'hi'}]
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import ResponseError as RedisResponseError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from ._codec import decode_item, encode_item, envelope, split_envelope
from ._config import StoreConfig, validate_session_id
from ._errors import (
    BackpressureError,
    ConfigurationError,
    CorruptDataError,
    InvalidInputError,
    MissingDependencyError,
    StorageUnavailableError,
    StoreClosedError,
    TieredSessionError,
)
from ._keys import KeySpace, SessionKeys
from ._ops import SessionOpsMixin
from ._redis_io import LeanConnectionPool, command_sender, commands_sender
from ._scripts import COLD, SCRIPTS
from ._sql import SqlTier
from ._stats import Counters, StoreStats
from ._through import Settle, WriteThroughMixin, has_pending, redis_down, run_to_completion

if TYPE_CHECKING:
    from ._flusher import Flusher
    from ._session import TieredSession

__all__ = ["TieredStore"]

log = logging.getLogger("tiered_session")
_loads = orjson.loads
T = TypeVar("T")

_REFILL_RETRIES = 200
_WARM_ATTEMPTS = 20  # writes racing evictions re-warm the session and retry


class TieredStore(SessionOpsMixin, WriteThroughMixin):
    """A Redis hot tier plus a SQL source of truth, shared by many sessions.

    Example:
        >>> store = TieredStore.from_url(hot_items=50)  # embedded default
        >>> store.session("user-1").session_id
        'user-1'

    Args:
        redis: a ``redis.asyncio.Redis`` client (``decode_responses=False``);
            the caller keeps ownership. ``None`` uses an in-process fakeredis.
        engine: a SQLAlchemy ``AsyncEngine``; the caller keeps ownership.
            ``None`` uses an in-memory SQLite database (tables created).
        config: a :class:`StoreConfig`; or pass its fields as keyword options.
    """

    def __init__(
        self,
        *,
        redis: Redis | None = None,
        engine: AsyncEngine | None = None,
        config: StoreConfig | None = None,
        **options: Any,
    ) -> None:
        if config is not None and options:
            raise ConfigurationError("pass either config= or keyword options, not both")
        if config is None:
            try:
                config = StoreConfig(**options)
            except TypeError as e:
                raise ConfigurationError(f"unknown option: {e}") from e
        self.config = config
        self._owns_redis = redis is None
        self._owns_engine = engine is None
        if redis is None:
            redis = _embedded_redis()
        # fakeredis cannot block on XREADGROUP: the flusher polls it instead.
        self._fake_redis = type(redis).__module__.startswith("fakeredis")
        if engine is None:
            engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
            config_tables = True
        else:
            config_tables = config.create_tables
        self._create_tables = config_tables
        self.redis: Redis = redis
        self._send = command_sender(redis)
        self._send_many = commands_sender(redis)
        self.engine: AsyncEngine = engine
        self.sql = SqlTier(engine, config.sessions_table, config.messages_table)
        self.keys = KeySpace(config.key_prefix, config.outbox_shards)
        self.counters = Counters()
        self._shas = {name: _sha1(src) for name, src in SCRIPTS.items()}
        self._behind = config.write_mode == "behind"
        self._mode = b"b" if self._behind else b"t"
        self._hot = config.hot_items
        self._ttl_ms = int(config.hot_ttl * 1000)
        # sessions whose expiry this process refreshed (meta key -> monotonic time)
        self._touched: dict[bytes, float] = {}
        self._touch_every = config.hot_ttl / 4
        self._started = False
        self._closed = False
        # write-through settles that could not reach Redis: (keys, args), retried in order
        self._unsettled: list[Settle] = []
        # settles of committed write-through adds not sent yet, by session meta key
        self._deferred: dict[bytes, list[Settle]] = {}
        self._deferred_due = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._degraded_logged = 0.0
        self._start_lock = asyncio.Lock()
        self._flusher: Flusher | None = None
        self._flusher_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_url(
        cls,
        redis_url: str | None = None,
        sql_url: str | None = None,
        *,
        redis_kwargs: dict[str, Any] | None = None,
        engine_kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> TieredStore:
        """Build a store that owns its clients (closed by ``aclose()``).

        ``None`` for a URL selects the embedded default for that tier:
        in-process fakeredis, in-memory SQLite.
        """
        redis = None
        if redis_url is not None:
            if not redis_url.startswith(("redis://", "rediss://", "unix://")):
                raise ConfigurationError("redis_url must start with redis://, rediss:// or unix://")
            # Fail fast when Redis is unreachable or paused, rather than hang.
            # A blocking pool: a burst of more concurrent calls than connections waits
            # for a free connection instead of failing with "Too many connections";
            # a lean one: no lock or probe per checkout (see _redis_io).
            rkw: dict[str, Any] = {
                "socket_timeout": 5.0,
                "socket_connect_timeout": 2.0,
                "max_connections": 128,
                "timeout": 20.0,
            }
            rkw.update(redis_kwargs or {})
            rkw["decode_responses"] = False
            redis = Redis.from_pool(LeanConnectionPool.from_url(redis_url, **rkw))
        engine = None
        if sql_url is not None:
            # No pool_pre_ping: it costs a round trip on every checkout. After a
            # server restart the first call on a dead connection fails, and
            # SQLAlchemy then recycles every connection of the pool.
            ekw: dict[str, Any] = dict(engine_kwargs or {})
            engine = _engine_from_url(sql_url, ekw)
        store = cls(redis=redis, engine=engine, **options)
        store._owns_redis = True
        store._owns_engine = True
        return store

    def session(self, session_id: str, *, session_settings: Any = None) -> TieredSession:
        """Return a session bound to this store (cheap; no I/O)."""
        from ._session import TieredSession

        return TieredSession(
            session_id,
            store=self,
            session_settings=(
                session_settings if session_settings is not None else self.config.session_settings
            ),
        )

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Create tables (if asked) and start the in-process flusher. Idempotent."""
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            if self._closed:
                raise StoreClosedError("this store is closed; create a new one")
            from ._schema import ensure_schema

            try:
                await ensure_schema(self.sql, create=self._create_tables)
            except StorageUnavailableError as e:
                # SQL down must not stop a process from starting: write-behind keeps
                # accepting writes, reads are served from Redis, and SQL errors say so.
                log.warning("SQL unreachable at start, schema not checked: %s", e)
            if self.config.run_flusher:
                from ._flusher import Flusher

                self._flusher = Flusher(self)
                self._flusher_task = asyncio.create_task(
                    self._flusher.run(self._stop), name="tiered-session-flusher"
                )
                self._flusher_task.add_done_callback(_report_flusher_exit)
            self._started = True

    async def _ready(self) -> None:
        if not self._started:
            await self.start()
        elif self._closed:
            raise StoreClosedError("this store is closed; create a new one")
        if self._unsettled:
            with contextlib.suppress(StorageUnavailableError):  # retried again later
                await self._retry_unsettled()

    async def aclose(self, *, drain_timeout: float = 10.0) -> None:
        """Drain and stop the flusher, then close the clients this store owns.

        Idempotent. Clients passed in by the caller are left open.
        """
        if self._closed:
            return
        self._closed = True
        await self._send_deferred()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._flusher_task is not None:
            if self._flusher is not None:
                self._flusher.drain_timeout = drain_timeout
            self._stop.set()
            try:
                # The flusher drains within drain_timeout, then releases its leases.
                await asyncio.wait_for(asyncio.shield(self._flusher_task), drain_timeout + 5)
            except TimeoutError:
                self._flusher_task.cancel()
                log.warning("flusher did not stop within %.1fs; cancelled it", drain_timeout + 5)
            except Exception as e:  # the flusher task itself failed: report, keep closing
                log.error("flusher task failed: %s: %s", type(e).__name__, e)
            await asyncio.gather(self._flusher_task, return_exceptions=True)
            self._flusher_task = None
        if self._unsettled:
            try:
                await self._retry_unsettled()
            except StorageUnavailableError as e:
                log.warning(
                    "%d write-through operation(s) could not be finished in Redis (%s); a "
                    "flusher finishes them after inflight_timeout",
                    len(self._unsettled),
                    e,
                )
        await self.sql.close()
        if self._owns_redis:
            await self.redis.aclose()
        if self._owns_engine:
            await self.engine.dispose()

    async def __aenter__(self) -> TieredStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ redis plumbing
    async def _script(self, name: str, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        # One EVALSHA on one pooled connection: the hot path of every session call.
        try:
            try:
                return await self._send("EVALSHA", self._shas[name], len(keys), *keys, *args)
            except NoScriptError:  # first use on this server (or after SCRIPT FLUSH)
                await self.redis.script_load(SCRIPTS[name])
                return await self._send("EVALSHA", self._shas[name], len(keys), *keys, *args)
        except RedisResponseError as e:
            raise StorageUnavailableError(f"Redis rejected script {name!r}: {e}") from e
        except (RedisError, OSError) as e:
            raise _unreachable(e) from e

    async def _send_after(
        self, settles: list[Settle], cmd: Sequence[Any], script: str | None = None
    ) -> Any:
        """Send deferred settles, then ``cmd`` (of ``script``, if named), in one round trip.

        Returns ``cmd``'s reply, as ``_script`` or ``_command`` would. Settles
        whose fate is unknown are queued for a retry (they are idempotent).
        """
        sha = self._shas["settle"]
        cmds: list[Sequence[Any]] = [("EVALSHA", sha, len(ks), *ks, *a) for ks, a in settles]
        cmds.append(cmd)
        try:
            replies = await self._send_many(cmds)
        except BaseException as e:
            self._unsettled.extend(settles)
            if isinstance(e, RedisError | OSError):
                raise _unreachable(e) from e
            raise
        for (ks, a), r in zip(settles, replies, strict=False):
            if isinstance(r, NoScriptError):
                await self._finish_deferred(ks, a)
            elif isinstance(r, Exception):
                log.error("settling a write-through add failed: %s", r)
        reply = replies[-1]
        if isinstance(reply, NoScriptError) and script is not None:
            return await self._script(script, cmd[3 : 3 + int(cmd[2])], cmd[3 + int(cmd[2]) :])
        if isinstance(reply, Exception):
            raise StorageUnavailableError(f"Redis rejected {script or cmd[0]}: {reply}")
        return reply

    async def _command(self, *args: Any) -> Any:
        """Run one plain Redis command on the hot path."""
        try:
            return await self._send(*args)
        except RedisResponseError as e:
            raise StorageUnavailableError(f"Redis rejected {args[0]}: {e}") from e
        except (RedisError, OSError) as e:
            raise _unreachable(e) from e

    @staticmethod
    def _skeys(k: SessionKeys) -> list[bytes]:
        return [k.meta, k.items, k.reserved, k.shard.outbox, k.shard.inflight, k.shard.index]

    # ------------------------------------------------------------------ warming
    async def _warm(self, k: SessionKeys) -> None:
        """Load a session's newest items from SQL into Redis (first writer wins).

        The eviction generation is read before SQL: if the session is evicted
        while SQL is read (a write may have landed in between), the snapshot is
        not installed and SQL is read again.
        """
        self.counters.cache_misses += 1
        for _ in range(_WARM_ATTEMPTS):
            gen = await self._redis_call(self.redis.get(k.gen)) or b"0"
            rows = await self.sql.latest(k.session_id, None, self._hot + 1)
            full = len(rows) <= self._hot
            if not full:
                rows = rows[1:]
            n = rows[-1][0] if rows else 0
            floor = rows[0][0] if rows else n + 1
            envs = [envelope(q, d.encode()) for q, d in rows]
            res = await self._script(
                "warm",
                [k.meta, k.items, k.reserved, k.gen],
                [n, floor, int(full), self._ttl_ms, gen, *envs],
            )
            if res == -2:
                raise StorageUnavailableError(
                    f"session {k.session_id!r}: its hot list is gone from Redis while writes "
                    "are pending (was it evicted by a maxmemory policy?). Run Redis with "
                    "maxmemory-policy noeviction (or volatile-*: pending keys carry no expiry)"
                )
            if res == 1:  # installed with a fresh expiry: no refresh due for a while
                self._touched[k.meta] = time.monotonic()
            if res != -1:
                return
        raise StorageUnavailableError(
            f"session {k.session_id!r} was evicted {_WARM_ATTEMPTS} times while loading it"
        )

    # ------------------------------------------------------------------ reads
    async def get_items(self, k: SessionKeys, limit: int | None) -> list[Any]:
        """Return the newest ``limit`` items (all when None) in chronological order.

        When Redis is unreachable the items come from SQL alone: a *degraded*
        read, counted in ``stats()["degraded_reads"]`` and logged. In
        write-behind mode it lacks the writes not flushed yet (they are safe in
        the Redis outbox and reappear when Redis is back).
        """
        try:
            return await self._read_items(k, limit)
        except StorageUnavailableError as e:
            if not redis_down(e):
                raise
            rows = await self.sql.latest(k.session_id, None, limit)
            self.counters.degraded_reads += 1
            now = time.monotonic()
            if now - self._degraded_logged > 10.0:
                self._degraded_logged = now
                log.warning("Redis unreachable; reading from SQL only (degraded): %s", e.__cause__)
            return self._decode_rows(k, rows)

    async def _read_items(self, k: SessionKeys, limit: int | None) -> list[Any]:
        if limit is None:
            lim = -1
        elif isinstance(limit, bool) or not isinstance(limit, int):
            raise InvalidInputError(f"limit must be an int or None, got {limit!r}")
        elif limit < 0:
            raise InvalidInputError(f"limit must be >= 0 or None, got {limit}")
        elif limit == 0:
            return []
        else:
            lim = limit
        await self._ready()
        # One plain LRANGE (after this store's deferred settle of the session, in the
        # same write). The list's first element is a header ("#<full>|<floor>"): a
        # reply that holds it is the whole list; one that does not holds `lim` items.
        cmd = ("LRANGE", k.items, 0 if lim < 0 else -lim, -1)
        settles = self._take_deferred(k)
        envs = await (self._send_after(settles, cmd) if settles else self._command(*cmd))
        if envs and envs[0][:1] == b"#":
            head = envs[0]
            return await self._answer(k, lim, head[1:2] == b"1", int(head[3:]), envs[1:], True)
        if lim > 0 and len(envs) == lim:
            return await self._answer(k, lim, False, 0, envs, False)
        for attempt in range(2):  # not in Redis: warm it up, then read through the script
            res = await self._script("read", [k.meta, k.items], [lim])
            if res[0] != COLD:
                full, floor, envs = bool(res[0]), int(res[1]), res[2]
                return await self._answer(k, lim, full, floor, envs, lim < 0 or len(envs) < lim)
            if attempt == 0:
                await self._warm(k)
        # Evicted again meanwhile. A session leaves Redis only with nothing
        # pending, so SQL holds its whole history: answer from there.
        self.counters.cold_reads += 1
        rows = await self.sql.latest(k.session_id, None, None if lim < 0 else lim)
        return self._decode_rows(k, rows)

    async def _answer(
        self, k: SessionKeys, lim: int, full: bool, floor: int, envs: list[bytes], whole: bool
    ) -> list[Any]:
        """Items from the hot list, completed from SQL below ``floor`` when they are not all.

        ``whole``: ``envs`` is the whole list (else its newest ``lim`` entries).
        """
        if has_pending(envs):
            resolved = await self._read_past_pending(k, lim, full, floor, envs, whole)
            if resolved is None:  # the session left Redis meanwhile: SQL holds it all
                self.counters.cold_reads += 1
                rows = await self.sql.latest(k.session_id, None, None if lim < 0 else lim)
                return self._decode_rows(k, rows)
            full, floor, envs = resolved
        items = self._decode_envelopes(k, envs)
        if full or (lim > 0 and len(items) >= lim):
            self.counters.cache_hits += 1
            if self._touch_due(k):
                await self._script("touch", [k.meta, k.items], [self._ttl_ms])
            return items
        self.counters.cold_reads += 1
        rows = await self.sql.latest(k.session_id, floor, None if lim < 0 else lim - len(items))
        return self._decode_rows(k, rows) + items

    def _touch_due(self, k: SessionKeys) -> bool:
        """Whether this call should refresh the session's expiry (at most every hot_ttl / 4).

        A True answer counts as the refresh: the caller sends it with its call.
        """
        if self._ttl_ms <= 0:
            return False
        now = time.monotonic()
        last = self._touched.get(k.meta)
        if last is not None and now - last < self._touch_every:
            return False
        if len(self._touched) >= 100_000:
            self._touched.clear()
        self._touched[k.meta] = now
        return True

    def _decode_envelopes(self, k: SessionKeys, envs: list[bytes]) -> list[Any]:
        try:  # fast path: skip "<seq>|", parse the JSON as stored
            return [_loads(e[e.index(b"|") + 1 :]) for e in envs]
        except ValueError:  # orjson.JSONDecodeError is a ValueError too
            pass
        pairs = []  # slow path: find and name the bad entry
        for env in envs:
            try:
                pairs.append(split_envelope(env))
            except CorruptDataError as e:
                self._report_corrupt(k, "Redis hot list", e)
                raise
        return self._decode_rows(k, pairs)

    def _decode_rows(self, k: SessionKeys, rows: Sequence[tuple[int, bytes | str]]) -> list[Any]:
        out = []
        for seq, data in rows:
            try:
                out.append(decode_item(data))
            except CorruptDataError as e:
                self._report_corrupt(k, f"item seq={seq}", e)
                raise CorruptDataError(
                    f"session {k.session_id!r}: item seq={seq} is not valid JSON; "
                    "repair or delete that row in SQL, then evict the session"
                ) from e
        return out

    def _report_corrupt(self, k: SessionKeys, where: str, e: Exception) -> None:
        self.counters.corrupt_rows += 1
        log.error("corrupt item in %s of session %r: %s", where, k.session_id, e)

    # ------------------------------------------------------------------ writes
    async def add_items(self, k: SessionKeys, items: Sequence[Any]) -> None:
        """Append items atomically (all or none)."""
        if not isinstance(items, list | tuple):
            raise InvalidInputError(f"items must be a list, got {type(items).__name__}")
        if not items:
            await self._ready()
            return
        datas = [encode_item(item) for item in items]  # validates before any write
        await self._ready()
        if self._behind:
            # One atomic script (after a warm-up that writes no item): a caller
            # cancelled meanwhile leaves the whole batch or none without a shield.
            await self._add(k, datas, None)
        else:
            # Taken now, before the task starts: the previous add's deferred
            # settle travels with this add's script.
            await run_to_completion(self._add(k, datas, self._take_deferred(k)))
        self.counters.items_added += len(datas)

    async def _add(self, k: SessionKeys, datas: list[bytes], settles: list[Settle] | None) -> None:
        now = int(time.time() * 1000)
        args: list[Any] = [
            self._mode,
            self._hot,
            self._ttl_ms if self._touch_due(k) else 0,  # refresh the expiry every ttl/4
            self.config.max_backlog,
            k.session_id,
            now,
            *datas,
        ]
        for _ in range(_WARM_ATTEMPTS):
            if settles:
                keys = self._skeys(k)
                cmd = ("EVALSHA", self._shas["add"], len(keys), *keys, *args)
                res = await self._send_after(settles, cmd, "add")
                settles = None
            else:
                res = await self._script("add", self._skeys(k), args)
            if res[0] == COLD:
                await self._warm(k)
                continue
            if res[0] == -5:  # Redis was found behind SQL: reload the session first
                if await self._script("evict", [k.meta, k.items, k.reserved, k.gen], []):
                    await self._warm(k)
                    continue
                raise StorageUnavailableError(
                    f"session {k.session_id!r}: Redis was behind SQL (it lost writes SQL has) "
                    "and writes restored with it are still pending; adds are refused until a "
                    "flusher settles them (within inflight_timeout): retry later"
                )
            if res[0] == -2:
                raise BackpressureError(
                    f"write-behind backlog of shard {k.shard.shard} reached max_backlog="
                    f"{self.config.max_backlog}; the items were not accepted. Check that a "
                    "flusher is running and SQL is reachable, then retry."
                )
            if self._behind:
                return
            await self._commit_add(k, int(res[0]), datas, alone=int(res[1]) == 0)
            return
        raise StorageUnavailableError(f"session {k.session_id!r} could not be loaded into Redis")

    async def pop_item(self, k: SessionKeys) -> Any:
        """Remove and return the newest item, or None when the session is empty."""
        await self._ready()
        return await run_to_completion(self._pop(k))

    async def _pop(self, k: SessionKeys) -> Any:
        now = int(time.time() * 1000)
        await self._send_deferred(k)
        n0, pause, since, refills = 0, 0.0005, time.monotonic(), 0
        while refills < _REFILL_RETRIES:
            refills += 1
            res = await self._script("pop", self._skeys(k), [self._mode, k.session_id, now, n0])
            status = res[0]
            if status == -4:  # an add reserved before this pop is pending: wait for it
                n0, refills = int(res[1]), refills - 1
                pause = await self._wait_settled(k, since, pause)
                continue
            if status == COLD:
                await self._warm(k)
                continue
            if status == 0:
                return None
            if status == -3:
                if int(res[1]) + int(res[2]):
                    # SQL is not yet up to date for this session: let it catch up.
                    if self._flusher is not None:
                        self._flusher.wake()
                    refills -= 1
                    pause = await self._wait_settled(k, since, pause)
                    continue
                await self._refill(k, int(res[3]))
                continue
            env: bytes = res[1]
            seq, data = split_envelope(env)
            try:
                item = decode_item(data)
            except CorruptDataError as e:
                # The pop has been taken: report loudly rather than skip silently.
                self._report_corrupt(k, "Redis hot list", e)
                if not self._behind:
                    await self._commit_pop(k, seq, env)
                raise
            if not self._behind:
                await self._commit_pop(k, seq, env)
            return item
        raise StorageUnavailableError(f"pop on {k.session_id!r} could not refill the hot list")

    async def _refill(self, k: SessionKeys, floor: int) -> None:
        """Move older items from SQL below the floor into the empty hot list."""
        rows = await self.sql.latest(k.session_id, floor, self._hot + 1)
        full = len(rows) <= self._hot
        if not full:
            rows = rows[1:]
        new_floor = rows[0][0] if rows else floor
        envs = [envelope(q, d.encode()) for q, d in reversed(rows)]
        self.counters.cold_reads += 1
        await self._script("refill", [k.meta, k.items], [floor, new_floor, int(full), *envs])

    async def clear_session(self, k: SessionKeys) -> None:
        """Delete every item of the session."""
        await self._ready()
        await run_to_completion(self._clear(k))

    async def _clear(self, k: SessionKeys) -> None:
        now = int(time.time() * 1000)
        await self._send_deferred(k)
        n0, pause, since, warms = 0, 0.0005, time.monotonic(), 0
        while warms < _WARM_ATTEMPTS:
            warms += 1
            res = await self._script("clear", self._skeys(k), [self._mode, k.session_id, now, n0])
            if res[0] == -4:  # an add reserved before this clear is pending: wait for it
                n0, warms = int(res[1]), warms - 1
                pause = await self._wait_settled(k, since, pause)
                continue
            if res[0] == COLD:
                await self._warm(k)
                continue
            if self._behind:
                return
            await self._commit_clear(k, int(res[1]), [int(x) for x in res[2:]])
            return
        raise StorageUnavailableError(f"session {k.session_id!r} could not be loaded into Redis")

    async def _redis_call(self, aw: Awaitable[T]) -> T:
        try:
            return await aw
        except (RedisError, OSError) as e:
            raise _unreachable(e) from e

    # ------------------------------------------------------------------ operations
    async def flush(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Return once every write accepted so far is committed in SQL.

        Waits for whichever flusher owns each shard (this process's, or a
        worker's). Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        await self._ready()
        await self._send_deferred()
        if self._tasks:  # deferred settles already on their way
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        shards = self.keys.all_shards()
        pipe = self.redis.pipeline(transaction=False)
        for sh in shards:
            pipe.xrevrange(sh.outbox, count=1)
        tips = await self._redis_call(pipe.execute())
        targets = [(sh, tip[0][0]) for sh, tip in zip(shards, tips, strict=True) if tip]
        deadline = None if timeout is None else time.monotonic() + timeout
        while targets:
            pipe = self.redis.pipeline(transaction=False)
            for sh, tip in targets:
                pipe.xrange(sh.outbox, min="-", max=tip, count=1)
            left = await self._redis_call(pipe.execute())
            targets = [t for t, rest in zip(targets, left, strict=True) if rest]
            if not targets:
                return
            if self._flusher is not None:
                self._flusher.wake()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"flush did not finish within {timeout}s: {len(targets)} shard(s) still "
                    "have unflushed entries; is a flusher running and SQL reachable?"
                )
            await asyncio.sleep(0.002)

    async def evict(self, session_id: str, *, timeout: float | None = 30.0) -> None:  # noqa: ASYNC109
        """Flush a session, then drop its Redis copy; the next read re-warms from SQL.

        Waits until a flusher has committed the session's pending writes; raises
        ``TimeoutError`` after ``timeout`` seconds (``None``: wait forever).
        """
        k = self.keys.session(validate_session_id(session_id))
        await self._ready()
        await self._send_deferred(k)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if await self._script("evict", [k.meta, k.items, k.reserved, k.gen], []):
                return
            if self._flusher is not None:
                self._flusher.wake()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"evict({session_id!r}) waited {timeout}s for its pending writes to reach "
                    "SQL; is a flusher running (run_flusher=True or `tiered-session flush`) "
                    "and SQL reachable?"
                )
            await asyncio.sleep(0.002)

    async def stats(self) -> StoreStats:
        """Return counters of this process plus backlog figures from Redis."""
        await self._ready()
        shards = self.keys.all_shards()
        pipe = self.redis.pipeline(transaction=False)
        for sh in shards:
            pipe.xlen(sh.outbox)
            pipe.xrange(sh.outbox, count=1)
            pipe.xlen(sh.dead)
        pipe.zcount(self.keys.flushers, int(time.time() * 1000), "+inf")
        res = await self._redis_call(pipe.execute())
        live = int(res.pop())
        backlog = sum(res[0::3])
        dead = sum(res[2::3])
        oldest = [int(r[0][0].split(b"-")[0]) for r in res[1::3] if r]
        lag = max(0.0, time.time() - min(oldest) / 1000) if oldest else 0.0
        c = self.counters
        return StoreStats(
            write_mode=self.config.write_mode,
            cache_hits=c.cache_hits,
            cache_misses=c.cache_misses,
            cold_reads=c.cold_reads,
            degraded_reads=c.degraded_reads,
            corrupt_rows=c.corrupt_rows,
            items_added=c.items_added,
            flush_batches=c.flush_batches,
            flushed_entries=c.flushed_entries,
            flush_errors=c.flush_errors,
            recovered_operations=c.recovered_operations,
            backlog=backlog,
            flush_lag_seconds=round(lag, 3),
            dead_letters=dead,
            live_flushers=live,
        )


def _report_flusher_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        e = task.exception()
        log.error(
            "the in-process flusher stopped on an unexpected %s: %s; this process no longer "
            "flushes (run a `tiered-session flush` worker, or restart the process)",
            type(e).__name__,
            e,
        )


def _unreachable(e: BaseException) -> StorageUnavailableError:
    return StorageUnavailableError(
        f"Redis unreachable ({type(e).__name__}: {e}). Reads fall back to SQL; writes are "
        "refused until Redis is back (a write-behind write that timed out may still have been "
        "accepted): retry later"
    )


def _sha1(script: str) -> str:
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


def _embedded_redis() -> Redis:
    try:
        import fakeredis
    except ImportError as e:  # pragma: no cover - fakeredis is a core dependency
        raise MissingDependencyError("fakeredis", "embedded") from e
    client: Redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=False)
    return client


def _engine_from_url(url: str, engine_kwargs: dict[str, Any]) -> AsyncEngine:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise ConfigurationError(
            f"unsupported sql_url scheme {scheme or url[:20]!r}: use sqlite+aiosqlite:///path.db "
            "(or sqlite+aiosqlite:// for in-memory) or postgresql+asyncpg://user@host/db"
        )
    kwargs = dict(engine_kwargs)
    if url.startswith("sqlite") and (url.endswith("://") or ":memory:" in url):
        kwargs.setdefault("poolclass", StaticPool)
    elif scheme == "postgresql+asyncpg" and "poolclass" not in kwargs:
        # A fixed pool: SQLAlchemy closes an overflow connection on every return, so
        # with more concurrent calls than pool_size each call beyond it reconnects
        # (measured: 64 concurrent write-through adds, 1,100/s with the default 5 + 10
        # overflow, 6,000/s with 10 + 0). Callers beyond the pool wait pool_timeout.
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 0)
        kwargs.setdefault("pool_use_lifo", True)
    try:
        return create_async_engine(url, **kwargs)
    except Exception as e:
        raise ConfigurationError(f"invalid sql_url: {type(e).__name__}: {e}") from e


# Re-exported for the type checker in other modules.
_ = TieredSessionError
