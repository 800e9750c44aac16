-- KEYS: run hash
-- ARGV: now, lease (seconds), holder (the task id)
-- Returns {verdict, detail}: claimed | busy(seconds left) | done | not_terminal | missing;
-- 'claimed' also carries the record (HGETALL): the run and its callbacks, in the same trip.
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return {'missing', ''} end
local res = claim_completion(key, tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3])
if res[1] == 'claimed' then res[3] = redis.call('HGETALL', key) end
return res
