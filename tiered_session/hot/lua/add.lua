-- Append items (write-behind), or append them pending and reserve their seqs
-- (write-through: the settle after the SQL commit resolves them).
-- KEYS[1] meta  KEYS[2] items  KEYS[3] reserved  KEYS[4] outbox  KEYS[5] inflight  KEYS[6] index
-- ARGV[1] mode ('b' behind | 't' through)  ARGV[2] hot window  ARGV[3] ttl_ms (0: keep the
--   expiry)  ARGV[4] max_backlog  ARGV[5] session_id  ARGV[6] now_ms  ARGV[7..] item JSON
-- Returns {first_seq} (behind) | {first_seq, seqs reserved before} (through) | {COLD} |
--   {BACKLOG_FULL} | {BEHIND_SQL}
local meta, list, rsv, outbox, inflight = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local m = hot(meta, list, LAST_SEQ, BEHIND_OPS, BEHIND_SQL_FLAG)
if not m then return {COLD} end
if m[3] then return {BEHIND_SQL} end
local mode, hotn, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local count = #ARGV - 6
local p = tonumber(m[2])
if mode == MODE_BEHIND then
  local maxb = tonumber(ARGV[4])
  if maxb > 0 and redis.call('XLEN', outbox) >= maxb then return {BACKLOG_FULL} end
end
local first = tonumber(m[1]) + 1
local last = first + count - 1
local before = 0
if mode == MODE_BEHIND then
  local env, lens = {}, {}
  for i = 1, count do
    env[i] = (first + i - 1) .. '|' .. ARGV[6 + i]
    lens[i] = string.len(ARGV[6 + i])
  end
  local len = chunked(env, 1, count, 'RPUSH', list)
  redis.call('XADD', outbox, '*', E_OP, OP_ADD, E_SESSION, ARGV[5], E_SEQ, first, E_TIME, ARGV[6],
    E_LENGTHS, table.concat(lens, ','), E_DATA, table.concat(ARGV, '', 7))
  redis.call('HSET', meta, LAST_SEQ, last, BEHIND_OPS, p + 1)
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
    env[i] = PENDING_MARK .. (first + i - 1) .. '|' .. ARGV[6 + i]
  end
  chunked(env, 1, count, 'RPUSH', list)
  chunked(seqs, 1, count, 'SADD', rsv)
  before = redis.call('HINCRBY', meta, RESERVED_COUNT, count) - count
  redis.call('HSET', meta, LAST_SEQ, last)
  redis.call('HSET', inflight, OP_ADD .. '|' .. first .. '|' .. count .. '|' .. ARGV[5], ARGV[6])
  if p == 0 then
    redis.call('HSET', meta, IN_SQL, last)
    expire(ttl, meta, list, rsv)
  end
end
redis.call('ZADD', KEYS[6], ARGV[6], ARGV[5])
if mode == MODE_BEHIND then return {first} end
return {first, before}
