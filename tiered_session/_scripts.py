"""Lua scripts: every multi-step change to a session's Redis state is one script.

Each script receives all its keys through ``KEYS`` and touches one cluster
slot (a session's keys and its shard's keys share a hash tag).

Per-session metadata hash (``…:m:<id>``):

========  ===============================================================
``n``     last sequence number assigned
``f``     floor: every live item with ``seq >= f`` is in the hot list
``full``  1 when the hot list holds the whole history (reads never go to SQL)
``p``     write-behind operations accepted but not yet committed to SQL
``w``     highest seq known to be in SQL (items above it are never trimmed)
``h``     write-through seqs reserved and not yet settled (pending in the list)
``io``    write-through pops/clears in flight
``b``     set when Redis was found behind SQL while writes were pending: adds
          are refused until the session can be reloaded from SQL
``pb``    barriers: write-behind pops/clears/undo-deletes not yet in SQL;
          while any is pending the list is not trimmed, so the floor never
          rises above a seq whose SQL row is about to change
========  ===============================================================

The hot list (``…:l:<id>``) starts with a header ``"#<full>|<floor>"`` (a copy
of ``full`` and ``f``), followed by envelopes ``"<seq>|<json>"`` in seq order.
The header lets a reader answer from one plain ``LRANGE``: either the reply
holds the header (it is the whole list, and the header says whether older
items live in SQL), or it holds as many items as were asked for.

A write-through batch enters the list *pending*, as ``"~<seq>|<json>"``, when
its seqs are reserved (``…:h:<id>`` is the set of reserved seqs), and is
resolved by the settle after its SQL commit: kept as plain entries, or
removed. Its writer returns right after the commit and sends the settle with
its next command (or a moment later), so a reader that meets a pending entry
asks SQL whether that batch committed (see ``TieredStore._read_past_pending``);
pops and clears wait for pending batches reserved before they began. A
session's metadata hash and list exist together; a script that finds either
missing treats the session as not in Redis.

The shard's session index (``…:idx``, a sorted set) maps every session id to
the time of its last write (milliseconds), so sessions can be listed before
their items reach SQL.

Example:
    >>> from tiered_session._scripts import SCRIPTS
    >>> sorted(SCRIPTS)[:3]
    ['ack', 'add', 'clear']
"""

from __future__ import annotations

__all__ = ["COLD", "SCRIPTS"]

#: status returned by scripts when the session's metadata is not in Redis
COLD = -1

