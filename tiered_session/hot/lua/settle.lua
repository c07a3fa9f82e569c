-- Finish a write-through operation after its SQL transaction.
-- KEYS[1] meta  KEYS[2] items  KEYS[3] reserved  KEYS[4] inflight  KEYS[5] outbox
-- ARGV[1] op_id  ARGV[2] ok: 1 committed | 0 rolled back | 3 committed, but first wait
--   while an earlier add of the session is in flight (so its writer returns only once
--   every earlier batch is resolved)  ARGV[3] hot window  ARGV[4] kind, then per kind:
--   OP_ADD: ARGV[5] first, ARGV[6] count, ARGV[7] session_id (its pending entries are
--     kept when ok, removed otherwise; when not ok, the outbox gets an OP_UNDO entry
--     deleting those seqs from SQL in case the failed commit did land)
--   OP_ADD_REFUSED: like OP_ADD, for a commit SQL refused outright (no OP_UNDO: the seqs
--     may hold other rows, e.g. when Redis lost writes SQL has)
--   OP_POP: ARGV[5] envelope (put back when not ok)
--   OP_CLEAR: nothing
-- Returns OK | SETTLE_LATER (ok=3 only: wait, then call again) | NO (the operation was
--   already taken over by recovery)
local meta, list, rsv, inflight, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local m = hot(meta, list, RESERVED_COUNT, FLOOR)
if ARGV[2] == '3' and m and tonumber(m[1]) > tonumber(ARGV[6]) then
  local first = tonumber(ARGV[5])
  for _, s in ipairs(redis.call('SMEMBERS', rsv)) do
    if tonumber(s) < first then return SETTLE_LATER end
  end
end
if redis.call('HDEL', inflight, ARGV[1]) == 0 then return NO end
local ok, kind = ARGV[2] ~= '0', ARGV[4]
if kind == OP_ADD or kind == OP_ADD_REFUSED then
  finish_add(meta, list, rsv, outbox, m, ok, kind == OP_ADD, tonumber(ARGV[5]),
    tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[3]))
else
  finish_take(meta, list, m, ok, kind, ARGV[5])
end
return OK
