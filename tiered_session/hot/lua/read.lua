-- Read the newest `limit` items. The store reads with a plain LRANGE and uses
-- this script only when that finds no list (and for compaction snapshots).
-- KEYS[1] meta  KEYS[2] items
-- ARGV[1] limit (< 0: all)
-- Returns {COLD} | {whole (1|0), floor, {envelope...}}
local meta, list = KEYS[1], KEYS[2]
local m = hot(meta, list, WHOLE, FLOOR)
if not m then return {COLD} end
local lim = tonumber(ARGV[1])
local items
if lim < 0 then
  items = redis.call('LRANGE', list, 1, -1)
else
  items = redis.call('LRANGE', list, -lim, -1)
  if #items > 0 and string.sub(items[1], 1, 1) == HEADER_MARK then table.remove(items, 1) end
end
return {tonumber(m[1]), tonumber(m[2]), items}