_PRELUDE = """
local unpack = unpack or table.unpack
-- An entry of a write-through batch whose SQL commit is not confirmed yet is
-- "~<seq>|<json>" (pending); every other entry is "<seq>|<json>".
local function pending(e) return string.byte(e, 1) == 126 end
local function seqof(e)
  local from = pending(e) and 2 or 1
  return tonumber(string.sub(e, from, string.find(e, '|', from, true) - 1))
end
-- Every pending entry of the list, oldest first.
local function pendings(list)
  local out = {}
  for _, e in ipairs(redis.call('LRANGE', list, 1, -1)) do
    if pending(e) then out[#out + 1] = e end
  end
  return out
end
local function expire(ttl, ...)
  if ttl > 0 then
    for _, k in ipairs({...}) do redis.call('PEXPIRE', k, ttl) end
  end
end
-- The list's header (index 0) mirrors meta's 'full' and 'f'.
local function header(full, f) return '#' .. full .. '|' .. f end
local function setfloor(meta, list, full, f)
  redis.call('HSET', meta, 'full', full, 'f', f)
  redis.call('LSET', list, 0, header(full, f))
end
-- The metadata of a session in Redis, or nil when it is not (both keys must exist).
local function hot(meta, list, ...)
  local m = redis.call('HMGET', meta, ...)
  if not m[1] or redis.call('EXISTS', list) == 0 then return nil end
  return m
end
-- Empty the list (header only), keeping the metadata hash's expiry, if any.
local function recreate(meta, list, full, f)
  redis.call('DEL', list)
  redis.call('RPUSH', list, header(full, f))
  redis.call('HSET', meta, 'full', full, 'f', f)
  local pt = redis.call('PTTL', meta)
  if pt > 0 then redis.call('PEXPIRE', list, pt) end
end
-- Put a popped item back (a pop that did not reach SQL) at its place in seq
-- order; an item below the floor is left to SQL (which holds it) instead.
local function putback(meta, list, env)
  local s = seqof(env)
  if s < tonumber(redis.call('HGET', meta, 'f')) then return end
  local len = redis.call('LLEN', list)
  local pos = len
  while pos > 1 and seqof(redis.call('LINDEX', list, pos - 1)) > s do pos = pos - 1 end
  if pos == len then
    redis.call('RPUSH', list, env)
  else
    redis.call('LINSERT', list, 'AFTER', redis.call('LINDEX', list, pos - 1), env)
  end
end
-- Resolve the pending entries of a write-through batch (seqs first .. first +
-- count - 1): committed (`ok`) they become plain entries in place, otherwise
-- they are removed. Nearly always the batch is the tail of the list: one LRANGE,
-- one LTRIM and (ok) one RPUSH. Returns the list's length after an RPUSH, else nil.
local function resolve(list, first, count, ok)
  local last = first + count - 1
  local tail = redis.call('LRANGE', list, -count, -1)
  if #tail == count and pending(tail[1]) and seqof(tail[1]) == first
      and seqof(tail[count]) == last then
    redis.call('LTRIM', list, 0, -count - 1)
    if not ok then return nil end
    for i = 1, count do tail[i] = string.sub(tail[i], 2) end
    return redis.call('RPUSH', list, unpack(tail))
  end
  -- Later entries follow the batch (or it was cleared around): walk back from the tail.
  local i, seen = redis.call('LLEN', list) - 1, 0
  while i >= 1 and seen < count do
    local e = redis.call('LINDEX', list, i)
    local q = seqof(e)
    if q < first then break end
    if q <= last and pending(e) then
      seen = seen + 1
      redis.call('LSET', list, i, ok and string.sub(e, 2) or '~-')
    end
    i = i - 1
  end
  if not ok then redis.call('LREM', list, -count, '~-') end
  return nil
end
-- Drop the oldest items beyond the hot window, but only items already in SQL
-- (seq <= w); move the floor up to the new oldest item. `len`: LLEN if known.
local function trim(meta, list, window, len)
  len = len or redis.call('LLEN', list)
  if len - 1 <= window then return end
  local m = redis.call('HMGET', meta, 'w', 'pb')
  if tonumber(m[2] or '0') > 0 then return end
  local w = tonumber(m[1] or '0')
  -- The oldest item not in SQL yet (a write-behind backlog): nothing to trim.
  -- Checking it first keeps every append O(1) instead of O(backlog).
  if seqof(redis.call('LINDEX', list, 1)) > w then return end
  local heads = redis.call('LRANGE', list, 1, len - 1 - window)
  local k = 0
  for i = 1, #heads do
    if pending(heads[i]) or seqof(heads[i]) > w then break end
    k = i
  end
  if k > 0 then
    redis.call('LTRIM', list, k, -1)  -- the header and k - 1 items; index 0 becomes the header
    setfloor(meta, list, 0, seqof(redis.call('LINDEX', list, 1)))
  end
end
-- Finish a write-through add (by its writer, or by recovery): release its
-- reserved seqs and resolve its pending entries: committed, or removed and,
-- when `undo`, a delete of those seqs queued in case the commit landed after
-- all. `m`: the session's metadata, nil when it is not in Redis.
local function finish_add(meta, list, rsv, outbox, m, ok, undo, first, count, sid, window)
  local seqs = {}
  for i = 1, count do seqs[i] = first + i - 1 end
  redis.call('SREM', rsv, unpack(seqs))
  if m then
    redis.call('HINCRBY', meta, 'h', -count)
    local len = resolve(list, first, count, ok)
    if ok then trim(meta, list, window, len) end
  end
  if not ok and undo then
    redis.call('XADD', outbox, '*', 'o', 'x', 's', sid, 'q', first, 'c', count)
    if m then
      redis.call('HINCRBY', meta, 'p', 1)
      redis.call('HINCRBY', meta, 'pb', 1)
      redis.call('PERSIST', meta)
      redis.call('PERSIST', list)
    end
  end
end
-- Finish a write-through pop or clear: when it did not reach SQL, undo it in
-- Redis (put the item back; a clear leaves the list not whole).
local function finish_take(meta, list, m, ok, kind, env)
  if not m then return end
  redis.call('HINCRBY', meta, 'io', -1)
  if ok then return end
  if kind == 'c' then
    setfloor(meta, list, 0, m[2])
  elseif env and env ~= '' then
    putback(meta, list, env)
  end
end
"""

