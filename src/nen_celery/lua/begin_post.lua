-- KEYS: run hash.  ARGV: now.  Marks a POST as possibly on the wire before it is sent.
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return -1 end
redis.call('HSET', KEYS[1], 'post_inflight', 1, 'last_attempt_at', ARGV[1])
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)
