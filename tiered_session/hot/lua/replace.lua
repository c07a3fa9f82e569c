-- Replace the newest items of a session atomically (compaction): if the visible
-- tail still equals the expected envelopes, remove them and append the new items
-- after the last seq; SQL follows through the outbox (OP_UNDO delete, then
-- OP_ADD), in order with every other write of the session.
-- KEYS[1] meta  KEYS[2] items  KEYS[3] reserved  KEYS[4] outbox  KEYS[5] inflight  KEYS[6] index
-- ARGV[1] session_id  ARGV[2] now_ms  ARGV[3] hot window  ARGV[4] n_expected (-1: replace
--   the whole history instead, a clear then an add)  ARGV[5..4+n] expected envelopes,
--   then the new items' JSON
-- Returns {COLD} | {NO} (changed meanwhile, or operations in flight) | {OK, last_outbox_id}
local meta, list, rsv, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local m = hot(meta, list, LAST_SEQ, RESERVED_COUNT, TAKES)
if not m then return {COLD} end
if tonumber(m[2]) > 0 or tonumber(m[3] or '0') > 0 then return {NO} end
local sid, now, hotn, ne = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local n = tonumber(m[1])
local id
if ne < 0 then
  ne = 0
  recreate(meta, list, 1, n + 1)
  id = redis.call('XADD', outbox, '*', E_OP, OP_CLEAR, E_SESSION, sid, E_SEQ, n, E_TIME, now,
    E_KEEP, '')
else
  local len = redis.call('LLEN', list)
  if ne < 1 or len - 1 < ne then return {NO} end
  local tail = redis.call('LRANGE', list, len - ne, -1)
  for i = 1, ne do
    if tail[i] ~= ARGV[4 + i] then return {NO} end
  end
  local first = seqof(ARGV[5])
  redis.call('LTRIM', list, 0, len - ne - 1)
  id = redis.call('XADD', outbox, '*', E_OP, OP_UNDO, E_SESSION, sid, E_SEQ, first,
    E_COUNT, n - first + 1)
end
local ops = 1
local count = #ARGV - 4 - ne
if count > 0 then
  local env, lens = {}, {}
  for i = 1, count do
    env[i] = (n + i) .. '|' .. ARGV[4 + ne + i]
    lens[i] = string.len(ARGV[4 + ne + i])
  end
  chunked(env, 1, count, 'RPUSH', list)
  id = redis.call('XADD', outbox, '*', E_OP, OP_ADD, E_SESSION, sid, E_SEQ, n + 1, E_TIME, now,
    E_LENGTHS, table.concat(lens, ','), E_DATA, table.concat(ARGV, '', 5 + ne))
  ops = 2
end
redis.call('HSET', meta, LAST_SEQ, n + count)
redis.call('HINCRBY', meta, BEHIND_OPS, ops)
redis.call('HINCRBY', meta, BARRIERS, 1)
redis.call('PERSIST', meta)
redis.call('PERSIST', list)
redis.call('ZADD', KEYS[6], now, sid)
trim(meta, list, hotn)
return {OK, id}
