-- The plain read's LRANGE of a branch's hot list, done only while that branch is
-- the session's current one.
-- KEYS[1] the session's branch pointer  KEYS[2] the branch's items
-- ARGV[1] the branch the caller believes current  ARGV[2] start  ARGV[3] stop
-- Returns the LRANGE reply (envelopes: never a number first) | {NO_POINTER} |
--   {WRONG_BRANCH, pointer}
local pointer = redis.call('GET', KEYS[1])
if not pointer then return {NO_POINTER} end
if string.sub(pointer, string.find(pointer, '|', 1, true) + 1) ~= ARGV[1] then
  return {WRONG_BRANCH, pointer}
end
return redis.call('LRANGE', KEYS[2], ARGV[2], ARGV[3])
