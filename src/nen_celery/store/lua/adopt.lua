-- KEYS: run hash
-- ARGV: workflow_id, params (both as this caller read them: a compare-and-set on that read)
-- A second start_run of the same run_id with the same workflow and params takes the run as its
-- own: from then on the creator's undo (uncreate.lua) leaves it (the sweep resubmits a queued
-- run whose submit was never queued). Returns 1 (adopted), 0 (the record is gone or changed).
if redis.call('HGET', KEYS[1], 'workflow_id') ~= ARGV[1] then return 0 end
if (redis.call('HGET', KEYS[1], 'params') or '') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'adopted', 1)
return 1
