-- KEYS: run hash
-- ARGV: execution (the token claim_submit recorded), field, value
-- Set a submit field only for the execution holding the submit lease: a stale execution (its
-- message was redelivered and another took over) must not clear another's in-flight mark or lease.
if not holds_submit(KEYS[1], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 1
