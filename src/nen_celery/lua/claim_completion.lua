-- KEYS: run hash.  ARGV: now, lease seconds, task id
-- Exactly one holder may dispatch the callback. The holder's own redelivered message (same
-- task id) or anyone after the lease lapsed may take over; a duplicate is told 'busy'.
-- Returns {verdict, detail}: claimed | busy(seconds left) | done | not_terminal | missing;
-- 'claimed' also carries the record (HGETALL): the run and its callbacks, in the same trip.
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return {'missing', ''} end
local c = redis.call('HGET', key, 'completion') or ''
local now = tonumber(ARGV[1])
if c == 'sent' then return {'done', ''} end
if c == '' then return {'not_terminal', ''} end
if c == 'sending' then
  local lease = tonumber(redis.call('HGET', key, 'completion_lease_until') or '0') or 0
  local holder = redis.call('HGET', key, 'completion_holder') or ''
  if lease > now and holder ~= ARGV[3] then return {'busy', tostring(lease - now)} end
end
redis.call('HSET', key, 'completion', 'sending', 'completion_lease_until', now + tonumber(ARGV[2]),
           'completion_holder', ARGV[3])
return {'claimed', '', redis.call('HGETALL', key)}
