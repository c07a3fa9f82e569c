-- Install a session's branch pointer read from (or just written to) SQL, unless
-- Redis already holds the same or a newer version.
-- KEYS[1] the session's branch pointer
-- ARGV[1] version  ARGV[2] branch
-- Returns the pointer now held ("<version>|<branch>")
local pointer = redis.call('GET', KEYS[1])
if pointer then
  local held = tonumber(string.sub(pointer, 1, string.find(pointer, '|', 1, true) - 1))
  if held >= tonumber(ARGV[1]) then return pointer end
end
pointer = ARGV[1] .. '|' .. ARGV[2]
redis.call('SET', KEYS[1], pointer)
return pointer
