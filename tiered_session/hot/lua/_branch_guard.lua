-- Put before `add` as the script `badd`: the add lands only on the branch that is
-- current, checked in the same script (so a switch never splits or redirects it).
-- KEYS[1..6] as `add`  KEYS[7] the session's branch pointer ("<version>|<branch>")
-- ARGV as `add`, then one more: the branch the caller believes current (removed
--   here, so `add` sees its own ARGV)
-- Returns {NO_POINTER} | {WRONG_BRANCH, pointer} | what `add` returns (its seqs, {COLD},
--   {BACKLOG_FULL}, {BEHIND_SQL})
local want = table.remove(ARGV)
local pointer = redis.call('GET', KEYS[7])
if not pointer then return {NO_POINTER} end
if string.sub(pointer, string.find(pointer, '|', 1, true) + 1) ~= want then
  return {WRONG_BRANCH, pointer}
end