# Append items (write-behind), or append them pending and reserve their seqs
# (write-through: the settle after the SQL commit resolves them).
# KEYS: meta, list, reserved, outbox, inflight, index.
# ARGV: mode ('b' behind | 't' through), hot, ttl_ms, max_backlog, session_id,
#       now_ms, json1..jsonN.
# Returns {first_seq} (behind) | {first_seq, seqs reserved before} (through) |
# {-1} cold | {-2} backlog full | {-5} behind SQL (see 'b').
_ADD = """
local meta, list, rsv, outbox, inflight = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local m = hot(meta, list, 'n', 'p', 'b')
if not m then return {-1} end
if m[3] then return {-5} end
local mode, hotn, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local count = #ARGV - 6
local p = tonumber(m[2])
if mode == 'b' then
  local maxb = tonumber(ARGV[4])
  if maxb > 0 and redis.call('XLEN', outbox) >= maxb then return {-2} end
end
local first = tonumber(m[1]) + 1
local last = first + count - 1
local before = 0
if mode == 'b' then
  local env, lens = {}, {}
  for i = 1, count do
    env[i] = (first + i - 1) .. '|' .. ARGV[6 + i]
    lens[i] = string.len(ARGV[6 + i])
  end
  local len = redis.call('RPUSH', list, unpack(env))
  redis.call('XADD', outbox, '*', 'o', 'a', 's', ARGV[5], 'q', first, 't', ARGV[6],
    'l', table.concat(lens, ','), 'd', table.concat(ARGV, '', 7))
  redis.call('HSET', meta, 'n', last, 'p', p + 1)
  -- The keys carry an expiry only while nothing is pending.
  if p == 0 then
    redis.call('PERSIST', meta)
    redis.call('PERSIST', list)
  end
  trim(meta, list, hotn, len)
else
  local seqs, env = {}, {}
  for i = 1, count do
    seqs[i] = first + i - 1
    env[i] = '~' .. (first + i - 1) .. '|' .. ARGV[6 + i]
  end
  redis.call('RPUSH', list, unpack(env))
  redis.call('SADD', rsv, unpack(seqs))
  before = redis.call('HINCRBY', meta, 'h', count) - count
  redis.call('HSET', meta, 'n', last)
  redis.call('HSET', inflight, 'a|' .. first .. '|' .. count .. '|' .. ARGV[5], ARGV[6])
  if p == 0 then
    redis.call('HSET', meta, 'w', last)
    expire(ttl, meta, list, rsv)
  end
end
redis.call('ZADD', KEYS[6], ARGV[6], ARGV[5])
if mode == 'b' then return {first} end
return {first, before}
"""

# Read the newest `limit` items (limit < 0: all). The store reads with a plain
# LRANGE and uses this script only when that finds no list (and for snapshots).
# KEYS: meta, list. ARGV: limit. Returns {-1} cold | {full, floor, {envelopes...}}.
_READ = """
local meta, list = KEYS[1], KEYS[2]
local m = hot(meta, list, 'full', 'f')
if not m then return {-1} end
local lim = tonumber(ARGV[1])
local items
if lim < 0 then
  items = redis.call('LRANGE', list, 1, -1)
else
  items = redis.call('LRANGE', list, -lim, -1)
  if #items > 0 and string.sub(items[1], 1, 1) == '#' then table.remove(items, 1) end
end
return {tonumber(m[1]), tonumber(m[2]), items}
"""

