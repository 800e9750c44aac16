-- KEYS: run hash, timers.  ARGV: now, callback task id ('' = no callback), run_id
if redis.call('HGET', KEYS[1], 'completion') ~= 'sending' then return 0 end
redis.call('HSET', KEYS[1], 'completion', 'sent', 'completed_at', ARGV[1],
           'callback_task_id', ARGV[2], 'completion_lease_until', 0)
redis.call('ZREM', KEYS[2], ARGV[3])
return 1
