-- Move one outbox entry to the dead-letter stream.
-- KEYS[1] outbox  KEYS[2] dead letters  KEYS[3] meta of its session
-- ARGV[1] group  ARGV[2] entry id  ARGV[3] reason  ARGV[4] barrier (1|0: anything but an
--   add)  ARGV[5..] the entry's fields and values
-- Returns OK
redis.call('XADD', KEYS[2], '*', D_OUTBOX_ID, ARGV[2], D_REASON, ARGV[3], unpack(ARGV, 5))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HINCRBY', KEYS[3], BEHIND_OPS, -1)
  if ARGV[4] == '1' then redis.call('HINCRBY', KEYS[3], BARRIERS, -1) end
end
return OK
