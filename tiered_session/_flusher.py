"""The flusher: moves accepted writes from the Redis outbox into SQL.

Each outbox shard is a Redis stream read through the consumer group
``flushers``. A flusher takes a *lease* on a shard before reading it, so one
shard is drained by one flusher at a time and per-session order is kept even
with many flusher processes. Entries are acknowledged (and deleted) only after
their SQL transaction commits; a flusher that dies leaves its entries pending,
and whoever takes the lease next claims and replays them (inserts are
idempotent on ``(session_id, seq)``).

Example:
    >>> import asyncio
    >>> from tiered_session import TieredStore
    >>> async def main():
    ...     store = TieredStore.from_url(write_mode="behind", run_flusher=False)
    ...     await store.session("s").add_items([{"n": 1}])
    ...     flusher = Flusher(store)
    ...     moved = await flusher.drain()
    ...     await store.aclose()
    ...     return moved
    >>> asyncio.run(main())
    1
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from redis.exceptions import RedisError, ResponseError
from sqlalchemy.exc import DataError, IntegrityError

from ._errors import StorageUnavailableError
from ._keys import ShardKeys
from ._sql import Op

if TYPE_CHECKING:
    from ._store import TieredStore

__all__ = ["GROUP", "Flusher"]

log = logging.getLogger("tiered_session.flusher")

GROUP = "flushers"
_MAX_BACKOFF = 5.0


@dataclass
class _Entry:
    id: bytes
    fields: dict[bytes, bytes]
    op: Op | None = None
    error: str = ""


@dataclass
class _ShardState:
    keys: ShardKeys
    replay: bool = True  # read our own pending entries before new ones
    failures: int = 0
    attempts: dict[bytes, int] = field(default_factory=dict)
    retry_at: float = 0.0


class Flusher:
    """Drains outbox shards into SQL; run many at once, in- or out-of-process."""

    def __init__(
        self,
        store: TieredStore,
        *,
        shards: Sequence[int] | None = None,
        batch_size: int | None = None,
        interval: float | None = None,
    ) -> None:
        self.store = store
        cfg = store.config
        self.batch_size = batch_size or cfg.flush_batch_size
        self.interval = cfg.flush_interval if interval is None else interval
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        wanted = range(cfg.outbox_shards) if shards is None else shards
        self._wanted = [store.keys.shard(i) for i in wanted]
        self._owned: dict[int, _ShardState] = {}
        self._lease_ms = int(cfg.lease_ttl * 1000)
        self._next_lease = 0.0
        self._next_recovery = 0.0
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._block = not store._fake_redis

    def wake(self) -> None:
        """Ask the flusher to look for work now."""
        self._wake.set()

    # ------------------------------------------------------------------ leases
    async def _maintain_leases(self) -> None:
        now = time.monotonic()
        if now < self._next_lease:
            return
        self._next_lease = now + self.store.config.lease_ttl / 3
        redis = self.store.redis
        for sh in self._wanted:
            held = await self.store._script("lease", [sh.lease], [self.token, self._lease_ms])
            if held and sh.shard not in self._owned:
                try:
                    await redis.xgroup_create(sh.outbox, GROUP, id="0", mkstream=True)
                except ResponseError as e:
                    if "BUSYGROUP" not in str(e):
                        raise
                self._owned[sh.shard] = _ShardState(sh)
                log.debug("flusher %s took shard %d", self.token, sh.shard)
            elif not held and sh.shard in self._owned:
                del self._owned[sh.shard]
                log.warning("flusher %s lost the lease of shard %d", self.token, sh.shard)

    async def release(self) -> None:
        """Give up every lease so another flusher can take over at once."""
        for state in list(self._owned.values()):
            with contextlib.suppress(StorageUnavailableError):
                await self.store._script("release", [state.keys.lease], [self.token])
        self._owned.clear()
        self._next_lease = 0.0

    # ------------------------------------------------------------------ main loop
    async def run(self, stop: asyncio.Event, *, drain_on_stop: bool = True) -> None:
        """Flush until ``stop`` is set, then drain what is left (best effort)."""
        self._stop = stop
        backoff = 0.0
        while not stop.is_set():
            try:
                moved = await self._step(block=True)
                backoff = 0.0
            except (StorageUnavailableError, RedisError, OSError) as e:
                backoff = min(_MAX_BACKOFF, max(0.05, backoff * 2))
                log.warning("flusher: %s; retrying in %.2fs", e, backoff)
                moved = 0
                await _sleep_or(stop, backoff)
                continue
            if moved == 0 and not self._block:
                await _sleep_or(stop, self.interval, self._wake)
        if drain_on_stop:
            try:
                await self.drain()
            except (StorageUnavailableError, RedisError, OSError) as e:
                log.warning("flusher: could not drain on stop: %s", e)
        await self.release()

    async def drain(self, *, max_rounds: int = 1000) -> int:
        """Flush until the owned shards have nothing left; return entries moved."""
        total = 0
        for _ in range(max_rounds):
            moved = await self._step(block=False)
            total += moved
            if moved == 0 and all(not s.replay for s in self._owned.values()):
                break
        return total

    async def _step(self, *, block: bool) -> int:
        await self._maintain_leases()
        await self._recover_inflight()
        if not self._owned:
            if block:
                await _sleep_or(self._stop, min(1.0, self.store.config.lease_ttl / 3), self._wake)
            return 0
        moved = 0
        now = time.monotonic()
        for state in self._owned.values():
            if state.replay and now >= state.retry_at:
                moved += await self._read_and_apply(state, b"0")
        ready = [s for s in self._owned.values() if not s.replay]
        if not ready:
            if block and moved == 0:
                await _sleep_or(self._stop, 0.05)
            return moved
        self._wake.clear()
        block_ms = int(self.interval * 1000) if (block and self._block and moved == 0) else None
        try:
            resp = await self._xreadgroup({s.keys.outbox: b">" for s in ready}, block_ms)
        except ResponseError as e:
            if "NOGROUP" in str(e):
                self._owned.clear()  # stream deleted under us: re-create groups
                self._next_lease = 0.0
                return moved
            raise
        by_stream = {s.keys.outbox: s for s in ready}
        for stream, entries in resp:
            state = by_stream[stream]
            moved += await self._apply(state, [_Entry(eid, f) for eid, f in entries])
        return moved

    async def _xreadgroup(
        self, streams: dict[bytes, bytes], block_ms: int | None
    ) -> list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]:
        resp = await self.store.redis.xreadgroup(
            GROUP,
            self.token,
            dict(streams),  # type: ignore[arg-type]
            count=self.batch_size,
            block=block_ms,
        )
        return cast(list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]], resp or [])

    async def _read_and_apply(self, state: _ShardState, start: bytes) -> int:
        resp = await self._xreadgroup({state.keys.outbox: start}, None)
        entries = [_Entry(eid, f) for _, es in resp for eid, f in es if f]
        if not entries:
            # Also take over entries left pending by flushers that died.
            claimed = await self._claim_orphans(state)
            if not claimed:
                state.replay = False
            return 0
        return await self._apply(state, entries)

    async def _claim_orphans(self, state: _ShardState) -> int:
        redis = self.store.redis
        start: bytes = b"0-0"
        claimed = 0
        while True:
            res = await redis.xautoclaim(
                state.keys.outbox,
                GROUP,
                self.token,
                min_idle_time=0,
                start_id=start,
                count=1000,
            )
            start = res[0]
            claimed += len(res[1])
            if start in (b"0-0", "0-0"):
                return claimed

    # ------------------------------------------------------------------ applying
    async def _apply(self, state: _ShardState, entries: list[_Entry]) -> int:
        store = self.store
        good: list[_Entry] = []
        for e in entries:
            e.op, e.error = _parse(e.fields)
            if e.op is None:
                await self._dead_letter(state, e, e.error)
            else:
                good.append(e)
        if not good:
            return len(entries)
        if not await self._still_owner(state):
            return 0
        try:
            async with store.sql.begin() as conn:
                await store.sql.apply(conn, [e.op for e in good if e.op is not None])
        except StorageUnavailableError as err:
            return await self._failed(state, good, err)
        await self._ack(state, good)
        state.failures = 0
        for e in good:
            state.attempts.pop(e.id, None)
        store.counters.flush_batches += 1
        store.counters.flushed_entries += len(good)
        return len(entries)

    async def _still_owner(self, state: _ShardState) -> bool:
        cur = await self.store.redis.get(state.keys.lease)
        if cur == self.token.encode():
            return True
        self._owned.pop(state.keys.shard, None)
        log.warning("flusher %s lost shard %d before commit", self.token, state.keys.shard)
        return False

    async def _failed(self, state: _ShardState, batch: list[_Entry], err: Exception) -> int:
        store = self.store
        store.counters.flush_errors += 1
        state.replay = True
        state.failures += 1
        state.retry_at = time.monotonic() + min(_MAX_BACKOFF, 0.05 * 2**state.failures)
        poison = isinstance(err.__cause__, IntegrityError | DataError)
        if not poison:
            log.warning("flusher: SQL unavailable (%s); will retry", err)
            return 0
        for e in batch:
            state.attempts[e.id] = state.attempts.get(e.id, 0) + 1
        if len(batch) == 1 and state.attempts[batch[0].id] >= store.config.max_attempts:
            await self._dead_letter(state, batch[0], str(err))
            return 1
        if len(batch) > 1:
            # Isolate the poison entry: replay one entry at a time.
            for entry in batch:
                try:
                    async with store.sql.begin() as conn:
                        await store.sql.apply(conn, [entry.op] if entry.op else [])
                except StorageUnavailableError as one_err:
                    state.attempts[entry.id] = state.attempts.get(entry.id, 0) + 1
                    if state.attempts[entry.id] >= store.config.max_attempts:
                        await self._dead_letter(state, entry, str(one_err))
                        continue
                    return 0
                await self._ack(state, [entry])
        return 0

    async def _ack(self, state: _ShardState, entries: list[_Entry]) -> None:
        per_session: dict[str, list[int]] = {}  # ops, max added seq, barriers
        for e in entries:
            assert e.op is not None
            ops_max = per_session.setdefault(e.op.session_id, [0, 0, 0])
            ops_max[0] += 1
            if e.op.kind == "a" and e.op.rows:
                ops_max[1] = max(ops_max[1], e.op.rows[-1][0])
            elif e.op.kind != "a":
                ops_max[2] += 1
        keys: list[bytes] = [state.keys.outbox]
        tail: list[Any] = []
        for sid, (ops, mx, barriers) in per_session.items():
            k = self.store.keys.session(sid)
            keys += [k.meta, k.items, k.hidden]
            tail += [ops, mx, barriers]
        store = self.store
        await store._script(
            "ack",
            keys,
            [
                GROUP,
                store.config.hot_items,
                store._ttl_ms,
                len(entries),
                *[e.id for e in entries],
                *tail,
            ],
        )

    async def _dead_letter(self, state: _ShardState, e: _Entry, reason: str) -> None:
        sid = e.fields.get(b"s", b"").decode("utf-8", "replace")
        meta = self.store.keys.session(sid).meta if sid else state.keys.outbox + b":none"
        flat: list[bytes] = []
        for k, v in e.fields.items():
            flat += [k, v]
        await self.store._script(
            "dead",
            [state.keys.outbox, state.keys.dead, meta],
            [GROUP, e.id, reason[:500], int(e.fields.get(b"o", b"a") != b"a"), *flat],
        )
        state.attempts.pop(e.id, None)
        log.error(
            "outbox entry %s of session %r moved to dead letters: %s",
            e.id.decode(),
            sid,
            reason[:200],
        )

    # ------------------------------------------------------------------ recovery
    async def _recover_inflight(self) -> None:
        """Turn write-through operations whose writer vanished into outbox entries."""
        now = time.monotonic()
        if now < self._next_recovery or not self._owned:
            return
        cfg = self.store.config
        self._next_recovery = now + max(1.0, cfg.inflight_timeout / 4)
        cutoff = int((time.time() - cfg.inflight_timeout) * 1000)
        for state in list(self._owned.values()):
            entries = cast(dict[bytes, bytes], await self.store.redis.hgetall(state.keys.inflight))
            for op_id, ts in entries.items():
                if int(ts) > cutoff:
                    continue
                kind = op_id[:1]
                parts = op_id.split(b"|", 3 if kind == b"a" else 2)
                sid = parts[-1].decode("utf-8", "surrogatepass")
                k = self.store.keys.session(sid)
                done = await self.store._script(
                    "recover",
                    [k.meta, k.items, k.hidden, k.shard.outbox, k.shard.inflight],
                    [op_id, sid],
                )
                if done:
                    self.store.counters.recovered_operations += 1
                    log.warning(
                        "recovered write-through %s on session %r whose writer vanished",
                        kind.decode(),
                        sid,
                    )


def _parse(f: dict[bytes, bytes]) -> tuple[Op | None, str]:
    """Decode an outbox entry into an Op, or explain why it cannot be."""
    try:
        kind = f[b"o"].decode()
        sid = f[b"s"].decode("utf-8", "surrogatepass")
        seq = int(f[b"q"])
        if kind == "a":
            data = f[b"d"]
            rows: list[tuple[int, str]] = []
            pos = 0
            for i, ln in enumerate(f[b"l"].split(b",")):
                n = int(ln)
                rows.append((seq + i, data[pos : pos + n].decode("utf-8")))
                pos += n
            if pos != len(data):
                return None, "item lengths do not match the data"
            return Op("a", sid, seq, rows=rows), ""
        if kind == "p":
            return Op("p", sid, seq), ""
        if kind == "c":
            keep = [int(x) for x in f.get(b"k", b"").split(b",") if x]
            return Op("c", sid, seq, keep=keep), ""
        if kind == "x":
            return Op("x", sid, seq, count=int(f[b"c"])), ""
        return None, f"unknown operation {kind!r}"
    except (KeyError, ValueError, UnicodeDecodeError) as e:
        return None, f"undecodable entry: {type(e).__name__}: {e}"


async def _sleep_or(stop: asyncio.Event, seconds: float, wake: asyncio.Event | None = None) -> None:
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    if wake is not None:
        wake.clear()
