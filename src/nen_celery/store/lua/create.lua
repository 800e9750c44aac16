-- KEYS: run hash, runs index (zset), secure key, timers (zset)
-- ARGV: run_id, now, secure token ('' = none), retention, next check, fields... (field, value,
--       field, value, ...: the record's fields)
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local now = ARGV[2]
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
-- absent fields read as their defaults (post_inflight 0, idem_key = run_id): less memory per run
redis.call('HSET', KEYS[1], 'status', 'queued', 'created_at', now, 'updated_at', now,
           'attempts', 0, 'completion', '')
push_history(KEYS[1], 'queued', now, 'start_run')
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[3], ARGV[3])
  redis.call('HSET', KEYS[1], 'has_secure', 1)
end
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(now) - 2 * tonumber(ARGV[4]))
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
return 1
