-- Finish a write-through operation whose writer vanished, as its SQL outcome says.
-- The flusher first looks in SQL whether the operation landed (rows present for
-- an add, row gone for a pop, rows gone for a clear) and passes that here: a
-- landed operation is completed, any other is rolled back, exactly as the
-- writer's own settle would have done. An add rolled back also queues an
-- OP_UNDO delete, in case its transaction commits after all.
-- KEYS[1] meta  KEYS[2] items  KEYS[3] reserved  KEYS[4] outbox  KEYS[5] inflight
-- ARGV[1] op_id  ARGV[2] session_id  ARGV[3] landed (1|0)  ARGV[4] hot window
--   ARGV[5] for a pop not landed: the item to put back
-- Returns OK (taken over) | NO (it had already settled)
local meta, list, rsv, outbox, inflight = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, sid, landed = ARGV[1], ARGV[2], ARGV[3] == '1'
if redis.call('HDEL', inflight, id) == 0 then return NO end
local m = hot(meta, list, RESERVED_COUNT, FLOOR)
local kind = string.sub(id, 1, 1)
local rest = string.sub(id, 3)
local sep = string.find(rest, '|', 1, true)
local a = tonumber(string.sub(rest, 1, sep - 1))
if kind == OP_ADD then
  rest = string.sub(rest, sep + 1)
  local count = tonumber(string.sub(rest, 1, string.find(rest, '|', 1, true) - 1))
  finish_add(meta, list, rsv, outbox, m, landed, true, a, count, sid, tonumber(ARGV[4]))
else
  finish_take(meta, list, m, landed, kind, ARGV[5])
end
return OK
