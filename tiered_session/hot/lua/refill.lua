-- Put older items read from SQL below the floor, if nothing moved meanwhile.
-- KEYS[1] meta  KEYS[2] items
-- ARGV[1] expected floor  ARGV[2] new floor  ARGV[3] whole (1|0)
--   ARGV[4..] envelopes, descending
-- Returns OK | NO (the session changed meanwhile: nothing done)
local meta, list = KEYS[1], KEYS[2]
local m = hot(meta, list, FLOOR, WHOLE, BEHIND_OPS, TAKES)
if not m or m[2] == '1' or m[1] ~= ARGV[1] then return NO end
if tonumber(m[3]) > 0 or tonumber(m[4] or '0') > 0 then return NO end
if #ARGV > 3 then
  -- [header, items...] -> [newest older item, items...] -> [header', older..., items...]
  redis.call('LSET', list, 0, ARGV[4])
  chunked(ARGV, 5, #ARGV, 'LPUSH', list)
  redis.call('LPUSH', list, header(ARGV[3], ARGV[2]))
  redis.call('HSET', meta, FLOOR, ARGV[2], WHOLE, ARGV[3])
else
  setfloor(meta, list, ARGV[3], ARGV[2])
end
return OK
