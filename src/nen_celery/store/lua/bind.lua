-- KEYS: run hash, secure key, timers, the run's kept webhooks (hash).
-- ARGV: message_id, now, accepted (Nen's 202 body, json; unused), next check, retention,
--       processing check (the next check once a kept processing webhook is applied here),
--       attempt (the redrives the submit claimed; '' = any: a lookup, which is per attempt)
-- Binds Nen's messageId to the run and drops the secure params (Nen has them now). Of the
-- webhooks ingest.lua kept with the run before the binding (once per status and messageId),
-- only those of this messageId count: a 'processing' one (kept as its messageId only) is applied
-- here, so it costs no replay; the others are handed back, atomic with the binding (none can
-- slip between). Those of other messageIds were signed for other runs: dropped.
-- Returns {'bound', status, kept bodies...}, or {'conflict', bound} / {'missing', ''} /
-- {'stale', status}: the 202 answers an earlier attempt than the run's (a slow submit that
-- outlived a redrive): it binds nothing (a compare-and-set on the attempt the submit claimed).
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return {'missing', ''} end
if ARGV[7] ~= '' and (redis.call('HGET', key, 'redrives') or '0') ~= ARGV[7] then
  return {'stale', redis.call('HGET', key, 'status')}
end
local bound = redis.call('HGET', key, 'message_id')
if bound and bound ~= '' and bound ~= ARGV[1] then return {'conflict', bound} end
local status, moved = bind_message(key, KEYS[2], ARGV[1], ARGV[2], 'nen:202')
if moved then redis.call('ZADD', KEYS[3], ARGV[4], redis.call('HGET', key, 'run_id')) end
local out = {'bound', status}
local kept = redis.call('HGETALL', KEYS[4])
for i = 1, #kept, 2 do
  local kind, message_id = string.match(kept[i], '^([^:]*):(.*)$')
  if message_id == ARGV[1] then
    if kind == 'processing' then
      status = apply_status(key, KEYS[2], KEYS[3], 'processing', ARGV[2], '', 'webhook:parked', ARGV[5], '', ARGV[6])[2]
    else
      out[#out + 1] = kept[i + 1]
    end
  end
end
out[2] = status
redis.call('DEL', KEYS[4])
return out