# Refresh the expiry of a session read often but written rarely, when nothing
# in it is pending. KEYS: meta, list. ARGV: ttl_ms.
_TOUCH = """
local m = redis.call('HMGET', KEYS[1], 'p', 'h', 'io')
if m[1] and tonumber(m[1]) == 0 and tonumber(m[2]) == 0 and tonumber(m[3] or '0') == 0 then
  expire(tonumber(ARGV[1]), KEYS[1], KEYS[2])
end
return 1
"""

# Remove and return the newest item. KEYS: meta, list, reserved, outbox, inflight,
# index.
# ARGV: mode, session_id, now_ms, n0 (write-through: the last seq assigned when
# the pop began, 0 on its first attempt).
# Write-through: pending entries of adds reserved after the pop began are
# passed over (those adds are ordered after it); one reserved before means
# wait ({-4, n0}): it may have committed and returned.
# Returns {-1} cold | {0} empty | {-3, p, io, floor} refill needed | {-4, n0} wait |
# {1, envelope}.
_POP = """
local meta, list, rsv, outbox, inflight = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local m = hot(meta, list, 'full', 'p', 'io', 'n', 'h')
if not m then return {-1} end
local env = false
local len = redis.call('LLEN', list)
if ARGV[1] == 'b' or tonumber(m[5]) == 0 then
  if len > 1 then env = redis.call('RPOP', list) end
else
  local n0 = tonumber(ARGV[4])
  if n0 == 0 then n0 = tonumber(m[4]) end
  for i = len - 1, 1, -1 do
    local e = redis.call('LINDEX', list, i)
    if not pending(e) then
      env = e
      if i == len - 1 then
        redis.call('RPOP', list)
      else
        redis.call('LSET', list, i, '~-')
        redis.call('LREM', list, -1, '~-')
      end
      break
    end
    if seqof(e) <= n0 then return {-4, n0} end
  end
end
if not env then
  if m[1] == '1' then return {0} end
  return {-3, tonumber(m[2]), tonumber(m[3] or '0'), tonumber(redis.call('HGET', meta, 'f'))}
end
if ARGV[1] == 'b' then
  redis.call('XADD', outbox, '*', 'o', 'p', 's', ARGV[2], 'q', seqof(env), 't', ARGV[3])
  redis.call('HINCRBY', meta, 'p', 1)
  redis.call('HINCRBY', meta, 'pb', 1)
  redis.call('PERSIST', meta)
  redis.call('PERSIST', list)
else
  redis.call('HINCRBY', meta, 'io', 1)
  redis.call('HSET', inflight, 'p|' .. seqof(env) .. '|' .. ARGV[2], ARGV[3])
end
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[2])
return {1, env}
"""

# Clear the session. KEYS: meta, list, reserved, outbox, inflight, index.
# ARGV: mode, session_id, now_ms, n0 (as for pop).
# Write-through adds reserved after the clear began survive it (they are ordered
# after it; their pending entries stay); one reserved before means wait.
# Returns {-1} cold | {-4, n0} wait | {1, upto, keep_seq...}.
_CLEAR = """
local meta, list, rsv, outbox, inflight = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local m = hot(meta, list, 'n', 'h')
if not m then return {-1} end
local n, h = tonumber(m[1]), tonumber(m[2])
local keep, kept = {}, {}
if h > 0 then
  local n0 = tonumber(ARGV[4])
  if n0 == 0 then n0 = n end
  keep = redis.call('SMEMBERS', rsv)
  for _, q in ipairs(keep) do
    if tonumber(q) <= n0 then return {-4, n0} end
  end
  kept = pendings(list)
end
recreate(meta, list, 1, n + 1)
if #kept > 0 then redis.call('RPUSH', list, unpack(kept)) end
if ARGV[1] == 'b' then
  redis.call('XADD', outbox, '*', 'o', 'c', 's', ARGV[2], 'q', n, 't', ARGV[3],
    'k', table.concat(keep, ','))
  redis.call('HINCRBY', meta, 'p', 1)
  redis.call('HINCRBY', meta, 'pb', 1)
  redis.call('PERSIST', meta)
  redis.call('PERSIST', list)
else
  redis.call('HINCRBY', meta, 'io', 1)
  redis.call('HSET', inflight, 'c|' .. n .. '|' .. ARGV[2], ARGV[3])
end
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[2])
return {1, n, unpack(keep)}
"""

