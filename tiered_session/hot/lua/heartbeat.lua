-- Register a live flusher (or remove it) and count the live ones, by the server's clock.
-- KEYS[1] registry of live flushers
-- ARGV[1] token  ARGV[2] ttl_ms  ARGV[3] leave (1|0)
-- Returns the number of live flushers (a count, not a status)
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
