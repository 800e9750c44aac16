-- KEYS: run hash, secure key, timers
-- ARGV: status, now, payload ('' = keep), source, retention, error ('' = none), next check
-- Returns {verdict, status, completion}: applied | noop | missing
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', '', ''} end
return apply_status(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6],
                    ARGV[7])
