-- Refresh the expiry of a session read often but written rarely, when nothing
-- in it is pending.
-- KEYS[1] meta  KEYS[2] items
-- ARGV[1] ttl_ms
-- Returns OK
local m = redis.call('HMGET', KEYS[1], BEHIND_OPS, RESERVED_COUNT, TAKES)
if m[1] and tonumber(m[1]) == 0 and tonumber(m[2]) == 0 and tonumber(m[3] or '0') == 0 then
  expire(tonumber(ARGV[1]), KEYS[1], KEYS[2])
end
return OK
