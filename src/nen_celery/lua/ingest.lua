-- A webhook whose URL named its run (hints.py): everything in one trip on the run's slot.
-- KEYS: run hash, secure key, timers, the run's parked webhooks
-- ARGV: message_id, status, now, payload ('' = none), source, retention, next check,
--       park ttl, max parked, sealed body, completion lease, holder ('' = do not claim), attempt,
--       callback task id for the body's status, callback check time
-- Returns {verdict, status, completion[, record]}: applied | noop | parked | mismatch | stale |
-- missing (stale: a webhook of an attempt before the run was redriven).
-- With a holder, a terminal run's completion is claimed here ('claimed' + the record), so the
-- ingest task dispatches the callback itself instead of queueing complete_run. When the run
-- ended with the body's status, the completion is marked sent in the same write (no second trip
-- after the dispatch): the holder's own redelivered message may dispatch again (the callback's
-- guard runs it once) until the callback starts and claim_dispatch drops the holder; a lost
-- dispatch is caught by the sweep's callback check.
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
if res[3] == 'sent' then
  if redis.call('HGET', key, 'completion_holder') == holder then
    return {res[1], res[2], 'claimed', redis.call('HGETALL', key)}
  end
  return res
end
local claim = claim_completion(key, tonumber(now), tonumber(ARGV[11]), holder)
if claim[1] ~= 'claimed' then return {res[1], res[2], claim[1]} end
if res[2] == ARGV[2] then
  local field = 'on_failure'
  if res[2] == 'success' then field = 'on_complete' end
  local callback = ''
  if (redis.call('HGET', key, field) or '') ~= '' then callback = ARGV[14] end
  redis.call('HSET', key, 'completion', 'sent', 'completed_at', now, 'callback_task_id', callback)
  redis.call('HDEL', key, 'completion_lease_until')
  if callback == '' then
    redis.call('HDEL', key, 'completion_holder')  -- nothing to dispatch again
    redis.call('ZREM', KEYS[3], redis.call('HGET', key, 'run_id'))
  else
    redis.call('ZADD', KEYS[3], ARGV[15], redis.call('HGET', key, 'run_id'))
  end
end
return {res[1], res[2], 'claimed', redis.call('HGETALL', key)}
