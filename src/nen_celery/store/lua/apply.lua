-- KEYS: run hash, secure key, timers
-- ARGV: status, now, payload ('' = keep), source, retention, error ('' = none), next check,
--       expect (the status the caller's decision read; '' = any), message_id (of a Nen word: the
--       body's; '' = ours)
-- Returns {verdict, status, completion}: applied | noop | stale | maybe_sent | foreign | missing.
-- foreign: Nen's word for another messageId than the one the run is bound to (an old attempt's
-- webhook or poll answer that found the run before a redrive): nothing changed. stale: the run is no
-- longer in the status the decision was taken on (a compare-and-set): nothing changed.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', '', ''} end
local cur = redis.call('HGET', KEYS[1], 'status')
if ARGV[9] ~= '' and (redis.call('HGET', KEYS[1], 'message_id') or '') ~= ARGV[9] then
  return {'foreign', cur, redis.call('HGET', KEYS[1], 'completion') or ''}
end
if ARGV[8] ~= '' and cur ~= ARGV[8] then
  return {'stale', cur, redis.call('HGET', KEYS[1], 'completion') or ''}
end
-- ending a queued run as never started (never_sent, refused, run_timeout) only while no POST of
-- the attempt may have reached Nen (post_inflight counts them); else the caller parks it unknown
if (ARGV[1] == 'submit_failed' or ARGV[1] == 'rejected') and cur == 'queued'
    and (tonumber(redis.call('HGET', KEYS[1], 'post_inflight') or '0') or 0) > 0 then
  return {'maybe_sent', cur, ''}
end
return apply_status(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6],
                    ARGV[7])
