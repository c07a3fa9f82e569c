-- Drop a session's hot copy and index entry (delete, cleanup), unless it was
-- written after a given time or has writes in flight.
-- KEYS[1] meta  KEYS[2] items  KEYS[3] reserved  KEYS[4] index  KEYS[5] generation
-- ARGV[1] session_id  ARGV[2] not_after_ms
-- Returns {NO} (kept) | {OK, last seq, or -1 when it was not in Redis}
local m = redis.call('HMGET', KEYS[1], BEHIND_OPS, RESERVED_COUNT, TAKES, LAST_SEQ)
if m[1] and (tonumber(m[1]) > 0 or tonumber(m[2]) > 0 or tonumber(m[3] or '0') > 0) then
  return {NO}
end
local score = redis.call('ZSCORE', KEYS[4], ARGV[1])
if score and tonumber(score) > tonumber(ARGV[2]) then return {NO} end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('INCR', KEYS[5])
redis.call('PEXPIRE', KEYS[5], GEN_TTL_MS)
return {OK, tonumber(m[4] or '-1')}
