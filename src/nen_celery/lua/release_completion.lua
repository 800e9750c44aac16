-- KEYS: run hash.  ARGV: task id.  The holder could not dispatch: let the next attempt claim.
-- 'sent' too: ingest.lua marks it sent before dispatching
local c = redis.call('HGET', KEYS[1], 'completion')
if c ~= 'sending' and c ~= 'sent' then return 0 end
if redis.call('HGET', KEYS[1], 'completion_holder') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'completion', 'pending', 'completion_lease_until', 0)
return 1
