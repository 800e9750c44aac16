-- KEYS: run hash, secure key, timers
-- ARGV: status, now, payload ('' = keep), source, retention, error ('' = none), next check
-- Returns {verdict, status, completion}: applied | noop | missing
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return {'missing', '', ''} end
local cur = redis.call('HGET', key, 'status')
local new = ARGV[1]
if not can_transition(cur, new) then
  return {'noop', cur, redis.call('HGET', key, 'completion') or ''}
end
redis.call('HSET', key, 'status', new, 'updated_at', ARGV[2])
push_history(key, new, ARGV[2], ARGV[4])
if ARGV[3] ~= '' then redis.call('HSET', key, 'payload', ARGV[3]) end
if ARGV[6] ~= '' then redis.call('HSET', key, 'error', ARGV[6]) end
redis.call('ZADD', KEYS[3], ARGV[7], redis.call('HGET', key, 'run_id'))
if new == 'unknown' then redis.call('HSET', key, 'unknown_at', ARGV[2]) end
if RANK[new] == 3 then
  redis.call('HSET', key, 'finished_at', ARGV[2], 'completion', 'pending')
  redis.call('HDEL', key, 'post_inflight', 'submit_lease_until', 'submit_holder')
  if new == 'submit_failed' then
    -- Nen never saw the secure params: keep them (sealed, bounded) so the run can be redriven
    redis.call('EXPIRE', KEYS[2], ARGV[5])
  else
    redis.call('DEL', KEYS[2])
  end
  redis.call('EXPIRE', key, ARGV[5])
  return {'applied', new, 'pending'}
end
return {'applied', new, ''}