# Finish a write-through operation after its SQL transaction.
# KEYS: meta, list, reserved, inflight, outbox. ARGV: op_id, ok (1|0|3), hot, kind, ...
#   kind 'a': first, count, session_id (its pending entries are kept when ok,
#             removed otherwise; when not ok, the outbox gets an 'x' entry
#             deleting those seqs from SQL in case the failed commit did land)
#   kind 'A': like 'a', for a commit SQL refused outright (no 'x': the seqs may
#             hold other rows, e.g. when Redis lost writes SQL has)
#   kind 'p': envelope (put back when not ok)
#   kind 'c': nothing
# ok = 3: ok, but first wait (return 2) while an earlier add of the session is in
# flight, so its writer returns only once every earlier batch is resolved.
# Returns 1, 2 (wait), or 0 when the operation was already taken over by recovery.
_SETTLE = """
local meta, list, rsv, inflight, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local m = hot(meta, list, 'h', 'f')
if ARGV[2] == '3' and m and tonumber(m[1]) > tonumber(ARGV[6]) then
  local first = tonumber(ARGV[5])
  for _, s in ipairs(redis.call('SMEMBERS', rsv)) do
    if tonumber(s) < first then return 2 end
  end
end
if redis.call('HDEL', inflight, ARGV[1]) == 0 then return 0 end
local ok, kind = ARGV[2] ~= '0', ARGV[4]
if kind == 'a' or kind == 'A' then
  finish_add(meta, list, rsv, outbox, m, ok, kind == 'a', tonumber(ARGV[5]), tonumber(ARGV[6]),
    ARGV[7], tonumber(ARGV[3]))
else
  finish_take(meta, list, m, ok, kind, ARGV[5])
end
return 1
"""

# Install a session read from SQL, unless another client already did (0), or the
# session was evicted since the read began (-1: the eviction generation moved,
# the snapshot may be stale; read again). -2: the metadata hash is there but the
# list is gone while operations are pending (an eviction by Redis' maxmemory
# policy): refused, the counters must not be reset.
# KEYS: meta, list, reserved, gen. ARGV: n, floor, full, ttl_ms, gen, envelope1..N (ascending).
_WARM = """
local meta, list, rsv = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', meta) == 1 then
  if redis.call('EXISTS', list) == 1 then return 0 end
  local m = redis.call('HMGET', meta, 'p', 'h', 'io')
  if tonumber(m[1]) > 0 or tonumber(m[2]) > 0 or tonumber(m[3] or '0') > 0 then return -2 end
end
if (redis.call('GET', KEYS[4]) or '0') ~= ARGV[5] then return -1 end
redis.call('DEL', list, rsv)
redis.call('HSET', meta, 'n', ARGV[1], 'f', ARGV[2], 'full', ARGV[3], 'p', 0, 'h', 0,
  'io', 0, 'pb', 0, 'w', ARGV[1])
redis.call('RPUSH', list, header(ARGV[3], ARGV[2]), unpack(ARGV, 6))
expire(tonumber(ARGV[4]), meta, list)
return 1
"""

