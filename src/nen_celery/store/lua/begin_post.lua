-- KEYS: run hash
-- ARGV: now, execution (the token claim_submit recorded)
-- Marks a later POST of the execution (a retry after one that surely never left) as possibly on
-- the wire before it is sent; claim_submit.lua counted the first. Returns the attempt number;
-- -1: the run is no longer queued; -2: another execution of the submit holds the lease (this
-- one must not send).
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return -1 end
if not holds_submit(KEYS[1], ARGV[2]) then return -2 end
return count_post(KEYS[1], ARGV[1])
