-- A webhook whose URL named its run (hints.py): everything in one trip on the run's slot.
-- KEYS: run hash, secure key, timers, the run's parked webhooks
-- ARGV: message_id, status, now, payload ('' = none), source, retention, next check,
--       park ttl, max parked, sealed body, completion lease, holder ('' = do not claim), attempt
-- Returns {verdict, status, completion[, record]}: applied | noop | parked | mismatch | stale |
-- missing (stale: a webhook of an attempt before the run was redriven).
-- With a holder, a terminal run's completion is claimed here ('claimed' + the record), so the
-- ingest task dispatches the callback itself instead of queueing complete_run, then marks it
-- sent (finish_completion.lua) once the broker has the message. The claim is a lease: if the
-- holder dies before that mark, its redelivered message (same holder) or, after the lease, the
-- sweep dispatches again.
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return {'missing', '', ''} end
if (redis.call('HGET', key, 'redrives') or '0') ~= ARGV[13] then return {'stale', '', ''} end
local now = ARGV[3]
local bound = redis.call('HGET', key, 'message_id') or ''
if bound == '' then
  local status = redis.call('HGET', key, 'status')
  if status ~= 'unknown' then
    -- the 202 is not stored yet: keep the webhook with the run. A 'processing' one carries
    -- nothing but its messageId (no payload is stored for it): bind.lua applies it itself.
    -- Any other: kept whole, bind.lua hands it back.
    if ARGV[2] == 'processing' then
      redis.call('HSETNX', key, 'parked_processing', ARGV[1])
    else
      redis.call('RPUSH', KEYS[4], ARGV[10])
      redis.call('LTRIM', KEYS[4], -tonumber(ARGV[9]), -1)
      redis.call('EXPIRE', KEYS[4], ARGV[8])
    end
    return {'parked', status, ''}
  end
  -- our POST's fate was unknown (its answer was lost): Nen's own webhook for this run says it
  -- landed, and under which messageId
  bind_message(key, KEYS[2], ARGV[1], now, 'webhook:run_hint')
elseif bound ~= ARGV[1] then
  return {'mismatch', bound, ''}
end
local res = apply_status(key, KEYS[2], KEYS[3], ARGV[2], now, ARGV[4], ARGV[5], ARGV[6], '', ARGV[7])
local holder = ARGV[12]
if holder == '' or res[3] == '' then return res end
local claim = claim_completion(key, tonumber(now), tonumber(ARGV[11]), holder)
if claim[1] ~= 'claimed' then return {res[1], res[2], claim[1]} end
return {res[1], res[2], 'claimed', redis.call('HGETALL', key)}
