-- Mark a session as behind SQL (see BEHIND_SQL_FLAG): adds are refused until it reloads.
-- KEYS[1] meta
-- ARGV: none
-- Returns OK
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], BEHIND_SQL_FLAG, 1) end
return OK
