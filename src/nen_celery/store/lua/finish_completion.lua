-- KEYS: run hash, timers
-- ARGV: now, callback task id ('' = no callback), run_id, holder (the claim's), attempt (the
--       redrives of the record the callback was dispatched for)
-- The broker took the callback (or there is none): the completion is done, nothing watches it.
-- Only by the claim's holder (a compare-and-set): an earlier attempt's dispatcher finishing late
-- must not mark a redriven attempt's completion sent before its callback is out.
if redis.call('HGET', KEYS[1], 'completion') ~= 'sending' then return 0 end
if (redis.call('HGET', KEYS[1], 'completion_holder') or '') ~= ARGV[4] then return 0 end
-- and for the attempt it dispatched: a redelivered copy of one complete_run message is the same
-- holder, and may have claimed a redriven attempt's completion meanwhile (found by the model)
if (redis.call('HGET', KEYS[1], 'redrives') or '0') ~= ARGV[5] then return 0 end
redis.call('HSET', KEYS[1], 'completion', 'sent', 'completed_at', ARGV[1], 'callback_task_id', ARGV[2])
redis.call('HDEL', KEYS[1], 'completion_lease_until', 'completion_holder')
redis.call('ZREM', KEYS[2], ARGV[3])
return 1
