-- KEYS: run hash, secure key, timers, the run's parked webhooks.
-- ARGV: message_id, now, accepted body (json, unused), next check, retention, next check once
--       processing
-- Binds Nen's messageId to the run and drops the secure params (Nen has them now); applies a
-- 'processing' webhook that came before the binding for this messageId (ingest.lua kept only
-- its messageId), so it costs no replay.
-- Returns {'bound', status, parked...}: the other webhooks ingest.lua kept with the run before
-- the binding (atomic with it: none can slip between), or {'conflict', bound} / {'missing', ''}.
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return {'missing', ''} end
local bound = redis.call('HGET', key, 'message_id')
if bound and bound ~= '' and bound ~= ARGV[1] then return {'conflict', bound} end
local status, moved = bind_message(key, KEYS[2], ARGV[1], ARGV[2], 'nen:202')
if moved then redis.call('ZADD', KEYS[3], ARGV[4], redis.call('HGET', key, 'run_id')) end
local early = redis.call('HGET', key, 'parked_processing')
if early then
  redis.call('HDEL', key, 'parked_processing')
  if early == ARGV[1] then  -- another messageId's: signed for another run, dropped
    status = apply_status(key, KEYS[2], KEYS[3], 'processing', ARGV[2], '', 'webhook:parked', ARGV[5], '', ARGV[6])[2]
  end
end
local out = {'bound', status}
for _, body in ipairs(redis.call('LRANGE', KEYS[4], 0, -1)) do out[#out + 1] = body end
redis.call('DEL', KEYS[4])
return out