# Put older items read from SQL below the floor, if nothing moved meanwhile.
# KEYS: meta, list. ARGV: expected_floor, new_floor, full, envelope1..N (descending).
_REFILL = """
local meta, list = KEYS[1], KEYS[2]
local m = hot(meta, list, 'f', 'full', 'p', 'io')
if not m or m[2] == '1' or m[1] ~= ARGV[1] then return 0 end
if tonumber(m[3]) > 0 or tonumber(m[4] or '0') > 0 then return 0 end
if #ARGV > 3 then
  -- [header, items...] -> [newest older item, items...] -> [header', older..., items...]
  redis.call('LSET', list, 0, ARGV[4])
  if #ARGV > 4 then redis.call('LPUSH', list, unpack(ARGV, 5)) end
  redis.call('LPUSH', list, header(ARGV[3], ARGV[2]))
  redis.call('HSET', meta, 'f', ARGV[2], 'full', ARGV[3])
else
  setfloor(meta, list, ARGV[3], ARGV[2])
end
return 1
"""

# Acknowledge outbox entries committed to SQL and update their sessions, only
# while this flusher still holds the shard's lease (otherwise the new holder
# replays and acknowledges them: counting them twice would corrupt 'p').
# KEYS: outbox, lease, then meta, list, reserved per session.
# ARGV: group, hot, ttl_ms, token, n_ids, id1..idN, then per session: ops,
# max_added_seq, barriers (how many of the ops were pops/clears/undo-deletes).
# Returns 1, or -1 when the lease is held by another flusher.
_ACK = """
local group, hotn, ttl, nids = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[4] then return -1 end
if nids > 0 then
  local ids = {unpack(ARGV, 6, 5 + nids)}
  redis.call('XACK', KEYS[1], group, unpack(ids))
  redis.call('XDEL', KEYS[1], unpack(ids))
end
local a = 6 + nids
for j = 0, (#KEYS - 2) / 3 - 1 do
  local meta, list = KEYS[3 + 3 * j], KEYS[4 + 3 * j]
  if hot(meta, list, 'p') then
    local ops, maxseq = tonumber(ARGV[a + 3 * j]), tonumber(ARGV[a + 3 * j + 1])
    local barriers = tonumber(ARGV[a + 3 * j + 2])
    local p = redis.call('HINCRBY', meta, 'p', -ops)
    if barriers > 0 then redis.call('HINCRBY', meta, 'pb', -barriers) end
    if maxseq > tonumber(redis.call('HGET', meta, 'w') or '0') then
      redis.call('HSET', meta, 'w', maxseq)
    end
    trim(meta, list, hotn)
    if p <= 0 and tonumber(redis.call('HGET', meta, 'h') or '0') == 0 then
      expire(ttl, meta, list)
    end
  end
end
return 1
"""

# Move one outbox entry to the dead-letter stream.
# KEYS: outbox, dead, meta. ARGV: group, id, reason, barrier (1|0), field1, value1, ...
_DEAD = """
redis.call('XADD', KEYS[2], '*', 'id', ARGV[2], 'reason', ARGV[3], unpack(ARGV, 5))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HINCRBY', KEYS[3], 'p', -1)
  if ARGV[4] == '1' then redis.call('HINCRBY', KEYS[3], 'pb', -1) end
end
return 1
"""

