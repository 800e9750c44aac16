-- KEYS: run hash, secure key, timers, the run's kept webhooks (hash)
-- ARGV: now, next check, force ('1' or '0')
-- Operator action: start a new attempt of a run Nen never ran (rejected / submit_failed /
-- unknown), keeping its history. Returns {verdict, detail}; 'ok' also carries the messageId
-- the attempt was bound to ('' none), whose index entry the caller frees. A run that may have
-- started in Nen (its POST's answer was lost: `unknown`, or `submit_failed` after it) is
-- refused ('may_have_started') unless forced: a new POST could start the workflow twice.
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return {'missing', ''} end
local status = redis.call('HGET', key, 'status')
if status ~= 'rejected' and status ~= 'submit_failed' and status ~= 'unknown' then
  return {'refused', status}
end
local maybe_started = status == 'unknown' or (redis.call('HGET', key, 'unknown_at') or '') ~= ''
if maybe_started and ARGV[3] ~= '1' then return {'may_have_started', status} end
if redis.call('HGET', key, 'has_secure') == '1' and redis.call('EXISTS', KEYS[2]) == 0 then
  return {'no_secure', status}
end
local n = redis.call('HINCRBY', key, 'redrives', 1)
local run_id = redis.call('HGET', key, 'run_id')
-- may have started: Nen may hold the first POST, so keep its key (a deduplicating Nen returns
-- it); otherwise a fresh key, so a cached refusal is not replayed
-- (and the webhooks kept for the old attempt's messageIds go: a fresh key gets a fresh messageId;
-- with the same key a deduplicating Nen answers the old messageId, whose kept webhooks then apply)
if not maybe_started then
  redis.call('HSET', key, 'idem_key', run_id .. '.' .. n)
  redis.call('DEL', KEYS[4])
end
local err = redis.call('HGET', key, 'error')
if err and err ~= '' then
  local prev = redis.call('HGET', key, 'previous_errors')
  local list = {}
  if prev and prev ~= '' then list = cjson.decode(prev) end
  list[#list + 1] = cjson.decode(err)
  redis.call('HSET', key, 'previous_errors', cjson.encode(list))
end
-- every field of the attempt goes: its binding (a new 202 may carry another messageId), its
-- end, its completion, its submit bookkeeping, and Nen's late word (record_late)
local old_message = redis.call('HGET', key, 'message_id') or ''
redis.call('HDEL', key, 'message_id', 'submitted_at', 'finished_at', 'unknown_at', 'error',
           'payload', 'completion_lease_until', 'completion_holder', 'completed_at',
           'callback_task_id', 'post_inflight', 'submit_lease_until', 'submit_holder',
           'last_attempt_at', 'late', 'nen_status', 'late_at', 'late_payload')
redis.call('HSET', key, 'status', 'queued', 'updated_at', ARGV[1], 'completion', '')
redis.call('PERSIST', key)
redis.call('PERSIST', KEYS[2])
push_history(key, 'queued', ARGV[1], 'redrive')
redis.call('ZADD', KEYS[3], ARGV[2], run_id)
return {'ok', redis.call('HGET', key, 'idem_key') or run_id, old_message}
