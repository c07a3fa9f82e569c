-- Remove and return the newest item. Write-through: pending entries of adds
-- reserved after the pop began are passed over (those adds are ordered after
-- it); one reserved before means wait: it may have committed and returned.
-- KEYS[1] meta  KEYS[2] items  KEYS[3] reserved  KEYS[4] outbox  KEYS[5] inflight  KEYS[6] index
-- ARGV[1] mode ('b' | 't')  ARGV[2] session_id  ARGV[3] now_ms  ARGV[4] n0 (write-through:
--   the last seq assigned when the pop began, 0 on its first attempt)
-- Returns {COLD} | {NO} (empty) | {NEEDS_REFILL, behind_ops, takes, floor} |
--   {WAIT_EARLIER, n0} | {OK, envelope}
local meta, list, rsv, outbox, inflight = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local m = hot(meta, list, WHOLE, BEHIND_OPS, TAKES, LAST_SEQ, RESERVED_COUNT)
if not m then return {COLD} end
local env = false
local len = redis.call('LLEN', list)
if ARGV[1] == MODE_BEHIND or tonumber(m[5]) == 0 then
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
        redis.call('LSET', list, i, TOMBSTONE)
        redis.call('LREM', list, -1, TOMBSTONE)
      end
      break
    end
    if seqof(e) <= n0 then return {WAIT_EARLIER, n0} end
  end
end
if not env then
  if m[1] == '1' then return {NO} end
  return {NEEDS_REFILL, tonumber(m[2]), tonumber(m[3] or '0'),
    tonumber(redis.call('HGET', meta, FLOOR))}
end
if ARGV[1] == MODE_BEHIND then
  redis.call('XADD', outbox, '*', E_OP, OP_POP, E_SESSION, ARGV[2], E_SEQ, seqof(env),
    E_TIME, ARGV[3])
  redis.call('HINCRBY', meta, BEHIND_OPS, 1)
  redis.call('HINCRBY', meta, BARRIERS, 1)
  redis.call('PERSIST', meta)
  redis.call('PERSIST', list)
else
  redis.call('HINCRBY', meta, TAKES, 1)
  redis.call('HSET', inflight, OP_POP .. '|' .. seqof(env) .. '|' .. ARGV[2], ARGV[3])
end
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[2])
return {OK, env}