# Replace the newest items of a session atomically (compaction): if the visible
# tail still equals the expected envelopes, remove them and append the new items
# after the last seq; SQL follows through the outbox ('x' delete, then 'a' add),
# in order with every other write of the session.
# KEYS: meta, list, reserved, outbox, inflight, index.
# ARGV: session_id, now_ms, hot, n_expected, expected envelope1..N, json1..jsonM.
# n_expected = -1 replaces the whole history instead (a clear, then an add).
# Returns {-1} cold | {0} changed meanwhile | {1, last_outbox_entry_id}.
_REPLACE = """
local meta, list, rsv, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local m = hot(meta, list, 'n', 'h', 'io')
if not m then return {-1} end
if tonumber(m[2]) > 0 or tonumber(m[3] or '0') > 0 then return {0} end
local sid, now, hotn, ne = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local n = tonumber(m[1])
local id
if ne < 0 then
  ne = 0
  recreate(meta, list, 1, n + 1)
  id = redis.call('XADD', outbox, '*', 'o', 'c', 's', sid, 'q', n, 't', now, 'k', '')
else
  local len = redis.call('LLEN', list)
  if ne < 1 or len - 1 < ne then return {0} end
  local tail = redis.call('LRANGE', list, len - ne, -1)
  for i = 1, ne do
    if tail[i] ~= ARGV[4 + i] then return {0} end
  end
  local first = seqof(ARGV[5])
  redis.call('LTRIM', list, 0, len - ne - 1)
  id = redis.call('XADD', outbox, '*', 'o', 'x', 's', sid, 'q', first, 'c', n - first + 1)
end
local ops = 1
local count = #ARGV - 4 - ne
if count > 0 then
  local env, lens = {}, {}
  for i = 1, count do
    env[i] = (n + i) .. '|' .. ARGV[4 + ne + i]
    lens[i] = string.len(ARGV[4 + ne + i])
  end
  redis.call('RPUSH', list, unpack(env))
  id = redis.call('XADD', outbox, '*', 'o', 'a', 's', sid, 'q', n + 1, 't', now,
    'l', table.concat(lens, ','), 'd', table.concat(ARGV, '', 5 + ne))
  ops = 2
end
redis.call('HSET', meta, 'n', n + count)
redis.call('HINCRBY', meta, 'p', ops)
redis.call('HINCRBY', meta, 'pb', 1)
redis.call('PERSIST', meta)
redis.call('PERSIST', list)
redis.call('ZADD', KEYS[6], now, sid)
trim(meta, list, hotn)
return {1, id}
"""

# Drop a session's hot copy and index entry (delete, cleanup), unless it was
# written after ARGV[2] or has writes in flight. KEYS: meta, list, reserved, index, gen.
# ARGV: session_id, not_after_ms. Returns {0} kept | {1, last_seq or -1 when not hot}.
_DROP = """
local m = redis.call('HMGET', KEYS[1], 'p', 'h', 'io', 'n')
if m[1] and (tonumber(m[1]) > 0 or tonumber(m[2]) > 0 or tonumber(m[3] or '0') > 0) then
  return {0}
end
local score = redis.call('ZSCORE', KEYS[4], ARGV[1])
if score and tonumber(score) > tonumber(ARGV[2]) then return {0} end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('INCR', KEYS[5])
redis.call('PEXPIRE', KEYS[5], 86400000)
return {1, tonumber(m[4] or '-1')}
"""

# Mark a session as behind SQL (see 'b'). KEYS: meta.
_MARK_BEHIND = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'b', 1) end
return 1
"""

# Drop a session's hot copy if nothing in it is pending, and bump its eviction
# generation. KEYS: meta, list, reserved, gen.
_EVICT = """
local m = redis.call('HMGET', KEYS[1], 'p', 'h', 'io')
if not m[1] then return 1 end
if tonumber(m[1]) > 0 or tonumber(m[2]) > 0 or tonumber(m[3] or '0') > 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('INCR', KEYS[4])
redis.call('PEXPIRE', KEYS[4], 86400000)
return 1
"""

# Finish a write-through operation whose writer vanished, as its SQL outcome says.
# The flusher first looks in SQL whether the operation landed (rows present for
# an add, row gone for a pop, rows gone for a clear) and passes that here: a
# landed operation is completed, any other is rolled back, exactly as the
# writer's own settle would have done. An add rolled back also queues an 'x'
# delete, in case its transaction commits after all.
# KEYS: meta, list, reserved, outbox, inflight.
# ARGV: op_id, session_id, landed (1|0), hot, then for a pop not landed the
# item to put back.
# Returns 1 if the operation was taken over, 0 if it had already settled.
_RECOVER = """
local meta, list, rsv, outbox, inflight = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, sid, landed = ARGV[1], ARGV[2], ARGV[3] == '1'
if redis.call('HDEL', inflight, id) == 0 then return 0 end
local m = hot(meta, list, 'h', 'f')
local kind = string.sub(id, 1, 1)
local rest = string.sub(id, 3)
local sep = string.find(rest, '|', 1, true)
local a = tonumber(string.sub(rest, 1, sep - 1))
if kind == 'a' then
  rest = string.sub(rest, sep + 1)
  local count = tonumber(string.sub(rest, 1, string.find(rest, '|', 1, true) - 1))
  finish_add(meta, list, rsv, outbox, m, landed, true, a, count, sid, tonumber(ARGV[4]))
