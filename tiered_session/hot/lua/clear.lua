-- Clear the session. Write-through adds reserved after the clear began survive
-- it (they are ordered after it; their pending entries stay); one reserved
-- before means wait.
-- KEYS[1] meta  KEYS[2] items  KEYS[3] reserved  KEYS[4] outbox  KEYS[5] inflight  KEYS[6] index
-- ARGV[1] mode ('b' | 't')  ARGV[2] session_id  ARGV[3] now_ms  ARGV[4] n0 (as for pop)
-- Returns {COLD} | {WAIT_EARLIER, n0} | {OK, upto, kept_seq...}
local meta, list, rsv, outbox, inflight = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local m = hot(meta, list, LAST_SEQ, RESERVED_COUNT)
if not m then return {COLD} end
local n, h = tonumber(m[1]), tonumber(m[2])
local keep, kept = {}, {}
if h > 0 then
  local n0 = tonumber(ARGV[4])
  if n0 == 0 then n0 = n end
  keep = redis.call('SMEMBERS', rsv)
  for _, q in ipairs(keep) do
    if tonumber(q) <= n0 then return {WAIT_EARLIER, n0} end
  end
  kept = pendings(list)
end
recreate(meta, list, 1, n + 1)
chunked(kept, 1, #kept, 'RPUSH', list)
if ARGV[1] == MODE_BEHIND then
  redis.call('XADD', outbox, '*', E_OP, OP_CLEAR, E_SESSION, ARGV[2], E_SEQ, n, E_TIME, ARGV[3],
    E_KEEP, table.concat(keep, ','))
  redis.call('HINCRBY', meta, BEHIND_OPS, 1)
  redis.call('HINCRBY', meta, BARRIERS, 1)
  redis.call('PERSIST', meta)
  redis.call('PERSIST', list)
else
  redis.call('HINCRBY', meta, TAKES, 1)
  redis.call('HSET', inflight, OP_CLEAR .. '|' .. n .. '|' .. ARGV[2], ARGV[3])
end
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[2])
if #keep <= per_call then return {OK, n, unpack(keep)} end
-- More seqs than unpack() takes: the same reply, built element by element.
local reply = {OK, n}
for i = 1, #keep do reply[i + 2] = keep[i] end
return reply
