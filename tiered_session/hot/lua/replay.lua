-- Put a dead-lettered entry back at the end of its outbox.
-- KEYS[1] dead letters  KEYS[2] outbox  KEYS[3] meta  KEYS[4] items (of its session)
-- ARGV[1] dead-letter entry id
-- Returns OK | NO (the entry is gone)
local r = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #r == 0 then return NO end
local f = r[1][2]
local out, barrier = {}, false
for i = 1, #f, 2 do
  if f[i] ~= D_OUTBOX_ID and f[i] ~= D_REASON then
    out[#out + 1] = f[i]
    out[#out + 1] = f[i + 1]
    if f[i] == E_OP and f[i + 1] ~= OP_ADD then barrier = true end
  end
end
redis.call('XADD', KEYS[2], '*', unpack(out))
redis.call('XDEL', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HINCRBY', KEYS[3], BEHIND_OPS, 1)
  if barrier then redis.call('HINCRBY', KEYS[3], BARRIERS, 1) end
  redis.call('PERSIST', KEYS[3])
  redis.call('PERSIST', KEYS[4])
end
return OK
