-- KEYS: run hash, secure key
-- ARGV: status, now, payload ('' = keep), source, retention, error ('' = none)
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
if RANK[new] == 3 then
  redis.call('HSET', key, 'finished_at', ARGV[2], 'completion', 'pending', 'post_inflight', 0)
  redis.call('DEL', KEYS[2])
  redis.call('EXPIRE', key, ARGV[5])
  return {'applied', new, 'pending'}
end
return {'applied', new, ''}
