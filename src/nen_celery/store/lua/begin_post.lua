-- KEYS: run hash
-- ARGV: now, execution (the token claim_submit recorded)
-- Marks a POST as possibly on the wire before it is sent. Returns the attempt number; -1: the
-- run is no longer queued; -2: another execution of the submit holds the lease (this one must
-- not send).
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return -1 end
if not holds_submit(KEYS[1], ARGV[2]) then return -2 end
-- post_inflight counts this attempt's POSTs that may have reached Nen (post_not_sent.lua uncounts)
redis.call('HINCRBY', KEYS[1], 'post_inflight', 1)
redis.call('HSET', KEYS[1], 'last_attempt_at', ARGV[1])
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)
