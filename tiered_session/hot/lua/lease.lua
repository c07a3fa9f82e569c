-- Renew a shard lease held with this token, or take it if free.
-- KEYS[1] lease
-- ARGV[1] token  ARGV[2] ttl_ms
-- Returns OK (held after the call) | NO
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return OK
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return OK
end
return NO
