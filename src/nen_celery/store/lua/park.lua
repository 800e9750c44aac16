-- KEYS: message index, parked list, parked-due zset
-- ARGV: body, ttl, max parked, message_id, due at
-- Atomic with index.lua: either the binding exists (return run_id) or the body is parked
-- where index.lua (or the reconcile sweep) will find it.
local run_id = redis.call('GET', KEYS[1])
if run_id then return run_id end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], 'NX', ARGV[5], ARGV[4])
return false