else
  finish_take(meta, list, m, landed, kind, ARGV[5])
end
return 1
"""

# Read outbox entries for this flusher, only while it holds the shard's lease
# (a flusher that lost its lease can read nothing more: fencing of reads).
# With claim=1, first take over every entry pending for other consumers (the
# shard's previous owners), so they are replayed, in id order, before new ones.
# KEYS: lease, outbox. ARGV: token, group, consumer, count, start ('0' | '>'), claim.
# Returns -1 when the lease is not held, else a list of {id, {field, value, ...}}
# (the body is false for an entry deleted while pending).
_FREAD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if ARGV[6] == '1' then
  local cursor = '0-0'
  repeat
    local r = redis.call('XAUTOCLAIM', KEYS[2], ARGV[2], ARGV[3], 0, cursor, 'COUNT', 1000,
      'JUSTID')
    cursor = r[1]
  until cursor == '0-0'
end
local r = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', tonumber(ARGV[4]),
  'STREAMS', KEYS[2], ARGV[5])
if not r then return {} end
if type(r[1]) == 'table' then r = r[1] end  -- {{stream, entries}} (fakeredis: {stream, entries})
return r[2]
"""

# Register a live flusher (or remove it) and return how many are live.
# KEYS: registry. ARGV: token, ttl_ms, leave (1|0). Uses the server clock.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl * 3)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""

# Put a dead-lettered entry back at the end of its outbox.
# KEYS: dead, outbox, meta, list. ARGV: dead_entry_id. Returns 1, or 0 if it is gone.
_REPLAY = """
local r = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #r == 0 then return 0 end
local f = r[1][2]
local out, barrier = {}, false
for i = 1, #f, 2 do
  if f[i] ~= 'id' and f[i] ~= 'reason' then
    out[#out + 1] = f[i]
    out[#out + 1] = f[i + 1]
    if f[i] == 'o' and f[i + 1] ~= 'a' then barrier = true end
  end
end
redis.call('XADD', KEYS[2], '*', unpack(out))
redis.call('XDEL', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HINCRBY', KEYS[3], 'p', 1)
  if barrier then redis.call('HINCRBY', KEYS[3], 'pb', 1) end
  redis.call('PERSIST', KEYS[3])
  redis.call('PERSIST', KEYS[4])
end
return 1
"""

# Renew a shard lease held with this token, or take it if free.
# KEYS: lease. ARGV: token, ttl_ms. Returns 1 if held after the call.
_LEASE = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# Release a lease if still held by this token. KEYS: lease. ARGV: token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

SCRIPTS: dict[str, str] = {
    name: _PRELUDE + body
    for name, body in {
        "add": _ADD,
        "read": _READ,
        "touch": _TOUCH,
        "pop": _POP,
        "clear": _CLEAR,
        "settle": _SETTLE,
        "warm": _WARM,
        "refill": _REFILL,
        "ack": _ACK,
        "dead": _DEAD,
        "evict": _EVICT,
        "mark_behind": _MARK_BEHIND,
        "drop": _DROP,
        "replace": _REPLACE,
        "recover": _RECOVER,
        "lease": _LEASE,
        "release": _RELEASE,
        "heartbeat": _HEARTBEAT,
        "fread": _FREAD,
        "replay": _REPLAY,
    }.items()
}
