-- KEYS: run hash, timers.  ARGV: now, callback task id ('' = no callback), run_id, next check
-- With a callback, keep a timer: the sweep checks that the callback reached its end.
if redis.call('HGET', KEYS[1], 'completion') ~= 'sending' then return 0 end
redis.call('HSET', KEYS[1], 'completion', 'sent', 'completed_at', ARGV[1], 'callback_task_id', ARGV[2])
redis.call('HDEL', KEYS[1], 'completion_lease_until', 'completion_holder')
if ARGV[2] == '' then
  redis.call('ZREM', KEYS[2], ARGV[3])
else
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
end
return 1
