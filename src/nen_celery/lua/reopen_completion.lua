-- KEYS: run hash.  The callback never reached its end: let complete_run dispatch it again.
if redis.call('HGET', KEYS[1], 'completion') ~= 'sent' then return 0 end
redis.call('HSET', KEYS[1], 'completion', 'pending', 'redispatches',
           (tonumber(redis.call('HGET', KEYS[1], 'redispatches') or '0') or 0) + 1)
return 1
