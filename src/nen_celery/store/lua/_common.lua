-- ALLOWED, TERMINAL, RANK and can_transition(cur, new) come first, generated from the state
-- table (nen_celery.domain.runstate.lua_guards, spliced in by store/scripts.py).
local function push_history(key, status, now, source)
  local raw = redis.call('HGET', key, 'history')
  local hist = {}
  if raw and raw ~= '' then hist = cjson.decode(raw) end
  hist[#hist + 1] = {status=status, at=tonumber(now), source=source}
  redis.call('HSET', key, 'history', cjson.encode(hist))
end
-- True when ``token`` is the execution holding the submit lease ('<task id>/<token>').
local function holds_submit(key, token)
  local holder = redis.call('HGET', key, 'submit_holder') or ''
  return string.sub(holder, -string.len(token) - 1) == '/' .. token
end
-- Count a POST as possibly on the wire before it is sent (runstate.SUBMIT: count_post):
-- post_inflight counts the attempt's POSTs that may have reached Nen (post_not_sent.lua uncounts
-- one that surely did not). claim_submit.lua counts the first, begin_post.lua each later one.
-- Returns the attempt number (attempts counts one per POST).
local function count_post(key, now)
  redis.call('HINCRBY', key, 'post_inflight', 1)
  redis.call('HSET', key, 'last_attempt_at', now)
  return redis.call('HINCRBY', key, 'attempts', 1)
end
-- Bind Nen's messageId (bind.lua: the 202; ingest.lua: a hinted webhook of an unknown run) and
-- drop the secure params (Nen has them) and the submit bookkeeping (memory per record).
-- Returns the status now and whether it moved to submitted.
local function bind_message(key, secure_key, message_id, now, source)
  redis.call('DEL', secure_key)
  redis.call('HSET', key, 'message_id', message_id)
  redis.call('HDEL', key, 'post_inflight', 'submit_lease_until', 'submit_holder')
  local status = redis.call('HGET', key, 'status')
  if not can_transition(status, 'submitted') then return status, false end
  redis.call('HSET', key, 'status', 'submitted', 'submitted_at', now, 'updated_at', now)
  push_history(key, 'submitted', now, source)
  return 'submitted', true
end
-- Move the run to ``new`` if that is forward (apply.lua, ingest.lua).
-- Returns {verdict, status, completion}: applied | noop.
local function apply_status(key, secure_key, timers_key, new, now, payload, source, retention, err, check)
  local cur = redis.call('HGET', key, 'status')
  if not can_transition(cur, new) then
    return {'noop', cur, redis.call('HGET', key, 'completion') or ''}
  end
  redis.call('HSET', key, 'status', new, 'updated_at', now)
  push_history(key, new, now, source)
  if payload ~= '' then redis.call('HSET', key, 'payload', payload) end
  if err ~= '' then redis.call('HSET', key, 'error', err) end
  redis.call('ZADD', timers_key, check, redis.call('HGET', key, 'run_id'))
  if new == 'unknown' then redis.call('HSET', key, 'unknown_at', now) end
  if TERMINAL[new] then
    redis.call('HSET', key, 'finished_at', now, 'completion', 'pending')
    redis.call('HDEL', key, 'post_inflight', 'submit_lease_until', 'submit_holder')
    if new == 'submit_failed' then
      -- Nen never saw the secure params: keep them (sealed, bounded) so the run can be redriven
      redis.call('EXPIRE', secure_key, retention)
    else
      redis.call('DEL', secure_key)
    end
    redis.call('EXPIRE', key, retention)
    return {'applied', new, 'pending'}
  end
  return {'applied', new, ''}
end
-- Exactly one holder may dispatch the callback. The holder's own redelivered message (same
-- task id) or anyone after the lease lapsed may take over; a duplicate is told 'busy'.
-- Returns {verdict, detail}: claimed | busy(seconds left) | done | not_terminal.
local function claim_completion(key, now, lease, holder)
  local c = redis.call('HGET', key, 'completion') or ''
  if c == 'sent' then return {'done', ''} end
  if c == '' then return {'not_terminal', ''} end
  if c == 'sending' then
    local until_ = tonumber(redis.call('HGET', key, 'completion_lease_until') or '0') or 0
    if until_ > now and (redis.call('HGET', key, 'completion_holder') or '') ~= holder then
      return {'busy', tostring(until_ - now)}
    end
  end
  redis.call('HSET', key, 'completion', 'sending', 'completion_lease_until', now + lease,
             'completion_holder', holder)
  return {'claimed', ''}
end
-- A run that ended submit_failed after its POST's fate was unknown ("may have started in Nen")
-- hears from Nen after all. Its end stays as recorded (status, finished_at, payload, error): its
-- callback may be out or on its way, and a re-dispatch reads the record. Nen's word goes in
-- fields of its own, forward only: nen_status, late, late_at and a terminal word's body in
-- late_payload. Redrive clears them with the rest of the attempt.
local function may_have_started_late(key)
  if redis.call('HGET', key, 'late') == '1' then return true end
  return redis.call('HGET', key, 'status') == 'submit_failed'
    and (redis.call('HGET', key, 'unknown_at') or '') ~= ''
end
-- Returns {'late' | 'noop', status now (the run's end), completion}.
local function record_late(key, secure_key, message_id, new, now, payload)
  local status = redis.call('HGET', key, 'status')
  local completion = redis.call('HGET', key, 'completion') or ''
  local seen = redis.call('HGET', key, 'nen_status') or ''
  if seen ~= '' and (RANK[new] or -1) <= (RANK[seen] or -1) then
    return {'noop', status, completion}
  end
  redis.call('DEL', secure_key)  -- Nen has them
  redis.call('HSET', key, 'message_id', message_id, 'late', '1', 'nen_status', new, 'late_at', now,
             'updated_at', now)
  if TERMINAL[new] and payload ~= '' then redis.call('HSET', key, 'late_payload', payload) end
  push_history(key, new, now, 'webhook:late')
  return {'late', status, completion}
end
