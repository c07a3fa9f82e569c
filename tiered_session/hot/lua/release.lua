-- Release a lease if this token still holds it.
-- KEYS[1] lease
-- ARGV[1] token
-- Returns OK (released) | NO (not held)
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return OK
end
return NO
