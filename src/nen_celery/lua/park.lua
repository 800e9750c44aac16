-- KEYS: message index, parked list.  ARGV: body, ttl, max parked
-- Atomic with index.lua: either the binding exists (return run_id) or the body is parked
-- where index.lua will find it.
local run_id = redis.call('GET', KEYS[1])
if run_id then return run_id end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('EXPIRE', KEYS[2], ARGV[2])
return false
