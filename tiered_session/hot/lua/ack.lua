-- Acknowledge outbox entries committed to SQL and update their sessions, only
-- while this flusher still holds the shard's lease (otherwise the new holder
-- replays and acknowledges them: counting them twice would corrupt BEHIND_OPS).
-- KEYS[1] outbox  KEYS[2] lease, then per session: meta, items, reserved
-- ARGV[1] group  ARGV[2] hot window  ARGV[3] ttl_ms  ARGV[4] token  ARGV[5] n_ids
--   ARGV[6..5+n_ids] entry ids, then per session: ops, max_added_seq, barriers (how
--   many of the ops were pops/clears/undo-deletes)
-- Returns OK | LEASE_LOST
local group, hotn, ttl, nids = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[4] then return LEASE_LOST end
chunked(ARGV, 6, 5 + nids, 'XACK', KEYS[1], group)
chunked(ARGV, 6, 5 + nids, 'XDEL', KEYS[1])
local a = 6 + nids
for j = 0, (#KEYS - 2) / 3 - 1 do
  local meta, list = KEYS[3 + 3 * j], KEYS[4 + 3 * j]
  if redis.call('EXISTS', meta) == 1 then
    -- (a list lost while writes were pending, an eviction: count them all the same)
    local listed = redis.call('EXISTS', list) == 1
    local ops, maxseq = tonumber(ARGV[a + 3 * j]), tonumber(ARGV[a + 3 * j + 1])
    local barriers = tonumber(ARGV[a + 3 * j + 2])
    local p = redis.call('HINCRBY', meta, BEHIND_OPS, -ops)
    if barriers > 0 then redis.call('HINCRBY', meta, BARRIERS, -barriers) end
    if maxseq > tonumber(redis.call('HGET', meta, IN_SQL) or '0') then
      redis.call('HSET', meta, IN_SQL, maxseq)
    end
    if listed then trim(meta, list, hotn) end
    if p <= 0 and tonumber(redis.call('HGET', meta, RESERVED_COUNT) or '0') == 0 then
      if listed then
        expire(ttl, meta, list)
      else
        -- Everything is in SQL now: without its list the session is cold, and the
        -- next call warms it from SQL.
        redis.call('DEL', meta)
      end
    end
  end
end
return OK
