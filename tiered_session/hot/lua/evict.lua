-- Drop a session's hot copy if nothing in it is pending, and bump its eviction
-- generation.
-- KEYS[1] meta  KEYS[2] items  KEYS[3] reserved  KEYS[4] generation
-- ARGV: none
-- Returns OK (gone, or was not there) | NO (kept: writes are pending)
local m = redis.call('HMGET', KEYS[1], BEHIND_OPS, RESERVED_COUNT, TAKES)
if not m[1] then return OK end
if tonumber(m[1]) > 0 or tonumber(m[2]) > 0 or tonumber(m[3] or '0') > 0 then return NO end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('INCR', KEYS[4])
redis.call('PEXPIRE', KEYS[4], GEN_TTL_MS)
return OK
