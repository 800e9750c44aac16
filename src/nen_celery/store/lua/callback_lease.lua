-- One execution of a callback per (run, attempt) at a time (celery.callback_task.CallbackTask),
-- fenced: every claim takes the next number of a counter, the fence token of that execution.
-- KEYS: lease (string: its holder, expiring), done (string: the holder that finished),
--       fence (counter: the token of the latest claim)
-- All keys sit under the run's key, so in its slot.
-- ARGV: mode ('claim' | 'renew' | 'finish' | 'release'), holder ('<task id>/<nonce>'),
--       ttl (claim, renew: the lease in ms; finish: the retention in s; release: 0),
--       token (the claim's fence token; claim: 0), retention (claim: the fence's, in s)
local mode, holder = ARGV[1], ARGV[2]
-- the latest claim is ``holder``'s with ``token``, and not ended: nobody claimed after it
local function current()
  if redis.call('EXISTS', KEYS[2]) == 1 then return false end
  if redis.call('GET', KEYS[3]) ~= ARGV[4] then return false end
  local cur = redis.call('GET', KEYS[1])
  return (not cur) or cur == holder
end
if mode == 'claim' then
  -- {claimed, token} | {busy, 0} | {done, 0}
  if redis.call('EXISTS', KEYS[2]) == 1 then return {'done', 0} end
  local cur = redis.call('GET', KEYS[1])
  if cur and cur ~= holder then return {'busy', 0} end
  local token = redis.call('INCR', KEYS[3])
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[5]))
  redis.call('SET', KEYS[1], holder, 'PX', tonumber(ARGV[3]))
  return {'claimed', token}
elseif mode == 'renew' then
  -- 1 while ``holder``/``token`` holds the lease; 2 when it had lapsed but nobody claimed
  -- since (taken back: no other execution started); 0 once another claim came (lost for good)
  if not current() then return 0 end
  local held = redis.call('GET', KEYS[1])
  redis.call('SET', KEYS[1], holder, 'PX', tonumber(ARGV[3]))
  if held then return 1 end
  return 2
elseif mode == 'finish' then
  -- the callback reached its end: done for good (until the retention), lease dropped; only
  -- by the latest claim (0: a later execution holds it, and decides)
  if not current() then return 0 end
  redis.call('SET', KEYS[2], holder, 'EX', tonumber(ARGV[3]))
  redis.call('DEL', KEYS[1])
  return 1
elseif mode == 'release' then
  -- not its end (the callback asked for a retry): the next execution may claim at once
  if not current() or redis.call('GET', KEYS[1]) ~= holder then return 0 end
  redis.call('DEL', KEYS[1])
  return 1
end
return redis.error_reply('callback_lease: unknown mode ' .. tostring(mode))
