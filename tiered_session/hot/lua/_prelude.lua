-- Shared by every script (prepended to each at load time): names and helpers.
--
-- A session's metadata hash (KEYS "...:m:<id>") holds these fields. The stored
-- names are short; scripts use them only through the names below.
local LAST_SEQ = 'n'         -- last sequence number assigned
local FLOOR = 'f'            -- every live item with seq >= FLOOR is in the hot list
local WHOLE = 'full'         -- 1 when the hot list holds the whole history (reads never go to SQL)
local BEHIND_OPS = 'p'       -- write-behind operations accepted but not yet committed to SQL
local IN_SQL = 'w'           -- highest seq known to be in SQL (items above it are never trimmed)
local RESERVED_COUNT = 'h'   -- write-through seqs reserved and not yet settled (pending in the list)
local TAKES = 'io'           -- write-through pops/clears in flight
local BEHIND_SQL_FLAG = 'b'  -- set when Redis was found behind SQL while writes were pending:
                             -- adds are refused until the session can be reloaded from SQL
local BARRIERS = 'pb'        -- write-behind pops/clears/undo-deletes not yet in SQL; while any
                             -- is pending the list is not trimmed, so the floor never rises
                             -- above a seq whose SQL row is about to change
--
-- The hot list ("...:l:<id>") starts with a header "#<whole>|<floor>" (a copy of
-- WHOLE and FLOOR), followed by envelopes "<seq>|<json>" in seq order. The header
-- lets a reader answer from one plain LRANGE: either the reply holds the header
-- (it is the whole list, and the header says whether older items live in SQL),
-- or it holds as many items as were asked for. A write-through batch enters the
-- list pending, as "~<seq>|<json>", when its seqs are reserved (the set
-- "...:h:<id>"), and is resolved by the settle after its SQL commit: kept as plain
-- entries, or removed. A session's hash and list exist together; a script that
-- finds either missing treats the session as not in Redis.
--
-- The shard's session index ("...:idx", a sorted set) maps every session id to
-- the time of its last write (ms), so sessions can be listed before their items
-- reach SQL.
--
-- Outbox stream entries (the flusher decodes them) carry these fields:
local E_OP = 'o'             -- the operation, one of the kinds below
local E_SESSION = 's'        -- session id
local E_SEQ = 'q'            -- first seq (add, undo), the popped seq, or the clear's last seq
local E_TIME = 't'           -- when it was accepted (ms)
local E_LENGTHS = 'l'        -- add: comma-separated byte lengths of the items
local E_DATA = 'd'           -- add: the items' JSON, concatenated
local E_KEEP = 'k'           -- clear: comma-separated seqs that survive it (adds reserved after it)
local E_COUNT = 'c'          -- undo: how many seqs from E_SEQ
local D_OUTBOX_ID = 'id'     -- dead letter: the entry's id in its outbox
local D_REASON = 'reason'    -- dead letter: why SQL refused it
-- Operation kinds (outbox E_OP, and the first letter of an in-flight op id):
local OP_ADD = 'a'
local OP_ADD_REFUSED = 'A'   -- settle of an add SQL refused outright (its seqs may hold other rows)
local OP_POP = 'p'
local OP_CLEAR = 'c'
local OP_UNDO = 'x'          -- delete the seqs of a write-through add whose commit failed
-- Write modes (ARGV of add, pop, clear):
local MODE_BEHIND = 'b'
local MODE_THROUGH = 't'
-- Return codes; tiered_session.hot.scripts.Status names each one.
local OK, NO = 1, 0
local COLD = -1              -- the session is not in Redis: warm it from SQL, then retry
local BACKLOG_FULL = -2      -- add: the shard's outbox reached max_backlog
local NEEDS_REFILL = -3      -- pop: the list is empty but older items live in SQL
local WAIT_EARLIER = -4      -- pop, clear: an add reserved before this call is pending
local BEHIND_SQL = -5        -- add: the session is marked behind SQL
local STALE_SNAPSHOT = -6    -- warm: evicted since the SQL read began; read again
local LIST_LOST = -7         -- warm: the list is gone while writes are pending
local LEASE_LOST = -8        -- ack, fread: another flusher holds the shard's lease
local SETTLE_LATER = -9      -- settle (ok=3): an earlier add of the session is still pending
local META_LOST = -10        -- warm: the hash is gone while the list holds writes not in SQL
local NO_POINTER = -11       -- branch add, branch read: the session's branch pointer is not in Redis
local WRONG_BRANCH = -12     -- branch add, branch read: another branch is current
-- Eviction generations live a day: longer than any warm-up that read SQL before one.
local GEN_TTL_MS = 86400000
local PENDING_MARK = '~'     -- opens a pending entry
local PENDING_BYTE = 126     -- PENDING_MARK as a byte
local HEADER_MARK = '#'      -- opens the list's header
local TOMBSTONE = '~-'       -- an entry marked by index (LSET) for removal (LREM)
local unpack = unpack or table.unpack
-- unpack() of more than a few thousand values fails (Lua's C stack, LUAI_MAXCSTACK is
-- 8000), and a batch, a hot window or a flush batch may be far larger: a command that
-- takes many values gets them at most `per_call` at a time, through chunked().
local per_call = 1000
-- redis.call(cmd, key, [arg,] vals[from..to]) in slices of at most per_call values, in
-- order: for RPUSH, LPUSH, SADD, SREM, XACK, XDEL, ... the same effect as one call.
-- Returns the last reply (RPUSH, LPUSH: the list's length), nil when from > to.
local function chunked(vals, from, to, cmd, key, arg)
  local r
  for i = from, to, per_call do
    local j = math.min(i + per_call - 1, to)
    if arg == nil then
      r = redis.call(cmd, key, unpack(vals, i, j))
    else
      r = redis.call(cmd, key, arg, unpack(vals, i, j))
    end
  end
  return r
end
-- An entry of a write-through batch whose SQL commit is not confirmed yet is
-- "~<seq>|<json>" (pending); every other entry is "<seq>|<json>".
local function pending(e) return string.byte(e, 1) == PENDING_BYTE end
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
-- The list's header (index 0) mirrors meta's WHOLE and FLOOR.
local function header(full, f) return HEADER_MARK .. full .. '|' .. f end
local function setfloor(meta, list, full, f)
  redis.call('HSET', meta, WHOLE, full, FLOOR, f)
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
  redis.call('HSET', meta, WHOLE, full, FLOOR, f)
  local pt = redis.call('PTTL', meta)
  if pt > 0 then redis.call('PEXPIRE', list, pt) end
end
-- Put a popped item back (a pop that did not reach SQL) at its place in seq
-- order; an item below the floor is left to SQL (which holds it) instead.
local function putback(meta, list, env)
  local s = seqof(env)
  if s < tonumber(redis.call('HGET', meta, FLOOR)) then return end
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
    return chunked(tail, 1, count, 'RPUSH', list)
  end
  -- Later entries follow the batch (or it was cleared around): walk back from the tail.
  local i, seen = redis.call('LLEN', list) - 1, 0
  while i >= 1 and seen < count do
    local e = redis.call('LINDEX', list, i)
    local q = seqof(e)
    if q < first then break end
    if q <= last and pending(e) then
      seen = seen + 1
      redis.call('LSET', list, i, ok and string.sub(e, 2) or TOMBSTONE)
    end
    i = i - 1
  end
  if not ok then redis.call('LREM', list, -count, TOMBSTONE) end
  return nil
end
-- Drop the oldest items beyond the hot window, but only items already in SQL
-- (seq <= w); move the floor up to the new oldest item. `len`: LLEN if known.
local function trim(meta, list, window, len)
  len = len or redis.call('LLEN', list)
  if len - 1 <= window then return end
  local m = redis.call('HMGET', meta, IN_SQL, BARRIERS)
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
  chunked(seqs, 1, count, 'SREM', rsv)
  if m then
    redis.call('HINCRBY', meta, RESERVED_COUNT, -count)
    local len = resolve(list, first, count, ok)
    if ok then trim(meta, list, window, len) end
  end
  if not ok and undo then
    redis.call('XADD', outbox, '*', E_OP, OP_UNDO, E_SESSION, sid, E_SEQ, first, E_COUNT, count)
    if m then
      redis.call('HINCRBY', meta, BEHIND_OPS, 1)
      redis.call('HINCRBY', meta, BARRIERS, 1)
      redis.call('PERSIST', meta)
      redis.call('PERSIST', list)
    end
  end
end
-- Finish a write-through pop or clear: when it did not reach SQL, undo it in
-- Redis (put the item back; a clear leaves the list not whole).
local function finish_take(meta, list, m, ok, kind, env)
  if not m then return end
  redis.call('HINCRBY', meta, TAKES, -1)
  if ok then return end
  if kind == OP_CLEAR then
    setfloor(meta, list, 0, m[2])
  elseif env and env ~= '' then
    putback(meta, list, env)
  end
end
