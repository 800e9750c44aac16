-- A webhook whose URL named its run (hints.py; the receiver checked the hint's token): everything
-- in one trip on the run's slot.
-- KEYS: run hash, secure key, timers, the run's kept webhooks (hash)
-- ARGV: message_id, status, now, payload ('' = none), source, retention, next check,
--       keep ttl, max kept, sealed body, completion lease, holder ('' = do not claim), attempt,
--       workflow_id (the body's), claimed ('1': the caller holds the messageId index for this run),
--       nonce (the hint's: '' in URLs made before records had one)
-- Returns {verdict, status, completion[, record]}: applied | noop | late | parked | unbound |
-- mismatch | stale | reused | missing | foreign | full (late: Nen's word on a run that ended submit_failed
-- as "may have started": recorded in fields of its own, the end and its callback kept as they are) (stale: a webhook of an attempt before the run was redriven;
-- unbound: the run is `unknown` and this webhook may bind it once the caller claimed its
-- messageId in the index, which lives on another slot: RunStore.ingest does, then calls again).
-- With a holder, a terminal run's completion is claimed here ('claimed' + the record), so the
-- ingest task dispatches the callback itself instead of queueing complete_run, then marks it
-- sent (finish_completion.lua) once the broker has the message. The claim is a lease: if the
-- holder dies before that mark, its redelivered message (same holder) or, after the lease, the
-- sweep dispatches again.
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return {'missing', '', ''} end
if (redis.call('HGET', key, 'redrives') or '0') ~= ARGV[13] then return {'stale', '', ''} end
-- reused: the URL was made for another record of this run id (hints.py): the caller looks the
-- messageId up instead
if (redis.call('HGET', key, 'nonce') or '') ~= ARGV[16] then return {'reused', '', ''} end
local now = ARGV[3]
local bound = redis.call('HGET', key, 'message_id') or ''
local late = may_have_started_late(key)
if bound == '' then
  local status = redis.call('HGET', key, 'status')
  if status ~= 'unknown' and not late then
    -- the 202 is not stored yet: keep the webhook with the run, once per (status, messageId), so
    -- that copies of one webhook never push out another; the binding takes those of its own
    -- messageId (bind.lua). A 'processing' one keeps nothing but its messageId and workflow: no
    -- payload is stored for it, and bind.lua applies it itself.
    local field = ARGV[2] .. ':' .. ARGV[1]
    if redis.call('HEXISTS', KEYS[4], field) == 0 then
      if redis.call('HLEN', KEYS[4]) >= tonumber(ARGV[9]) then return {'full', status, ''} end
      redis.call('HSET', KEYS[4], field, ARGV[2] == 'processing' and ARGV[14] or ARGV[10])
      redis.call('EXPIRE', KEYS[4], ARGV[8])
    end
    return {'parked', status, ''}
  end
  -- our POST's fate was unknown (its answer was lost): Nen's own webhook for this run says it
  -- landed, and under which messageId; it binds the run only if its workflow is the run's and
  -- its messageId is bound to no other run (the caller's claim on the index)
  if redis.call('HGET', key, 'workflow_id') ~= ARGV[14] then return {'foreign', status, ''} end
  if ARGV[15] ~= '1' then return {'unbound', status, ''} end
  if late then return record_late(key, KEYS[2], ARGV[1], ARGV[2], now, ARGV[4]) end
  bind_message(key, KEYS[2], ARGV[1], now, 'webhook:run_hint')
elseif bound ~= ARGV[1] then
  return {'mismatch', bound, ''}
elseif late then
  return record_late(key, KEYS[2], ARGV[1], ARGV[2], now, ARGV[4])
end
local res = apply_status(key, KEYS[2], KEYS[3], ARGV[2], now, ARGV[4], ARGV[5], ARGV[6], '', ARGV[7])
local holder = ARGV[12]
if holder == '' or res[3] == '' then return res end
local claim = claim_completion(key, tonumber(now), tonumber(ARGV[11]), holder)
if claim[1] ~= 'claimed' then return {res[1], res[2], claim[1]} end
return {res[1], res[2], 'claimed', redis.call('HGETALL', key)}
