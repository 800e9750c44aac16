-- KEYS: run hash, runs index (zset), secure key, timers (zset)
-- ARGV: run_id, creator (the token create.lua stored for this start_run call)
-- Undo a create whose submit could not be queued, only if this call created the record, nothing
-- moved it on and no other start_run adopted it. Returns 1 (removed), 0 (left as it is).
if redis.call('HGET', KEYS[1], 'creator') ~= ARGV[2] then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
if redis.call('HGET', KEYS[1], 'adopted') == '1' then return 0 end
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return 1
