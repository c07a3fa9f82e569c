-- Read outbox entries for this flusher, only while it holds the shard's lease
-- (a flusher that lost its lease can read nothing more: fencing of reads).
-- With claim=1, first take over every entry pending for other consumers (the
-- shard's previous owners), so they are replayed, in id order, before new ones.
-- With ARGV[7] = 1 (replica_acks: a WAIT follows on this connection), it always writes
-- (the lease, unchanged), so the WAIT covers every entry it returns.
-- KEYS[1] lease  KEYS[2] outbox
-- ARGV[1] token  ARGV[2] group  ARGV[3] consumer  ARGV[4] count  ARGV[5] start ('0' | '>')
--   ARGV[6] claim (1|0)  ARGV[7] (optional) 1: write once for the WAIT that follows
-- Returns LEASE_LOST | a list of {id, {field, value, ...}} (the body is false for an
--   entry deleted while pending)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return LEASE_LOST end
if ARGV[7] == '1' then redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL') end
if ARGV[6] == '1' then
  local cursor = '0-0'
  repeat
    local r = redis.call('XAUTOCLAIM', KEYS[2], ARGV[2], ARGV[3], 0, cursor, 'COUNT', 1000,
      'JUSTID')
    cursor = r[1]
  until cursor == '0-0'
end
local r = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', tonumber(ARGV[4]),
  'STREAMS', KEYS[2], ARGV[5])
if not r then return {} end
if type(r[1]) == 'table' then r = r[1] end  -- {{stream, entries}} (fakeredis: {stream, entries})
return r[2]
