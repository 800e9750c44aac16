-- KEYS: run hash
-- ARGV: field (callback_failures:<attempt>)
-- Count one failed dispatch of the run's callback on its record; -1 if the record is gone, so
-- no partial record is left behind.
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
