-- KEYS: run hash
-- ARGV: holder (the task id), attempt (the redrives of the record it could not dispatch for)
-- The holder could not dispatch: let the next attempt claim.
if redis.call('HGET', KEYS[1], 'completion') ~= 'sending' then return 0 end
if redis.call('HGET', KEYS[1], 'completion_holder') ~= ARGV[1] then return 0 end
if (redis.call('HGET', KEYS[1], 'redrives') or '0') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'completion', 'pending', 'completion_lease_until', 0)
return 1
