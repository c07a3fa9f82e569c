-- Install a session read from SQL, unless another client already did, or the
-- session was evicted since the read began (its eviction generation moved: the
-- snapshot may be stale). When the hash is there but the list is gone while
-- operations are pending (an eviction by Redis' maxmemory policy), the install
-- is refused: the counters must not be reset.
-- KEYS[1] meta  KEYS[2] items  KEYS[3] reserved  KEYS[4] generation
-- ARGV[1] last seq  ARGV[2] floor  ARGV[3] whole (1|0)  ARGV[4] ttl_ms
--   ARGV[5] generation read before SQL  ARGV[6..] envelopes, ascending
-- Returns OK (installed) | NO (already there) | STALE_SNAPSHOT | LIST_LOST | META_LOST
local meta, list, rsv = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', meta) == 1 then
  if redis.call('EXISTS', list) == 1 then return NO end
  local m = redis.call('HMGET', meta, BEHIND_OPS, RESERVED_COUNT, TAKES)
  if tonumber(m[1]) > 0 or tonumber(m[2]) > 0 or tonumber(m[3] or '0') > 0 then
    return LIST_LOST
  end
else
  -- The hash is gone but the list is not: if it holds seqs SQL lacks, they are
  -- writes not flushed yet, and warming would hand their seqs out again.
  local last = redis.call('LINDEX', list, -1)
  if last and string.sub(last, 1, 1) ~= HEADER_MARK and seqof(last) > tonumber(ARGV[1]) then
    return META_LOST
  end
end
if (redis.call('GET', KEYS[4]) or '0') ~= ARGV[5] then return STALE_SNAPSHOT end
redis.call('DEL', list, rsv)
redis.call('HSET', meta, LAST_SEQ, ARGV[1], FLOOR, ARGV[2], WHOLE, ARGV[3], BEHIND_OPS, 0,
  RESERVED_COUNT, 0, TAKES, 0, BARRIERS, 0, IN_SQL, ARGV[1])
redis.call('RPUSH', list, header(ARGV[3], ARGV[2]))
chunked(ARGV, 6, #ARGV, 'RPUSH', list)
expire(tonumber(ARGV[4]), meta, list)
return OK
